"""Forgery: every bad Twilio signature and Telegram secret is refused (403) and leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import select

from bot.clock import FakeClock
from storage.models import Client, Message, OutboxItem
from tests.fakes.fake_twilio import PUBLIC_BASE_URL, inbound_params, sign, status_params
from tests.fakes.telegram_harness import SECRET, Harness, User, tg
from tests.handlers.twilio_harness import sms_app
from tests.reliability.conftest import say

pytestmark = pytest.mark.reliability

__all__ = ["tg"]


def _twilio_forgeries(path: str, params: dict[str, str]) -> dict[str, dict[str, object]]:
    """Each way a webhook can be forged, as keyword arguments of SmsApp.post."""
    other = "/twilio/status" if path == "/twilio/sms" else "/twilio/sms"
    changed = dict(params)
    key = "Body" if "Body" in params else "MessageStatus"
    return {
        "missing": {"signature": None},
        "empty": {"signature": ""},
        "wrong": {"signature": "dGhpcyBpcyBub3QgYSBzaWduYXR1cmU="},
        "other token": {"signature": sign(PUBLIC_BASE_URL + path, params, token="f" * 32)},
        "changed parameter": {
            "signed_params": {**changed, key: params[key] + "x"},
        },
        "added parameter": {"signed_params": {k: v for k, v in params.items() if k != "To"}},
        "other path": {"signature": sign(PUBLIC_BASE_URL + other, params)},
        "http not https": {
            "signature": sign(PUBLIC_BASE_URL.replace("https://", "http://") + path, params)
        },
        "other host": {"signature": sign("https://evil.example.org" + path, params)},
    }


async def test_forged_twilio_webhooks_are_refused(database_url: str, tmp_path: Path) -> None:
    tried = 0
    async with sms_app(database_url, tmp_path) as sms:
        for path, params in (
            ("/twilio/sms", inbound_params(from_="+15550109999", body="my landlord, Ana Ruiz")),
            ("/twilio/status", status_params(message_sid="SM" + "a" * 32, status="delivered")),
        ):
            for name, kw in _twilio_forgeries(path, params).items():
                resp = await sms.post(params, path=path, **kw)  # type: ignore[arg-type]
                await resp.read()
                assert resp.status == 403, (path, name, resp.status)
                tried += 1
        assert sms.fake.messages == [] and sms.fake.attempts == 0
        # The genuine article still works, so the 403s were about the signature.
        status, _ = await sms.text("+15550108888", "hello")
        assert status == 200
        async with sms.services.sessions() as session:
            inbound = (await session.exec(select(Message))).all()
            clients = (await session.exec(select(Client))).all()
        assert len(inbound) == 1 and len(clients) == 1
    say(f"forgery: twilio {tried} forged webhooks (2 paths x 9 ways), all 403, 0 stored")


async def test_forged_telegram_updates_are_refused(tg: Harness, clock: FakeClock) -> None:
    user = User(424242)
    forged: dict[str, str | None] = {
        "missing": None,
        "empty": "",
        "wrong": "not-the-secret",
        "other case": SECRET.upper(),
        "truncated": SECRET[:-1],
        "prefixed": "x" + SECRET,
    }
    for name, secret in forged.items():
        status = await tg.post(tg.updates.text(user, "hello, I am Ana Ruiz"), secret=secret)
        assert status == 403, (name, status)
    resp = await tg.http.post(
        "/telegram/webhook",
        json=tg.updates.text(user, "hi"),
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET.encode().hex()},
    )
    assert resp.status == 403
    await tg.settle()
    async with tg.services.sessions() as session:
        assert (await session.exec(select(Message))).all() == []
        assert (await session.exec(select(Client))).all() == []
        assert (await session.exec(select(OutboxItem))).all() == []
    assert tg.fake.sent() == []
    say(f"forgery: telegram {len(forged) + 1} forged secrets, all refused 403, 0 stored, 0 sent")

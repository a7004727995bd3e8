"""GET /readyz: migrations current, the database answering, and each configured channel able to
carry messages (Twilio's answer to our credentials at start; Telegram's webhook or poller),
against the fake servers. /healthz stays the cheap liveness check."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from alembic.script import ScriptDirectory
from sqlalchemy import text

from bot.app import create_app
from bot.channels.twilio import CredentialCheck
from bot.clock import system_clock
from bot.handlers.telegram_routes import POLL_LEASE
from bot.handlers.twilio_routes import CREDENTIALS, CredentialWatch
from bot.services import Services
from storage import repo
from storage.db import create_engine, session_factory
from storage.migrate import alembic_config, head_revision
from tests.conftest import make_settings
from tests.fakes import fake_twilio
from tests.fakes.fake_telegram import TOKEN, FakeTelegram

SECRET = "readyz-Secret_0123456789"


async def _until(condition: Callable[[], bool], within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def _ready(http: TestClient[Any, Any]) -> tuple[int, dict[str, Any]]:
    resp = await http.get("/readyz")
    return resp.status, await resp.json()


@asynccontextmanager
async def _app(
    database_url: str, tmp_path: Path, *, twilio: bool = True, webhook: bool = True, **env: Any
) -> AsyncIterator[tuple[TestClient[Any, Any], FakeTelegram, fake_twilio.FakeTwilio]]:
    """The app with Telegram (webhook, or polling) and, if asked, SMS, against the fakes."""
    telegram = FakeTelegram()
    await telegram.start()
    async with fake_twilio.running_fake_twilio() as sms:
        values: dict[str, Any] = {
            "TELEGRAM_BOT_TOKEN": TOKEN,
            "TELEGRAM_API_BASE_URL": telegram.url,
            "TELEGRAM_WEBHOOK_SECRET": SECRET,
        }
        if webhook:
            values["PUBLIC_BASE_URL"] = fake_twilio.PUBLIC_BASE_URL
        if twilio:
            values.update(
                TWILIO_ACCOUNT_SID=fake_twilio.ACCOUNT_SID,
                TWILIO_AUTH_TOKEN=fake_twilio.AUTH_TOKEN,
                TWILIO_FROM_NUMBER=fake_twilio.FROM_NUMBER,
                TWILIO_API_BASE_URL=sms.base_url,
            )
        values.update(env)
        settings = make_settings(database_url, tmp_path / "data", **values)
        services = Services.build(settings)
        app = create_app(settings, services=services)
        try:
            async with TestClient(TestServer(app)) as http:
                if twilio:
                    await _until(lambda: app[CREDENTIALS].result is not None)
                yield http, telegram, sms
        finally:
            await services.close()
            await telegram.close()


async def test_ready_when_everything_answers(database_url: str, tmp_path: Path) -> None:
    async with _app(database_url, tmp_path) as (http, _telegram, sms):
        status, body = await _ready(http)
        assert status == 200, body
        assert body["status"] == "ready" and body["failing"] == []
        checks = body["checks"]
        assert set(checks) == {"database", "migrations", "sms", "telegram"}
        assert all(c["ok"] for c in checks.values())
        assert checks["migrations"]["detail"] == f"at {head_revision()}"
        assert checks["sms"]["detail"] == "credentials accepted"
        assert checks["telegram"]["detail"] == "webhook set"
        await _ready(http)
        assert sms.account_fetches == 1  # asked at start and remembered, not per probe
        assert (await http.get("/healthz")).status == 200


async def test_rejected_twilio_credentials_are_not_ready(database_url: str, tmp_path: Path) -> None:
    async with _app(database_url, tmp_path, TWILIO_AUTH_TOKEN="not-the-token") as (http, _, sms):
        status, body = await _ready(http)
        assert status == 503
        assert body["failing"] == ["sms"]
        assert body["checks"]["sms"] == {"ok": False, "detail": "credentials rejected (HTTP 401)"}
        assert sms.account_fetches == 1
        assert (await http.get("/healthz")).status == 200  # alive, only not ready


async def test_telegram_not_connected_is_not_ready(database_url: str, tmp_path: Path) -> None:
    telegram_down = {"TELEGRAM_API_BASE_URL": "http://127.0.0.1:1"}  # nothing listens there
    async with _app(database_url, tmp_path, twilio=False, **telegram_down) as (http, _, _sms):
        status, body = await _ready(http)
        assert status == 503
        assert body["failing"] == ["telegram"]
        assert body["checks"]["telegram"]["detail"] == "not connected to Telegram"
        assert "sms" not in body["checks"]  # SMS is not configured: nothing to check


async def test_telegram_polling_ready_then_failing(database_url: str, tmp_path: Path) -> None:
    async with _app(database_url, tmp_path, twilio=False, webhook=False) as (http, telegram, _):
        status, body = await _ready(http)
        assert status == 200, body
        assert body["checks"]["telegram"] == {"ok": True, "detail": "polling"}
        # Another process polls with the same token: Telegram answers 409 from now on.
        for _ in range(5):
            telegram.fail_next(
                "getUpdates", status=409, description="Conflict: terminated by other request"
            )
        for _ in range(500):  # the poll in flight ends within 0.2 s; the next one fails
            status, body = await _ready(http)
            if status != 200:
                break
            await asyncio.sleep(0.01)
        assert status == 503
        assert len(telegram.of("getUpdates")) >= 2
        assert body["checks"]["telegram"] == {"ok": False, "detail": "polling failing"}


async def test_migrations_behind_are_not_ready(database_url: str, tmp_path: Path) -> None:
    head = head_revision()
    assert head is not None
    script = ScriptDirectory.from_config(alembic_config(database_url))
    previous = script.get_revision(head).down_revision
    assert isinstance(previous, str)
    async with _app(database_url, tmp_path, twilio=False) as (http, _, _sms):
        engine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text("UPDATE alembic_version SET version_num = :v"), {"v": previous}
                )
            status, body = await _ready(http)
        finally:
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
            await engine.dispose()
        assert status == 503
        assert body["failing"] == ["migrations"]
        assert body["checks"]["migrations"]["detail"] == (
            f"database at {previous}, code needs {head}"
        )


@pytest.mark.parametrize(
    "bad_url",
    [
        "postgresql://postgres@127.0.0.1:1/nowhere",  # nothing listens there
        "sqlite:///{tmp}/garbage.db",  # a file that is no longer a database
    ],
)
async def test_database_gone_is_not_ready(services: Services, tmp_path: Path, bad_url: str) -> None:
    (tmp_path / "garbage.db").write_bytes(b"not a database " * 512)
    engine = create_engine(bad_url.format(tmp=tmp_path))
    gone = Services(
        settings=services.settings,
        engine=engine,
        sessions=session_factory(engine),
        vault=services.vault,
    )
    try:
        async with TestClient(TestServer(create_app(services.settings, services=gone))) as http:
            status, body = await _ready(http)
    finally:
        await engine.dispose()
    assert status == 503
    assert body["failing"] == ["database", "migrations"]
    assert body["checks"]["database"] == {"ok": False, "detail": "unreachable"}


class _Answers:
    """Stands in for the Twilio sender: gives these answers to the credential check, in turn."""

    def __init__(self, *answers: CredentialCheck) -> None:
        self.answers = list(answers)
        self.asked = 0

    async def check_credentials(self) -> CredentialCheck:
        self.asked += 1
        return self.answers.pop(0)


async def test_only_an_unsettled_answer_is_asked_again() -> None:
    unsettled = CredentialCheck(False, "Twilio unreachable (ClientConnectorError)", final=False)
    sender = _Answers(unsettled, unsettled, CredentialCheck(True, "credentials accepted"))
    watch = CredentialWatch(sender)  # type: ignore[arg-type]
    await watch.run(first_pause=0)
    assert sender.asked == 3 and watch.result is not None and watch.result.ok

    rejected = _Answers(CredentialCheck(False, "credentials rejected (HTTP 401)"))
    watch = CredentialWatch(rejected)  # type: ignore[arg-type]
    await watch.run(first_pause=0)
    assert rejected.asked == 1 and watch.result is not None and not watch.result.ok


async def test_a_process_standing_by_for_the_poller_lease_is_ready(
    database_url: str, tmp_path: Path
) -> None:
    # Telegram allows one poller: another process holds the lease, so this one stands by.
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            held = await repo.take_lease(
                session,
                name=POLL_LEASE,
                holder="the-other-process",
                now=system_clock(),  # the clock _app's services run on
                ttl=timedelta(hours=1),
            )
            assert held
    finally:
        await engine.dispose()
    async with _app(database_url, tmp_path, twilio=False, webhook=False) as (http, telegram, _):
        status, body = await _ready(http)
        assert status == 200, body
        assert body["checks"]["telegram"] == {
            "ok": True,
            "detail": "standing by: another process polls",
        }
        assert telegram.of("getUpdates") == []  # this process never polled

"""Fuzz: hypothesis-made texts over SMS and Telegram, through every intake step; all answered.

Batches of texts from a pool of SMS numbers and Telegram users, so each conversation walks
through intake (language, consent, category, questions, file, status...) on whatever it is
sent. No 5xx, no error or exception in the log, every text stored and processed, every
client answered; then no client name, body or phone is in clear in the database or the log.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from sqlmodel import select

from bot.clock import FakeClock
from bot.conversations import keywords
from storage.models import Client, Direction, Message, OutboxItem
from tests.conftest import BACKEND
from tests.fakes.fake_twilio import form_body, inbound_params, sign
from tests.fakes.telegram_harness import PUBLIC_URL, Harness, User, tg
from tests.reliability.conftest import say

pytestmark = pytest.mark.reliability

__all__ = ["tg"]

BUDGET_SECONDS = 35.0
TEXTS_MAX = 3000
PHONES = [f"+1555077{i:04d}" for i in range(12)]
USERS = [User(770_000 + i, first_name="Marisol") for i in range(12)]
# What clients really send at intake steps, mixed with anything hypothesis makes up.
PLAIN = [
    "hi",
    "HELP",
    "ayuda",
    "START",
    "STATUS",
    "estado",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "9",
    "0",
    "yes",
    "no",
    "si",
    "Español",
    "English",
    "中文",
    "Kreyòl",
    "Tiếng Việt",
    "عربي",
    "Marisol Quintero",
    "my landlord changed the locks",
    "eviction",
    "court 3/14",
    "BACK",
    "MENU",
    "RESTART",
    "?",
    "ok",
    "",
    " ",
    "😀🏠",
    "A" * 400,
    "REF-ABC123",
]


SECRETS = ["Marisol Quintero", "my landlord changed the locks"]


def _distinctive(text: str) -> bool:
    """Long and not a bare identifier (those can match column names in the schema)."""
    return text not in PLAIN and len(text.strip()) >= 8 and not re.fullmatch(r"\w+", text)


def _not_stop(text: str) -> bool:
    found = keywords.match(text)
    return found is None or found.action != keywords.STOP


TEXT = st.one_of(st.sampled_from(PLAIN), st.text(max_size=200)).filter(_not_stop)
ITEM = st.tuples(st.booleans(), st.integers(0, len(PHONES) - 1), TEXT)


async def test_fuzzed_texts_on_both_channels_are_all_answered(
    tg: Harness, clock: FakeClock, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    # The harness keeps Twilio's real 1/s long-code pace; the fuzz is about answers, not pace.
    tg.services.settings.sms_send_rate = 1000.0
    started = time.monotonic()
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    bodies: set[str] = set()

    for user in USERS:
        tg.fake.add_chat(user.id)
    items = _generate(TEXTS_MAX)
    for start in range(0, len(items), 20):
        if time.monotonic() - started > BUDGET_SECONDS:
            break
        for by_sms, who, text in items[start : start + 20]:
            if by_sms:
                params = inbound_params(from_=PHONES[who], body=text)
                resp = await tg.http.post(
                    "/twilio/sms",
                    data=form_body(params),
                    headers={
                        "X-Twilio-Signature": sign(f"{PUBLIC_URL}/twilio/sms", params),
                        "Content-Type": "application/x-www-form-urlencoded",
                    },
                )
                await resp.read()
                status = resp.status
                sent["sms"] += 1
            else:
                status = await tg.post(tg.updates.text(USERS[who], text or "."))
                sent["telegram"] += 1
            statuses[status] += 1
            assert status < 500, (status, by_sms)
            if text in SECRETS or _distinctive(text):
                bodies.add(text)  # made-up or private: must never be in clear at rest
        await tg.settle()
    # The driver ran the batches; now check what they left.
    await tg.settle()
    async with tg.services.sessions() as session:
        inbound = await session.exec(select(Message).where(Message.direction == Direction.IN))
        inbound_rows = inbound.all()
        clients = (await session.exec(select(Client))).all()
        outbox = (await session.exec(select(OutboxItem))).all()
    unprocessed = [m.id for m in inbound_rows if m.status != "processed"]
    assert not unprocessed, unprocessed
    answered = {o.client_id for o in outbox}
    unanswered = [c.id for c in clients if c.id not in answered]
    assert not unanswered, unanswered
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    total = sum(sent.values())
    assert len(inbound_rows) == total
    leaks = _leaks(tg, caplog.text, bodies)
    assert not leaks, leaks
    say(
        f"fuzz: {total} hypothesis texts ({sent['sms']} SMS, {sent['telegram']} Telegram) from "
        f"{len(clients)} clients in {time.monotonic() - started:.0f} s: statuses "
        f"{dict(statuses)}, 0 errors in the log, {len(inbound_rows)} stored and processed, "
        f"every client answered ({len(outbox)} replies)"
    )
    at_rest = "the SQLite file and" if BACKEND == "sqlite" else "(PostgreSQL: no dump checked)"
    say(
        f"secrets at rest: {at_rest} {len(caplog.records)} log records hold none of "
        f"{len(PHONES)} phones, {len(bodies)} distinct texts or the client name"
    )


def _generate(n: int) -> list[tuple[bool, int, str]]:
    """``n`` inbound texts drawn by hypothesis (derandomized: the same on every run)."""
    out: list[tuple[bool, int, str]] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(ITEM)
    def collect(item: tuple[bool, int, str]) -> None:
        out.append(item)

    collect()
    return out


def _leaks(tg: Harness, log_text: str, bodies: set[str]) -> list[str]:
    blob = b""
    url = make_url(tg.services.settings.database_url)
    if url.drivername.startswith("sqlite") and url.database:
        for suffix in ("", "-wal"):
            path = Path(url.database + suffix)
            if path.exists():
                blob += path.read_bytes()
    found: list[str] = []
    for secret in [*PHONES, *SECRETS, *bodies]:
        for needle in {secret, secret.lstrip("+")}:
            raw = needle.encode()
            if (blob and raw in blob) or needle in log_text:
                found.append(needle[:20])
    return found

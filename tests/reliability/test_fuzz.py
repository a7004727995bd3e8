"""Fuzz: 10,000 hypothesis-made texts over SMS and Telegram, at every intake step; all answered.

Texts from a moving window of SMS numbers and Telegram users, so new clients keep arriving
while others are deep in intake or done; half the texts fit the client's step (so they get
past the early questions), half are anything hypothesis makes up. Texts go in batches of one
per client; after each, the replies the fakes received are read: every text answered, each
reply in the client's language. No 5xx, no error or exception in the log, every text stored
and processed; then no client name, body or phone is in clear in the database (the SQLite
file, or a pg_dump on PostgreSQL) or the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import subprocess
import time
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from sqlmodel import select

from bot import i18n, keywords
from bot.clock import FakeClock
from storage import repo
from storage.models import Channel, ChannelIdentity, Client, ConversationState, Direction, Message
from tests.conftest import BACKEND
from tests.fakes.fake_twilio import form_body, inbound_params, sign
from tests.fakes.telegram_harness import GROUP_ID, PUBLIC_URL, Harness, User, tg
from tests.reliability.conftest import say

pytestmark = pytest.mark.reliability

__all__ = ["tg"]

# 10,000 texts by default: about 3.5 minutes on SQLite on 2 cores (8,000 took 172 s). A smaller
# RELIABILITY_FUZZ_TEXTS (500, say) gives a quick local run.
TEXTS = int(os.environ.get("RELIABILITY_FUZZ_TEXTS", "10000"))
# Hypothesis draws a slot (0..11) and a channel; the slot picks from a window of the pool that
# moves on one client each batch, so new clients keep arriving (language menu, consent...) while
# others are deep in intake or done: texts land at every step, not only at the first ones.
SLOTS = 12
POOL = 60
PHONES = [f"+1555077{i:04d}" for i in range(POOL)]
USERS = [User(770_000 + i, first_name="Marisol") for i in range(POOL)]
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


SECRETS = ["Marisol Quintero", "my landlord changed the locks", "Krumbleton Holdings LLC"]
# Answers that fit an intake step: sent half the time to a client at that step, so clients get
# past the first questions to the later ones (and the summary, the PIN, the end) as people do.
FITS: dict[str, list[str]] = {
    "language": ["1", "2", "3", "4", "5", "6"],
    "welcome": ["yes", "si", "no"],
    "name": ["Marisol Quintero"],
    "zip": ["10027", "11201"],
    "category": ["1", "2", "3", "4"],
    "description": ["my landlord changed the locks"],
    "has_deadline": ["yes", "no"],
    "deadline": ["3/15", "NOT SURE"],
    "danger": ["1", "2", "3"],
    "household": ["3", "1"],
    "income": ["1200", "0"],
    "other_side": ["SKIP", "Krumbleton Holdings LLC"],
    "safe_to_text": ["yes", "no"],
    "safe_option": ["1", "2"],
    "safe_time": ["weekdays after 5pm"],
    "pin": ["4821"],
    "summary": ["yes", "1"],
}


def _product_text() -> str:
    """The app's own source, data and catalogs: hypothesis also draws string constants from it."""
    root = Path(__file__).resolve().parents[2]
    files = [*root.glob("bot/**/*.py"), *root.glob("storage/**/*.py"), *root.glob("bot/data/*")]
    files += root.glob("bot/locales/**/*.po")
    return "\n".join(f.read_text(encoding="utf-8", errors="replace") for f in files)


PRODUCT_TEXT = _product_text()


def _distinctive(text: str) -> bool:
    """A text only a client could have written: long, not a bare identifier (those can match
    column names in the schema), and not one of the app's own strings (a route, an event name
    or a bot reply may rightly be in the log or in clear)."""
    return (
        text not in PLAIN
        and len(text.strip()) >= 8
        and not re.fullmatch(r"\w+", text)
        and text not in PRODUCT_TEXT
    )


def _not_stop(text: str) -> bool:
    found = keywords.match(text)
    return found is None or found.action != keywords.STOP


TEXT = st.one_of(st.sampled_from(PLAIN), st.text(max_size=200)).filter(_not_stop)
# (by SMS?, slot, an answer that fits the step (its index) or None, a made-up text)
ITEM = st.tuples(st.booleans(), st.integers(0, SLOTS - 1), st.none() | st.integers(0, 5), TEXT)


@dataclass
class _Snapshot:
    """Each client's language and intake step, by address, between two batches."""

    language: dict[str, str]
    step: dict[str, str]


async def test_fuzzed_texts_on_both_channels_are_all_answered(
    tg: Harness, clock: FakeClock, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    # The harness keeps Twilio's real 1/s long-code pace; the fuzz is about answers, not pace.
    tg.services.settings.sms_send_rate = 1000.0
    started = time.monotonic()
    sent: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    steps: Counter[str] = Counter()  # the intake step a client was at when its texts arrived
    replies: Counter[str] = Counter()  # replies read by the fakes, by the language checked
    wrong: list[str] = []
    unanswered: list[str] = []
    bodies: set[str] = set()
    languages = _LanguageOf()
    default = tg.services.settings.default_language

    for user in USERS:
        tg.fake.add_chat(user.id)
    items = _generate(TEXTS)
    generated = time.monotonic() - started
    index = _AddressIndex(tg)
    before = await index.snapshot()
    read_sms, read_tg, batches = 0, 0, 0
    spoke: set[str] = set()
    # HELP/START in another language is answered in that language (keywords.reply_language).
    asked_in: dict[str, set[str]] = {}

    async def check_batch() -> None:
        """Settle, then read what each client of the batch got and in which language."""
        nonlocal before, read_sms, read_tg, batches
        await tg.settle()
        after = await index.snapshot()
        got: list[tuple[str, str]] = [(m.to, m.body) for m in tg.twilio.messages[read_sms:]]
        calls = tg.fake.sent()
        got += [(str(c.chat_id), c.text) for c in calls[read_tg:] if c.chat_id != GROUP_ID]
        read_sms, read_tg = len(tg.twilio.messages), len(calls)
        for address in spoke - {to for to, _ in got}:
            unanswered.append(f"batch {batches}: {_who(address)}")
        for to, body in got:
            # One text per client per batch: the reply is in the language the client had
            # before it, or the one it just picked (a new client: the default until then).
            allowed = {before.language.get(to, default), after.language.get(to, default)}
            allowed |= asked_in.get(to, set())
            found = languages(body)
            if found & allowed:
                replies[min(found & allowed)] += 1
            else:
                wrong.append(f"batch {batches}: {_who(to)} reads {sorted(allowed)}, got {found}")
        before = after
        batches += 1
        spoke.clear()
        asked_in.clear()

    # One text per client per batch; a client's next text waits for the next batch (and
    # every batch starts with the texts that waited), so each batch has most active clients.
    waiting: deque[tuple[str, bool, int, int | None, str]] = deque()
    for n, (by_sms, slot, fit, made_up) in enumerate(items):
        # The window of active clients moves on one client every 100 texts.
        who = (slot + n // 100) % POOL
        address = PHONES[who] if by_sms else str(USERS[who].id)
        waiting.append((address, by_sms, who, fit, made_up))
    while waiting:
        later: deque[tuple[str, bool, int, int | None, str]] = deque()
        while waiting and len(spoke) < 2 * SLOTS:
            item = waiting.popleft()
            if item[0] in spoke:
                later.append(item)
                continue
            address, by_sms, who, fit, made_up = item
            step = before.step.get(address, "new client")
            steps[step] += 1
            answers = FITS.get(step.rpartition("/")[2])
            text = answers[fit % len(answers)] if answers and fit is not None else made_up
            spoke.add(address)
            keyword = keywords.match(text)
            if keyword is not None:
                asked_in.setdefault(address, set()).add(keyword.language)
            if by_sms:
                status = await _sms(tg, PHONES[who], text)
                sent["sms"] += 1
            else:
                status = await tg.post(tg.updates.text(USERS[who], text or "."))
                sent["telegram"] += 1
            statuses[status] += 1
            assert status < 500, (status, by_sms)
            if text in SECRETS or _distinctive(text):
                bodies.add(text)  # made-up or private: must never be in clear at rest
        await check_batch()
        waiting = later + waiting
    assert not unanswered, unanswered[:10]
    assert not wrong, wrong[:10]
    async with tg.services.sessions() as session:
        inbound = await session.exec(select(Message).where(Message.direction == Direction.IN))
        inbound_rows = inbound.all()
        clients = (await session.exec(select(Client))).all()
    unprocessed = [m.id for m in inbound_rows if m.status != "processed"]
    assert not unprocessed, unprocessed
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]
    total = sum(sent.values())
    assert total == TEXTS and len(inbound_rows) == total
    dump = await _pg_dump(tg) if BACKEND == "postgresql" else b""
    leaks = _leaks(tg, caplog.text, bodies, dump)
    assert not leaks, leaks
    elapsed = time.monotonic() - started
    say(
        f"fuzz: {total} hypothesis texts ({sent['sms']} SMS, {sent['telegram']} Telegram) from "
        f"{len(clients)} clients in {elapsed:.0f} s ({generated:.0f} s generating): statuses "
        f"{dict(statuses)}, 0 errors in the log, {len(inbound_rows)} stored and processed"
    )
    top = ", ".join(f"{step} {n}" for step, n in steps.most_common())
    say(
        f"fuzz: texts arrived at {len(steps)} different steps ({top}); every text "
        f"answered (in {batches} batches, one text per client each), each of "
        f"{sum(replies.values())} replies in the client's language ({dict(replies)})"
    )
    if BACKEND == "sqlite":
        at_rest = "the SQLite file and"
    else:
        at_rest = f"a pg_dump of the test database ({len(dump) // 1024} KiB) and"
    say(
        f"secrets at rest: {at_rest} {len(caplog.records)} log records hold none of "
        f"{2 * POOL} phones and chat ids, {len(bodies)} distinct texts or the client name"
    )


async def _sms(tg: Harness, phone: str, text: str) -> int:
    """A signed inbound SMS, as Twilio posts it; the HTTP status (settling is per batch)."""
    params = inbound_params(from_=phone, body=text)
    resp = await tg.http.post(
        "/twilio/sms",
        data=form_body(params),
        headers={
            "X-Twilio-Signature": sign(f"{PUBLIC_URL}/twilio/sms", params),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    await resp.read()
    return resp.status


def _who(address: str) -> str:
    """A pool member by position (the address itself must not reach a report)."""
    if address in PHONES:
        return f"SMS client {PHONES.index(address)}"
    return f"Telegram client {int(address) - USERS[0].id}"


class _AddressIndex:
    """Finds the pool's clients by the blind index of their phone or chat id."""

    def __init__(self, tg: Harness) -> None:
        self.tg = tg
        vault = tg.services.vault
        self.by_hash: dict[str, str] = {}
        pool = [(Channel.SMS, p) for p in PHONES] + [(Channel.TELEGRAM, str(u.id)) for u in USERS]
        for channel, address in pool:
            for digest in vault.blind_indexes(repo.address_index_kind(channel), address):
                self.by_hash[digest] = address

    async def snapshot(self) -> _Snapshot:
        """Every pool client's language and (flow, step) now, keyed by phone or chat id."""
        async with self.tg.services.sessions() as session:
            idents = (await session.exec(select(ChannelIdentity))).all()
            clients = {c.id: c for c in (await session.exec(select(Client))).all()}
            convs = {c.client_id: c for c in (await session.exec(select(ConversationState))).all()}
        snap = _Snapshot({}, {})
        for ident in idents:
            address = self.by_hash.get(ident.address_hash)
            if address is None:
                continue
            snap.language[address] = clients[ident.client_id].language
            conv = convs.get(ident.client_id)
            snap.step[address] = f"{conv.flow}/{conv.state}" if conv else "no conversation"
        return snap


class _LanguageOf:
    """Which languages a reply is written in, from pieces of text unique to one catalog."""

    def __init__(self) -> None:
        pieces: dict[str, set[str]] = {}
        msgids = list(i18n._catalog("es"))
        for lang in i18n.available_languages():
            pieces[lang] = set()
            for msgid in msgids:
                for piece in re.split(r"\{[^{}]*\}|\n+", i18n.gettext(lang, msgid)):
                    piece = piece.strip(" .,:;!?¿¡()-*•")
                    # Long enough to say something; CJK packs more into fewer characters.
                    if len(piece) >= 12 or (len(piece) >= 4 and not piece.isascii()):
                        pieces[lang].add(piece)
        shared = Counter(p for found in pieces.values() for p in found)
        self.pieces = {lang: {p for p in found if shared[p] == 1} for lang, found in pieces.items()}
        # Short texts ("¿Es urgente?" with buttons on Telegram) hold no piece long enough to
        # tell: a line that is a whole translation of one language alone tells instead.
        whole: dict[str, set[str]] = {
            lang: {i18n.gettext(lang, m).strip() for m in msgids if "{" not in m} for lang in pieces
        }
        common = Counter(t for found in whole.values() for t in found)
        self.whole = {
            lang: {t for t in found if t and common[t] == 1} for lang, found in whole.items()
        }
        self._seen: dict[str, frozenset[str]] = {}

    def __call__(self, body: str) -> frozenset[str]:
        if body not in self._seen:
            lines = {line.strip() for line in body.splitlines()}
            self._seen[body] = frozenset(
                lang
                for lang, found in self.pieces.items()
                if any(p in body for p in found) or lines & self.whole[lang]
            )
        return self._seen[body]


def _generate(n: int) -> list[tuple[bool, int, int | None, str]]:
    """``n`` inbound texts drawn by hypothesis (derandomized: the same on every run)."""
    out: list[tuple[bool, int, int | None, str]] = []

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(ITEM)
    def collect(item: tuple[bool, int, int | None, str]) -> None:
        out.append(item)

    collect()
    return out


async def _pg_dump(tg: Harness) -> bytes:
    """A plain-SQL dump of the test database, as a backup would hold it."""
    url = make_url(tg.services.settings.database_url).render_as_string(hide_password=False)
    pg_dump = shutil.which("pg_dump")
    assert pg_dump, "PostgreSQL runs need pg_dump to check the secrets at rest"
    done = await asyncio.to_thread(
        subprocess.run,
        [pg_dump, "--no-owner", "--dbname", url],
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    # The dump holds the rows: the client table and clear columns (a status) are in it.
    assert b"COPY public.client " in done.stdout and b"processed" in done.stdout
    return done.stdout


def _leaks(tg: Harness, log_text: str, bodies: set[str], dump: bytes) -> list[str]:
    blob = dump
    url = make_url(tg.services.settings.database_url)
    if url.drivername.startswith("sqlite") and url.database:
        for suffix in ("", "-wal"):
            path = Path(url.database + suffix)
            if path.exists():
                blob += path.read_bytes()
    assert blob, "no database bytes to search"
    found: list[str] = []
    chat_ids = [str(u.id) for u in USERS]
    for secret in [*PHONES, *SECRETS, *bodies]:
        for needle in {secret, secret.lstrip("+")}:
            raw = needle.encode()
            if raw in blob or needle in log_text:
                found.append(needle[:20])
    # Chat ids are bare numbers (they could match a count in a dump); the log must not have them.
    found += [c for c in chat_ids if c in log_text]
    return found

"""`probono broadcast`: the dry run a coordinator reads, confirmation, sending, status, cancel."""

# ruff: noqa: F811 - test functions take the imported `cli` fixture as a parameter

from __future__ import annotations

import asyncio
import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from bot.channels.twilio import TwilioSender
from bot.dispatch import Dispatcher
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Broadcast, Channel, OutboxItem, OutboxStatus, ScheduledItem
from tests.conftest import make_settings
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    running_fake_twilio,
)

# The `cli` fixture is the admin commands' one: test functions take it by name.
from tests.handlers.test_cli_admin import CLI, cli, snapshot  # noqa: F401

EN = "Office closed Monday."
ES = "La oficina está cerrada el lunes."


class Terminal(io.StringIO):
    """Standard input that says it is a terminal, with the coordinator's answer in it."""

    def isatty(self) -> bool:
        return True


async def add(services: Services, i: int, language: str, channel: str = Channel.SMS) -> int:
    async with transaction(services.sessions) as session:
        client = await repo.create_client(
            session,
            vault=services.vault,
            channel=channel,
            address=f"+1202555{i:04d}" if channel == Channel.SMS else str(9000 + i),
            language=language,
        )
    assert client.id is not None
    return client.id


@pytest.fixture
async def clients(services: Services) -> list[int]:
    """Three English SMS clients, one Spanish, one Haitian Creole on Telegram, one opted out."""
    ids = [await add(services, i, "en") for i in range(3)]
    ids.append(await add(services, 10, "es"))
    ids.append(await add(services, 11, "ht", Channel.TELEGRAM))
    opted = await add(services, 12, "es")
    async with transaction(services.sessions) as session:
        ident = await repo.reply_identity(session, client_id=opted)
        assert ident is not None
        await repo.record_consent(session, identity=ident, kind="opt_out", source="keyword")
    return ids


async def outbox(services: Services) -> list[OutboxItem]:
    async with services.sessions() as session:
        return list((await session.exec(select(OutboxItem).order_by(col(OutboxItem.id)))).all())


async def test_help_lists_every_language_and_the_segment_keys(cli: CLI) -> None:
    run = await cli("broadcast", "--help")
    assert run.code == 0
    text = " ".join(run.out.split())
    for flag in ("--text-en", "--text-es", "--text-zh", "--text-vi", "--text-ar", "--text-ht"):
        assert flag in text
    for key in ("language=es", "category=housing", "status=TEXT", "attorney=TELEGRAM_ID"):
        assert key in text
    assert "appointment-date=YYYY-MM-DD" in text


async def test_dry_run_shows_everything_and_sends_nothing(
    cli: CLI, services: Services, clients: list[int]
) -> None:
    before = await snapshot(services)
    run = await cli("broadcast", "--segment", "all", "--text-en", EN, "--text-es", ES, "--dry-run")
    assert run.code == 0, run.err
    out = run.out
    assert "Recipients: 5 (sms 4, telegram 1)" in out
    assert "  en: 3 (sms 3)" in out and "  es: 1 (sms 1)" in out
    assert "  ht: 1 (telegram 1)" in out
    assert "Missing texts: ht (1) - refused unless a fallback language is chosen" in out
    assert "Refused as it stands: no text for ht (1): add --text-ht" in out
    assert "Skipped: 1 opted out" in out
    assert "en: 1 segment (GSM-7, 21 units) x 3 = 3" in out
    assert "es: 1 segment (UCS-2, 33 units) x 1 = 2" in out  # with the first-contact notice
    assert "total: 5 segments, about $0.04 at $0.0079 a segment" in out
    assert f"[en] {EN}" in out and f"[es] {ES}" in out
    assert await snapshot(services) == before


async def test_yes_sends_one_row_each_and_prints_the_id_last(
    cli: CLI, services: Services, clients: list[int]
) -> None:
    run = await cli(
        "broadcast", "--segment", "all", "--text-en", EN, "--text-es", ES,
        "--fallback", "en", "--yes",
    )  # fmt: skip
    assert run.code == 0, run.err
    broadcast_id = int(run.last_line)
    assert "queued for 5 clients" in run.out
    assert "pending:   5" in run.out and "skipped:   1 (1 opted out)" in run.out
    rows = await outbox(services)
    assert {r.broadcast_id for r in rows} == {broadcast_id}
    sending = [r for r in rows if r.status == OutboxStatus.PENDING]
    assert sorted(r.client_id or 0 for r in sending) == sorted(clients)
    assert "Queueing: 100% (6/6)" in run.err  # progress goes to stderr, not stdout
    async with services.sessions() as session:
        row = await session.get(Broadcast, broadcast_id)
    assert row is not None and row.texts == {"en": EN, "es": ES} and row.fallback_language == "en"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--text-en", EN, "--yes"], "--segment is required"),
        (["--segment", "all", "--yes"], "at least one text"),
        (["--segment", "colour=red", "--text-en", EN, "--yes"], "unknown segment key 'colour'"),
        (["--segment", "all", "--text-en", EN, "--yes"], "no text for es (1), ht (1)"),
        (["--segment", "all", "--text-en", EN, "--fallback", "en"], "without --yes"),
        (["--segment", "all", "--text-en", EN, "--fallback", "es", "--yes"], "es has no text"),
        (["--segment", "language=vi", "--text-en", EN, "--yes"], "nobody to send to"),
        (["--segment", "all", "--text-en", EN, "--fallback", "en", "--yes", "--at", "soon"],
         "not an ISO 8601 time"),
        (["--segment", "all", "--text-en", EN, "--fallback", "en", "--yes", "--at",
          "2020-01-01T09:00"], "in the past"),
    ],
)  # fmt: skip
async def test_bad_input_is_one_line_and_changes_nothing(
    cli: CLI, services: Services, clients: list[int], argv: list[str], fragment: str
) -> None:
    before = await snapshot(services)
    run = await cli("broadcast", *argv)
    run.assert_one_line_error(fragment)
    assert await snapshot(services) == before


async def test_unknown_language_flag_is_refused(cli: CLI, services: Services) -> None:
    run = await cli("broadcast", "--segment", "all", "--text-fr", "Bonjour", "--yes")
    assert run.code == 2
    assert run.err.strip().splitlines()[-1].endswith("unrecognized arguments: --text-fr")
    assert await outbox(services) == []


@pytest.mark.parametrize(("answer", "sent"), [("yes\n", True), ("no\n", False)])
async def test_asks_on_a_terminal_after_showing_the_dry_run(
    cli: CLI,
    services: Services,
    clients: list[int],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    sent: bool,
) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal(answer))
    before = await snapshot(services)
    run = await cli("broadcast", "--segment", "language=en", "--text-en", EN)
    assert "Recipients: 3 (sms 3)" in run.out and "Send to 3 clients?" in run.out
    if sent:
        assert run.code == 0, run.err
        assert len(await outbox(services)) == 3
    else:
        run.assert_one_line_error("not sent")
        assert await snapshot(services) == before


async def test_at_schedules_it(cli: CLI, services: Services, clients: list[int]) -> None:
    when = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    run = await cli(
        "broadcast", "--segment", "language=en", "--text-en", EN, "--yes",
        "--at", when.isoformat(),
    )  # fmt: skip
    assert run.code == 0, run.err
    broadcast_id = int(run.last_line)
    assert "scheduled for" in run.out and "to 3 clients" in run.out
    assert await outbox(services) == []
    async with services.sessions() as session:
        item = (await session.exec(select(ScheduledItem))).one()
    assert (item.kind, item.unique_key, item.due_at) == (
        "broadcast",
        f"broadcast:{broadcast_id}",
        when,
    )
    status = await cli("broadcast", "status", str(broadcast_id))
    assert status.code == 0 and "scheduled" in status.out


async def test_status_and_cancel(cli: CLI, services: Services, clients: list[int]) -> None:
    run = await cli("broadcast", "--segment", "language=en", "--text-en", EN, "--yes")
    broadcast_id = run.last_line
    status = await cli("broadcast", "status", broadcast_id)
    assert status.code == 0 and "pending:   3" in status.out
    cancel = await cli("broadcast", "cancel", broadcast_id)
    assert cancel.code == 0, cancel.err
    assert "cancelled 3 messages not yet sent" in cancel.out
    assert "cancelled: 3" in cancel.out and "pending:   0" in cancel.out
    assert {r.status for r in await outbox(services)} == {OutboxStatus.CANCELLED}
    resume = await cli("broadcast", "resume", broadcast_id)
    resume.assert_one_line_error("was cancelled")
    missing = await cli("broadcast", "status", "999")
    missing.assert_one_line_error("no broadcast 999")
    bad = await cli("broadcast", "cancel", "x")
    bad.assert_one_line_error("needs a broadcast id")
    mixed = await cli("broadcast", "status", broadcast_id, "--text-en", "hi")
    mixed.assert_one_line_error("takes no --text-en")
    typo = await cli("broadcast", "stats", broadcast_id)
    typo.assert_one_line_error("unknown action 'stats'")


async def test_resume_adds_only_what_is_missing(
    cli: CLI, services: Services, clients: list[int]
) -> None:
    run = await cli("broadcast", "--segment", "language=en", "--text-en", EN, "--yes")
    broadcast_id = run.last_line
    late = await add(services, 50, "en")
    resume = await cli("broadcast", "resume", broadcast_id)
    assert resume.code == 0, resume.err
    rows = await outbox(services)
    assert len(rows) == 4 and sorted(r.client_id or 0 for r in rows) == sorted([*clients[:3], late])


async def test_wait_follows_the_dispatcher_and_ends_with_the_report(
    cli: CLI, services: Services, database_url: str, tmp_path: Path
) -> None:
    for i in range(20):
        await add(services, i, "es" if i % 2 else "en")
    async with running_fake_twilio() as fake:
        sending = make_settings(
            database_url,
            tmp_path / "dispatcher",
            SMS_SEND_RATE=100000,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM_NUMBER=FROM_NUMBER,
            TWILIO_API_BASE_URL=fake.base_url,
            PROBONO_ENCRYPTION_KEYS=services.settings.probono_encryption_keys,
        )
        server = Services.build(sending)
        sender = TwilioSender.from_settings(sending, timeout=2.0)
        assert sender is not None
        server.senders[Channel.SMS] = sender
        dispatcher = Dispatcher(server, poll_interval=0.05)
        await dispatcher.start()
        try:
            run = await cli(
                "broadcast", "--segment", "all", "--text-en", EN, "--text-es", ES,
                "--yes", "--wait",
            )  # fmt: skip
        finally:
            await dispatcher.stop()
            await server.close()
        assert run.code == 0, run.err
        assert "Sending: 100% (20/20)" in run.err
        assert ": done" in run.out and "sent:      20 (0 delivered)" in run.out
        assert "pending:   0" in run.out
        assert run.last_line.isdigit()
        assert len(fake.messages) == 20
        assert len({m.to for m in fake.messages}) == 20
        assert sum(m.body.startswith(ES) for m in fake.messages) == 10
    async with services.sessions() as session:
        count = (await session.exec(select(func.count()).select_from(OutboxItem))).one()
    assert count == 20
    await asyncio.sleep(0)

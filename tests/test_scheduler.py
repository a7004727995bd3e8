"""The scheduler: each reminder once and on time, coalesced after downtime, never twice across
restarts or processes; check-ins for quiet cases. Time is a FakeClock, never slept through."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from bot.app import create_app
from bot.casework import appointments
from bot.casework.base import CLI, CaseworkError
from bot.clock import FakeClock
from bot.config import Settings
from bot.scheduler import Scheduler
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Appointment, ScheduledItem, ScheduleKind, ScheduleStatus
from tests.casework import (
    appointment,
    book,
    case_row,
    client_texts,
    open_case,
    reminder_rows,
    sent,
)
from tests.conftest import BACKEND, make_settings

STAFF_CHAT = -100777
START = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # the conftest clock: 10:00 in New York
HEARING = datetime(2026, 3, 12, 14, 30, tzinfo=UTC)  # ten days later, 10:30 in New York


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        TELEGRAM_STAFF_CHAT_ID=str(STAFF_CHAT),
        PROGRAM_NAME="Legal Aid Line",
    )


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[Services]:
    svc = Services.build(settings, clock=clock)
    yield svc
    await svc.close()


def offsets(rows: list[ScheduledItem]) -> dict[int, str]:
    return {int((r.payload or {})["offset"]): r.status for r in rows}


async def test_each_offset_fires_once_at_its_time(services: Services, clock: FakeClock) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    scheduler = Scheduler(services)

    assert (await scheduler.tick()).done == 0
    assert await client_texts(services, kind="reminder") == []
    for before, offset in enumerate((timedelta(days=7), timedelta(days=1), timedelta(hours=2))):
        clock.set(HEARING - offset - timedelta(seconds=1))
        await scheduler.tick()
        assert len(await client_texts(services, kind="reminder")) == before  # not early
        clock.set(HEARING - offset)
        assert (await scheduler.tick()).done == 1
        assert len(await client_texts(services, kind="reminder")) == before + 1
        assert (await scheduler.tick()).claimed == 0  # and never again
    texts = await client_texts(services, kind="reminder")
    assert len(texts) == 3
    # Date and time in the client's zone (New York), the place and the list, and the choices.
    assert texts[0].startswith(
        "Reminder from Legal Aid Line: your court hearing is on Thu, Mar 12, 2026, 10:30 AM "
        "at Housing Court, 111 Centre St, Room 4. Please bring: your lease and rent receipts."
    )
    assert texts[0].endswith("\n\n1. Confirm\n2. I cannot come")
    assert set(offsets(await reminder_rows(services, appt_id)).values()) == {"done"}
    reminders = await sent(services, kind="reminder")
    assert all(not r.urgent for r in reminders)  # quiet hours apply to reminders
    assert len({r.dedupe_key for r in reminders}) == 3


async def test_the_client_is_told_at_booking(services: Services) -> None:
    world = await open_case(services)
    await book(services, world, HEARING)
    [text] = await client_texts(services, kind="appointment")
    assert text == (
        "Legal Aid Line: your court hearing is booked for Thu, Mar 12, 2026, 10:30 AM at "
        "Housing Court, 111 Centre St, Room 4. Please bring: your lease and rent receipts. "
        "We will remind you before it."
    )


async def test_offsets_already_past_at_booking_are_skipped(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    soon = START + timedelta(hours=30)
    appt_id = await book(services, world, soon)
    assert offsets(await reminder_rows(services, appt_id)) == {
        7 * 86400: "skipped",
        86400: "pending",
        7200: "pending",
    }
    scheduler = Scheduler(services)
    await scheduler.tick()
    assert await client_texts(services, kind="reminder") == []  # the 7-day one is not sent late
    clock.set(soon - timedelta(days=1))
    await scheduler.tick()
    clock.set(soon - timedelta(hours=2))
    await scheduler.tick()
    assert len(await client_texts(services, kind="reminder")) == 2


async def test_a_time_in_the_past_is_refused(services: Services) -> None:
    world = await open_case(services)
    with pytest.raises(CaseworkError, match="passed"):
        await book(services, world, START - timedelta(minutes=1))
    async with services.sessions() as session:
        assert (await session.exec(select(Appointment))).all() == []


async def test_reschedule_tells_the_client_and_recomputes(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    scheduler = Scheduler(services)
    clock.set(HEARING - timedelta(days=7))
    await scheduler.tick()
    assert len(await client_texts(services, kind="reminder")) == 1

    later = HEARING + timedelta(days=14)
    async with transaction(services.sessions) as session:
        appt = await session.get(Appointment, appt_id)
        assert appt is not None
        await appointments.move(session, services, appt, later, place="Room 9", actor=CLI)
    [moved] = [t for t in await client_texts(services, kind="appointment") if "MOVED" in t]
    assert moved == (
        "Legal Aid Line: your court hearing has MOVED from Thu, Mar 12, 2026, 10:30 AM to "
        "Thu, Mar 26, 2026, 10:30 AM at Room 9. Please bring: your lease and rent receipts."
    )
    rows = await reminder_rows(services, appt_id)
    assert {r.due_at for r in rows} == {
        later - timedelta(days=7),
        later - timedelta(days=1),
        later - timedelta(hours=2),
    }
    assert set(offsets(rows).values()) == {"pending"}  # the 7-day one is due again

    # The old times pass silently; the new ones fire.
    clock.set(HEARING - timedelta(hours=2))
    await scheduler.tick()
    assert len(await client_texts(services, kind="reminder")) == 1
    for offset in (timedelta(days=7), timedelta(days=1), timedelta(hours=2)):
        clock.set(later - offset)
        await scheduler.tick()
    texts = await client_texts(services, kind="reminder")
    assert len(texts) == 4
    assert all("Mar 26, 2026" in t and "Room 9" in t for t in texts[1:])


async def test_cancellation_withdraws_pending_reminders(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    scheduler = Scheduler(services)
    clock.set(HEARING - timedelta(days=7))
    await scheduler.tick()
    async with transaction(services.sessions) as session:
        appt = await session.get(Appointment, appt_id)
        assert appt is not None
        await appointments.cancel(session, services, appt, actor=CLI)
    assert offsets(await reminder_rows(services, appt_id)) == {
        7 * 86400: "done",
        86400: "cancelled",
        7200: "cancelled",
    }
    [cancelled] = [t for t in await client_texts(services, kind="appointment") if "CANCEL" in t]
    assert cancelled == (
        "Legal Aid Line: your court hearing on Thu, Mar 12, 2026, 10:30 AM is CANCELLED. "
        "We will contact you about what happens next."
    )
    clock.set(HEARING - timedelta(hours=1))
    assert (await scheduler.tick()).claimed == 0
    assert len(await client_texts(services, kind="reminder")) == 1


async def test_downtime_coalesces_to_the_latest_reminder(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    # Down for nine days: the 7-day, 1-day and 2-hour reminders are all overdue at restart.
    clock.set(HEARING - timedelta(hours=1))
    report = await Scheduler(services).tick()
    assert (report.done, report.skipped) == (1, 2)
    [text] = await client_texts(services, kind="reminder")
    assert "Thu, Mar 12, 2026, 10:30 AM" in text
    assert offsets(await reminder_rows(services, appt_id)) == {
        7 * 86400: "skipped",
        86400: "skipped",
        7200: "done",
    }


async def test_an_appointment_already_past_sends_nothing(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    clock.set(HEARING + timedelta(hours=3))
    report = await Scheduler(services).tick()
    assert (report.done, report.skipped) == (0, 3)
    assert await client_texts(services, kind="reminder") == []
    assert set(offsets(await reminder_rows(services, appt_id)).values()) == {"skipped"}


async def test_a_restart_never_resends(settings: Settings, clock: FakeClock) -> None:
    first = Services.build(settings, clock=clock)
    world = await open_case(first)
    await book(first, world, HEARING)
    clock.set(HEARING - timedelta(days=1))
    assert (await Scheduler(first).tick()).done == 1  # the 1-day one (7-day coalesced)
    await first.close()

    second = Services.build(settings, clock=clock)
    try:
        assert (await Scheduler(second).tick()).claimed == 0
        assert len(await client_texts(second, kind="reminder")) == 1
    finally:
        await second.close()


async def test_a_claim_left_by_a_crash_is_taken_over_after_its_lease(
    settings: Settings, clock: FakeClock
) -> None:
    crashed = Services.build(settings, clock=clock)
    world = await open_case(crashed)
    appt_id = await book(crashed, world, HEARING)
    clock.set(HEARING - timedelta(days=7))
    # A process claims the due row, then dies before doing its work.
    async with transaction(crashed.sessions) as session:
        ids = await repo.claim_scheduled(
            session,
            now=clock(),
            lease_until=clock() + timedelta(minutes=5),
            kinds=[ScheduleKind.REMINDER],
        )
    assert len(ids) == 1
    await crashed.close()

    survivor = Services.build(settings, clock=clock)
    try:
        scheduler = Scheduler(survivor)
        assert (await scheduler.tick()).claimed == 0  # the lease still holds
        clock.advance(minutes=6)
        assert (await scheduler.tick()).done == 1
        assert (await scheduler.tick()).claimed == 0
        assert len(await client_texts(survivor, kind="reminder")) == 1
        assert offsets(await reminder_rows(survivor, appt_id))[7 * 86400] == "done"
    finally:
        await survivor.close()


async def test_a_failing_handler_rolls_back_and_is_retried(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    calls = 0

    async def flaky(session, services_, item):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        from bot.conversations.reminders import send_reminder

        status = await send_reminder(session, services_, item)
        if calls == 1:
            raise RuntimeError("the database went away mid-way")
        return status

    scheduler = Scheduler(services, handlers={ScheduleKind.REMINDER: flaky})
    clock.set(HEARING - timedelta(days=7))
    assert (await scheduler.tick()).failed == 1
    # The reminder written before the failure was rolled back with it.
    assert await client_texts(services, kind="reminder") == []
    assert (await scheduler.tick()).claimed == 0  # held back for a while
    clock.advance(minutes=3)
    assert (await scheduler.tick()).done == 1
    assert len(await client_texts(services, kind="reminder")) == 1
    rows = await reminder_rows(services, appt_id)
    assert rows[0].payload is not None and rows[0].payload["attempts"] == 1


async def test_a_row_that_keeps_failing_is_given_up(services: Services, clock: FakeClock) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)

    async def broken(session, services_, item):  # type: ignore[no-untyped-def]
        raise RuntimeError("always")

    scheduler = Scheduler(services, handlers={ScheduleKind.REMINDER: broken})
    clock.set(HEARING - timedelta(days=7))
    for _ in range(5):
        assert (await scheduler.tick()).failed == 1
        clock.advance(minutes=3)
    assert (await scheduler.tick()).claimed == 0
    assert offsets(await reminder_rows(services, appt_id))[7 * 86400] == "skipped"


async def test_kinds_without_a_handler_wait(services: Services, clock: FakeClock) -> None:
    async with transaction(services.sessions) as session:
        await repo.upsert_scheduled(
            session,
            kind="someday",
            unique_key="someday:1",
            due_at=clock() - timedelta(hours=1),
            now=clock(),
            if_exists="keep",
        )
    assert (await Scheduler(services).tick()).claimed == 0
    async with services.sessions() as session:
        row = (await session.exec(select(ScheduledItem))).one()
        assert row.status == ScheduleStatus.PENDING


async def test_intake_nudges_and_broadcasts_are_run_by_their_modules(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    async with transaction(services.sessions) as session:
        # A nudge for a client who is not in an intake: the intake's handler sends nothing.
        await repo.upsert_scheduled(
            session,
            kind=ScheduleKind.INTAKE_NUDGE,
            unique_key="nudge:test",
            due_at=clock(),
            now=clock(),
            if_exists="keep",
            client_id=world.client_id,
        )
    report = await Scheduler(services).tick()
    assert (report.claimed, report.done, report.failed) == (1, 1, 0)
    assert await client_texts(services, kind="reminder") == []


async def test_no_answer_by_the_last_reminder_flags_the_case(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    await book(services, world, HEARING)
    scheduler = Scheduler(services)
    for offset in (timedelta(days=7), timedelta(days=1)):
        clock.set(HEARING - offset)
        await scheduler.tick()
    assert not (await case_row(services, world)).needs_review
    clock.set(HEARING - timedelta(hours=2))
    await scheduler.tick()
    assert (await case_row(services, world)).needs_review
    alerts = await sent(services, kind="alert")
    assert [a.text for a in alerts] == [
        f"Case {world.reference}: no answer to the reminders for the hearing on "
        "Thu, Mar 12, 2026, 10:30 AM."
    ]
    assert alerts[0].chat_id == STAFF_CHAT
    assert "Maria" not in alerts[0].text and "Housing Court" not in alerts[0].text


async def test_an_answered_reminder_flags_nothing(services: Services, clock: FakeClock) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    scheduler = Scheduler(services)
    clock.set(HEARING - timedelta(days=1))
    await scheduler.tick()
    async with transaction(services.sessions) as session:
        appt = await session.get(Appointment, appt_id)
        assert appt is not None
        appt.confirmed_at = clock()
    clock.set(HEARING - timedelta(hours=2))
    await scheduler.tick()
    assert not (await case_row(services, world)).needs_review
    assert await sent(services, kind="alert") == []
    assert (await appointment(services, appt_id)).confirmed_at is not None


# --------------------------------------------------------------------------- check-ins


async def test_a_quiet_case_gets_one_check_in(services: Services, clock: FakeClock) -> None:
    world = await open_case(services)
    scheduler = Scheduler(services)
    clock.advance(days=29)
    assert (await scheduler.tick(checkins=True)).planned_checkins == 0
    clock.advance(days=1, seconds=1)
    report = await scheduler.tick(checkins=True)
    assert (report.planned_checkins, report.done) == (1, 1)
    [text] = await client_texts(services, kind="checkin")
    assert text == (
        f"Legal Aid Line: your case {world.reference} is still open. Anything new?\n\n"
        "1. All fine\n2. Something changed\n3. Talk to my attorney"
    )
    # The next pass, and a restarted scheduler, plan nothing more for this silence.
    assert (await scheduler.tick(checkins=True)).planned_checkins == 0
    assert (await Scheduler(services).tick()).planned_checkins == 0
    # Another thirty quiet days: another check-in.
    clock.advance(days=30, seconds=1)
    assert (await scheduler.tick(checkins=True)).done == 1
    assert len(await client_texts(services, kind="checkin")) == 2


async def test_check_ins_are_planned_hourly_not_every_tick(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    scheduler = Scheduler(services)
    assert (await scheduler.tick()).planned_checkins == 0  # the first tick plans
    async with transaction(services.sessions) as session:
        case = await repo.require_case(session, reference=world.reference)
        case.last_news_at = clock() - timedelta(days=31)
    clock.advance(minutes=10)
    assert (await scheduler.tick()).planned_checkins == 0  # not on every tick
    clock.advance(minutes=50)
    assert (await scheduler.tick()).planned_checkins == 1  # an hour after the last pass


async def test_discreet_check_in_carries_no_reference(services: Services, clock: FakeClock) -> None:
    world = await open_case(services, discreet=True, category="family")
    clock.advance(days=31)
    await Scheduler(services).tick()
    [text] = await client_texts(services, kind="checkin")
    assert (
        text
        == "Checking in: anything new?\n\n1. All fine\n2. Something changed\n3. Talk to someone"
    )
    assert world.reference not in text and "family" not in text


async def test_closed_cases_get_no_check_in(services: Services, clock: FakeClock) -> None:
    await open_case(services, status="closed")
    world = await open_case(services, phone="+12025550188")
    async with transaction(services.sessions) as session:
        case = await repo.require_case(session, reference=world.reference)
        case.closed = True
    clock.advance(days=31)
    assert (await Scheduler(services).tick()).planned_checkins == 0
    assert await client_texts(services, kind="checkin") == []


async def test_news_since_planning_skips_the_check_in(services: Services, clock: FakeClock) -> None:
    world = await open_case(services)
    clock.advance(days=31)
    async with transaction(services.sessions) as session:
        assert await repo.upsert_scheduled(
            session,
            kind=ScheduleKind.CHECKIN,
            unique_key="checkin:test",
            due_at=clock(),
            now=clock(),
            if_exists="keep",
            client_id=world.client_id,
            case_id=world.case_id,
        )
        case = await repo.require_case(session, reference=world.reference)
        await repo.record_status(session, case=case, status="in progress", at=clock())
    assert (await Scheduler(services).tick(checkins=False)).skipped == 1
    assert await client_texts(services, kind="checkin") == []


# --------------------------------------------------------------------------- several processes


@pytest.mark.skipif(BACKEND != "postgresql", reason="SKIP LOCKED needs PostgreSQL")
async def test_two_schedulers_never_send_one_reminder_twice(
    settings: Settings, clock: FakeClock
) -> None:
    one = Services.build(settings, clock=clock)
    two = Services.build(settings, clock=clock)
    try:
        for n in range(40):
            world = await open_case(one, phone=f"+1202555{n:04d}", attorney=False)
            await book(one, world, HEARING + timedelta(minutes=n))
        clock.set(HEARING - timedelta(days=7) + timedelta(hours=1))
        reports = await asyncio.gather(
            *(Scheduler(svc, batch=5).tick() for svc in (one, two, one, two))
        )
        assert sum(r.failed for r in reports) == 0
        assert sum(r.claimed for r in reports) == 40  # no row claimed by two of them
        assert sum(r.done for r in reports) == 40
        reminders = await sent(one, kind="reminder")
        assert len(reminders) == 40
        assert len({r.dedupe_key for r in reminders}) == 40
    finally:
        await one.close()
        await two.close()


# --------------------------------------------------------------------------- the running app


async def test_the_app_starts_and_stops_its_scheduler(database_url: str, tmp_path: Path) -> None:
    """With the real clock: a row due now becomes a reminder within a few ticks."""
    settings = make_settings(
        database_url,
        tmp_path / "data",
        SCHEDULER_INTERVAL_SECONDS="0.05",
        REMINDER_OFFSETS="2h",
    )
    services = Services.build(settings)
    try:
        world = await open_case(services)
        appt_id = await book(services, world, services.clock() + timedelta(hours=1))
        async with transaction(services.sessions) as session:
            [row] = await repo.scheduled_for_appointment(
                session, appointment_id=appt_id, kind=ScheduleKind.REMINDER
            )
            row.status, row.done_at = ScheduleStatus.PENDING, None
            row.due_at = services.clock() - timedelta(seconds=1)
            session.add(row)
        async with TestClient(TestServer(create_app(settings, services=services))):
            for _ in range(200):
                if await client_texts(services, kind="reminder"):
                    break
                await asyncio.sleep(0.025)
        assert len(await client_texts(services, kind="reminder")) == 1
    finally:
        await services.close()


async def test_the_scheduler_can_be_turned_off(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        SCHEDULER_ENABLED="false",
        SCHEDULER_INTERVAL_SECONDS="0.01",
    )
    services = Services.build(settings)
    try:
        async with transaction(services.sessions) as session:
            await repo.upsert_scheduled(
                session,
                kind=ScheduleKind.REMINDER,
                unique_key="reminder:none",
                due_at=services.clock() - timedelta(minutes=1),
                now=services.clock(),
                if_exists="keep",
            )
        async with TestClient(TestServer(create_app(settings, services=services))):
            await asyncio.sleep(0.1)
        async with services.sessions() as session:
            row = (await session.exec(select(ScheduledItem))).one()
            assert row.status == ScheduleStatus.PENDING
    finally:
        await services.close()

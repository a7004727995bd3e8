"""Each use case on its own: what it stores, audits and queues for the client, and that a
refusal is a CaseworkError with nothing changed."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework import appointments, limits
from bot.casework.assign import NOT_AN_ATTORNEY, assign_case
from bot.casework.base import API, CLI, COORDINATORS_ONLY, NOT_YOURS, Actor, CaseworkError
from bot.casework.erase import erase_client
from bot.casework.imports import ImportRun, import_appointment_row, import_case_row
from bot.casework.status import change_status
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import (
    Appointment,
    AuditLog,
    Broadcast,
    Case,
    CaseStatusChange,
    Client,
    OutboxItem,
    OutboxStatus,
    Role,
    Staff,
)
from tests.casework import (
    LONG_STATUS,
    LONG_STATUS_REFUSAL,
    World,
    book,
    case_row,
    client_texts,
    open_case,
    reminder_rows,
)
from tests.storage.snapshot import snapshot

HEARING = datetime(2026, 3, 12, 14, 30, tzinfo=UTC)  # 10:30 in New York; the clock is Mar 2
T = TypeVar("T")
Step = Callable[[AsyncSession], Awaitable[T]]


async def run(services: Services, step: Step[T]) -> T:
    async with transaction(services.sessions) as session:
        return await step(session)


async def refused(services: Services, step: Step[object], words: str) -> None:
    """The step is refused with these words, and no table changed."""
    before = await snapshot(services)
    with pytest.raises(CaseworkError) as caught:
        await run(services, step)
    assert str(caught.value) == words
    assert await snapshot(services) == before


async def audits(services: Services, action: str) -> list[AuditLog]:
    async with services.sessions() as session:
        query = select(AuditLog).where(AuditLog.action == action).order_by(col(AuditLog.id))
        return list((await session.exec(query)).all())


async def add_staff(services: Services, role: str, telegram_id: int) -> Staff:
    async with transaction(services.sessions) as session:
        return await repo.create_staff(
            session, vault=services.vault, name=f"Sam {role}", role=role, telegram_id=telegram_id
        )


async def attorney_of(services: Services, world: World) -> Staff:
    async with services.sessions() as session:
        staff = await session.get(Staff, world.attorney_id)
        assert staff is not None
        return staff


# --------------------------------------------------------------------------- limits


@pytest.mark.parametrize(
    ("limit", "columns"),
    [
        ("status", [(Case, "status"), (CaseStatusChange, "status")]),
        ("category", [(Case, "category")]),
        ("reference", [(Case, "reference")]),
        ("timezone", [(Client, "timezone"), (Appointment, "timezone")]),
        ("segment", [(Broadcast, "segment")]),
    ],
)
def test_each_stored_limit_is_its_column_size(limit: str, columns: list[tuple[type, str]]) -> None:
    for model, name in columns:
        column_type = model.__table__.c[name].type  # type: ignore[attr-defined]
        assert getattr(column_type, "length", None) == limits.LIMITS[limit], (model, name)


def test_the_checks_use_the_table() -> None:
    assert limits.check_status(" a  b ") == "a b"
    assert limits.check_status("x" * limits.STATUS_MAX) == "x" * 64
    with pytest.raises(CaseworkError, match=f"^{re.escape(LONG_STATUS_REFUSAL)}$"):
        limits.check_status(LONG_STATUS)
    with pytest.raises(CaseworkError, match=r"^status must not be empty$"):
        limits.check_status("   ")
    assert limits.check_category(" Housing ") == "housing"
    with pytest.raises(CaseworkError, match=r"^category 'housing law!' is not a short word"):
        limits.check_category("housing law!")
    assert limits.check_category("x" * limits.CATEGORY_MAX)
    with pytest.raises(CaseworkError):
        limits.check_category("x" * (limits.CATEGORY_MAX + 1))
    with pytest.raises(CaseworkError, match=r"^unknown time zone 'Nowhere/City'"):
        limits.check_timezone("Nowhere/City")


# --------------------------------------------------------------------------- status


async def test_change_status_records_tells_and_audits(services: Services) -> None:
    world = await open_case(services)
    case = await case_row(services, world)
    done = await run(
        services,
        lambda s: change_status(s, services, actor=API, case=case, text=" hearing   scheduled "),
    )
    assert (done.reference, done.status) == (world.reference, "hearing scheduled")
    assert done.changed_at == services.clock()
    async with services.sessions() as session:
        history = await repo.status_history(session, case_id=world.case_id)
    # In the order recorded (the case was opened on the real clock, the change on the fake).
    assert [(h.status, h.source) for h in sorted(history, key=lambda h: h.id or 0)] == [
        ("open", "cli"),
        ("hearing scheduled", "api"),
    ]
    [row] = await audits(services, "case.status")
    assert (row.actor_kind, row.case_id, row.client_id, row.allowed) == (
        "api",
        world.case_id,
        world.client_id,
        True,
    )
    assert await client_texts(services, kind="status") == [
        f"Legal Aid Line: news on your case {world.reference}: a court date has been set."
    ]


async def test_change_status_by_staff_records_who(services: Services) -> None:
    world = await open_case(services)
    attorney = await attorney_of(services, world)
    case = await case_row(services, world)
    actor = Actor.member(attorney)
    await run(services, lambda s: change_status(s, services, actor=actor, case=case, text="won"))
    async with services.sessions() as session:
        history = await repo.status_history(session, case_id=world.case_id)
    newest = max(history, key=lambda h: h.id or 0)
    assert (newest.status, newest.source, newest.by_staff_id) == (
        "won",
        "telegram",
        attorney.id,
    )
    [row] = await audits(services, "case.status")
    assert (row.actor_kind, row.actor_id) == ("staff", attorney.id)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (LONG_STATUS, LONG_STATUS_REFUSAL),
        ("  ", "status must not be empty"),
        (None, "status must not be empty"),
    ],
)
async def test_change_status_refuses_bad_text(
    services: Services, text: str | None, words: str
) -> None:
    world = await open_case(services)
    case = await case_row(services, world)
    await refused(
        services, lambda s: change_status(s, services, actor=CLI, case=case, text=text), words
    )


async def test_an_attorney_changes_only_their_own_cases(services: Services) -> None:
    world = await open_case(services)
    other = await add_staff(services, Role.ATTORNEY, 5150)
    case = await case_row(services, world)
    actor = Actor.member(other)
    words = NOT_YOURS.format(ref=world.reference)
    await refused(
        services, lambda s: change_status(s, services, actor=actor, case=case, text="won"), words
    )
    # Kept by a caller that commits its answer: the refusal is audited, nothing else changes.
    async with transaction(services.sessions) as session:
        with pytest.raises(CaseworkError):
            await change_status(session, services, actor=actor, case=case, text="won")
    [row] = await audits(services, "case.status")
    assert (row.actor_id, row.allowed, row.detail) == (
        other.id,
        False,
        "case not assigned to them",
    )
    assert (await case_row(services, world)).status == "open"
    assert await client_texts(services, kind="status") == []


# --------------------------------------------------------------------------- assign


async def test_assign_hands_over_tells_the_client_and_audits(services: Services) -> None:
    world = await open_case(services, attorney=False)
    attorney = await add_staff(services, Role.ATTORNEY, 5150)
    coordinator = await add_staff(services, Role.COORDINATOR, 5151)
    case = await case_row(services, world)
    actor = Actor.member(coordinator)
    done = await run(
        services,
        lambda s: assign_case(s, services, actor=actor, case=case, attorney=attorney),
    )
    assert (done.reference, done.attorney_id, done.changed) == (
        world.reference,
        attorney.id,
        True,
    )
    assert (await case_row(services, world)).assigned_staff_id == attorney.id
    [row] = await audits(services, "case.assign")
    assert (row.actor_kind, row.actor_id, row.detail) == (
        "staff",
        coordinator.id,
        f"staff {attorney.id}",
    )
    assert await client_texts(services) == [
        f"Sam is now handling your case {world.reference}. You can write here to reach them."
    ]
    again = await run(
        services,
        lambda s: assign_case(s, services, actor=actor, case=case, attorney=attorney),
    )
    assert not again.changed
    assert len(await audits(services, "case.assign")) == 1


async def test_assign_refusals(services: Services) -> None:
    world = await open_case(services)
    attorney = await attorney_of(services, world)
    coordinator = await add_staff(services, Role.COORDINATOR, 5151)
    case = await case_row(services, world)
    await refused(
        services,
        lambda s: assign_case(s, services, actor=CLI, case=case, attorney=coordinator),
        NOT_AN_ATTORNEY,
    )
    await refused(
        services,
        lambda s: assign_case(s, services, actor=CLI, case=case, attorney=None),
        NOT_AN_ATTORNEY,
    )
    # An attorney does not assign, not even their own case.
    await refused(
        services,
        lambda s: assign_case(
            s, services, actor=Actor.member(attorney), case=case, attorney=attorney
        ),
        COORDINATORS_ONLY,
    )


# --------------------------------------------------------------------------- appointments


async def test_book_stores_plans_tells_and_audits(services: Services) -> None:
    world = await open_case(services)
    case = await case_row(services, world)
    booked = await run(
        services,
        lambda s: appointments.book(
            s, services, case, "2026-03-12T10:30", "Room 4", kind="hearing", actor=API
        ),
    )
    appt = booked.appointment
    assert (appt.starts_at, appt.timezone, appt.kind) == (HEARING, "America/New_York", "hearing")
    assert booked.reminders == (
        HEARING - timedelta(days=7),
        HEARING - timedelta(days=1),
        HEARING - timedelta(hours=2),
    )
    [row] = await audits(services, "appointment.add")
    assert (row.actor_kind, row.case_id, row.detail) == (
        "api",
        world.case_id,
        f"appointment {appt.id}",
    )
    [text] = await client_texts(services, kind="appointment")
    assert text.startswith("Legal Aid Line: your court hearing is booked for Thu, Mar 12, 2026")


BAD_BOOKINGS: list[tuple[dict[str, str | None], str]] = [
    ({"starts_at": "2026-03-01T10:30"}, "the appointment time has already passed"),
    ({"starts_at": "soon"}, "'soon' is not an ISO 8601 date and time like 2026-03-10T09:30"),
    ({"place": "  "}, "place must not be empty"),
    ({"place": "x" * 301}, "place is longer than 300 characters"),
    ({"bring": "x" * 301}, "bring is longer than 300 characters"),
    ({"kind": "party"}, "kind must be one of hearing, meeting, call, not 'party'"),
    (
        {"timezone": "Nowhere/City"},
        "unknown time zone 'Nowhere/City' (use a name like America/New_York)",
    ),
]


@pytest.mark.parametrize(("change", "words"), BAD_BOOKINGS)
async def test_book_refuses_bad_input(
    services: Services, change: dict[str, str | None], words: str
) -> None:
    world = await open_case(services)
    case = await case_row(services, world)
    fields: dict[str, str | None] = {
        "starts_at": "2026-03-12T10:30",
        "place": "Room 4",
        "kind": "hearing",
        "timezone": None,
        "bring": None,
    } | change

    async def step(s: AsyncSession) -> object:
        return await appointments.book(
            s,
            services,
            case,
            fields["starts_at"] or "",
            fields["place"],
            kind=fields["kind"],
            timezone=fields["timezone"],
            bring=fields["bring"],
            actor=CLI,
        )

    await refused(services, step, words)


async def test_book_on_another_attorneys_case_is_refused(services: Services) -> None:
    world = await open_case(services)
    other = await add_staff(services, Role.ATTORNEY, 5150)
    case = await case_row(services, world)
    await refused(
        services,
        lambda s: appointments.book(
            s, services, case, HEARING, "Room 4", actor=Actor.member(other)
        ),
        NOT_YOURS.format(ref=world.reference),
    )


async def test_move_tells_the_client_and_moves_the_reminders(services: Services) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    later = HEARING + timedelta(days=14)

    async def step(s: AsyncSession) -> appointments.Booked:
        appt = await s.get(Appointment, appt_id)
        assert appt is not None
        return await appointments.move(
            s, services, appt, later, place="Room 9", timezone="America/Chicago", actor=CLI
        )

    moved = await run(services, step)
    assert moved.changed and moved.appointment.timezone == "America/Chicago"
    assert moved.reminders[0] == later - timedelta(days=7)
    assert {r.due_at for r in await reminder_rows(services, appt_id)} == set(moved.reminders)
    [text] = [t for t in await client_texts(services, kind="appointment") if "MOVED" in t]
    assert "to Thu, Mar 26, 2026, 10:30 AM at Room 9" in text
    [row] = await audits(services, "appointment.move")
    assert (row.actor_kind, row.detail) == ("cli", f"appointment {appt_id}")


async def test_cancel_withdraws_tells_once_and_a_cancelled_one_does_not_move(
    services: Services,
) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)

    async def cancel(s: AsyncSession) -> appointments.Cancelled:
        appt = await s.get(Appointment, appt_id)
        assert appt is not None
        return await appointments.cancel(s, services, appt, actor=CLI)

    first = await run(services, cancel)
    assert not first.already and first.appointment.status == appointments.CANCELLED
    assert {r.status for r in await reminder_rows(services, appt_id)} == {"cancelled"}
    assert len([t for t in await client_texts(services) if "CANCELLED" in t]) == 1
    assert (await run(services, cancel)).already
    assert len(await audits(services, "appointment.cancel")) == 1

    async def move(s: AsyncSession) -> object:
        appt = await s.get(Appointment, appt_id)
        assert appt is not None
        return await appointments.move(s, services, appt, HEARING + timedelta(days=1), actor=CLI)

    await refused(services, move, f"appointment {appt_id} is cancelled, not scheduled")


# --------------------------------------------------------------------------- erase


async def test_erase_destroys_the_key_skips_pending_messages_and_audits(
    services: Services,
) -> None:
    world = await open_case(services)
    await book(services, world, HEARING)  # queues the booking notice

    async def erase(s: AsyncSession) -> object:
        client = await s.get(Client, world.client_id)
        assert client is not None
        return await erase_client(s, services, actor=CLI, client=client)

    done = await run(services, erase)
    assert done == type(done)(world.client_id, already=False)
    async with services.sessions() as session:
        client = await session.get(Client, world.client_id)
        items = (await session.exec(select(OutboxItem))).all()
    assert client is not None and client.wrapped_key is None
    assert {i.status for i in items} == {OutboxStatus.SKIPPED}
    [row] = await audits(services, "client.erase")
    assert (row.actor_kind, row.client_id) == ("cli", world.client_id)
    again = await run(services, erase)
    assert again == type(again)(world.client_id, already=True)
    assert len(await audits(services, "client.erase")) == 1


async def test_only_coordinators_erase(services: Services) -> None:
    world = await open_case(services)
    attorney = await attorney_of(services, world)

    async def erase(s: AsyncSession) -> object:
        client = await s.get(Client, world.client_id)
        assert client is not None
        return await erase_client(s, services, actor=Actor.member(attorney), client=client)

    await refused(services, erase, COORDINATORS_ONLY)


# --------------------------------------------------------------------------- import rows

CASE_ROW = {
    "case_number": "24-0000001",
    "client_phone": "2025550150",
    "first_name": "Ann",
    "last_name": "Lee",
    "legal_problem_code": "63 Private Landlord/Tenant",
    "case_status": "Open",
}


async def test_a_case_row_opens_the_case_under_its_number(services: Services) -> None:
    async def step(s: AsyncSession) -> None:
        await import_case_row(ImportRun(services, s, services.clock()), 2, dict(CASE_ROW))

    await run(services, step)
    async with services.sessions() as session:
        case = await repo.require_case(session, reference="24-0000001")
    assert (case.category, case.status) == ("housing", "Open")
    [row] = await audits(services, "case.import")
    assert (row.actor_kind, row.case_id) == ("cli", case.id)


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"case_status": LONG_STATUS}, LONG_STATUS_REFUSAL),
        ({"category": "housing law!"}, "category 'housing law!' is not a short word"),
        ({"client_name": "x" * 201}, "the client name is longer than 200 characters"),
    ],
)
async def test_a_bad_case_row_is_refused_with_the_shared_words(
    services: Services, change: dict[str, str], words: str
) -> None:
    async def step(s: AsyncSession) -> None:
        await import_case_row(ImportRun(services, s, services.clock()), 2, CASE_ROW | change)

    before = await snapshot(services)
    with pytest.raises(CaseworkError) as caught:
        await run(services, step)
    assert str(caught.value).startswith(words)
    assert await snapshot(services) == before


async def test_an_appointment_row_books_and_tells_the_client(services: Services) -> None:
    world = await open_case(services)
    row = {
        "case_number": world.reference,
        "date": "2026-03-12",
        "time": "10:30 AM",
        "location": "Room 4",
        "event_type": "Court Hearing",
    }

    async def step(s: AsyncSession) -> None:
        await import_appointment_row(ImportRun(services, s, services.clock()), 2, row)

    await run(services, step)
    [audit] = await audits(services, "appointment.import")
    assert (audit.actor_kind, audit.case_id) == ("cli", world.case_id)
    [text] = await client_texts(services, kind="appointment")
    assert "court hearing is booked for Thu, Mar 12, 2026, 10:30 AM at Room 4" in text
    with pytest.raises(CaseworkError, match=r"^location must not be empty$"):
        await run(
            services,
            lambda s: import_appointment_row(
                ImportRun(services, s, services.clock()),
                3,
                row | {"time": "11:30 AM", "location": " "},
            ),
        )

"""Clients, cases and appointments for the status, reminder and scheduler tests, and what
they were sent (the outbox rows, decrypted)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select

from bot.casework import appointments
from bot.casework.base import CLI
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import (
    Appointment,
    Case,
    Channel,
    Client,
    Message,
    OutboxItem,
    Role,
    ScheduledItem,
    ScheduleKind,
)

PHONE = "+12025550143"
ATTORNEY_TELEGRAM = 424242


@dataclass
class World:
    """One client with one open case (and, usually, its assigned attorney)."""

    client_id: int
    case_id: int
    reference: str
    attorney_id: int | None


async def open_case(
    services: Services,
    *,
    phone: str = PHONE,
    channel: str = Channel.SMS,
    language: str = "en",
    timezone: str = "America/New_York",
    discreet: bool = False,
    attorney: bool = True,
    category: str = "housing",
    status: str = "open",
) -> World:
    async with transaction(services.sessions) as session:
        client = await repo.create_client(
            session,
            vault=services.vault,
            channel=channel,
            address=phone,
            name="Maria Example",
            language=language,
            timezone=timezone,
        )
        client.discreet = discreet
        case = await repo.create_case(session, client=client, category=category, status=status)
        case.last_news_at = services.clock()
        staff_id = None
        if attorney:
            staff = await repo.create_staff(
                session,
                vault=services.vault,
                name="Ann Attorney",
                role=Role.ATTORNEY,
                telegram_id=ATTORNEY_TELEGRAM + (client.id or 0),
            )
            case.assigned_staff_id = staff_id = staff.id
        session.add(case)
    assert client.id is not None and case.id is not None
    return World(client.id, case.id, case.reference, staff_id)


async def book(
    services: Services,
    world: World,
    starts_at: datetime,
    *,
    place: str = "Housing Court, 111 Centre St, Room 4",
    kind: str = "hearing",
    bring: str | None = "your lease and rent receipts",
) -> int:
    async with transaction(services.sessions) as session:
        case = await session.get(Case, world.case_id)
        assert case is not None
        booked = await appointments.book(
            session, services, case, starts_at, place, kind=kind, bring=bring, actor=CLI
        )
    appt = booked.appointment
    assert appt.id is not None
    return appt.id


async def appointment(services: Services, appointment_id: int) -> Appointment:
    async with services.sessions() as session:
        appt = await session.get(Appointment, appointment_id)
        assert appt is not None
        return appt


async def case_row(services: Services, world: World) -> Case:
    async with services.sessions() as session:
        case = await session.get(Case, world.case_id)
        assert case is not None
        return case


async def reminder_rows(services: Services, appointment_id: int) -> list[ScheduledItem]:
    async with services.sessions() as session:
        return list(
            await repo.scheduled_for_appointment(
                session, appointment_id=appointment_id, kind=ScheduleKind.REMINDER
            )
        )


@dataclass
class Sent:
    """One outbox row as the recipient would read it."""

    kind: str
    text: str
    client_id: int | None
    staff_id: int | None
    chat_id: int | None
    urgent: bool
    extra: dict[str, object]
    dedupe_key: str | None


async def sent(services: Services, *, kind: str | None = None) -> list[Sent]:
    """Every outbox row (of one kind), oldest first, with its text decrypted."""
    out = []
    async with services.sessions() as session:
        query = (
            select(OutboxItem, Message)
            .join(Message, col(Message.id) == col(OutboxItem.message_id))
            .order_by(col(OutboxItem.id))
        )
        if kind is not None:
            query = query.where(OutboxItem.kind == kind)
        for item, msg in (await session.exec(query)).all():
            client = await session.get(Client, msg.client_id) if msg.client_id else None
            extra = dict(item.extra or {})
            chat_id = extra.get("chat_id")
            out.append(
                Sent(
                    kind=item.kind,
                    text=repo.message_body(services.vault, client, msg),
                    client_id=item.client_id,
                    staff_id=item.staff_id,
                    chat_id=chat_id if isinstance(chat_id, int) else None,
                    urgent=item.urgent,
                    extra=extra,
                    dedupe_key=item.dedupe_key,
                )
            )
    return out


async def client_texts(services: Services, *, kind: str | None = None) -> list[str]:
    """What clients were sent (staff and group messages left out)."""
    return [
        s.text
        for s in await sent(services, kind=kind)
        if s.staff_id is None and s.chat_id is None and s.kind not in ("staff", "alert")
    ]


# A status one character over the limit, and the words every entry point refuses it with.
LONG_STATUS = "x" * 65
LONG_STATUS_REFUSAL = "status is longer than 64 characters"

"""Appointments: booking, moving and cancelling them, telling the client, planning reminders.

Every reminder is a ``ScheduledItem`` row keyed ``reminder:{appointment_id}:{offset}``; the
scheduler turns due rows into outbox messages (bot/conversations/reminders.py writes them).
Moving an appointment moves its rows; cancelling it withdraws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.conversations.base import Reply
from bot.i18n import N_, format_datetime, gettext
from bot.outgoing import queue_reply
from storage import repo
from storage.models import (
    Appointment,
    Case,
    Client,
    Priority,
    ScheduledItem,
    ScheduleKind,
    ScheduleStatus,
)

if TYPE_CHECKING:
    from bot.services import Services

SCHEDULED, CANCELLED = "scheduled", "cancelled"
KINDS = ("hearing", "meeting", "call")
DEFAULT_KIND = "meeting"
PLACE_MAX = 300
BRING_MAX = 300

# What each kind is called in a message; discreet clients only ever read "appointment".
KIND_LABELS = {
    "hearing": N_("court hearing"),
    "meeting": N_("meeting"),
    "call": N_("phone call"),
}
NEUTRAL_KIND = N_("appointment")

BOOKED = N_("{program}: your {kind} is booked for {when} at {place}.")
BOOKED_DISCREET = N_("Your appointment is booked for {when} at {place}.")
BRING = N_("Please bring: {bring}.")
WILL_REMIND = N_("We will remind you before it.")
MOVED = N_("{program}: your {kind} has MOVED from {old} to {new} at {place}.")
MOVED_DISCREET = N_("Your appointment has MOVED from {old} to {new} at {place}.")
CANCELLED_TEXT = N_(
    "{program}: your {kind} on {when} is CANCELLED. We will contact you about what happens next."
)
CANCELLED_DISCREET = N_("Your appointment on {when} is CANCELLED. We will contact you.")


class AppointmentError(ValueError):
    """Bad appointment input; the message names the field and is safe to show."""


# --------------------------------------------------------------------------- input


def check_timezone(raw: str) -> str:
    """An IANA time zone name, or AppointmentError."""
    value = raw.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise AppointmentError(
            f"unknown time zone {raw!r} (use a name like America/New_York)"
        ) from None
    return value


def check_kind(raw: str | None) -> str:
    """hearing, meeting or call (case-insensitive); empty means meeting."""
    value = (raw or DEFAULT_KIND).strip().lower()
    if value not in KINDS:
        raise AppointmentError(f"kind must be one of {', '.join(KINDS)}, not {raw!r}")
    return value


def check_text(raw: str | None, what: str, limit: int, *, required: bool) -> str | None:
    """Collapse spaces; refuse empty (when required) or overlong text."""
    value = " ".join((raw or "").split())
    if not value:
        if required:
            raise AppointmentError(f"{what} must not be empty")
        return None
    if len(value) > limit:
        raise AppointmentError(f"{what} is longer than {limit} characters")
    return value


def parse_when(raw: str, timezone: str) -> datetime:
    """An ISO 8601 date and time as aware UTC; without an offset it is local time in ``timezone``.

    A local time that does not exist (the hour skipped when clocks go forward) is refused
    rather than guessed.
    """
    text = raw.strip()
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise AppointmentError(
            f"{raw!r} is not an ISO 8601 date and time like 2026-03-10T09:30"
        ) from None
    if len(text) <= 10:  # a date alone: an appointment needs its time
        raise AppointmentError(f"{raw!r} has no time of day (use 2026-03-10T09:30)")
    if when.tzinfo is None:
        zone = ZoneInfo(check_timezone(timezone))
        local = when.replace(tzinfo=zone)
        # A wall time in a DST gap does not survive the round trip through UTC.
        if local.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None) != when:
            raise AppointmentError(f"{raw!r} does not exist in {timezone} (clocks jump past it)")
        when = local
    return when.astimezone(ZoneInfo("UTC"))


def check_future(starts_at: datetime, now: datetime) -> None:
    if starts_at.tzinfo is None:
        raise AppointmentError("the start time must carry its time zone")
    if starts_at <= now:
        raise AppointmentError("the appointment time has already passed")


# --------------------------------------------------------------------------- wording


@dataclass(frozen=True)
class Details:
    """An appointment as one client reads it: words in their language, time in their zone."""

    kind: str
    when: str
    place: str
    bring: str | None


def describe(services: Services, client: Client, appt: Appointment, *, discreet: bool) -> Details:
    """What to tell this client about this appointment; discreet clients get no kind or list."""
    lang = client.language or services.settings.default_language
    tz = client.timezone or services.settings.default_timezone
    kind = NEUTRAL_KIND if discreet else KIND_LABELS.get(appt.kind, NEUTRAL_KIND)
    bring = None if discreet else repo.appointment_bring(services.vault, client, appt)
    return Details(
        kind=gettext(lang, kind),
        when=format_datetime(appt.starts_at, lang, tz),
        place=repo.appointment_place(services.vault, client, appt) or "",
        bring=bring,
    )


def is_discreet(client: Client, case: Case) -> bool:
    return client.discreet or case.discreet


def sentences(*parts: str | None) -> str:
    """Translated sentences joined into one message, leaving out the empty ones."""
    return " ".join(p for p in parts if p)


def bring_sentence(lang: str, details: Details) -> str | None:
    return gettext(lang, BRING, bring=details.bring) if details.bring else None


# --------------------------------------------------------------------------- reminders


def reminder_key(appointment_id: int, offset: int) -> str:
    return f"reminder:{appointment_id}:{offset}"


async def plan_reminders(
    session: AsyncSession, services: Services, appt: Appointment, *, now: datetime
) -> list[ScheduledItem]:
    """One row per REMINDER_OFFSETS entry; offsets already past are recorded as skipped.

    Used at booking and again after a move: existing rows are moved (a reminder sent for the
    old time is due again for the new one); rows for offsets no longer configured are withdrawn.
    """
    assert appt.id is not None
    case = await session.get(Case, appt.case_id)
    assert case is not None
    existing = {
        row.unique_key: row
        for row in await repo.scheduled_for_appointment(
            session, appointment_id=appt.id, kind=ScheduleKind.REMINDER
        )
    }
    planned = []
    for offset in services.settings.reminder_offset_list():
        key = reminder_key(appt.id, offset)
        due = appt.starts_at - timedelta(seconds=offset)
        existing.pop(key, None)
        # Replacing drops any claim on the old time, so it is not sent; an offset already
        # past is recorded as skipped, never sent late.
        row_id = await repo.upsert_scheduled(
            session,
            kind=ScheduleKind.REMINDER,
            unique_key=key,
            due_at=due,
            now=now,
            status=ScheduleStatus.PENDING if due > now else ScheduleStatus.SKIPPED,
            client_id=case.client_id,
            case_id=case.id,
            appointment_id=appt.id,
            payload={"offset": offset},
        )
        row = await session.get(ScheduledItem, row_id)
        assert row is not None
        planned.append(row)
    for row in existing.values():
        repo.withdraw_scheduled_item(session, item=row, now=now)
    await session.flush()
    return planned


async def withdraw_reminders(session: AsyncSession, appt: Appointment, *, now: datetime) -> int:
    """Cancel the reminders not yet sent; a claimed one loses its claim and is not sent."""
    assert appt.id is not None
    count = 0
    for row in await repo.scheduled_for_appointment(
        session, appointment_id=appt.id, kind=ScheduleKind.REMINDER
    ):
        count += repo.withdraw_scheduled_item(session, item=row, now=now)
    await session.flush()
    return count


# --------------------------------------------------------------------------- the three actions


async def _tell(
    session: AsyncSession,
    services: Services,
    client: Client,
    case: Case,
    text: str,
    dedupe_key: str,
) -> None:
    # Not urgent: a booking made late at night waits for the end of quiet hours.
    await queue_reply(
        session,
        services,
        client,
        Reply(text=text, urgent=False),
        kind="appointment",
        priority=Priority.REMINDER,
        dedupe_key=dedupe_key,
        case_id=case.id,
    )


def _news(case: Case, now: datetime) -> None:
    case.last_news_at = now
    case.updated_at = now


async def book(
    session: AsyncSession,
    services: Services,
    case: Case,
    starts_at: datetime,
    place: str,
    kind: str = DEFAULT_KIND,
    timezone: str | None = None,
    bring: str | None = None,
) -> Appointment:
    """Stores an appointment, tells the client at once and plans its reminders."""
    now = services.clock()
    check_future(starts_at, now)
    kind = check_kind(kind)
    place_text = check_text(place, "place", PLACE_MAX, required=True) or ""
    bring_text = check_text(bring, "bring", BRING_MAX, required=False)
    client = await session.get(Client, case.client_id)
    assert client is not None
    tz = check_timezone(timezone or client.timezone or services.settings.default_timezone)
    appt = await repo.create_appointment(
        session,
        vault=services.vault,
        client=client,
        case=case,
        starts_at=starts_at,
        timezone=tz,
        kind=kind,
        place=place_text,
        bring=bring_text,
    )
    assert appt.id is not None
    await plan_reminders(session, services, appt, now=now)
    _news(case, now)
    session.add(case)
    lang = client.language or services.settings.default_language
    discreet = is_discreet(client, case)
    d = describe(services, client, appt, discreet=discreet)
    program = services.settings.program_name
    if discreet:
        head = gettext(lang, BOOKED_DISCREET, when=d.when, place=d.place)
    else:
        head = gettext(lang, BOOKED, program=program, kind=d.kind, when=d.when, place=d.place)
    text = sentences(head, bring_sentence(lang, d), gettext(lang, WILL_REMIND))
    await _tell(session, services, client, case, text, f"appt:{appt.id}:booked")
    await session.flush()
    return appt


async def reschedule(
    session: AsyncSession,
    services: Services,
    appt: Appointment,
    starts_at: datetime,
    place: str | None = None,
) -> Appointment:
    """Moves an appointment: the client reads "MOVED from X to Y"; reminders follow the new time."""
    now = services.clock()
    if appt.status != SCHEDULED:
        raise AppointmentError(f"appointment {appt.id} is {appt.status}, not scheduled")
    check_future(starts_at, now)
    case = await session.get(Case, appt.case_id)
    assert case is not None
    client = await session.get(Client, case.client_id)
    assert client is not None
    place_text = check_text(place, "place", PLACE_MAX, required=False)
    lang = client.language or services.settings.default_language
    discreet = is_discreet(client, case)
    old = describe(services, client, appt, discreet=discreet)
    if starts_at == appt.starts_at and (
        place_text is None or place_text == repo.appointment_place(services.vault, client, appt)
    ):
        return appt  # nothing moved: nothing to say
    appt.starts_at = starts_at
    if place_text is not None:
        repo.set_appointment_place(services.vault, client, appt, place_text)
    # The client's answer was about the old time.
    appt.confirmed_at = None
    appt.declined_at = None
    appt.updated_at = now
    session.add(appt)
    await plan_reminders(session, services, appt, now=now)
    _news(case, now)
    session.add(case)
    new = describe(services, client, appt, discreet=discreet)
    if discreet:
        text = gettext(lang, MOVED_DISCREET, old=old.when, new=new.when, place=new.place)
    else:
        text = sentences(
            gettext(
                lang,
                MOVED,
                program=services.settings.program_name,
                kind=new.kind,
                old=old.when,
                new=new.when,
                place=new.place,
            ),
            bring_sentence(lang, new),
        )
    stamp = int(starts_at.timestamp())
    await _tell(session, services, client, case, text, f"appt:{appt.id}:moved:{stamp}")
    await session.flush()
    return appt


async def cancel(session: AsyncSession, services: Services, appt: Appointment) -> Appointment:
    """Cancels an appointment, withdraws its reminders and tells the client (if still ahead)."""
    now = services.clock()
    if appt.status == CANCELLED:
        return appt
    case = await session.get(Case, appt.case_id)
    assert case is not None
    client = await session.get(Client, case.client_id)
    assert client is not None
    appt.status = CANCELLED
    appt.updated_at = now
    session.add(appt)
    await withdraw_reminders(session, appt, now=now)
    if appt.starts_at > now:
        lang = client.language or services.settings.default_language
        discreet = is_discreet(client, case)
        d = describe(services, client, appt, discreet=discreet)
        if discreet:
            text = gettext(lang, CANCELLED_DISCREET, when=d.when)
        else:
            text = gettext(
                lang,
                CANCELLED_TEXT,
                program=services.settings.program_name,
                kind=d.kind,
                when=d.when,
            )
        _news(case, now)
        session.add(case)
        await _tell(session, services, client, case, text, f"appt:{appt.id}:cancelled")
    await session.flush()
    return appt

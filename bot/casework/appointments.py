"""Appointments: booking, moving and cancelling them, telling the client, planning reminders.

The three use cases (``book``, ``move``, ``cancel``) check their input, check who acts,
audit once and queue the client's notice in the caller's transaction. The wording helpers
(``describe``, the notice texts) serve the reminder and status dialogues too.

Every reminder is a ``ScheduledItem`` row keyed ``reminder:{appointment_id}:{offset}``; the
scheduler turns due rows into outbox messages (bot/conversations/reminders.py writes them).
Moving an appointment moves its rows; cancelling it withdraws them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework.base import Actor, CaseworkError, audit, authorize
from bot.casework.limits import BRING_MAX, PLACE_MAX, check_text, check_timezone
from bot.core import Reply
from bot.discreet import is_discreet
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

# What each kind is called in a message; discreet clients only ever read "appointment", and
# never the place (a place like "Family Court" names the problem): staff tell them where the
# way they chose.
KIND_LABELS = {
    "hearing": N_("court hearing"),
    "meeting": N_("meeting"),
    "call": N_("phone call"),
}
NEUTRAL_KIND = N_("appointment")

BOOKED = N_("{program}: your {kind} is booked for {when} at {place}.")
BOOKED_DISCREET = N_("Your appointment is booked for {when}.")
BRING = N_("Please bring: {bring}.")
WILL_REMIND = N_("We will remind you before it.")
MOVED = N_("{program}: your {kind} has MOVED from {old} to {new} at {place}.")
MOVED_DISCREET = N_("Your appointment has MOVED from {old} to {new}.")
CANCELLED_TEXT = N_(
    "{program}: your {kind} on {when} is CANCELLED. We will contact you about what happens next."
)
CANCELLED_DISCREET = N_("Your appointment on {when} is CANCELLED. We will contact you.")


# --------------------------------------------------------------------------- input


def check_kind(raw: str | None) -> str:
    """hearing, meeting or call (case-insensitive); empty means meeting."""
    value = (raw or DEFAULT_KIND).strip().lower()
    if value not in KINDS:
        raise CaseworkError(f"kind must be one of {', '.join(KINDS)}, not {raw!r}")
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
        raise CaseworkError(
            f"{raw!r} is not an ISO 8601 date and time like 2026-03-10T09:30"
        ) from None
    if len(text) <= 10:  # a date alone: an appointment needs its time
        raise CaseworkError(f"{raw!r} has no time of day (use 2026-03-10T09:30)")
    if when.tzinfo is None:
        zone = ZoneInfo(check_timezone(timezone))
        local = when.replace(tzinfo=zone)
        # A wall time in a DST gap does not survive the round trip through UTC.
        if local.astimezone(ZoneInfo("UTC")).astimezone(zone).replace(tzinfo=None) != when:
            raise CaseworkError(f"{raw!r} does not exist in {timezone} (clocks jump past it)")
        when = local
    return when.astimezone(ZoneInfo("UTC"))


def check_future(starts_at: datetime, now: datetime) -> None:
    """Refuses a start without its zone, or one already past."""
    if starts_at.tzinfo is None:
        raise CaseworkError("the start time must carry its time zone")
    if starts_at <= now:
        raise CaseworkError("the appointment time has already passed")


# --------------------------------------------------------------------------- wording


@dataclass(frozen=True)
class Details:
    """An appointment as one client reads it: words in their language, time in their zone."""

    kind: str
    when: str
    place: str
    bring: str | None


def describe(services: Services, client: Client, appt: Appointment, *, discreet: bool) -> Details:
    """What to tell this client about this appointment; discreet: no kind, place or list."""
    lang = client.language or services.settings.default_language
    tz = client.timezone or services.settings.default_timezone
    kind = NEUTRAL_KIND if discreet else KIND_LABELS.get(appt.kind, NEUTRAL_KIND)
    bring = None if discreet else repo.appointment_bring(services.vault, client, appt)
    return Details(
        kind=gettext(lang, kind),
        when=format_datetime(appt.starts_at, lang, tz),
        place="" if discreet else repo.appointment_place(services.vault, client, appt) or "",
        bring=bring,
    )


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
    for offset in services.settings.reminder_offsets:
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


@dataclass(frozen=True)
class Booked:
    """An appointment as booked or moved, and when its pending reminders are due."""

    appointment: Appointment
    reference: str
    reminders: tuple[datetime, ...]
    changed: bool = True  # False: a move to the same time and place, nothing said


@dataclass(frozen=True)
class Cancelled:
    """A cancelled appointment; ``already`` when it was cancelled before."""

    appointment: Appointment
    already: bool


def _when(raw: str | datetime, timezone: str) -> datetime:
    """A start as given: a datetime as it is, text parsed as local time in ``timezone``."""
    return raw if isinstance(raw, datetime) else parse_when(raw, timezone)


async def _pending(session: AsyncSession, appt: Appointment) -> tuple[datetime, ...]:
    assert appt.id is not None
    rows = await repo.scheduled_for_appointment(
        session, appointment_id=appt.id, kind=ScheduleKind.REMINDER
    )
    return tuple(r.due_at for r in rows if r.status == ScheduleStatus.PENDING)


async def _case_and_client(session: AsyncSession, appt: Appointment) -> tuple[Case, Client]:
    case = await session.get(Case, appt.case_id)
    assert case is not None
    client = await session.get(Client, case.client_id)
    assert client is not None
    return case, client


async def book(
    session: AsyncSession,
    services: Services,
    case: Case,
    starts_at: str | datetime,
    place: str | None,
    kind: str | None = DEFAULT_KIND,
    timezone: str | None = None,
    bring: str | None = None,
    *,
    actor: Actor,
    action: str = "appointment.add",
) -> Booked:
    """Stores an appointment, tells the client at once and plans its reminders.

    A start given as text without an offset is local time in ``timezone``, else the
    client's zone.
    """
    now = services.clock()
    client = await session.get(Client, case.client_id)
    assert client is not None
    zone = check_timezone(timezone) if timezone else None
    tz = zone or check_timezone(client.timezone or services.settings.default_timezone)
    when = _when(starts_at, tz)
    check_future(when, now)
    kind = check_kind(kind)
    place_text = check_text(place, "place", PLACE_MAX, required=True) or ""
    bring_text = check_text(bring, "bring", BRING_MAX, required=False)
    await authorize(session, actor, case, action=action, reference=case.reference)
    appt = await repo.create_appointment(
        session,
        vault=services.vault,
        client=client,
        case=case,
        starts_at=when,
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
        head = gettext(lang, BOOKED_DISCREET, when=d.when)
    else:
        head = gettext(lang, BOOKED, program=program, kind=d.kind, when=d.when, place=d.place)
    text = sentences(head, bring_sentence(lang, d), gettext(lang, WILL_REMIND))
    await _tell(session, services, client, case, text, f"appt:{appt.id}:booked")
    await audit(session, actor, action, case, detail=f"appointment {appt.id}")
    await session.flush()
    return Booked(appt, case.reference, await _pending(session, appt))


async def move(
    session: AsyncSession,
    services: Services,
    appt: Appointment,
    starts_at: str | datetime,
    *,
    place: str | None = None,
    timezone: str | None = None,
    actor: Actor,
) -> Booked:
    """Moves an appointment: the client reads "MOVED from X to Y"; reminders follow the new time.

    A start given as text without an offset is local time in ``timezone`` (which the
    appointment keeps from now on), else in the appointment's zone.
    """
    now = services.clock()
    if appt.status != SCHEDULED:
        raise CaseworkError(f"appointment {appt.id} is {appt.status}, not scheduled")
    zone = check_timezone(timezone) if timezone else None
    when = _when(starts_at, zone or appt.timezone)
    check_future(when, now)
    place_text = check_text(place, "place", PLACE_MAX, required=False)
    case, client = await _case_and_client(session, appt)
    await authorize(session, actor, case, action="appointment.move", reference=case.reference)
    lang = client.language or services.settings.default_language
    discreet = is_discreet(client, case)
    old = describe(services, client, appt, discreet=discreet)
    changed = when != appt.starts_at or (
        place_text is not None
        and place_text != repo.appointment_place(services.vault, client, appt)
    )
    if changed:
        repo.move_appointment(appt, starts_at=when, at=now)
        if place_text is not None:
            repo.set_appointment_place(services.vault, client, appt, place_text)
        await plan_reminders(session, services, appt, now=now)
        _news(case, now)
        session.add(case)
        new = describe(services, client, appt, discreet=discreet)
        if discreet:
            # Only the place changed: nothing to say in words that do not name it.
            text = (
                gettext(lang, MOVED_DISCREET, old=old.when, new=new.when)
                if new.when != old.when
                else ""
            )
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
        stamp = int(when.timestamp())
        if text:
            await _tell(session, services, client, case, text, f"appt:{appt.id}:moved:{stamp}")
    if zone:
        appt.timezone = zone
    session.add(appt)
    await audit(session, actor, "appointment.move", case, detail=f"appointment {appt.id}")
    await session.flush()
    return Booked(appt, case.reference, await _pending(session, appt), changed=changed)


async def cancel(
    session: AsyncSession, services: Services, appt: Appointment, *, actor: Actor
) -> Cancelled:
    """Cancels an appointment, withdraws its reminders and tells the client (if still ahead)."""
    now = services.clock()
    case, client = await _case_and_client(session, appt)
    await authorize(session, actor, case, action="appointment.cancel", reference=case.reference)
    if appt.status == CANCELLED:
        return Cancelled(appt, already=True)
    repo.cancel_appointment(appt, at=now)
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
    await audit(session, actor, "appointment.cancel", case, detail=f"appointment {appt.id}")
    await session.flush()
    return Cancelled(appt, already=False)

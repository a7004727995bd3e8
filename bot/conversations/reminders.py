"""Reminders and check-ins: what the scheduler sends, and the client's answers to them.

A reminder asks 1 (I will be there) or 2 (I cannot come); a 2 alerts the assigned attorney,
and no answer by the last reminder flags the case for a coordinator. A check-in goes to a
client whose open case has had no news for CHECKIN_AFTER_DAYS; a 2 (something changed) or 3
(talk to my attorney) goes to the assigned attorney, with what the client wrote. Group
alerts carry the case reference and the flag only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework.appointments import (
    SCHEDULED,
    bring_sentence,
    describe,
    sentences,
)
from bot.casework.status import is_closing_status
from bot.core import Choice, Reply
from bot.discreet import is_discreet
from bot.i18n import N_, format_datetime, gettext
from bot.keywords import normalise
from bot.outgoing import alert_coordinators, queue_reply
from storage import repo
from storage.models import (
    Appointment,
    Case,
    Client,
    OutboxItem,
    Priority,
    ScheduledItem,
    ScheduleKind,
    ScheduleStatus,
    Staff,
)

if TYPE_CHECKING:
    from bot.conversations.base import Turn
    from bot.services import Services

# An answer counts only while its prompt is the last thing the client was sent, and no
# longer than this after it.
ANSWER_WINDOW = timedelta(days=7)
CHECKIN_BATCH = 500

CONFIRM, DECLINE = "1", "2"
FINE, CHANGED, ATTORNEY = "1", "2", "3"

# Whole messages (as keywords.normalise leaves them) that answer a reminder, per language.
# A number may also start a longer message ("2 I am sick").
REMINDER_WORDS: dict[str, frozenset[str]] = {
    CONFIRM: frozenset(
        {
            "1",
            "YES",
            "Y",
            "OK",
            "OKAY",
            "CONFIRM",
            "CONFIRMED",
            "I CONFIRM",
            "I WILL BE THERE",
            "ILL BE THERE",
            "SI",
            "CONFIRMO",
            "CONFIRMAR",
            "CONFIRMADO",
            "SI VOY",
            "ALLI ESTARE",
            "AHI ESTARE",
        }
    ),
    DECLINE: frozenset(
        {
            "2",
            "NO",
            "N",
            "CANT",
            "CANNOT",
            "CAN NOT",
            "I CANT",
            "I CANNOT",
            "CANT COME",
            "CANNOT COME",
            "I CANT COME",
            "I CANNOT COME",
            "CANT GO",
            "I CANT GO",
            "CANT MAKE IT",
            "I CANT MAKE IT",
            "NOT COMING",
            "NO PUEDO",
            "NO PUEDO IR",
            "NO PUEDO ASISTIR",
            "NO VOY",
            "NO PODRE",
            "NO PODRE IR",
        }
    ),
}
CHECKIN_WORDS: dict[str, frozenset[str]] = {
    FINE: frozenset({"1", "ALL FINE", "FINE", "ALL GOOD", "GOOD", "OK", "TODO BIEN", "BIEN"}),
    CHANGED: frozenset(
        {"2", "SOMETHING CHANGED", "CHANGED", "ALGO CAMBIO", "CAMBIO ALGO", "HAY CAMBIOS"}
    ),
    ATTORNEY: frozenset(
        {
            "3",
            "TALK TO MY ATTORNEY",
            "TALK TO MY LAWYER",
            "ATTORNEY",
            "LAWYER",
            "MY ATTORNEY",
            "MY LAWYER",
            "ABOGADO",
            "ABOGADA",
            "MI ABOGADO",
            "MI ABOGADA",
            "HABLAR CON MI ABOGADO",
            "HABLAR CON MI ABOGADA",
        }
    ),
}

REMINDER = N_("Reminder from {program}: your {kind} is on {when} at {place}.")
REMINDER_DISCREET = N_("Reminder: your appointment is on {when}.")
CONFIRM_LABEL = N_("Confirm")
DECLINE_LABEL = N_("I cannot come")
CONFIRMED = N_("Thank you. See you on {when}.")
DECLINED = N_("Thank you for telling us. Your attorney will contact you about what to do next.")
DECLINED_DISCREET = N_("Thank you for telling us. We will contact you.")

CHECKIN = N_("{program}: your case {ref} is still open. Anything new?")
CHECKIN_DISCREET = N_("Checking in: anything new?")
FINE_LABEL = N_("All fine")
CHANGED_LABEL = N_("Something changed")
ATTORNEY_LABEL = N_("Talk to my attorney")
SOMEONE_LABEL = N_("Talk to someone")
CHECKIN_FINE = N_("Thank you. We will keep you posted.")
CHECKIN_ASK_WHAT = N_("What changed? Write it in one message and we will pass it on.")
CHECKIN_PASSED = N_("Thank you. We passed this on; you will hear from us soon.")


@dataclass(frozen=True)
class Answer:
    """A recognised answer: the option chosen, and anything written after it."""

    value: str
    rest: str = ""


def parse_answer(text: str, choice: str | None, table: dict[str, frozenset[str]]) -> Answer | None:
    """The option this message (or button) chooses from ``table``, if any."""
    if choice in table:
        return Answer(choice)
    norm = normalise(text)
    for value, words in table.items():
        if norm in words:
            return Answer(value)
    head, _, rest = text.strip().partition(" ")
    if head.rstrip(".):") in table and rest.strip():
        return Answer(head.rstrip(".):"), rest.strip())
    return None


def _lang(services: Services, client: Client) -> str:
    return client.language or services.settings.default_language


async def _attorney(session: AsyncSession, case: Case) -> Staff | None:
    if case.assigned_staff_id is None:
        return None
    staff = await session.get(Staff, case.assigned_staff_id)
    return staff if staff is not None and staff.active else None


def _remember(item: ScheduledItem, out: OutboxItem, **more: object) -> None:
    """Which message the client would be answering (a new dict: JSON columns track by value)."""
    item.payload = {**(item.payload or {}), "message_id": out.message_id, **more}


# --------------------------------------------------------------------------- sending reminders


def reminder_reply(services: Services, client: Client, case: Case, appt: Appointment) -> Reply:
    """The reminder: when, where, what to bring; Confirm and I-cannot-come as choices."""
    lang = _lang(services, client)
    discreet = is_discreet(client, case)
    d = describe(services, client, appt, discreet=discreet)
    if discreet:
        text = gettext(lang, REMINDER_DISCREET, when=d.when)
    else:
        head = gettext(
            lang,
            REMINDER,
            program=services.settings.program_name,
            kind=d.kind,
            when=d.when,
            place=d.place,
        )
        text = sentences(head, bring_sentence(lang, d))
    choices = (
        Choice(CONFIRM, gettext(lang, CONFIRM_LABEL)),
        Choice(DECLINE, gettext(lang, DECLINE_LABEL)),
    )
    return Reply(text=text, choices=choices, urgent=False)


async def send_reminder(session: AsyncSession, services: Services, item: ScheduledItem) -> str:
    """The scheduler's "reminder" handler: one reminder, or skipped when stale or superseded."""
    now = services.clock()
    appt = await session.get(Appointment, item.appointment_id) if item.appointment_id else None
    if appt is None or appt.status != SCHEDULED or appt.starts_at <= now:
        return ScheduleStatus.SKIPPED  # gone, or already past: nothing is sent late
    assert appt.id is not None
    siblings = [
        s
        for s in await repo.scheduled_for_appointment(
            session, appointment_id=appt.id, kind=ScheduleKind.REMINDER
        )
        if s.id != item.id and s.status != ScheduleStatus.CANCELLED
    ]
    # After downtime several offsets can be due at once: only the latest one is sent.
    if any(item.due_at < s.due_at <= now for s in siblings):
        return ScheduleStatus.SKIPPED
    case = await session.get(Case, appt.case_id)
    client = await session.get(Client, case.client_id) if case else None
    if case is None or client is None or client.wrapped_key is None:
        return ScheduleStatus.SKIPPED
    offset = int((item.payload or {}).get("offset", 0))
    out = await queue_reply(
        session,
        services,
        client,
        reminder_reply(services, client, case, appt),
        kind="reminder",
        priority=Priority.REMINDER,
        dedupe_key=f"reminder:{appt.id}:{offset}:{int(appt.starts_at.timestamp())}",
        case_id=case.id,
    )
    if out is None:
        return ScheduleStatus.SKIPPED
    _remember(item, out)
    last = not any(s.due_at > item.due_at for s in siblings)
    sent_before = any(s.status == ScheduleStatus.DONE for s in siblings)
    answered = appt.confirmed_at is not None or appt.declined_at is not None
    if last and sent_before and not answered:
        await _flag_no_answer(session, services, case, appt)
    return ScheduleStatus.DONE


async def _flag_no_answer(
    session: AsyncSession, services: Services, case: Case, appt: Appointment
) -> None:
    """No answer by the last reminder: the case waits for a coordinator."""
    case.needs_review = True
    session.add(case)
    when = format_datetime(appt.starts_at, "en", appt.timezone)
    await alert_coordinators(
        session,
        services,
        f"Case {case.reference}: no answer to the reminders for the {appt.kind} on {when}.",
        case_id=case.id,
        dedupe_key=f"noanswer:{appt.id}:{int(appt.starts_at.timestamp())}",
    )


# --------------------------------------------------------------------------- check-ins


def checkin_reply(services: Services, client: Client, case: Case) -> Reply:
    lang = _lang(services, client)
    if is_discreet(client, case):
        text = gettext(lang, CHECKIN_DISCREET)
        third = SOMEONE_LABEL
    else:
        text = gettext(lang, CHECKIN, program=services.settings.program_name, ref=case.reference)
        third = ATTORNEY_LABEL
    choices = (
        Choice(FINE, gettext(lang, FINE_LABEL)),
        Choice(CHANGED, gettext(lang, CHANGED_LABEL)),
        Choice(ATTORNEY, gettext(lang, third)),
    )
    return Reply(text=text, choices=choices, urgent=False)


def checkin_key(case: Case) -> str:
    """One check-in per stretch of silence: the key names the day of the last news."""
    return f"checkin:{case.id}:{case.last_news_at:%Y%m%d}"


async def plan_checkins(session: AsyncSession, services: Services, *, now: datetime) -> int:
    """Creates a check-in row for each open case without news for CHECKIN_AFTER_DAYS."""
    before = now - timedelta(days=services.settings.checkin_after_days)
    created = 0
    for case in await repo.cases_without_news(session, before=before, limit=CHECKIN_BATCH):
        if is_closing_status(services.settings, case.status):
            continue
        created += (
            await repo.upsert_scheduled(
                session,
                kind=ScheduleKind.CHECKIN,
                unique_key=checkin_key(case),
                due_at=now,
                now=now,
                if_exists="keep",
                client_id=case.client_id,
                case_id=case.id,
            )
            is not None
        )
    return created


async def send_checkin(session: AsyncSession, services: Services, item: ScheduledItem) -> str:
    """The scheduler's "checkin" handler: asks a client whose case has gone quiet."""
    now = services.clock()
    case = await session.get(Case, item.case_id) if item.case_id else None
    if case is None or case.closed or is_closing_status(services.settings, case.status):
        return ScheduleStatus.SKIPPED
    if case.last_news_at > now - timedelta(days=services.settings.checkin_after_days):
        return ScheduleStatus.SKIPPED  # news came since the row was planned
    client = await session.get(Client, case.client_id)
    if client is None or client.wrapped_key is None:
        return ScheduleStatus.SKIPPED
    out = await queue_reply(
        session,
        services,
        client,
        checkin_reply(services, client, case),
        kind="checkin",
        priority=Priority.REMINDER,
        dedupe_key=item.unique_key,
        case_id=case.id,
    )
    if out is None:
        return ScheduleStatus.SKIPPED
    _remember(item, out)
    # The check-in is news of a kind: the next one comes after another quiet stretch.
    case.last_news_at = now
    session.add(case)
    return ScheduleStatus.DONE


# --------------------------------------------------------------------------- answers


async def handle_reply(turn: Turn) -> bool:
    """Handles an answer to a pending reminder or check-in; True when it did."""
    session, client = turn.session, turn.client
    if client.id is None or client.wrapped_key is None:
        return False
    now = turn.services.clock()
    prompt = await repo.latest_prompt(
        session,
        client_id=client.id,
        kinds=(ScheduleKind.REMINDER, ScheduleKind.CHECKIN),
        since=now - ANSWER_WINDOW,
    )
    if prompt is None:
        return False
    message_id = (prompt.payload or {}).get("message_id")
    if not isinstance(message_id, int):
        return False
    # Something else was said since (a menu, a status, an attorney): "1" answers that instead.
    if await repo.wrote_since(session, client_id=client.id, message_id=message_id):
        return False
    if prompt.kind == ScheduleKind.REMINDER:
        return await _reminder_answer(turn, prompt, now)
    return await _checkin_answer(turn, prompt)


async def _reminder_answer(turn: Turn, prompt: ScheduledItem, now: datetime) -> bool:
    answer = parse_answer(turn.text, turn.message.choice, REMINDER_WORDS)
    if answer is None or prompt.appointment_id is None:
        return False
    session, services, client = turn.session, turn.services, turn.client
    appt = await session.get(Appointment, prompt.appointment_id)
    if appt is None or appt.status != SCHEDULED or appt.starts_at <= now:
        return False
    case = await session.get(Case, appt.case_id)
    assert case is not None
    lang = turn.lang
    discreet = is_discreet(client, case)
    appt.updated_at = now
    if answer.value == CONFIRM:
        appt.confirmed_at, appt.declined_at = now, None
        d = describe(services, client, appt, discreet=discreet)
        turn.say(gettext(lang, CONFIRMED, when=d.when))
        action = "appointment.confirm"
    else:
        appt.declined_at, appt.confirmed_at = now, None
        await _alert_cannot_come(session, services, case, appt)
        turn.say(gettext(lang, DECLINED_DISCREET if discreet else DECLINED))
        action = "appointment.decline"
    session.add(appt)
    await repo.audit(
        session,
        actor_kind="client",
        actor_id=client.id,
        action=action,
        case_id=case.id,
        client_id=client.id,
    )
    return True


async def _alert_cannot_come(
    session: AsyncSession, services: Services, case: Case, appt: Appointment
) -> None:
    """Tells the assigned attorney (else the coordinators) the case ref and the date; no words."""
    when = format_datetime(appt.starts_at, "en", appt.timezone)
    text = (
        f"Case {case.reference}: the client cannot come to the {appt.kind} on {when}. "
        "Please contact them to arrange what happens next."
    )
    key = f"decline:{appt.id}:{int(appt.starts_at.timestamp())}"
    staff = await _attorney(session, case)
    if staff is not None:
        await repo.enqueue_staff(
            session,
            vault=services.vault,
            text=text,
            staff=staff,
            case_id=case.id,
            dedupe_key=key,
            due_at=services.clock(),
        )
        return
    case.needs_review = True
    session.add(case)
    await alert_coordinators(
        session, services, f"{text} No attorney is assigned.", case_id=case.id, dedupe_key=key
    )


async def _checkin_answer(turn: Turn, prompt: ScheduledItem) -> bool:
    session, services, client = turn.session, turn.services, turn.client
    case = await session.get(Case, prompt.case_id) if prompt.case_id else None
    if case is None:
        return False
    payload = dict(prompt.payload or {})
    lang = turn.lang
    if payload.get("awaiting_detail"):
        detail = turn.text.strip()
        if not detail:
            return False
        staff = await _attorney(session, case)
        await _checkin_to_staff(turn, prompt, case, staff, CHANGED, detail)
        prompt.payload = {**payload, "awaiting_detail": False}
        session.add(prompt)
        turn.say(gettext(lang, CHECKIN_PASSED))
        return True
    answer = parse_answer(turn.text, turn.message.choice, CHECKIN_WORDS)
    if answer is None:
        return False
    payload["answer"] = answer.value
    prompt.payload = payload
    session.add(prompt)
    await repo.audit(
        session,
        actor_kind="client",
        actor_id=client.id,
        action=f"checkin.answer{answer.value}",
        case_id=case.id,
        client_id=client.id,
    )
    if answer.value == FINE:
        turn.say(gettext(lang, CHECKIN_FINE))
        return True
    staff = await _attorney(session, case)
    await _checkin_to_staff(turn, prompt, case, staff, answer.value, answer.rest)
    if answer.value == CHANGED and not answer.rest and staff is not None:
        # Ask what changed; the next message goes to the attorney too.
        out = await queue_reply(
            session,
            services,
            client,
            Reply(text=gettext(lang, CHECKIN_ASK_WHAT), urgent=True),
            channel=turn.identity.channel,
            kind="reply",
            case_id=case.id,
        )
        if out is not None:
            _remember(prompt, out, awaiting_detail=True)
            session.add(prompt)
        return True
    turn.say(gettext(lang, CHECKIN_PASSED))
    return True


async def _checkin_to_staff(
    turn: Turn,
    prompt: ScheduledItem,
    case: Case,
    staff: Staff | None,
    value: str,
    detail: str,
) -> None:
    """What the client said goes to their attorney only; the group learns the flag alone."""
    session, services = turn.session, turn.services
    what = "something changed" if value == CHANGED else "they want to talk to you"
    key = f"checkin-answer:{prompt.id}:{turn.stored.id}"
    if staff is not None:
        text = f"Check-in, case {case.reference}: the client says {what}."
        if detail:
            text += f"\nThey wrote: {detail}"
        # Under the client's key: it may hold what they wrote, and erasure must reach it.
        await repo.enqueue_staff(
            session,
            vault=services.vault,
            text=text,
            staff=staff,
            client=turn.client,
            case_id=case.id,
            dedupe_key=key,
            due_at=services.clock(),
        )
        return
    case.needs_review = True
    session.add(case)
    flag = "reports a change" if value == CHANGED else "asks to talk to an attorney"
    await alert_coordinators(
        session,
        services,
        f"Check-in, case {case.reference}: the client {flag}. No attorney is assigned.",
        case_id=case.id,
        dedupe_key=key,
    )

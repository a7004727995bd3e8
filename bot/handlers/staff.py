"""Staff on Telegram: attorneys answer their own clients, coordinators run the program.

Who may do what is decided here, per command, from the sender's staff record (found by
their Telegram id, never by anything they typed). Answers go back through the outbox to
the chat the command came from. A coordinators' group only ever sees references, flags
and statuses; client content goes to the assigned attorney's private chat, audited.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework import appointments, thread
from bot.casework.assign import assign_case
from bot.casework.base import COORDINATORS_ONLY, NOT_YOURS, Actor, CaseworkError, authorize
from bot.casework.status import change_status
from bot.conversations import broadcast_wizard as wizard
from bot.conversations import relay
from bot.core import Choice, InboundMessage
from bot.services import Services
from storage import repo
from storage.models import Case, Channel, Client, Direction, Message, Role, Staff

log = logging.getLogger(__name__)

ATTORNEY_COMMANDS: tuple[tuple[str, str], ...] = (
    ("cases", "Your open cases"),
    ("case", "REF: status, next appointment, recent messages"),
    ("reply", "REF text: write to the client of your case"),
    ("status", "REF text: record a new status and tell the client"),
    ("help", "How to answer your clients"),
)
COORDINATOR_COMMANDS: tuple[tuple[str, str], ...] = (
    ("cases", "Open cases without an attorney"),
    ("find", "REF: look up a case"),
    ("assign", "REF: choose the attorney"),
    ("status", "REF text: record a new status and tell the client"),
    ("appt", "REF when where: book an appointment"),
    ("broadcast", "Send one message to many clients, each in their language"),
    ("help", "What coordinators can do here"),
)
CLIENT_COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", "Start or continue"),
    ("link", "Connect this chat to the case you have by text message"),
    ("help", "Help"),
)

ATTORNEY_HELP = (
    "Your clients' messages arrive here as cards (Case REF · channel · time).\n"
    "To answer, reply to the card (swipe it or tap Reply), or send /reply REF your text.\n"
    "Anything else you type here is not sent to anyone.\n"
    "/cases lists your cases; /case REF shows one."
)
COORDINATOR_HELP = (
    "/cases: open cases without an attorney\n"
    "/find REF: look up a case\n"
    "/assign REF: choose its attorney\n"
    "/status REF text: record a status and tell the client\n"
    "/appt REF YYYY-MM-DD HH:MM place: book an appointment (client's local time)\n"
    "/broadcast: one message to many clients, each in their language (/cancel stops it)"
)
NOT_SENT_HINT = (
    "Not sent. To write to a client, reply to their card or use /reply REF text. "
    "Nothing else you type here reaches anyone."
)
PRIVATE_ONLY = "Use this in your private chat with me: client messages never go to a group."
NO_CASE = "No case {ref}."


@dataclass
class StaffContext:
    """One staff message being handled, inside the transaction that stores its answers."""

    session: AsyncSession
    services: Services
    staff: Staff
    message: InboundMessage
    stored: Message

    @property
    def chat_id(self) -> int | None:
        chat = self.message.telegram
        return chat.chat_id if chat is not None else None

    @property
    def private(self) -> bool:
        chat = self.message.telegram
        return chat is None or chat.private

    @property
    def is_coordinator(self) -> bool:
        return self.staff.role == Role.COORDINATOR

    @property
    def is_attorney(self) -> bool:
        return self.staff.role == Role.ATTORNEY

    async def say(
        self,
        text: str,
        *,
        client: Client | None = None,
        case_id: int | None = None,
        choices: Sequence[Choice] = (),
        kind: str = "staff",
    ) -> None:
        """Answer in the chat the message came from (a private chat, or the group)."""
        extra = {"choices": [[c.value, c.label] for c in choices]} if choices else None
        if self.private:
            await repo.enqueue_staff(
                self.session,
                vault=self.services.vault,
                due_at=self.services.clock(),
                text=text,
                staff=self.staff,
                client=client,
                case_id=case_id,
                kind=kind,
                extra=extra,
            )
            return
        # Client content never goes to a group; callers check, and this holds it anyway.
        assert client is None, "client content addressed to a group chat"
        await repo.enqueue_staff(
            self.session,
            vault=self.services.vault,
            due_at=self.services.clock(),
            text=text,
            chat_id=self.chat_id,
            case_id=case_id,
            kind=kind,
            extra=extra,
        )

    async def audit(
        self, action: str, case: Case | None, *, allowed: bool = True, detail: str | None = None
    ) -> None:
        await repo.audit(
            self.session,
            actor_kind="staff",
            actor_id=self.staff.id,
            action=action,
            case_id=case.id if case else None,
            client_id=case.client_id if case else None,
            allowed=allowed,
            detail=detail,
        )


Command = Callable[[StaffContext, str], Awaitable[None]]


def split_command(text: str) -> tuple[str, str]:
    """'/reply@bot K7M-4PX hello' -> ('reply', 'K7M-4PX hello')."""
    head, _, rest = text.strip().partition(" ")
    name = head[1:].split("@", 1)[0].lower()
    return name, rest.strip()


def _ref_and_rest(args: str) -> tuple[str, str]:
    ref, _, rest = args.strip().partition(" ")
    return repo.normalize_reference(ref) if ref else "", rest.strip()


def _when(services: Services, when: datetime, tz: str | None = None) -> str:
    zone = ZoneInfo(tz or services.settings.default_timezone)
    return when.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


async def handle_staff_message(
    session: AsyncSession,
    services: Services,
    *,
    staff: Staff,
    message: InboundMessage,
    stored: Message,
) -> None:
    """Runs one staff message: a command, a button, a reply to a client's card, or a hint."""
    ctx = StaffContext(session, services, staff, message, stored)
    if message.choice:
        await _button(ctx, message.choice)
        return
    text = message.text.strip()
    if await _wizard_takes(ctx, text):
        return
    if text.startswith("/"):
        name, args = split_command(text)
        command = COMMANDS.get(name)
        if command is None:
            await ctx.say(ATTORNEY_HELP if ctx.is_attorney else COORDINATOR_HELP)
            return
        await command(ctx, args)
        return
    reply_to = message.telegram.reply_to if message.telegram is not None else None
    if reply_to and ctx.private:
        await _reply_to_card(ctx, reply_to, text)
        return
    if not ctx.private:
        return  # conversation in the group is between people, not for the bot
    await ctx.say(NOT_SENT_HINT if ctx.is_attorney else COORDINATOR_HELP)


# --------------------------------------------------------------------------- attorneys


async def _reply_to_card(ctx: StaffContext, card_provider_id: str, text: str) -> None:
    """Relays a reply to a card — only if the card was this attorney's and the case still is."""
    card = await repo.find_message(
        ctx.session, channel=Channel.TELEGRAM, provider_id=card_provider_id
    )
    if card is None or card.direction != Direction.OUT or card.case_id is None:
        await ctx.say(NOT_SENT_HINT)
        return
    case = await ctx.session.get(Case, card.case_id)
    if card.staff_id != ctx.staff.id:
        outcome = await relay.refuse(
            ctx.session, staff=ctx.staff, case=case, action="relay.reply", reason="not their card"
        )
        await ctx.say(outcome.notice)
        return
    await _relay(ctx, case, text)


async def _relay(ctx: StaffContext, case: Case | None, text: str) -> None:
    chat = ctx.message.telegram
    outcome = await relay.reply_to_client(
        ctx.session,
        ctx.services,
        staff=ctx.staff,
        case=case,
        text=text,
        reply_to_message_id=chat.message_id if chat is not None else None,
    )
    if not outcome.sent:
        await ctx.say(outcome.notice)


async def cmd_reply(ctx: StaffContext, args: str) -> None:
    """Writes to the client of one of the attorney's cases: /reply REF text."""
    ref, text = _ref_and_rest(args)
    if not ctx.private:
        await ctx.say(PRIVATE_ONLY)
        return
    if not ref or not text:
        await ctx.say("Usage: /reply REF your message")
        return
    case = await repo.get_case(ctx.session, reference=ref)
    await _relay(ctx, case, text)


async def cmd_cases(ctx: StaffContext, args: str) -> None:
    """Lists the attorney's open cases, or for coordinators the cases awaiting an attorney."""
    if ctx.is_attorney:
        assert ctx.staff.id is not None
        cases = await repo.cases_of_staff(ctx.session, staff_id=ctx.staff.id)
        title = "Your open cases:" if cases else "You have no open cases."
    else:
        cases = await repo.unassigned_cases(ctx.session)
        title = "Open cases without an attorney:" if cases else "Every open case has an attorney."
    lines = [title]
    lines += [f"{c.reference} · {c.category} · {c.status}{_flags(c)}" for c in cases]
    await ctx.say("\n".join(lines))


def _flags(case: Case) -> str:
    flags = [
        name
        for name, on in (
            ("URGENT", case.urgent),
            ("discreet", case.discreet),
            ("possible conflict", case.conflict_flag),
            ("needs review", case.needs_review),
        )
        if on
    ]
    return f" · {', '.join(flags)}" if flags else ""


async def _summary(ctx: StaffContext, case: Case) -> list[str]:
    """What anyone on staff may see of a case: reference, flags, status, attorney, next date."""
    assert case.id is not None
    services = ctx.services
    attorney = (
        await ctx.session.get(Staff, case.assigned_staff_id) if case.assigned_staff_id else None
    )
    handler = thread.first_name(repo.staff_name(services.vault, attorney)) if attorney else None
    appt = await repo.next_appointment_for_case(
        ctx.session, case_id=case.id, after=services.clock()
    )
    return [
        f"Case {case.reference} · {case.category}{_flags(case)}",
        f"Status: {case.status}" + (" (closed)" if case.closed else ""),
        f"Attorney: {handler or 'not assigned'}",
        "Next appointment: "
        + (f"{appt.kind}, {_when(services, appt.starts_at, appt.timezone)}" if appt else "none"),
        f"Opened {_when(services, case.opened_at)}",
    ]


async def cmd_case(ctx: StaffContext, args: str) -> None:
    """Shows one of the attorney's cases with its recent messages (an audited read)."""
    ref, _ = _ref_and_rest(args)
    if not ref:
        await ctx.say("Usage: /case REF")
        return
    if ctx.is_coordinator:
        await cmd_find(ctx, args)
        return
    if not ctx.private:
        await ctx.say(PRIVATE_ONLY)
        return
    case = await repo.get_case(ctx.session, reference=ref)
    if case is None or case.assigned_staff_id != ctx.staff.id:
        # The same answer whether the case exists or not: no probing other references.
        await ctx.audit("staff.read", case, allowed=False, detail="case not assigned to them")
        await ctx.say(NOT_YOURS.format(ref=ref))
        return
    client = await ctx.session.get(Client, case.client_id)
    assert client is not None
    lines = await _summary(ctx, case)
    name = repo.client_name(ctx.services.vault, client) if client.wrapped_key else None
    lines.insert(1, f"Client: {name or '(no name)'} · {client.language}")
    assert case.id is not None
    appt = await repo.next_appointment_for_case(
        ctx.session, case_id=case.id, after=ctx.services.clock()
    )
    if appt is not None:
        # The place only in the attorney's private chat: it can say where a client will be.
        place = repo.appointment_place(ctx.services.vault, client, appt)
        at = next(i for i, line in enumerate(lines) if line.startswith("Next appointment"))
        lines.insert(at + 1, f"Place: {place or '-'}")
    recent = await thread.recent_thread_text(ctx.session, ctx.services, case=case, client=client)
    lines += ["", "Recent messages:", recent]
    await ctx.say("\n".join(lines), client=client, case_id=case.id)
    await ctx.audit("staff.read", case, detail="/case with recent messages")


# --------------------------------------------------------------------------- coordinators


async def _coordinator_only(ctx: StaffContext, command: str) -> bool:
    if ctx.is_coordinator:
        return True
    await ctx.audit(f"staff.{command}", None, allowed=False, detail="not a coordinator")
    await ctx.say(COORDINATORS_ONLY)
    return False


async def cmd_find(ctx: StaffContext, args: str) -> None:
    """Looks up a case by reference: flags, status, attorney, next appointment — no content."""
    ref, _ = _ref_and_rest(args)
    if ctx.is_attorney:
        await cmd_case(ctx, args)
        return
    if not ref:
        await ctx.say("Usage: /find REF")
        return
    case = await repo.get_case(ctx.session, reference=ref)
    if case is None:
        await ctx.say(NO_CASE.format(ref=ref))
        return
    await ctx.audit("case.find", case)
    await ctx.say("\n".join(await _summary(ctx, case)), case_id=case.id)


def assign_button(case_id: int) -> Choice:
    return Choice(value=f"assign:{case_id}", label="Assign")


async def _picker(ctx: StaffContext, case: Case) -> None:
    assert case.id is not None
    attorneys = await repo.active_staff(ctx.session, role=Role.ATTORNEY)
    if not attorneys:
        await ctx.say("No active attorneys. Add one with: probono staff add --role attorney")
        return
    choices = []
    for attorney in attorneys:
        assert attorney.id is not None
        load = len(await repo.cases_of_staff(ctx.session, staff_id=attorney.id))
        current = " ✓" if attorney.id == case.assigned_staff_id else ""
        name = repo.staff_name(ctx.services.vault, attorney)
        choices.append(
            Choice(value=f"assignto:{case.id}:{attorney.id}", label=f"{name} ({load}){current}")
        )
    await ctx.say(f"Who should handle {case.reference}?", choices=choices, case_id=case.id)


async def cmd_assign(ctx: StaffContext, args: str) -> None:
    """Offers the attorneys as buttons for a case: /assign REF."""
    if not await _coordinator_only(ctx, "assign"):
        return
    ref, _ = _ref_and_rest(args)
    case = await repo.get_case(ctx.session, reference=ref) if ref else None
    if case is None:
        await ctx.say(NO_CASE.format(ref=ref) if ref else "Usage: /assign REF")
        return
    await _picker(ctx, case)


async def _button(ctx: StaffContext, data: str) -> None:
    """A pressed button: 'assign:CASE' opens the picker, 'assignto:CASE:STAFF' assigns."""
    parts = data.split(":")
    if parts[0] == BROADCAST_BUTTON:
        await _wizard_takes(ctx, data.partition(":")[2])
        return
    if parts[0] not in ("assign", "assignto"):
        return
    if not await _coordinator_only(ctx, "assign"):
        return
    try:
        case_id = int(parts[1])
        attorney_id = int(parts[2]) if parts[0] == "assignto" else None
    except (IndexError, ValueError):
        return
    case = await ctx.session.get(Case, case_id)
    if case is None:
        return
    if attorney_id is None:
        await _picker(ctx, case)
        return
    attorney = await ctx.session.get(Staff, attorney_id)
    if attorney is None or not attorney.active or attorney.role != Role.ATTORNEY:
        await ctx.say("That attorney is no longer active. Try /assign again.")
        return
    try:
        done = await assign_case(
            ctx.session, ctx.services, actor=Actor.member(ctx.staff), case=case, attorney=attorney
        )
    except CaseworkError as exc:
        await ctx.say(str(exc))
        return
    if not done.changed:
        await ctx.say(f"{done.reference} is already with {done.attorney_name}.")
        return
    await ctx.say(f"{done.reference} assigned to {done.attorney_name}.", case_id=case.id)


async def cmd_status(ctx: StaffContext, args: str) -> None:
    """Records a case's new status and tells the client: /status REF text."""
    ref, text = _ref_and_rest(args)
    if not ref or not text:
        await ctx.say("Usage: /status REF new status")
        return
    case = await repo.get_case(ctx.session, reference=ref)
    actor = Actor.member(ctx.staff)
    try:
        if case is None:
            if ctx.is_coordinator:
                await ctx.say(NO_CASE.format(ref=ref))
                return
            # An attorney's refusal reads the same whether or not the case exists.
            case = await authorize(ctx.session, actor, None, action="case.status", reference=ref)
        done = await change_status(ctx.session, ctx.services, actor=actor, case=case, text=text)
    except CaseworkError as exc:
        await ctx.say(str(exc))
        return
    await ctx.say(f"{done.reference}: status is now “{done.status}”. The client is told.")


def split_when(text: str) -> tuple[str, str]:
    """'2026-03-10 09:30 Room 5' -> ('2026-03-10T09:30', 'Room 5'); one token stays one."""
    parts = text.split()
    if len(parts) >= 2 and ":" in parts[1] and "T" not in parts[0].upper():
        return f"{parts[0]}T{parts[1]}", " ".join(parts[2:])
    return (parts[0] if parts else ""), " ".join(parts[1:])


async def cmd_appt(ctx: StaffContext, args: str) -> None:
    """Books an appointment and tells the client: /appt REF YYYY-MM-DD HH:MM [kind] place."""
    if not await _coordinator_only(ctx, "appt"):
        return
    ref, rest = _ref_and_rest(args)
    usage = (
        "Usage: /appt REF YYYY-MM-DD HH:MM [hearing|meeting|call] place (the client's local time)"
    )
    if not ref or not rest:
        await ctx.say(usage)
        return
    case = await repo.get_case(ctx.session, reference=ref)
    if case is None:
        await ctx.say(NO_CASE.format(ref=ref))
        return
    when_text, place = split_when(rest)
    kind = appointments.DEFAULT_KIND
    first, _, remainder = place.partition(" ")
    if first.lower() in appointments.KINDS and remainder:
        kind, place = first.lower(), remainder
    try:
        # Without a zone, the time is the client's local time.
        booked = await appointments.book(
            ctx.session,
            ctx.services,
            case,
            when_text,
            place,
            kind=kind,
            actor=Actor.member(ctx.staff),
        )
    except CaseworkError as exc:
        await ctx.say(f"Not booked: {exc}.\n{usage}")
        return
    appt = booked.appointment
    await ctx.say(
        f"{booked.reference}: {appt.kind} booked for "
        f"{_when(ctx.services, appt.starts_at, appt.timezone)}."
        " The client is told and will be reminded.",
        case_id=case.id,
    )


# --------------------------------------------------------------------------- broadcasts

BROADCAST_BUTTON = "bcast"


async def _open_wizard(ctx: StaffContext) -> tuple[int, wizard.WizardState] | None:
    """The coordinator's wizard (its version and state), locked in this message's transaction."""
    assert ctx.staff.id is not None
    row = await repo.load_staff_dialogue(ctx.session, staff_id=ctx.staff.id)
    if row is None or row.flow != wizard.BROADCAST_FLOW:
        return None
    if row.updated_at < ctx.services.clock() - wizard.WIZARD_TTL:
        await repo.end_staff_dialogue(ctx.session, staff_id=ctx.staff.id, version=row.version)
        return None
    state = wizard.WizardState.from_dict(row.data)
    if state.step in (wizard.DONE, wizard.CANCELLED):
        return None  # confirmed: only its send (_send_broadcast) still reads it
    return row.version, state


async def _wizard_takes(ctx: StaffContext, text: str) -> bool:
    """Hands a private message to the coordinator's open wizard; False when there is none.

    Any command but /cancel leaves the wizard where it is and runs as usual.
    """
    if not ctx.private:
        return False
    if text.startswith("/") and split_command(text)[0] != "cancel":
        return False
    found = await _open_wizard(ctx)
    if found is None:
        return False
    await _wizard_turn(ctx, *found, text)
    return True


async def _say_step(ctx: StaffContext, step: wizard.WizardStep) -> None:
    choices = [Choice(value=f"{BROADCAST_BUTTON}:{c}", label=c) for c in step.choices]
    await ctx.say(step.text, choices=choices)


async def cmd_broadcast(ctx: StaffContext, args: str) -> None:
    """Starts the broadcast wizard in the coordinator's private chat: segment, texts, confirm."""
    if not await _coordinator_only(ctx, "broadcast"):
        return
    if not ctx.private:
        await ctx.say("Use /broadcast in your private chat with me.")
        return
    assert ctx.staff.id is not None
    step = wizard.start()
    now = ctx.services.clock()
    # Abandoned wizards of anyone go here, so their texts do not stay in the table for ever.
    await repo.forget_staff_dialogues(ctx.session, before=now - wizard.WIZARD_TTL)
    await repo.start_staff_dialogue(
        ctx.session,
        staff_id=ctx.staff.id,
        flow=wizard.BROADCAST_FLOW,
        data=step.state.to_dict(),
        at=now,
    )
    await ctx.audit("broadcast.wizard", None, detail="started")
    await _say_step(ctx, step)


async def _wizard_turn(
    ctx: StaffContext, version: int, state: wizard.WizardState, text: str
) -> None:
    """One coordinator message to the wizard; on confirmation the sending starts.

    The new state is saved in this message's transaction: a message Telegram sends again is
    recognised as stored already and never reaches here, and a message that fails rolls
    its step back with it.
    """
    assert ctx.staff.id is not None
    step = await wizard.advance(ctx.session, ctx.services, state, text)
    if step.finished and not step.send:
        if not await repo.end_staff_dialogue(ctx.session, staff_id=ctx.staff.id, version=version):
            raise repo.StaleDialogue("wizard was moved on by another process")
        await _say_step(ctx, step)
        return
    # A confirmed wizard stays, marked done, until its send takes it (below).
    version = await repo.save_staff_dialogue(
        ctx.session,
        staff_id=ctx.staff.id,
        data=state.to_dict(),
        expected_version=version,
        at=ctx.services.clock(),
    )
    await _say_step(ctx, step)
    if step.send:
        task = asyncio.create_task(wizard.send_confirmed(ctx.services, ctx.staff, version))
        ctx.services.background.add(task)
        task.add_done_callback(ctx.services.background.discard)


async def cmd_help(ctx: StaffContext, args: str) -> None:
    """Explains what this staff member can do here."""
    await ctx.say(ATTORNEY_HELP if ctx.is_attorney else COORDINATOR_HELP)


COMMANDS: dict[str, Command] = {
    "start": cmd_help,
    "help": cmd_help,
    "cases": cmd_cases,
    "case": cmd_case,
    "reply": cmd_reply,
    "find": cmd_find,
    "assign": cmd_assign,
    "status": cmd_status,
    "appt": cmd_appt,
    "broadcast": cmd_broadcast,
}


def commands_for(staff: Staff) -> Sequence[tuple[str, str]]:
    """The command menu for a staff member's private chat."""
    return ATTORNEY_COMMANDS if staff.role == Role.ATTORNEY else COORDINATOR_COMMANDS

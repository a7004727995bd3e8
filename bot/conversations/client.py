"""A client's message, after opt-out keywords: reminder answers, status, the words that work
everywhere (back, restart, menu, agent), the open-case menu, or the intake."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from bot.conversations import intake, relay, reminders, status
from bot.conversations.answers import Reask, parse_choice, phrases
from bot.conversations.base import Turn
from bot.conversations.engine import Engine, Progress
from bot.core import Choice, Reply
from bot.discreet import is_discreet
from bot.i18n import N_, format_datetime, gettext
from bot.keywords import normalise
from bot.outgoing import alert_coordinators
from storage import repo
from storage.models import Case, ConversationState

INTAKE_FLOW = "intake"
MENU_FLOW = "menu"
MENU_STATE = "menu"
WRITE_STATE = "write"
RESUME_AFTER = timedelta(hours=6)  # a wrong answer after this long gets "welcome back"
STATUS_WORD = "STATUS"  # what the menu's status option asks bot.conversations.status

BACK, RESTART, MENU, AGENT = "back", "restart", "menu", "agent"
# TRANSLATORS: words (whole messages) that go back one question, separated by |.
BACK_WORDS = N_("back|go back|previous|undo")
# TRANSLATORS: words (whole messages) that start the questions again, separated by |.
RESTART_WORDS = N_("restart|start over|start again|begin again|reset")
# TRANSLATORS: words (whole messages) that ask what the client can do, separated by |.
MENU_WORDS = N_("menu|options|help me|commands")
# TRANSLATORS: words (whole messages) asking to talk to a person, separated by |.
AGENT_WORDS = N_(
    "agent|human|person|a person|real person|operator|staff|talk to a person|"
    "speak to a person|representative|lawyer"
)
GLOBAL_WORDS = ((AGENT, AGENT_WORDS), (RESTART, RESTART_WORDS), (BACK, BACK_WORDS))

INTAKE_HELP = N_("Reply BACK to go back, RESTART to start over, or AGENT to talk to a person.")
RESTARTED = N_("OK, let's start again.")
AGENT_REPLY = N_("Thank you. A person from our team will contact you soon.")
MENU_PROMPT = N_("Your case {reference}. What would you like to do?")
MENU_PROMPT_DISCREET = N_("What would you like to do?")
MENU_OPTIONS = (
    ("status", N_("My case status"), N_("Status")),
    ("write", N_("Write to my attorney"), N_("Send a message")),
    ("next", N_("My next appointment"), N_("Next appointment")),
)
WRITE_PROMPT = N_("Please write your message in one text. We will pass it on to your attorney.")
WRITE_PROMPT_DISCREET = N_("Please write your message in one text.")
WRITE_DONE = N_("Thank you. We passed your message on.")
WRITE_DONE_MENU = N_("Thank you. We passed your message on. Reply MENU to see your options.")
NO_APPOINTMENT = N_("You have no appointment scheduled yet. We will text you when there is one.")
NEXT_APPOINTMENT = N_("Your next appointment: {when}.")
STATUS_FALLBACK = N_("Your case {reference} is open. Our team is working on it.")
STATUS_FALLBACK_DISCREET = N_("Your request {reference} is open.")


async def respond(turn: Turn) -> None:
    """Runs the client's side of the conversation for one inbound message."""
    if await reminders.handle_reply(turn):
        return
    if await status.answer_status(turn):
        return
    await converse(turn)


def global_word(turn: Turn) -> str | None:
    """BACK, RESTART, MENU or AGENT when the whole message is one of those words, in any
    offered language; None otherwise."""
    if turn.message.choice is not None:
        return None
    raw = turn.text.strip()
    if raw in ("?", "¿?", "？"):
        return MENU
    norm = normalise(raw)
    if not norm or len(norm) > 40:
        return None
    langs = Engine.all_languages(turn)
    for word, msgid in (*GLOBAL_WORDS, (MENU, MENU_WORDS)):
        if norm in phrases(msgid, langs):
            return word
    return None


async def converse(turn: Turn) -> None:
    """Picks the open-case menu or the intake and moves it one step, storing where it is."""
    session, services, client = turn.session, turn.services, turn.client
    assert client.id is not None
    engine = intake.load_intake(services.settings)
    now = services.clock()
    conv = await repo.load_conversation(session, client_id=client.id)
    word = global_word(turn)
    progress: Progress | None = None
    if conv is not None and conv.flow == INTAKE_FLOW:
        data = repo.conversation_data(services.vault, client, conv)
        progress = Progress.from_stored(conv.state, data, conv.history)
    active = progress is not None and not engine.is_finished(progress)
    cases = await repo.open_cases(session, client_id=client.id)
    if cases and not active:
        await _menu(turn, conv, cases[0], word)
        return

    nudged_at = conv.nudged_at if conv is not None and active else None
    if active and progress is not None and word == AGENT:
        await _ask_for_person(turn, None, progress)
        engine.prompt(turn, progress)
    elif active and progress is not None and word == RESTART:
        turn.say(gettext(turn.lang, RESTARTED))
        progress = await engine.begin(turn)
        nudged_at = None
    elif active and progress is not None and word == BACK:
        engine.back(turn, progress)
    elif active and progress is not None and word == MENU:
        turn.say(gettext(turn.lang, INTAKE_HELP))
        engine.prompt(turn, progress)
    else:
        resumed = active and conv is not None and now - conv.updated_at > RESUME_AFTER
        progress = await engine.handle(turn, progress if active else None, resumed=resumed)
    finished = engine.is_finished(progress)
    await repo.save_conversation(
        session,
        vault=services.vault,
        client=client,
        flow=INTAKE_FLOW,
        state=progress.state,
        # Once the case holds the answers (or there is none), the conversation forgets them.
        data={} if finished else progress.to_data(),
        history=[] if finished else progress.history,
        expected_version=conv.version if conv is not None else None,
        nudged_at=nudged_at,
        at=now,
    )
    await intake.track_progress(turn, progress, finished=finished, nudged=nudged_at is not None)


# --------------------------------------------------------------------------- talking to a person


async def _ask_for_person(turn: Turn, case: Case | None, progress: Progress | None) -> None:
    """Flags the case (or the intake) for a coordinator and tells the client someone will call."""
    session, services, client = turn.session, turn.services, turn.client
    if case is not None:
        case.needs_review = True
        case.updated_at = services.clock()
        session.add(case)
        text = f"The client of case {case.reference} asked to talk to a person."
    else:
        if progress is not None:
            progress.vars["asked_for_person"] = True
        where = progress.state if progress is not None else "first"
        text = (
            f"A client in intake (intake #{client.id}, at the {where} question) asked to talk "
            "to a person. No case yet."
        )
    await alert_coordinators(
        session,
        services,
        text,
        case_id=case.id if case is not None else None,
        dedupe_key=f"agent:{client.id}:{turn.stored.id}",
    )
    await repo.audit(
        session,
        actor_kind="client",
        actor_id=client.id,
        action="client.asked_for_person",
        case_id=case.id if case is not None else None,
        client_id=client.id,
    )
    turn.say(gettext(turn.lang, AGENT_REPLY))


# --------------------------------------------------------------------------- the open-case menu


def _menu_options(turn: Turn, case: Case) -> list[tuple[str, str, set[str]]]:
    discreet = is_discreet(turn.client, case)
    return [
        (value, gettext(turn.lang, short if discreet else label), set())
        for value, label, short in MENU_OPTIONS
    ]


def _show_menu(turn: Turn, case: Case) -> None:
    msgid = MENU_PROMPT_DISCREET if is_discreet(turn.client, case) else MENU_PROMPT
    choices = tuple(Choice(v, label) for v, label, _w in _menu_options(turn, case))
    turn.replies.append(
        Reply(
            text=gettext(turn.lang, msgid, reference=case.reference), choices=choices, urgent=True
        )
    )


def _substantive(turn: Turn) -> bool:
    """A message that says something (not "hi" or "ok"): worth passing on as it is."""
    text = turn.text.strip()
    return bool(turn.message.media) or (len(text) >= 20 and len(text.split()) >= 3)


async def _pass_on(turn: Turn, case: Case) -> None:
    """Keeps the message as a note on the case and hands it to the attorney when there is one."""
    session, services, client = turn.session, turn.services, turn.client
    turn.stored.case_id = case.id
    session.add(turn.stored)
    forwarded = await relay.forward_to_attorney(turn)
    if not forwarded:
        await alert_coordinators(
            session,
            services,
            f"The client of case {case.reference} sent a message; no attorney is assigned yet.",
            case_id=case.id,
            dedupe_key=f"note:{turn.stored.id}",
        )
    await repo.audit(
        session,
        actor_kind="client",
        actor_id=client.id,
        action="client.note",
        case_id=case.id,
        client_id=client.id,
        detail="forwarded to the assigned attorney" if forwarded else "kept for the team",
    )


async def _status(turn: Turn, case: Case) -> None:
    """Answers "my case status" through the status conversation, as if they wrote STATUS."""
    probe = dataclasses.replace(
        turn, message=dataclasses.replace(turn.message, text=STATUS_WORD, choice=None)
    )
    probe.replies = turn.replies  # its answer goes to this turn's replies
    if await status.answer_status(probe):
        return
    msgid = STATUS_FALLBACK_DISCREET if is_discreet(turn.client, case) else STATUS_FALLBACK
    turn.say(gettext(turn.lang, msgid, reference=case.reference))


async def _next_appointment(turn: Turn) -> None:
    """Tells the client when their next appointment is, in their language and time zone."""
    assert turn.client.id is not None
    found = await repo.next_appointment_for_client(
        turn.session, client_id=turn.client.id, after=turn.services.clock()
    )
    if found is None:
        turn.say(gettext(turn.lang, NO_APPOINTMENT))
        return
    appointment, _case = found
    when = format_datetime(appointment.starts_at, turn.lang, appointment.timezone)
    turn.say(gettext(turn.lang, NEXT_APPOINTMENT, when=when))


async def _menu(turn: Turn, conv: ConversationState | None, case: Case, word: str | None) -> None:
    """Status, a message for the attorney or the next appointment, for a client with a case."""
    state = conv.state if conv is not None and conv.flow == MENU_FLOW else MENU_STATE
    next_state = MENU_STATE
    if word == AGENT:
        await _ask_for_person(turn, case, None)
    elif word is not None:
        _show_menu(turn, case)
    elif state == WRITE_STATE:
        await _pass_on(turn, case)
        turn.say(gettext(turn.lang, WRITE_DONE))
    else:
        try:
            pick = parse_choice(turn.text, turn.message.choice, _menu_options(turn, case))
        except Reask:
            if _substantive(turn):
                await _pass_on(turn, case)
                turn.say(gettext(turn.lang, WRITE_DONE_MENU))
            else:
                _show_menu(turn, case)
        else:
            if pick == "status":
                await _status(turn, case)
            elif pick == "write":
                msgid = WRITE_PROMPT_DISCREET if is_discreet(turn.client, case) else WRITE_PROMPT
                turn.say(gettext(turn.lang, msgid))
                next_state = WRITE_STATE
            else:
                await _next_appointment(turn)
    await repo.save_conversation(
        turn.session,
        vault=turn.services.vault,
        client=turn.client,
        flow=MENU_FLOW,
        state=next_state,
        data={},
        history=[],
        expected_version=conv.version if conv is not None else None,
        at=turn.services.clock(),
    )

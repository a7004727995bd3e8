"""A coordinator's /broadcast as a dialogue: segment, texts, discreet check, confirmation.

Channel-neutral: the Telegram handler keeps ``WizardState.to_dict()`` in the database
between messages (storage.repo.staff_dialogues, saved in the transaction of the message that
moves it on, so any process takes the next one), passes each message to ``advance``,
shows ``WizardStep.text`` (with ``choices`` as buttons), and when ``step.send`` is set
calls ``send``; then it edits one message in place with ``progress`` until
``Report.done``. Staff screens are in English.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework import broadcast
from bot.i18n import LANGUAGES
from storage import repo
from storage.db import transaction
from storage.models import Broadcast, OutboxItem, Staff

if TYPE_CHECKING:
    from bot.services import Services

log = logging.getLogger(__name__)

# Steps
SEGMENT = "segment"
TEXTS = "texts"
FALLBACK = "fallback"
DISCREET = "discreet"
CONFIRM = "confirm"
DONE = "done"
CANCELLED = "cancelled"

CANCEL_WORDS = frozenset({"cancel", "/cancel", "stop", "abort"})
SKIP_WORDS = frozenset({"skip", "/skip", "-"})
YES_WORDS = frozenset({"yes", "y", "send", "ok"})
NO_WORDS = frozenset({"no", "n"})

SEGMENT_HELP = (
    "Who should get it? Send 'all', or terms joined by commas that must all hold: "
    "language=es, category=housing, status=TEXT, attorney=TELEGRAM_ID, "
    "appointment-date=YYYY-MM-DD. Send 'cancel' at any time to stop."
)


def _name(lang: str) -> str:
    return f"{LANGUAGES.get(lang, lang)} ({lang})"


@dataclass
class WizardState:
    """Where a coordinator is in the wizard; plain data, safe to keep as JSON."""

    step: str = SEGMENT
    segment: str | None = None
    languages: list[str] = field(default_factory=list)  # languages still to ask, in order
    asked: list[str] = field(default_factory=list)  # every language the segment has
    texts: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None
    discreet: int = 0  # discreet-mode clients in the segment
    discreet_safe: bool = False
    at: str | None = None  # ISO 8601, aware UTC, when scheduled
    broadcast_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WizardState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class WizardStep:
    """What to show after a message: the text, suggested answers, and whether to send now."""

    state: WizardState
    text: str
    choices: tuple[str, ...] = ()
    send: bool = False

    @property
    def finished(self) -> bool:
        return self.state.step in (DONE, CANCELLED)


def start() -> WizardStep:
    """Begins a broadcast: asks who it is for."""
    return WizardStep(WizardState(), SEGMENT_HELP, ("all",))


async def advance(
    session: AsyncSession, services: Services, state: WizardState, text: str
) -> WizardStep:
    """Takes the coordinator's next message and says what comes next."""
    answer = text.strip()
    if answer.lower() in CANCEL_WORDS:
        state.step = CANCELLED
        return WizardStep(state, "Broadcast cancelled. Nothing was sent.")
    if state.step == SEGMENT:
        return await _on_segment(session, services, state, answer)
    if state.step == TEXTS:
        return await _on_text(session, services, state, answer)
    if state.step == FALLBACK:
        return await _on_fallback(session, services, state, answer)
    if state.step == DISCREET:
        return await _on_discreet(session, services, state, answer)
    if state.step == CONFIRM:
        return _on_confirm(services, state, answer)
    return WizardStep(state, "This broadcast is finished. Send /broadcast to start another.")


async def _on_segment(
    session: AsyncSession, services: Services, state: WizardState, answer: str
) -> WizardStep:
    """Checks the segment and asks for the first language's text."""
    try:
        seg = broadcast.parse_segment(answer)
        who = await broadcast.audience(session, services, seg)
    except broadcast.SegmentError as exc:
        return WizardStep(state, f"{exc}.\n\n{SEGMENT_HELP}", ("all",))
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(who.skipped.items()))
    if not who.total:
        extra = f" ({skipped})" if skipped else ""
        return WizardStep(
            state, f"Nobody reachable matches {seg.expression()}{extra}. Try another segment."
        )
    state.segment = seg.expression()
    state.asked = who.ordered_languages()
    state.languages = list(state.asked)
    state.discreet = who.discreet
    counts = ", ".join(f"{lang} {who.languages[lang]}" for lang in state.asked)
    lines = [f"{who.total} clients match {state.segment} ({counts})."]
    if skipped:
        lines.append(f"Not reachable: {skipped}.")
    state.step = TEXTS
    lines.append(_ask_text(state.languages[0]))
    return WizardStep(state, "\n".join(lines), ("skip",))


def _ask_text(lang: str) -> str:
    return f"Send the text in {_name(lang)}, or 'skip' if you have none."


async def _on_text(
    session: AsyncSession, services: Services, state: WizardState, answer: str
) -> WizardStep:
    """Stores one language's text (or a skip) and asks for the next one."""
    lang = state.languages[0]
    if answer.lower() not in SKIP_WORDS:
        if not answer:
            return WizardStep(state, _ask_text(lang), ("skip",))
        try:
            broadcast.clean_texts({lang: answer})
        except broadcast.BroadcastError as exc:
            return WizardStep(state, f"{exc}. {_ask_text(lang)}", ("skip",))
        state.texts[lang] = answer
    state.languages.pop(0)
    if state.languages:
        return WizardStep(state, _ask_text(state.languages[0]), ("skip",))
    if not state.texts:
        state.languages = list(state.asked)
        return WizardStep(
            state, f"A broadcast needs at least one text. {_ask_text(state.languages[0])}"
        )
    missing = [lang for lang in state.asked if lang not in state.texts]
    if missing:
        state.step = FALLBACK
        offered = tuple(state.texts)
        return WizardStep(
            state,
            f"No text for {', '.join(missing)}. Which text should those clients get instead? "
            f"Answer with one of: {', '.join(offered)}.",
            offered,
        )
    return await _after_texts(session, services, state)


async def _on_fallback(
    session: AsyncSession, services: Services, state: WizardState, answer: str
) -> WizardStep:
    """Records which text clients without their own language's text get."""
    choice = answer.lower()
    if choice not in state.texts:
        offered = tuple(state.texts)
        return WizardStep(state, f"Answer with one of: {', '.join(offered)}.", offered)
    state.fallback = choice
    return await _after_texts(session, services, state)


async def _after_texts(session: AsyncSession, services: Services, state: WizardState) -> WizardStep:
    if state.discreet:
        state.step = DISCREET
        return WizardStep(
            state,
            f"{state.discreet} of these clients are in discreet mode: someone else may read "
            "their phone. Is this text safe for them to receive (neutral, nothing about their "
            "case)? yes / no. If no, they get nothing.",
            ("yes", "no"),
        )
    return await _summary(session, services, state)


async def _on_discreet(
    session: AsyncSession, services: Services, state: WizardState, answer: str
) -> WizardStep:
    """Records whether the text is safe for discreet-mode clients."""
    choice = answer.lower()
    if choice not in YES_WORDS | NO_WORDS:
        return WizardStep(state, "Please answer yes or no.", ("yes", "no"))
    state.discreet_safe = choice in YES_WORDS
    return await _summary(session, services, state)


async def _summary(session: AsyncSession, services: Services, state: WizardState) -> WizardStep:
    """Shows the dry run and asks for confirmation."""
    p = await plan_of(session, services, state)
    state.step = CONFIRM
    lines = broadcast.describe(p)
    lines.append("")
    lines.append(
        f"Send to {len(p.recipients)} clients now? yes / no. "
        "Or 'at YYYY-MM-DD HH:MM' to send later "
        f"({services.settings.default_timezone})."
    )
    return WizardStep(state, "\n".join(lines), ("yes", "no"))


def _on_confirm(services: Services, state: WizardState, answer: str) -> WizardStep:
    """Sends on yes, schedules on 'at ...', stops on no."""
    choice = answer.lower()
    if choice in NO_WORDS:
        state.step = CANCELLED
        return WizardStep(state, "Not sent.")
    if choice.startswith("at "):
        raw = answer[3:].strip().replace(" ", "T", 1)
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            return WizardStep(state, "Write the time as 'at 2026-03-10 09:00'.", ("yes", "no"))
        if when.tzinfo is None:
            when = when.replace(tzinfo=ZoneInfo(services.settings.default_timezone))
        when = when.astimezone(UTC)
        if when <= services.clock():
            return WizardStep(state, "That time has passed. Send 'yes' or a later time.")
        state.at = when.isoformat()
        state.step = DONE
        return WizardStep(state, f"Scheduling for {answer[3:].strip()}...", send=True)
    if choice in YES_WORDS:
        state.step = DONE
        return WizardStep(state, "Sending...", send=True)
    return WizardStep(state, "Please answer yes or no.", ("yes", "no"))


async def plan_of(session: AsyncSession, services: Services, state: WizardState) -> broadcast.Plan:
    """The plan the wizard's answers describe, worked out now."""
    assert state.segment is not None
    return await broadcast.plan(
        session,
        services,
        state.segment,
        state.texts,
        fallback_language=state.fallback,
        discreet_safe=state.discreet_safe,
    )


async def send(services: Services, state: WizardState, *, staff_id: int | None) -> Broadcast:
    """Queues (or schedules) the confirmed broadcast; returns it (its id is in the state too)."""
    async with services.sessions() as session:
        p = await plan_of(session, services, state)
    at = datetime.fromisoformat(state.at) if state.at else None
    row = await broadcast.send(services, p, at=at, staff_id=staff_id)
    state.broadcast_id = row.id
    return row


async def progress(services: Services, broadcast_id: int) -> tuple[str, bool]:
    """The progress line to edit in place, and whether the broadcast is finished."""
    async with transaction(services.sessions) as session:
        rep = await broadcast.report(session, services, broadcast_id)
    if rep.status == broadcast.SCHEDULED and rep.scheduled_at is not None:
        local = rep.scheduled_at.astimezone(ZoneInfo(services.settings.default_timezone))
        when = local.strftime("%Y-%m-%d %H:%M")
        return f"Broadcast {broadcast_id}: scheduled for {when}", False
    text = broadcast.progress_text(rep)
    if rep.done:
        text = "\n".join([text, *rep.lines()[1:]])
    return text, rep.done


# --------------------------------------------------------------------------- after confirmation

PROGRESS_KIND = "bcast.progress"  # outbox.kind holds 16 characters
PROGRESS_EDIT_KIND = "bcast.edit"
PROGRESS_WINDOW = timedelta(days=2)

# A dialogue untouched this long is forgotten: nothing is sent before confirmation, so a
# coordinator who comes back later just starts again.
WIZARD_TTL = timedelta(days=1)
BROADCAST_FLOW = "broadcast"


async def send_confirmed(services: Services, staff: Staff, version: int) -> bool:
    """Queues the confirmed broadcast and posts the message that will show its progress.

    broadcast.send commits batch by batch in sessions of its own, so it runs after the
    confirming message's transaction, not inside it. Taking the confirmed state waits for
    that transaction (SQLite's write lock, PostgreSQL's row lock) and finds nothing if it
    rolled back, so a broadcast is queued once, and only once its confirmation is
    stored. If the process dies between the two, ``send_stranded`` (a scheduler pass) takes
    it. False when there was nothing to take.
    """
    assert staff.id is not None
    async with transaction(services.sessions) as session:
        row = await repo.take_staff_dialogue(session, staff_id=staff.id, version=version)
    if row is None:
        return False
    state = WizardState.from_dict(row.data)
    try:
        sent = await send(services, state, staff_id=staff.id)
        assert sent.id is not None
        text, done = await progress(services, sent.id)
        async with transaction(services.sessions) as session:
            await repo.enqueue_staff(
                session,
                vault=services.vault,
                due_at=services.clock(),
                text=text,
                staff=staff,
                kind=PROGRESS_KIND,
                dedupe_key=f"broadcast-progress:{sent.id}",
                extra={"broadcast_id": sent.id, "shown": text, "done": done},
            )
    except Exception as exc:
        log.error("broadcast from Telegram failed: %s", type(exc).__name__)
        async with transaction(services.sessions) as session:
            await repo.enqueue_staff(
                session,
                vault=services.vault,
                due_at=services.clock(),
                text="The broadcast could not be queued. Check with /broadcast again.",
                staff=staff,
            )
    return True


# The process that stored a confirmation queues its broadcast at once; one still confirmed
# this long after lost its process in between, and whichever process looks first sends it.
STRANDED_AFTER = timedelta(seconds=30)


async def send_stranded(services: Services) -> int:
    """Queues confirmed broadcasts that no process took (it died first); returns how many."""
    before = services.clock() - STRANDED_AFTER
    async with services.sessions() as session:
        rows = await repo.staff_dialogues_of_flow(
            session, flow=BROADCAST_FLOW, updated_before=before
        )
        confirmed = [
            (row.staff_id, row.version)
            for row in rows
            if WizardState.from_dict(row.data).step == DONE
        ]
    taken = 0
    for staff_id, version in confirmed:
        async with services.sessions() as session:
            staff = await session.get(Staff, staff_id)
        if staff is not None and await send_confirmed(services, staff, version):
            taken += 1
    return taken


async def wait_broadcast_sends(services: Services) -> None:
    """Waits for broadcasts confirmed in Telegram through this app to be queued (tests)."""
    tasks = list(services.background)
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


async def report_broadcasts(services: Services) -> int:
    """Edits each broadcast's progress message in place until its report is final.

    Run periodically next to the delivery reports; returns how many edits were queued.
    """
    since = services.clock() - PROGRESS_WINDOW
    async with services.sessions() as session:
        rows = await repo.outbox_items_of_kind(session, kind=PROGRESS_KIND, since=since)
        todo = [
            (item.id, int((item.extra or {})["broadcast_id"]), msg.provider_id, msg.staff_id)
            for item, msg in rows
            if msg.provider_id is not None and not (item.extra or {}).get("done")
        ]
    edits = 0
    for item_id, broadcast_id, provider_id, staff_id in todo:
        # Worked out before the transaction that writes the edit (progress reads on its own).
        text, done = await progress(services, broadcast_id)
        async with transaction(services.sessions) as session:
            item = await session.get(OutboxItem, item_id, with_for_update=True)
            staff = await session.get(Staff, staff_id) if staff_id else None
            if item is None or item.extra is None or staff is None:
                continue
            if item.extra.get("done"):
                continue  # another process already showed the final report
            if text != item.extra.get("shown"):
                await repo.enqueue_staff(
                    session,
                    vault=services.vault,
                    due_at=services.clock(),
                    text=text,
                    staff=staff,
                    kind=PROGRESS_EDIT_KIND,
                    extra={"edit_message_id": provider_id},
                )
                edits += 1
            item.extra = {**item.extra, "shown": text, "done": done}
            session.add(item)
    return edits

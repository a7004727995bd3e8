"""The intake's own steps, named in the intake data file, and the reminder for a vanished client.

Service area, urgency, eligibility, the conflict check, safe contact and the case itself
live here; the questions, their order and their wording live in ``bot/data/intake.toml``.
Coordinators' alerts carry the case reference, category, urgency and eligibility: never
the client's name or words.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.conversations.base import Turn
from bot.conversations.dialogue_file import Dialogue, DialogueError, load_dialogue
from bot.conversations.eligibility import assess, load_guidelines, region_for_zip
from bot.conversations.engine import Action, Engine, Progress, Step
from bot.core import Reply
from bot.discreet import is_discreet
from bot.i18n import N_, gettext
from bot.outgoing import alert_coordinators, queue_reply
from storage import repo
from storage.models import Client, Priority, ScheduledItem, ScheduleKind

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from bot.config import Settings
    from bot.services import Services

DEFAULT_INTAKE = Path(__file__).resolve().parent.parent / "data" / "intake.toml"
URGENT_WITHIN = timedelta(days=7)  # a court date or deadline this close makes a case urgent
NUDGE_AFTER = timedelta(hours=24)  # one reminder this long after a client's last answer

# Urgency reasons, as stored in the intake answers and shown to coordinators.
REASON_TEXT = {
    "deadline_soon": "court date or deadline within 7 days",
    "lockout": "locked out or utilities cut off",
    "violence": "violence or threats",
}

DANGER_NOW = N_("If you are in danger right now, call 911.")
NUDGE_TEXT = N_(
    "{program}: you started a request for help. Reply any time to continue where you left "
    "off, or RESTART to begin again."
)
NUDGE_TEXT_DISCREET = N_("You can reply any time to continue where you left off.")


# --------------------------------------------------------------------------- the dialogue


def intake_path(settings: Settings) -> Path:
    """The intake file in use: INTAKE_FILE, else the one shipped with the bot."""
    return Path(settings.intake_file) if settings.intake_file else DEFAULT_INTAKE


@cache
def _engine(path: str, _mtime_ns: int) -> Engine:
    dialogue: Dialogue = load_dialogue(Path(path), actions=ACTIONS)
    return Engine(dialogue, ACTIONS)


def load_intake(settings: Settings) -> Engine:
    """The intake engine, checked; raises DialogueError with a one-line reason.

    Call it at start so a broken file stops the bot before it answers anyone. The file is
    read again when it changes on disk.
    """
    path = intake_path(settings)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        mtime = 0  # load_dialogue reports the missing file
    return _engine(str(path), mtime)


def check_intake(settings: Settings) -> None:
    """Refuse to start with a broken intake file: a ConfigError naming the state and field."""
    from bot.config import ConfigError

    try:
        load_intake(settings)
    except DialogueError as exc:
        raise ConfigError(f"intake file: {exc}") from exc


# --------------------------------------------------------------------------- helpers


def _today(turn: Turn) -> date:
    try:
        zone = ZoneInfo(turn.client.timezone or turn.services.settings.default_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo(turn.services.settings.default_timezone)
    return turn.services.clock().astimezone(zone).date()


def urgency_reasons(answers: dict[str, Any], today: date) -> list[str]:
    """Why a case is urgent: a date within 7 days (or already past), a lockout, violence."""
    reasons = []
    when = answers.get("deadline") if answers.get("has_deadline") else None
    if isinstance(when, str):
        try:
            if date.fromisoformat(when) - today <= URGENT_WITHIN:
                reasons.append("deadline_soon")
        except ValueError:
            pass
    danger = answers.get("danger")
    if danger in ("lockout", "violence"):
        reasons.append(str(danger))
    return reasons


def spoken_reference(reference: str) -> str:
    """A case reference as it is read over the phone: one character at a time."""
    return ", ".join(" ".join(part) for part in reference.split("-"))


def _elig_text(elig: dict[str, Any] | None) -> str:
    if not elig:
        return "not assessed"
    within = elig.get("within_percent")
    where = f"at or below {within}%" if within else "above every limit"
    return (
        f"{where} of the {elig.get('year')} HHS poverty guideline "
        f"({elig.get('percent_of_guideline')}%, household of {elig.get('household_size')}, "
        f"{elig.get('region')})"
    )


async def conflict_matches(
    session: AsyncSession,
    services: Services,
    *,
    client: Client,
    name: str,
    other_side: str | None,
) -> list[str]:
    """Possible conflicts of interest, described without names (for coordinators only).

    The other side may be one of our clients, or already the other side of a case; the
    client may be the other side of someone else's case. A person decides.
    """
    vault = services.vault
    found: list[str] = []
    if other_side:
        for other in await repo.clients_named(session, vault=vault, name=other_side):
            if other.id != client.id:
                found.append(f"the other side has the name of client #{other.id}")
        for case in await repo.cases_with_adverse_party(session, vault=vault, name=other_side):
            if case.client_id != client.id:
                found.append(f"the other side is also the other side in case {case.reference}")
    for case in await repo.cases_with_adverse_party(session, vault=vault, name=name):
        if case.client_id != client.id:
            found.append(f"the client's name is the other side in case {case.reference}")
    return list(dict.fromkeys(found))


# --------------------------------------------------------------------------- actions


async def set_language(step: Step) -> str | None:
    """Switches the client to the language they picked, for this and every later message."""
    client = step.turn.client
    client.language = str(step.value)
    client.updated_at = step.turn.services.clock()
    step.turn.session.add(client)
    return None


async def record_consent(step: Step) -> str | None:
    """Records the client's consent to continue (or not) with where it came from."""
    if step.value:
        await repo.record_consent(
            step.turn.session,
            identity=step.turn.identity,
            kind="consent",
            source="intake",
            at=step.turn.services.clock(),
        )
    return None


async def pin_wanted(step: Step) -> str | None:
    """Asks for a PIN only when the program requires one for case status (PROBONO_REQUIRE_PIN)."""
    return "ask" if step.turn.services.settings.probono_require_pin else None


async def save_pin(step: Step) -> str | None:
    """Keeps only the PIN's hash on the client; the digits are never stored or repeated."""
    client = step.turn.client
    repo.set_pin(client, str(step.value), at=step.turn.services.clock())
    step.turn.session.add(client)
    step.value = None
    return None


async def check_service_area(step: Step) -> str | None:
    """Sends a client outside the service area to a polite referral (no case)."""
    area = step.turn.services.settings.service_area_zips
    if area and str(step.value) not in area:
        return "outside"
    return None


async def check_urgency(step: Step) -> str | None:
    """Alerts coordinators at once when the answers make the matter urgent; 911 for danger."""
    turn, progress = step.turn, step.progress
    if step.value == "violence":
        step.say(DANGER_NOW)
    reasons = urgency_reasons(progress.answers, _today(turn))
    if not reasons or progress.vars.get("urgent_alerted"):
        return None
    progress.vars["urgent_alerted"] = True
    category = progress.answers.get("category", "unknown")
    why = "; ".join(REASON_TEXT[r] for r in reasons)
    await alert_coordinators(
        turn.session,
        turn.services,
        f"URGENT intake in progress (intake #{turn.client.id}): {category}; {why}. "
        "The case number follows when the client finishes.",
        dedupe_key=f"intake_urgent:{turn.client.id}:{turn.stored.id}",
    )
    return None


async def set_safety(step: Step) -> str | None:
    """Puts the client in discreet mode when texting this number is not safe."""
    client = step.turn.client
    client.discreet = not step.value
    if step.value:
        client.safe_time_enc = None
    client.updated_at = step.turn.services.clock()
    step.turn.session.add(client)
    return None


async def save_safe_contact(step: Step) -> str | None:
    """Keeps how to reach the client safely, encrypted under their key."""
    turn, answers = step.turn, step.progress.answers
    option = answers.get("safe_option")
    detail: dict[str, Any] = {"option": option}
    if option == "time" and answers.get("safe_time"):
        detail["time"] = answers["safe_time"]
    if option == "phone" and answers.get("safe_phone"):
        detail["phone"] = answers["safe_phone"]
    client = turn.client
    client.safe_time_enc = repo.client_key(turn.services.vault, client).seal_json(
        detail, "client.safe_time"
    )
    turn.session.add(client)
    return None


async def create_case(step: Step) -> str | None:
    """Opens the case from the confirmed answers, checks conflicts and tells coordinators."""
    turn, engine, progress = step.turn, step.engine, step.progress
    session, services, client = turn.session, turn.services, turn.client
    vault = services.vault
    answers = engine.live_answers(progress.answers)
    name = str(answers.get("name") or "").strip()
    if name:
        repo.set_client_name(vault, client, name, at=services.clock())
    reasons = urgency_reasons(answers, _today(turn))
    elig: dict[str, Any] | None = None
    try:
        household = int(answers["household"])
        income = Decimal(str(answers["income"]))
        elig = assess(
            load_guidelines(),
            household=household,
            monthly_income=income,
            region=region_for_zip(answers.get("zip")),
        )
    except (KeyError, ValueError, TypeError, InvalidOperation):
        elig = None  # a program's intake without these questions: a person assesses it
    other_side = answers.get("other_side")
    other_side = str(other_side).strip() if other_side else None
    conflicts = await conflict_matches(
        session, services, client=client, name=name, other_side=other_side
    )
    case = await repo.create_case(
        session,
        client=client,
        category=str(answers.get("category") or "other"),
        urgent=bool(reasons),
        discreet=client.discreet,
        source="intake",
    )
    assert case.id is not None and client.id is not None
    log.info(
        "case %s opened by intake",
        case.reference,
        extra={"case_id": case.id, "case_reference": case.reference, "client_id": client.id},
    )
    unknown_date = bool(answers.get("has_deadline")) and answers.get("deadline") is None
    case.eligibility = elig
    case.conflict_flag = bool(conflicts)
    case.needs_review = bool(conflicts) or unknown_date or elig is None
    case.intake_enc = repo.client_key(vault, client).seal_json(
        {
            "dialogue": engine.dialogue.name,
            "version": engine.dialogue.version,
            "answers": answers,
            "urgency": reasons,
            "completed_at": services.clock().isoformat(),
        },
        "case.intake",
    )
    session.add(case)
    session.add(client)
    if other_side:
        await repo.add_adverse_party(
            session, vault=vault, client=client, case=case, name=other_side
        )
    await repo.audit(
        session,
        actor_kind="client",
        actor_id=client.id,
        action="intake.case_created",
        case_id=case.id,
        client_id=client.id,
    )
    await alert_coordinators(
        session,
        services,
        case_alert(
            case.reference,
            case.category,
            reasons,
            elig,
            conflicts,
            discreet=client.discreet,
            unknown_date=unknown_date,
            asked_for_person=bool(progress.vars.get("asked_for_person")),
        ),
        case_id=case.id,
        dedupe_key=f"case_new:{case.reference}",
    )
    progress.vars["reference"] = case.reference
    progress.vars["reference_spoken"] = spoken_reference(case.reference)
    if is_discreet(client, case):
        return "discreet_urgent" if reasons else "discreet"
    if reasons:
        return "urgent"
    if elig is not None and not elig["eligible"]:
        return "over_income"
    return None


def case_alert(
    reference: str,
    category: str,
    reasons: list[str],
    elig: dict[str, Any] | None,
    conflicts: list[str],
    *,
    discreet: bool,
    unknown_date: bool = False,
    asked_for_person: bool = False,
) -> str:
    """The coordinators' alert for a new case: reference, category, flags. No name, no words."""
    lines = [f"New case {reference} from intake: {category}."]
    if reasons:
        lines.append("URGENT: " + "; ".join(REASON_TEXT[r] for r in reasons) + ".")
    if unknown_date:
        lines.append("Has a court date or deadline but does not know when.")
    lines.append(f"Eligibility: {_elig_text(elig)}.")
    if conflicts:
        lines.append("POSSIBLE CONFLICT: " + "; ".join(conflicts) + ". Review before assigning.")
    if asked_for_person:
        lines.append("Asked to talk to a person during intake.")
    if discreet:
        lines.append("Discreet: not safe to text details; see the client's safe contact.")
    return "\n".join(lines)


ACTIONS: dict[str, Action] = {
    "set_language": set_language,
    "record_consent": record_consent,
    "check_service_area": check_service_area,
    "check_urgency": check_urgency,
    "set_safety": set_safety,
    "save_safe_contact": save_safe_contact,
    "pin_wanted": pin_wanted,
    "save_pin": save_pin,
    "create_case": create_case,
}


# --------------------------------------------------------------------------- the nudge


def nudge_key(client_id: int) -> str:
    return f"intake_nudge:{client_id}"


async def track_progress(turn: Turn, progress: Progress, *, finished: bool, nudged: bool) -> None:
    """Keeps one reminder due a day after the client's last answer; withdraws it when done.

    A client who has not agreed to continue (the consent question) is not reminded.
    """
    client = turn.client
    assert client.id is not None
    key = nudge_key(client.id)
    if finished or nudged or not progress.answers.get("consent"):
        await repo.cancel_scheduled_item(turn.session, unique_key=key, at=turn.services.clock())
        return
    now = turn.services.clock()
    await repo.upsert_scheduled(
        turn.session,
        kind=ScheduleKind.INTAKE_NUDGE,
        unique_key=key,
        due_at=now + NUDGE_AFTER,
        now=now,
        client_id=client.id,
    )


async def nudge(session: AsyncSession, services: Services, item: ScheduledItem) -> None:
    """Reminds a client who stopped mid-intake, once; their answers so far stay (encrypted)."""
    if item.client_id is None:
        return
    client = await session.get(Client, item.client_id)
    if client is None or client.wrapped_key is None:
        return
    conv = await repo.load_conversation(session, client_id=item.client_id)
    if conv is None or conv.flow != "intake" or conv.nudged_at is not None:
        return
    engine = load_intake(services.settings)
    data = repo.conversation_data(services.vault, client, conv)
    progress = Progress.from_stored(conv.state, data, conv.history)
    if engine.is_finished(progress) or not progress.answers.get("consent"):
        return
    # They answered after this reminder was planned: a newer one is (or was) due instead.
    if conv.updated_at > item.due_at - NUDGE_AFTER + timedelta(minutes=1):
        return
    if await repo.open_cases(session, client_id=item.client_id):
        return
    lang = client.language or services.settings.default_language
    msgid = NUDGE_TEXT_DISCREET if is_discreet(client) else NUDGE_TEXT
    text = gettext(lang, msgid, program=services.settings.program_name)
    now = services.clock()
    await queue_reply(
        session,
        services,
        client,
        Reply(text=text, urgent=False),  # a reminder waits for the end of quiet hours
        kind="reminder",
        priority=Priority.REMINDER,
        dedupe_key=f"{item.unique_key}:{conv.version}",
    )
    await repo.save_conversation(
        session,
        vault=services.vault,
        client=client,
        flow=conv.flow,
        state=conv.state,
        data=data,
        history=list(conv.history or []),
        expected_version=conv.version,
        nudged_at=now,
        at=conv.updated_at,  # a reminder is not the client's activity
    )


def describe_safe_contact(services: Services, client: Client) -> dict[str, Any] | None:
    """The client's safe-contact choice (for staff tools), decrypted."""
    raw = repo.client_key(services.vault, client).open_json(
        client.safe_time_enc, "client.safe_time"
    )
    return raw if isinstance(raw, dict) else None


__all__ = [
    "ACTIONS",
    "DEFAULT_INTAKE",
    "case_alert",
    "check_intake",
    "describe_safe_contact",
    "intake_path",
    "load_intake",
    "nudge",
    "track_progress",
    "urgency_reasons",
]

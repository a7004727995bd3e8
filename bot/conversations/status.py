"""Case status: telling a client about a change, and answering "STATUS" from a verified identity.

What a status means for the client lives in a data file (bot/data/statuses.toml, or the
program's STATUSES_FILE). Discreet clients read neutral words: never the kind of case, the
recorded status itself or its reference. Anyone without an open case, and anyone quoting a
reference that is not theirs, gets the same neutral answer, and the attempt is audited.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.config import ConfigError, Settings
from bot.conversations.appointments import describe, is_discreet
from bot.conversations.base import Reply
from bot.conversations.keywords import normalise
from bot.i18n import N_, gettext
from bot.outgoing import queue_reply
from storage import repo
from storage.models import Case, Client, Priority

if TYPE_CHECKING:
    from bot.conversations.base import Turn
    from bot.services import Services

DEFAULT_STATUSES = Path(__file__).resolve().parent.parent / "data" / "statuses.toml"

# Whole messages (as keywords.normalise leaves them) that ask for the status; a PIN or a case
# reference may follow ("STATUS 1234", "ESTADO K7M-4PX").
STATUS_WORDS = frozenset(
    {
        "STATUS",
        "MY STATUS",
        "CASE STATUS",
        "MY CASE",
        "MY CASE STATUS",
        "STATUS OF MY CASE",
        "WHAT IS MY STATUS",
        "ESTADO",
        "ESTATUS",
        "MI ESTADO",
        "MI CASO",
        "ESTADO DE MI CASO",
        "ESTATUS DE MI CASO",
        # zh, vi, ar, ht (machine-drafted; the catalogs tell clients to use the first of each)
        "状态",
        "狀態",
        "案件状态",
        "我的案件",
        "TINH TRANG",
        "TRANG THAI",
        "HO SO CUA TOI",
        "الحالة",
        "حالة القضية",
        "قضيتي",
        "ESTATI",
        "KA MWEN",
        "DOSYE MWEN",
    }
)
POLITE = frozenset({"PLEASE", "PLS", "POR FAVOR", "FAVOR", "THANKS", "GRACIAS"})
MENU_CHOICE = "status"  # the value of the menu's "case status" option
MAX_CASES = 3  # an SMS answer stays short
PIN_RE = re.compile(r"^\d{4,8}$")
PIN_TRIES = 5  # wrong PINs allowed per hour before the answer is refused
PIN_WINDOW = timedelta(hours=1)

CHANGED = N_("{program}: news on your case {ref}: {label}.")
CHANGED_DISCREET = N_("News on your file: {label}.")
YOUR_CASE = N_("Your case {ref}: {label}.")
YOUR_FILE = N_("Your file: {label}.")
NEXT_APPOINTMENT = N_("Next {kind}: {when}, {place}.")
NO_CASE = N_("We have no open case to show for this number.")
ASK_PIN = N_("Please reply STATUS and your PIN, for example: STATUS 1234")
WRONG_PIN = N_("That PIN is not right. Reply STATUS and your PIN to try again.")
PIN_LOCKED = N_("Too many tries. Please contact us directly.")
NO_PIN_SET = N_("For your case status, please contact us directly.")


# --------------------------------------------------------------------------- the statuses file


@dataclass(frozen=True)
class StatusText:
    """What a client reads about one status, in English; the catalogs translate it."""

    client: str
    discreet: str
    closes: bool = False
    # A program's own statuses file may carry client_LANG/discreet_LANG for texts the
    # catalogs cannot know; the shipped file has none (`make translations` extracts it).
    inline: dict[str, str] = field(default_factory=dict)

    def label(self, lang: str, *, discreet: bool) -> str:
        which = "discreet" if discreet else "client"
        inline = self.inline.get(f"{which}_{lang}")
        if inline:
            return inline
        return gettext(lang, self.discreet if discreet else self.client)


@dataclass(frozen=True)
class StatusBook:
    """Every status a program defines, by matching key, and the fallback for the rest."""

    statuses: dict[str, StatusText]
    fallback: StatusText

    def find(self, status: str) -> StatusText:
        return self.statuses.get(status_key(status), self.fallback)


def status_key(status: str) -> str:
    """How a status is matched: case, spaces, dashes and underscores do not count."""
    return re.sub(r"[^0-9a-z]+", "", status.casefold())


def _entry(raw: Any, where: str) -> StatusText:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    client, discreet = raw.get("client"), raw.get("discreet")
    if not isinstance(client, str) or not isinstance(discreet, str):
        raise ConfigError(f"{where} needs client and discreet texts")
    inline = {
        k: v
        for k, v in raw.items()
        if isinstance(v, str) and (k.startswith("client_") or k.startswith("discreet_"))
    }
    return StatusText(client, discreet, bool(raw.get("closes", False)), inline)


@cache
def _load(path: str, _mtime_ns: int) -> StatusBook:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"statuses file {path}: {exc}") from exc
    fallback = _entry(data.get("fallback"), f"{path}: [fallback]")
    statuses: dict[str, StatusText] = {}
    for name, raw in (data.get("statuses") or {}).items():
        entry = _entry(raw, f"{path}: [statuses.{name}]")
        aliases = raw.get("aliases", [])
        for word in [name, *(aliases if isinstance(aliases, list) else [])]:
            statuses[status_key(str(word))] = entry
    return StatusBook(statuses, fallback)


def load_statuses(settings: Settings) -> StatusBook:
    """The program's statuses (STATUSES_FILE, else the shipped file), re-read when edited."""
    path = Path(settings.statuses_file) if settings.statuses_file else DEFAULT_STATUSES
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"STATUSES_FILE {path}: {exc.strerror}") from exc
    return _load(str(path), mtime)


def status_label(settings: Settings, status: str, lang: str, *, discreet: bool) -> str:
    """The client's words for a status; a discreet client never reads the status itself."""
    text = load_statuses(settings).find(status).label(lang, discreet=discreet)
    try:
        return text.format(status=status)
    except (KeyError, IndexError, ValueError):
        return text


def is_closing_status(settings: Settings, status: str) -> bool:
    """True when the program says this status ends the case (no more check-ins)."""
    return load_statuses(settings).find(status).closes


# --------------------------------------------------------------------------- telling the client


async def tell_status_change(session: AsyncSession, services: Services, case: Case) -> None:
    """Tells the client, in their language, that their case's status changed."""
    client = await session.get(Client, case.client_id)
    if client is None or client.wrapped_key is None:
        return
    assert case.id is not None
    lang = client.language or services.settings.default_language
    discreet = is_discreet(client, case)
    label = status_label(services.settings, case.status, lang, discreet=discreet)
    if discreet:
        text = gettext(lang, CHANGED_DISCREET, label=label)
    else:
        text = gettext(
            lang, CHANGED, program=services.settings.program_name, ref=case.reference, label=label
        )
    history = await repo.status_history(session, case_id=case.id)
    # One message per recorded change (the newest row), however often the caller is retried.
    stamp = max((h.id or 0 for h in history), default=0)
    await queue_reply(
        session,
        services,
        client,
        Reply(text=text, urgent=False),
        kind="status",
        priority=Priority.REMINDER,
        dedupe_key=f"status:{case.id}:{stamp}",
        case_id=case.id,
    )


# --------------------------------------------------------------------------- answering STATUS


@dataclass(frozen=True)
class StatusRequest:
    """A STATUS message: with a PIN, or quoting a case reference, or neither."""

    pin: str | None = None
    reference: str | None = None  # letters and digits only, upper case


def parse_request(text: str, choice: str | None = None) -> StatusRequest | None:
    """The status request this message is, if it is one."""
    if choice == MENU_CHOICE:
        return StatusRequest()
    words = normalise(text).split()
    for n in range(min(len(words), 5), 0, -1):
        if " ".join(words[:n]) in STATUS_WORDS:
            rest = [w for w in words[n:] if w not in POLITE]
            break
    else:
        return None
    if not rest:
        return StatusRequest()
    joined = "".join(rest)
    if PIN_RE.match(joined):
        return StatusRequest(pin=joined)
    if joined.isalnum() and 5 <= len(joined) <= 16:
        return StatusRequest(reference=joined)
    return None


def _alnum(reference: str) -> str:
    return "".join(ch for ch in reference.upper() if ch.isalnum())


async def _case_text(
    session: AsyncSession, services: Services, client: Client, case: Case, now: datetime
) -> str:
    lang = client.language or services.settings.default_language
    discreet = is_discreet(client, case)
    label = status_label(services.settings, case.status, lang, discreet=discreet)
    if discreet:
        head = gettext(lang, YOUR_FILE, label=label)
    else:
        head = gettext(lang, YOUR_CASE, ref=case.reference, label=label)
    assert case.id is not None
    appt = await repo.next_appointment_for_case(session, case_id=case.id, after=now)
    if appt is None:
        return head
    d = describe(services, client, appt, discreet=discreet)
    return f"{head} {gettext(lang, NEXT_APPOINTMENT, kind=d.kind, when=d.when, place=d.place)}"


async def _pin_refusal(turn: Turn, request: StatusRequest) -> str | None:
    """None when the PIN rule lets the answer through; else the msgid to answer with."""
    if not turn.services.settings.probono_require_pin:
        return None
    client = turn.client
    assert client.id is not None
    if not client.pin_hash:
        return NO_PIN_SET
    since = turn.services.clock() - PIN_WINDOW
    tries = await repo.failed_attempts(
        turn.session, client_id=client.id, action="status.pin", since=since
    )
    if tries >= PIN_TRIES:
        return PIN_LOCKED
    if request.pin is None:
        return ASK_PIN
    if not repo.pin_matches(client, request.pin):
        await repo.audit(
            turn.session,
            actor_kind="client",
            actor_id=client.id,
            action="status.pin",
            client_id=client.id,
            allowed=False,
            detail="wrong PIN",
        )
        return WRONG_PIN
    return None


async def answer_status(turn: Turn) -> bool:
    """Answers a STATUS request from a verified identity; returns True when it handled the turn."""
    request = parse_request(turn.text, turn.message.choice)
    if request is None:
        return False
    session, services, client = turn.session, turn.services, turn.client
    now = services.clock()
    verified = turn.identity.verified and client.wrapped_key is not None
    assert client.id is not None
    cases = list(await repo.open_cases(session, client_id=client.id)) if verified else []
    if request.reference is not None:
        quoted = request.reference
        own = [c for c in cases if _alnum(c.reference) == quoted]
        if not own:
            other = await repo.get_case(session, reference=quoted)
            await repo.audit(
                session,
                actor_kind="client" if cases else "stranger",
                actor_id=client.id,
                action="status.ask",
                case_id=other.id if other else None,
                client_id=client.id,
                allowed=False,
                detail="quoted a reference that is not theirs",
            )
            turn.say(gettext(turn.lang, NO_CASE))
            return True
        cases = own
    if not cases:
        await repo.audit(
            session,
            actor_kind="stranger",
            actor_id=client.id,
            action="status.ask",
            client_id=client.id,
            allowed=False,
            detail="no open case" if verified else "identity not verified",
        )
        turn.say(gettext(turn.lang, NO_CASE))
        return True
    refusal = await _pin_refusal(turn, request)
    if refusal is not None:
        turn.say(gettext(turn.lang, refusal))
        return True
    parts = []
    for case in cases[:MAX_CASES]:
        parts.append(await _case_text(session, services, client, case, now))
        await repo.audit(
            session,
            actor_kind="client",
            actor_id=client.id,
            action="status.ask",
            case_id=case.id,
            client_id=client.id,
        )
    turn.say("\n".join(parts))
    return True

"""Case status: answering "STATUS" from a verified identity.

What a status means for the client (bot/casework/status.py reads the program's statuses
file) is said in their words. Discreet clients read neutral words: never the kind of case,
the recorded status itself or its reference. Anyone without an open case, and anyone quoting a
reference that is not theirs, gets the same neutral answer, and the attempt is audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework.appointments import describe
from bot.casework.status import status_label
from bot.discreet import is_discreet
from bot.i18n import N_, gettext
from bot.keywords import normalise
from storage import repo
from storage.models import Case, Client

if TYPE_CHECKING:
    from bot.conversations.base import Turn
    from bot.services import Services

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

YOUR_CASE = N_("Your case {ref}: {label}.")
YOUR_FILE = N_("Your file: {label}.")
NEXT_APPOINTMENT = N_("Next {kind}: {when}, {place}.")
NEXT_APPOINTMENT_DISCREET = N_("Next appointment: {when}.")
NO_CASE = N_("We have no open case to show for this number.")
ASK_PIN = N_("Please reply STATUS and your PIN, for example: STATUS 1234")
WRONG_PIN = N_("That PIN is not right. Reply STATUS and your PIN to try again.")
PIN_LOCKED = N_("Too many tries. Please contact us directly.")
NO_PIN_SET = N_("For your case status, please contact us directly.")


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
    if discreet:
        return f"{head} {gettext(lang, NEXT_APPOINTMENT_DISCREET, when=d.when)}"
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

"""Importing from a case management system: one CSV row of cases or appointments at a time.

Headers are matched ignoring case, spaces and punctuation; each column below lists the
header names it accepts. Every row is checked in full before anything of it is written; a
rejected row is a ``CaseworkError`` whose message is the reason shown for its line. Reading
the file and showing progress belong to the command (bot/handlers/cli_import.py).

Cases (one row per case):

    case_number         required  "Case Number", "Case ID", "Matter Number": the program's
                                  own number, kept as the case reference (3-16 letters,
                                  digits and dashes)
    client_phone        required  "Mobile Phone", "Cell Phone", "Client Phone", "Phone":
                                  the client's texting number; a known number reuses the client
    client_name                   "Client Name", "Full Name"; or first_name + last_name
    first_name, last_name         "Client First Name", "Client Last Name"; a new client
                                  needs a name
    category                      "Category", "Case Type": housing, family, immigration...
    legal_problem_code            "Legal Problem Code", "Problem Code": an LSC code such as
                                  "63 Private Landlord/Tenant", used when category is empty
    case_status                   "Case Status", "Status" (default open)
    language                      "Language", "Preferred Language": a code (es) or a name
                                  (Spanish)
    timezone                      "Time Zone": an IANA name (default DEFAULT_TIMEZONE)
    date_opened                   "Date Opened", "Open Date": 2026-03-02 or 03/02/2026
    attorney_telegram_id          the assigned attorney's Telegram id (registered staff)
    discreet                      yes/no: the client gets neutral wording only

Appointments (one row per appointment; the case must exist):

    case_number         required  as above
    start                         "Start", "Start Date Time": ISO 8601, e.g. 2026-03-10T09:30
    date, time                    "Date"/"Event Date" and "Time"/"Start Time" (9:30 AM or
                                  09:30) when there is no start column
    location            required  "Location", "Place", "Address"
    event_type                    "Event Type", "Type", "Kind": a hearing, meeting or call
                                  ("Court Hearing", "Phone Call", "Client Meeting"...);
                                  default meeting
    timezone                      "Time Zone": a start without an offset is local time
                                  there (default: the client's time zone)
    bring                         "Bring", "What To Bring"

Every row is checked; rejected rows are listed by line number and reason. Any rejected
row means nothing is imported, unless --skip-bad is given. --dry-run checks and reports
without changing anything.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework import appointments
from bot.casework.base import CLI, Actor, CaseworkError, audit
from bot.casework.limits import (
    NAME_MAX,
    PLACE_MAX,
    REFERENCE_RE,
    check_category,
    check_status,
    check_text,
    check_timezone,
)
from bot.i18n import LANGUAGES
from bot.phones import PhoneError, normalize_phone
from storage import repo
from storage.models import Channel, Client, Role

if TYPE_CHECKING:
    from bot.services import Services


def header_key(name: str) -> str:
    """How a header is matched: case, spaces and punctuation do not count."""
    return re.sub(r"[^a-z0-9]+", "_", name.strip().casefold()).strip("_")


CASE_COLUMNS: dict[str, tuple[str, ...]] = {
    "case_number": ("case_number", "case_no", "case_id", "case", "matter_number", "reference"),
    "client_phone": (
        "client_phone",
        "mobile_phone",
        "cell_phone",
        "client_mobile_phone",
        "phone",
        "phone_number",
    ),
    "client_name": ("client_name", "client_full_name", "full_name", "name"),
    "first_name": ("first_name", "client_first_name"),
    "last_name": ("last_name", "client_last_name"),
    "category": ("category", "case_type"),
    "legal_problem_code": ("legal_problem_code", "problem_code", "lsc_problem_code"),
    "case_status": ("case_status", "status"),
    "language": ("language", "preferred_language", "primary_language", "client_language"),
    "timezone": ("timezone", "time_zone"),
    "date_opened": ("date_opened", "open_date", "opened"),
    "attorney_telegram_id": ("attorney_telegram_id", "advocate_telegram_id"),
    "discreet": ("discreet",),
}
CASE_REQUIRED = ("case_number", "client_phone")

APPOINTMENT_COLUMNS: dict[str, tuple[str, ...]] = {
    "case_number": CASE_COLUMNS["case_number"],
    "start": ("start", "start_date_time", "start_datetime", "starts_at"),
    "date": ("date", "event_date", "start_date"),
    "time": ("time", "start_time", "event_time"),
    "location": ("location", "place", "address"),
    "event_type": ("event_type", "type", "kind", "appointment_type"),
    "timezone": ("timezone", "time_zone"),
    "bring": ("bring", "what_to_bring"),
}
APPOINTMENT_REQUIRED = ("case_number", "location")

Row = dict[str, str]


LANGUAGE_NAMES = {
    "english": "en",
    "spanish": "es",
    "espanol": "es",
    "español": "es",
    "chinese": "zh",
    "mandarin": "zh",
    "cantonese": "zh",
    "vietnamese": "vi",
    "arabic": "ar",
    "haitian creole": "ht",
    "creole": "ht",
    "kreyol": "ht",
}

# LSC legal problem codes (first digits) to the intake's categories.
PROBLEM_CODE_CATEGORIES = {
    "0": "consumer",
    "1": "other",  # education
    "2": "employment",
    "3": "family",
    "4": "family",  # juvenile
    "5": "benefits",  # health: mostly Medicaid and Medicare
    "6": "housing",
    "7": "benefits",  # income maintenance
    "8": "other",  # individual rights; 81 is immigration (below)
    "9": "other",
}

KIND_WORDS = (
    ("hearing", ("hearing", "court", "trial", "arraignment", "calendar")),
    ("call", ("call", "phone", "telephone")),
    ("meeting", ("meeting", "appointment", "consult", "interview", "clinic", "office")),
)

YES = frozenset({"yes", "y", "true", "1", "x"})
NO = frozenset({"no", "n", "false", "0", ""})


def _language(raw: str, default: str) -> str:
    value = raw.strip().casefold()
    if not value:
        return default
    if value in LANGUAGES:
        return value
    if value in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[value]
    raise CaseworkError(f"unknown language {raw!r}")


def _timezone(raw: str) -> str | None:
    if not raw.strip():
        return None
    return check_timezone(raw)


def _category(row: Row) -> str:
    raw = row.get("category", "").strip()
    if raw:
        return check_category(raw)
    code = row.get("legal_problem_code", "").strip()
    match = re.match(r"^(\d{2})\b", code)
    if not match:
        if code:
            raise CaseworkError(f"legal problem code {code!r} does not start with two digits")
        raise CaseworkError("no category and no legal problem code")
    digits = match.group(1)
    return "immigration" if digits == "81" else PROBLEM_CODE_CATEGORIES[digits[0]]


def _date(raw: str) -> date | None:
    value = raw.strip()
    if not value:
        return None
    for fmt in ("%Y-%m-%d", "%m/%d/%Y", "%m/%d/%y"):
        try:
            return datetime.strptime(value, fmt).date()  # noqa: DTZ007 - a date, no time
        except ValueError:
            continue
    raise CaseworkError(f"date {raw!r} is not like 2026-03-02 or 03/02/2026")


def _time(raw: str) -> time:
    value = " ".join(raw.strip().upper().replace(".", "").split())
    for fmt in ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M%p", "%I %p", "%I%p"):
        try:
            return datetime.strptime(value, fmt).time()  # noqa: DTZ007 - a wall time
        except ValueError:
            continue
    raise CaseworkError(f"time {raw!r} is not like 09:30 or 9:30 AM")


def _kind(raw: str) -> str:
    value = raw.strip().casefold()
    if not value:
        return appointments.DEFAULT_KIND
    for kind, words in KIND_WORDS:
        if any(word in value for word in words):
            return kind
    raise CaseworkError(f"event type {raw!r} is not a hearing, meeting or call")


def _case_number(raw: str) -> str:
    ref = repo.normalize_reference(raw)
    if not REFERENCE_RE.fullmatch(ref):
        raise CaseworkError("no case number" if not raw.strip() else f"bad case number {raw!r}")
    return ref


# --------------------------------------------------------------------------- import rows


@dataclass
class ImportRun:
    """State shared by the rows of one import: what earlier lines already claimed."""

    services: Services
    session: AsyncSession
    now: datetime
    actor: Actor = CLI
    seen: dict[Any, int] = field(default_factory=dict)

    def first_time(self, key: Any, line: int, what: str) -> None:
        if key in self.seen:
            raise CaseworkError(f"{what} repeats line {self.seen[key]}")
        self.seen[key] = line


async def import_case_row(run: ImportRun, line: int, row: Row) -> None:
    """Checks one case row in full, then writes it (nothing written for a rejected row)."""
    session, services = run.session, run.services
    ref = _case_number(row["case_number"])
    run.first_time(("case", ref), line, f"case {ref}")
    if await repo.get_case(session, reference=ref) is not None:
        raise CaseworkError(f"case {ref} already exists")
    try:
        phone = normalize_phone(row["client_phone"])
    except PhoneError as exc:
        raise CaseworkError(f"client phone: {exc}") from None  # never the number itself
    client = await repo.find_client_by_address(
        session, vault=services.vault, channel=Channel.SMS, address=phone
    )
    if client is not None and client.wrapped_key is None:
        raise CaseworkError("that phone number belongs to an erased client")
    raw_name = row.get("client_name") or f"{row.get('first_name', '')} {row.get('last_name', '')}"
    name = check_text(raw_name, "the client name", NAME_MAX, required=False) or ""
    if client is None and not name:
        raise CaseworkError("a new client needs a name (client_name, or first_name and last_name)")
    language = _language(row.get("language", ""), services.settings.default_language)
    tz = _timezone(row.get("timezone", "")) or services.settings.default_timezone
    category = _category(row)
    status = check_status(" ".join(row.get("case_status", "").split()) or "open")
    opened = _date(row.get("date_opened", ""))
    discreet_raw = row.get("discreet", "").strip().casefold()
    if discreet_raw not in YES | NO:
        raise CaseworkError(f"discreet must be yes or no, not {row.get('discreet')!r}")
    staff = None
    raw_staff = row.get("attorney_telegram_id", "").strip()
    if raw_staff:
        if not raw_staff.isdigit():
            raise CaseworkError(f"attorney telegram id {raw_staff!r} is not a number")
        staff = await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=int(raw_staff)
        )
        if staff is None or staff.role != Role.ATTORNEY:
            raise CaseworkError(f"no active attorney with Telegram id {raw_staff}")
    # Checked: from here on the row is written.
    if client is None:
        client = await repo.create_client(
            session,
            vault=services.vault,
            channel=Channel.SMS,
            address=phone,
            name=name,
            language=language,
            timezone=tz,
        )
    case = await repo.create_case(
        session,
        client=client,
        category=category,
        status=status,
        discreet=discreet_raw in YES,
        source="import",
    )
    case.reference = ref
    case.assigned_staff_id = staff.id if staff else None
    if opened is not None:
        case.opened_at = datetime.combine(opened, time(12), tzinfo=ZoneInfo(tz))
    # No check-in burst for old cases: their silence counts from the import.
    case.last_news_at = run.now
    session.add(case)
    await session.flush()
    await audit(session, run.actor, "case.import", case)


def _start(row: Row, tz: str) -> datetime:
    if row.get("start"):
        return appointments.parse_when(row["start"], tz)
    if not row.get("date") or not row.get("time"):
        raise CaseworkError("no start (a start column, or date and time columns)")
    day = _date(row["date"])
    assert day is not None
    return appointments.parse_when(datetime.combine(day, _time(row["time"])).isoformat(), tz)


async def import_appointment_row(run: ImportRun, line: int, row: Row) -> None:
    """Checks one appointment row in full, then books it (the client is told)."""
    session, services = run.session, run.services
    ref = _case_number(row["case_number"])
    case = await repo.get_case(session, reference=ref)
    if case is None:
        raise CaseworkError(f"no case {ref} (import the cases first)")
    client = await session.get(Client, case.client_id)
    assert client is not None and case.id is not None
    if client.wrapped_key is None:
        raise CaseworkError(f"the client of case {ref} was erased")
    tz = _timezone(row.get("timezone", ""))
    starts_at = _start(row, tz or client.timezone)
    if starts_at <= run.now:
        raise CaseworkError("the appointment time has already passed")
    run.first_time(("appt", case.id, starts_at), line, f"case {ref} at that time")
    if await repo.find_appointment(session, case_id=case.id, starts_at=starts_at) is not None:
        raise CaseworkError(f"case {ref} already has an appointment at that time")
    kind = _kind(row.get("event_type", ""))
    # The column is "location" in the export: the refusal names it so.
    place = check_text(row.get("location"), "location", PLACE_MAX, required=True)
    await appointments.book(
        session,
        services,
        case,
        starts_at,
        place,
        kind=kind,
        timezone=tz,
        bring=row.get("bring"),
        actor=run.actor,
        action="appointment.import",
    )


ImportRow = Callable[[ImportRun, int, Row], Awaitable[None]]

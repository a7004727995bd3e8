"""CLI: appointments (add, move, cancel) and imports from a case management system.

``probono import cases FILE.csv`` and ``probono import appointments FILE.csv`` read the CSV
exports of systems like LegalServer. Headers are matched ignoring case, spaces and
punctuation; each column below lists the header names it accepts.

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

import argparse
import csv
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.cli import CommandError
from bot.config import Settings
from bot.conversations import appointments
from bot.conversations.appointments import AppointmentError
from bot.handlers.cli_admin import _CATEGORY_RE, _STATUS_MAX, _case, _services
from bot.handlers.cli_broadcast import ProgressBar
from bot.i18n import LANGUAGES, format_datetime
from bot.phones import PhoneError, normalize_phone
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Appointment, Channel, Client, Role, ScheduleKind, ScheduleStatus

# --------------------------------------------------------------------------- appointments


async def _appointment(session: AsyncSession, raw_id: str) -> Appointment:
    if not raw_id.strip().isdigit():
        raise CommandError(f"an appointment id is a number, not {raw_id!r}")
    appt = await session.get(Appointment, int(raw_id))
    if appt is None:
        raise CommandError(f"no appointment {raw_id}")
    return appt


async def _pending_reminders(session: AsyncSession, appt: Appointment) -> int:
    assert appt.id is not None
    rows = await repo.scheduled_for_appointment(
        session, appointment_id=appt.id, kind=ScheduleKind.REMINDER
    )
    return sum(1 for r in rows if r.status == ScheduleStatus.PENDING)


async def cmd_appointment_add(args: argparse.Namespace, settings: Settings) -> int:
    """Books an appointment, tells the client and plans reminders; prints its id last."""
    try:
        kind = appointments.check_kind(args.kind)
        tz = appointments.check_timezone(args.timezone) if args.timezone else None
        # A malformed --at is refused before anything is opened (its zone is checked later).
        appointments.parse_when(args.at, tz or "UTC")
    except AppointmentError as exc:
        raise CommandError(str(exc)) from None
    async with _services(settings) as services, transaction(services.sessions) as session:
        case = await _case(session, args.reference)
        client = await session.get(Client, case.client_id)
        assert client is not None
        try:
            starts_at = appointments.parse_when(args.at, tz or client.timezone)
            appt = await appointments.book(
                session,
                services,
                case,
                starts_at,
                args.place,
                kind=kind,
                timezone=tz,
                bring=args.bring,
            )
        except AppointmentError as exc:
            raise CommandError(str(exc)) from None
        reminders = await _pending_reminders(session, appt)
        await repo.audit(
            session,
            actor_kind="cli",
            action="appointment.add",
            case_id=case.id,
            client_id=case.client_id,
            detail=f"appointment {appt.id}",
        )
    local = format_datetime(appt.starts_at, "en", appt.timezone)
    print(f"booked a {appt.kind} for case {case.reference} on {local} ({appt.timezone});")
    print(f"the client is told, {reminders} reminder(s) planned. Appointment id:")
    print(appt.id)
    return 0


async def cmd_appointment_move(args: argparse.Namespace, settings: Settings) -> int:
    """Moves an appointment; the client is told and reminders follow the new time."""
    try:
        tz = appointments.check_timezone(args.timezone) if args.timezone else None
        appointments.parse_when(args.at, tz or "UTC")
    except AppointmentError as exc:
        raise CommandError(str(exc)) from None
    async with _services(settings) as services, transaction(services.sessions) as session:
        appt = await _appointment(session, args.id)
        try:
            starts_at = appointments.parse_when(args.at, tz or appt.timezone)
            await appointments.reschedule(session, services, appt, starts_at, place=args.place)
        except AppointmentError as exc:
            raise CommandError(str(exc)) from None
        if tz:
            appt.timezone = tz
            session.add(appt)
        reminders = await _pending_reminders(session, appt)
        await repo.audit(
            session,
            actor_kind="cli",
            action="appointment.move",
            case_id=appt.case_id,
            detail=f"appointment {appt.id}",
        )
    local = format_datetime(appt.starts_at, "en", appt.timezone)
    print(f"appointment {appt.id} moved to {local} ({appt.timezone}); the client is told,")
    print(f"{reminders} reminder(s) pending. Appointment id:")
    print(appt.id)
    return 0


async def cmd_appointment_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancels an appointment, withdraws its reminders and tells the client."""
    async with _services(settings) as services, transaction(services.sessions) as session:
        appt = await _appointment(session, args.id)
        was = appt.status
        await appointments.cancel(session, services, appt)
        if was != appt.status:
            await repo.audit(
                session,
                actor_kind="cli",
                action="appointment.cancel",
                case_id=appt.case_id,
                detail=f"appointment {appt.id}",
            )
    print(f"appointment {appt.id} is cancelled" + ("" if was != appt.status else " (already)"))
    print(appt.id)
    return 0


# --------------------------------------------------------------------------- CSV plumbing


class RowError(Exception):
    """One row cannot be imported; the message is the reason shown for its line."""


def _header_key(name: str) -> str:
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


def read_csv(
    path: Path, columns: dict[str, tuple[str, ...]], required: tuple[str, ...]
) -> list[tuple[int, Row]]:
    """Rows as (line number, {column: value}); a file that cannot be read is one error."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise CommandError(f"{path}: empty file, no header line")
            index: dict[str, int] = {}
            for pos, name in enumerate(header):
                key = _header_key(name)
                for column, names in columns.items():
                    if key in names and column not in index:
                        index[column] = pos
            missing = [c for c in required if c not in index]
            if missing:
                raise CommandError(f"{path}: missing column(s): {', '.join(missing)}")
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank lines are not rows
                row = {c: cells[p].strip() if p < len(cells) else "" for c, p in index.items()}
                rows.append((reader.line_num, row))
            return rows
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: not UTF-8 text (save the export as CSV UTF-8)") from None
    except csv.Error as exc:
        raise CommandError(f"{path}: not a readable CSV file ({exc})") from None


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
    raise RowError(f"unknown language {raw!r}")


def _timezone(raw: str) -> str | None:
    if not raw.strip():
        return None
    try:
        return appointments.check_timezone(raw)
    except AppointmentError as exc:
        raise RowError(str(exc)) from None


def _category(row: Row) -> str:
    raw = row.get("category", "").strip().lower()
    if raw:
        if not _CATEGORY_RE.match(raw):
            raise RowError(f"category {raw!r} is not a short word like housing")
        return raw
    code = row.get("legal_problem_code", "").strip()
    match = re.match(r"^(\d{2})\b", code)
    if not match:
        if code:
            raise RowError(f"legal problem code {code!r} does not start with two digits")
        raise RowError("no category and no legal problem code")
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
    raise RowError(f"date {raw!r} is not like 2026-03-02 or 03/02/2026")


def _time(raw: str) -> time:
    value = " ".join(raw.strip().upper().replace(".", "").split())
    for fmt in ("%H:%M", "%H:%M:%S", "%I:%M %p", "%I:%M%p", "%I %p", "%I%p"):
        try:
            return datetime.strptime(value, fmt).time()  # noqa: DTZ007 - a wall time
        except ValueError:
            continue
    raise RowError(f"time {raw!r} is not like 09:30 or 9:30 AM")


def _kind(raw: str) -> str:
    value = raw.strip().casefold()
    if not value:
        return appointments.DEFAULT_KIND
    for kind, words in KIND_WORDS:
        if any(word in value for word in words):
            return kind
    raise RowError(f"event type {raw!r} is not a hearing, meeting or call")


def _case_number(raw: str) -> str:
    ref = repo.normalize_reference(raw)
    if not re.fullmatch(r"[A-Z0-9][A-Z0-9-]{2,15}", ref):
        raise RowError("no case number" if not raw.strip() else f"bad case number {raw!r}")
    return ref


# --------------------------------------------------------------------------- import rows


@dataclass
class ImportRun:
    """State shared by the rows of one import: what earlier lines already claimed."""

    services: Services
    session: AsyncSession
    now: datetime
    seen: dict[Any, int] = field(default_factory=dict)

    def first_time(self, key: Any, line: int, what: str) -> None:
        if key in self.seen:
            raise RowError(f"{what} repeats line {self.seen[key]}")
        self.seen[key] = line


async def import_case_row(run: ImportRun, line: int, row: Row) -> None:
    """Checks one case row in full, then writes it (nothing written for a rejected row)."""
    session, services = run.session, run.services
    ref = _case_number(row["case_number"])
    run.first_time(("case", ref), line, f"case {ref}")
    if await repo.get_case(session, reference=ref) is not None:
        raise RowError(f"case {ref} already exists")
    try:
        phone = normalize_phone(row["client_phone"])
    except PhoneError as exc:
        raise RowError(f"client phone: {exc}") from None  # never the number itself
    client = await repo.find_client_by_address(
        session, vault=services.vault, channel=Channel.SMS, address=phone
    )
    if client is not None and client.wrapped_key is None:
        raise RowError("that phone number belongs to an erased client")
    name = " ".join(
        (
            row.get("client_name") or f"{row.get('first_name', '')} {row.get('last_name', '')}"
        ).split()
    )
    if client is None and not name:
        raise RowError("a new client needs a name (client_name, or first_name and last_name)")
    if len(name) > 200:
        raise RowError("the client name is longer than 200 characters")
    language = _language(row.get("language", ""), services.settings.default_language)
    tz = _timezone(row.get("timezone", "")) or services.settings.default_timezone
    category = _category(row)
    status = " ".join(row.get("case_status", "").split()) or "open"
    if len(status) > _STATUS_MAX:
        raise RowError(f"status is longer than {_STATUS_MAX} characters")
    opened = _date(row.get("date_opened", ""))
    discreet_raw = row.get("discreet", "").strip().casefold()
    if discreet_raw not in YES | NO:
        raise RowError(f"discreet must be yes or no, not {row.get('discreet')!r}")
    staff = None
    raw_staff = row.get("attorney_telegram_id", "").strip()
    if raw_staff:
        if not raw_staff.isdigit():
            raise RowError(f"attorney telegram id {raw_staff!r} is not a number")
        staff = await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=int(raw_staff)
        )
        if staff is None or staff.role != Role.ATTORNEY:
            raise RowError(f"no active attorney with Telegram id {raw_staff}")
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
    await repo.audit(
        session, actor_kind="cli", action="case.import", case_id=case.id, client_id=client.id
    )


def _start(row: Row, tz: str) -> datetime:
    try:
        if row.get("start"):
            return appointments.parse_when(row["start"], tz)
        if not row.get("date") or not row.get("time"):
            raise RowError("no start (a start column, or date and time columns)")
        day = _date(row["date"])
        assert day is not None
        return appointments.parse_when(datetime.combine(day, _time(row["time"])).isoformat(), tz)
    except AppointmentError as exc:
        raise RowError(str(exc)) from None


async def import_appointment_row(run: ImportRun, line: int, row: Row) -> None:
    """Checks one appointment row in full, then books it (the client is told)."""
    session, services = run.session, run.services
    ref = _case_number(row["case_number"])
    case = await repo.get_case(session, reference=ref)
    if case is None:
        raise RowError(f"no case {ref} (import the cases first)")
    client = await session.get(Client, case.client_id)
    assert client is not None and case.id is not None
    if client.wrapped_key is None:
        raise RowError(f"the client of case {ref} was erased")
    tz = _timezone(row.get("timezone", ""))
    starts_at = _start(row, tz or client.timezone)
    if starts_at <= run.now:
        raise RowError("the appointment time has already passed")
    run.first_time(("appt", case.id, starts_at), line, f"case {ref} at that time")
    if await repo.find_appointment(session, case_id=case.id, starts_at=starts_at) is not None:
        raise RowError(f"case {ref} already has an appointment at that time")
    kind = _kind(row.get("event_type", ""))
    try:
        place = appointments.check_text(
            row.get("location"), "location", appointments.PLACE_MAX, required=True
        )
        bring = appointments.check_text(
            row.get("bring"), "bring", appointments.BRING_MAX, required=False
        )
        appt = await appointments.book(
            session, services, case, starts_at, place or "", kind=kind, timezone=tz, bring=bring
        )
    except AppointmentError as exc:
        raise RowError(str(exc)) from None
    await repo.audit(
        session,
        actor_kind="cli",
        action="appointment.import",
        case_id=case.id,
        client_id=client.id,
        detail=f"appointment {appt.id}",
    )


class _RollBack(Exception):
    """Leaves the import's transaction without committing (dry run, or rows rejected)."""


ImportRow = Callable[[ImportRun, int, Row], Awaitable[None]]


async def _import(
    args: argparse.Namespace,
    settings: Settings,
    *,
    what: str,
    columns: dict[str, tuple[str, ...]],
    required: tuple[str, ...],
    import_row: ImportRow,
) -> int:
    rows = read_csv(Path(args.file), columns, required)
    rejected: list[tuple[int, str]] = []
    done = 0
    bar = ProgressBar(f"importing {what}") if sys.stderr.isatty() else None
    async with _services(settings) as services:
        try:
            # One transaction: all rows or none (the rejected ones with --skip-bad).
            async with transaction(services.sessions) as session:
                run = ImportRun(services, session, services.clock())
                for count, (line, row) in enumerate(rows, start=1):
                    try:
                        await import_row(run, line, row)
                        done += 1
                    except RowError as exc:
                        rejected.append((line, str(exc)))
                    if bar is not None:
                        bar.update(count, len(rows), f"{len(rejected)} rejected")
                if args.dry_run or (rejected and not args.skip_bad):
                    raise _RollBack
        except _RollBack:
            pass
        finally:
            if bar is not None:
                bar.close()
    for line, reason in rejected:
        print(f"line {line}: rejected: {reason}")
    if rejected and not args.skip_bad:
        raise CommandError(
            f"{len(rejected)} of {len(rows)} rows rejected; nothing imported "
            "(fix them, or use --skip-bad to import the others)"
        )
    skipped = f", {len(rejected)} rejected row(s) skipped" if rejected else ""
    if args.dry_run:
        print(f"dry run: {done} {what} would be imported{skipped}; nothing changed")
    else:
        print(f"imported {done} {what}{skipped}")
    return 0


async def cmd_import_cases(args: argparse.Namespace, settings: Settings) -> int:
    """Imports cases (and their clients) from a case management system's CSV export."""
    return await _import(
        args,
        settings,
        what="cases",
        columns=CASE_COLUMNS,
        required=CASE_REQUIRED,
        import_row=import_case_row,
    )


async def cmd_import_appointments(args: argparse.Namespace, settings: Settings) -> int:
    """Imports appointments from a CSV export; each client is told and reminded."""
    return await _import(
        args,
        settings,
        what="appointments",
        columns=APPOINTMENT_COLUMNS,
        required=APPOINTMENT_REQUIRED,
        import_row=import_appointment_row,
    )


# --------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    appt = sub.add_parser("appointment", help="hearings, meetings and calls")
    appt_sub = appt.add_subparsers(dest="appointment_command", metavar="ACTION", required=True)
    p = appt_sub.add_parser(
        "add",
        help="book an appointment and schedule its reminders",
        description=(
            "Book a hearing, meeting or call for a case. The client is told at once and "
            "reminded at REMINDER_OFFSETS before it. Prints the appointment id last."
        ),
    )
    p.add_argument("reference", metavar="REF", help="case reference, e.g. K7M-4PX")
    p.add_argument(
        "--at",
        required=True,
        metavar="ISO8601",
        help="start, e.g. 2026-03-10T09:30 (local in --timezone or the client's zone) "
        "or 2026-03-10T09:30-05:00",
    )
    p.add_argument("--place", required=True, metavar="TEXT", help="where (stored encrypted)")
    p.add_argument("--timezone", metavar="TZ", help="IANA zone (default: the client's)")
    p.add_argument(
        "--kind",
        default=appointments.DEFAULT_KIND,
        metavar="|".join(appointments.KINDS),
        help=f"what it is (default {appointments.DEFAULT_KIND})",
    )
    p.add_argument("--bring", metavar="TEXT", help="what the client should bring")
    p.set_defaults(func=cmd_appointment_add)

    p = appt_sub.add_parser(
        "move",
        help="move an appointment; the client is told",
        description="Move an appointment. The client reads MOVED from the old to the new time.",
    )
    p.add_argument("id", metavar="ID", help="appointment id")
    p.add_argument("--at", required=True, metavar="ISO8601", help="the new start")
    p.add_argument("--place", metavar="TEXT", help="a new place (default: unchanged)")
    p.add_argument("--timezone", metavar="TZ", help="IANA zone (default: the appointment's)")
    p.set_defaults(func=cmd_appointment_move)

    p = appt_sub.add_parser(
        "cancel",
        help="cancel an appointment; reminders are withdrawn",
        description="Cancel an appointment: pending reminders are withdrawn, the client is told.",
    )
    p.add_argument("id", metavar="ID", help="appointment id")
    p.set_defaults(func=cmd_appointment_cancel)

    imp = sub.add_parser("import", help="import from a case management system (CSV)")
    imp_sub = imp.add_subparsers(dest="import_command", metavar="WHAT", required=True)
    for name, func, text in (
        ("cases", cmd_import_cases, "cases and their clients"),
        ("appointments", cmd_import_appointments, "appointments of existing cases"),
    ):
        p = imp_sub.add_parser(
            name,
            help=f"import {text} from a CSV export",
            description=(
                f"Import {text} from a CSV export (LegalServer-style columns; see the "
                "README). Rejected rows are listed by line; any rejected row means nothing "
                "is imported unless --skip-bad is given."
            ),
        )
        p.add_argument("file", metavar="FILE.csv", help="the CSV export (UTF-8)")
        p.add_argument("--dry-run", action="store_true", help="check and report, change nothing")
        p.add_argument(
            "--skip-bad", action="store_true", help="import the good rows, skip rejected ones"
        )
        p.set_defaults(func=func)

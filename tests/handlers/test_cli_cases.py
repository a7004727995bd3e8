"""`probono appointment ...` and `probono import ...`: what an operator sees, what is stored,
and nothing changed on bad input (a snapshot of every table before and after)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from bot.cli import main
from bot.config import Settings
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Appointment, Case, Channel, Client, Role, ScheduleStatus
from tests.casework import client_texts, open_case, reminder_rows
from tests.storage.snapshot import snapshot

NY = ZoneInfo("America/New_York")


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]

    def one_line_error(self, *fragments: str) -> str:
        assert self.code != 0, self.out
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("probono: error: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], lines[0]
        return lines[0]


CLI = Callable[..., Awaitable[Run]]


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    tmp_path: Path,
) -> Iterator[CLI]:
    """Runs `probono ...` in-process with the test's settings in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PROBONO_DATA_DIR", str(settings.probono_data_dir))
    monkeypatch.setenv("PROBONO_ENV", settings.probono_env)
    keys = settings.probono_encryption_keys
    assert keys is not None
    monkeypatch.setenv("PROBONO_ENCRYPTION_KEYS", keys.get_secret_value())
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    async def run(*argv: str) -> Run:
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))  # main() runs its own loop
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    yield run
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = Services.build(settings)  # the real clock, as the command uses
    yield svc
    await svc.close()


def local_in(days: int, hour: int = 9, minute: int = 30) -> datetime:
    """A wall time in New York ``days`` from now."""
    day = datetime.now(NY).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY)


async def appointments_in_db(services: Services) -> list[Appointment]:
    async with services.sessions() as session:
        return list((await session.exec(select(Appointment).order_by(col(Appointment.id)))).all())


# --------------------------------------------------------------------------- appointment add


async def test_add_books_tells_and_prints_the_id(cli: CLI, services: Services) -> None:
    world = await open_case(services, attorney=False)
    when = local_in(10)
    run = await cli(
        "appointment",
        "add",
        world.reference,
        "--at",
        when.strftime("%Y-%m-%dT%H:%M"),  # naive: the client's zone
        "--place",
        "Housing Court, Room 4",
        "--kind",
        "hearing",
        "--bring",
        "your lease",
    )
    assert run.code == 0, run.err
    assert run.err == ""
    [appt] = await appointments_in_db(services)
    assert run.last_line == str(appt.id)
    assert appt.starts_at == when.astimezone(UTC)
    assert (appt.kind, appt.timezone) == ("hearing", "America/New_York")
    assert "3 reminder(s) planned" in run.out
    assert [r.status for r in await reminder_rows(services, appt.id or 0)] == ["pending"] * 3
    [told] = await client_texts(services, kind="appointment")
    assert "court hearing is booked for" in told and "Housing Court, Room 4" in told
    assert "Please bring: your lease." in told


async def test_add_reads_a_naive_time_in_the_timezone_given(cli: CLI, services: Services) -> None:
    world = await open_case(services, attorney=False)
    when = local_in(10).replace(tzinfo=ZoneInfo("America/Chicago"))
    run = await cli(
        "appointment",
        "add",
        world.reference,
        "--at",
        when.strftime("%Y-%m-%dT%H:%M"),
        "--place",
        "Clinic",
        "--timezone",
        "America/Chicago",
    )
    assert run.code == 0, run.err
    [appt] = await appointments_in_db(services)
    assert appt.starts_at == when.astimezone(UTC)
    assert (appt.timezone, appt.kind) == ("America/Chicago", "meeting")


BAD_ADD: list[tuple[list[str], str]] = [
    (["--at", "next tuesday", "--place", "Room 4"], "is not an ISO 8601 date and time"),
    (["--at", "2030-02-30T09:00", "--place", "Room 4"], "is not an ISO 8601"),
    (["--at", "2030-03-10", "--place", "Room 4"], "has no time of day"),
    (["--at", "2020-03-10T09:00", "--place", "Room 4"], "already passed"),
    (["--at", "2030-03-10T09:00", "--place", "   "], "place must not be empty"),
    (["--at", "2030-03-10T09:00", "--place", "x", "--kind", "party"], "kind must be one of"),
    (["--at", "2030-03-10T09:00", "--place", "x", "--timezone", "Nowhere/City"], "time zone"),
]


async def test_add_refuses_bad_input_and_changes_nothing(cli: CLI, services: Services) -> None:
    world = await open_case(services, attorney=False)
    before = await snapshot(services)
    for args, fragment in BAD_ADD:
        run = await cli("appointment", "add", world.reference, *args)
        run.one_line_error(fragment)
        assert run.out == ""
    assert await snapshot(services) == before


async def test_add_to_an_unknown_case(cli: CLI, services: Services) -> None:
    await open_case(services, attorney=False)
    run = await cli("appointment", "add", "ZZZ-ZZZ", "--at", "2030-03-10T09:00", "--place", "x")
    run.one_line_error("no case ZZZ-ZZZ")


# --------------------------------------------------------------------------- move and cancel


async def booked(cli: CLI, services: Services) -> tuple[int, str]:
    world = await open_case(services, attorney=False)
    run = await cli(
        "appointment",
        "add",
        world.reference,
        "--at",
        local_in(10).strftime("%Y-%m-%dT%H:%M"),
        "--place",
        "Room 4",
    )
    assert run.code == 0, run.err
    return int(run.last_line), world.reference


async def test_move_tells_the_client_and_moves_the_reminders(cli: CLI, services: Services) -> None:
    appt_id, _ref = await booked(cli, services)
    new = local_in(20, 14, 0)
    run = await cli(
        "appointment", "move", str(appt_id), "--at", new.isoformat(), "--place", "Room 9"
    )
    assert run.code == 0, run.err
    assert run.last_line == str(appt_id)
    [appt] = await appointments_in_db(services)
    assert appt.starts_at == new.astimezone(UTC)
    rows = await reminder_rows(services, appt_id)
    assert max(r.due_at for r in rows) == new.astimezone(UTC) - timedelta(hours=2)
    [moved] = [t for t in await client_texts(services, kind="appointment") if "MOVED" in t]
    # The text the client reads, built from the value booked (never a typed date).
    assert "Room 9" in moved and f"{new:%b} {new.day}, {new.year}, 2:00 PM" in moved


async def test_move_refuses_a_bad_date_and_an_unknown_id(cli: CLI, services: Services) -> None:
    appt_id, _ref = await booked(cli, services)
    before = await snapshot(services)
    (await cli("appointment", "move", str(appt_id), "--at", "soon")).one_line_error("ISO 8601")
    (await cli("appointment", "move", "999", "--at", "2030-01-01T10:00")).one_line_error(
        "no appointment 999"
    )
    (await cli("appointment", "move", "abc", "--at", "2030-01-01T10:00")).one_line_error(
        "is a number"
    )
    assert await snapshot(services) == before


async def test_cancel_withdraws_reminders_once(cli: CLI, services: Services) -> None:
    appt_id, _ref = await booked(cli, services)
    run = await cli("appointment", "cancel", str(appt_id))
    assert run.code == 0, run.err
    assert run.last_line == str(appt_id)
    assert {r.status for r in await reminder_rows(services, appt_id)} == {ScheduleStatus.CANCELLED}
    [appt] = await appointments_in_db(services)
    assert appt.status == "cancelled"
    again = await cli("appointment", "cancel", str(appt_id))
    assert again.code == 0 and "already" in again.out
    cancels = [t for t in await client_texts(services, kind="appointment") if "CANCELLED" in t]
    assert len(cancels) == 1
    # A cancelled appointment cannot be moved.
    (await cli("appointment", "move", str(appt_id), "--at", "2030-01-01T10:00")).one_line_error(
        "cancelled"
    )


# --------------------------------------------------------------------------- import cases


CASES_HEADER = (
    "Case Number,Client First Name,Client Last Name,Mobile Phone,Legal Problem Code,"
    "Case Status,Preferred Language,Date Opened,Attorney Telegram ID"
)


def write(tmp_path: Path, name: str, *lines: str) -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


async def attorney(services: Services, telegram_id: int = 5151) -> int:
    async with transaction(services.sessions) as session:
        staff = await repo.create_staff(
            session, vault=services.vault, name="Ann", role=Role.ATTORNEY, telegram_id=telegram_id
        )
    assert staff.id is not None
    return staff.id


async def cases_in_db(services: Services) -> list[tuple[Case, Client]]:
    async with services.sessions() as session:
        rows = await session.exec(
            select(Case, Client)
            .join(Client, col(Client.id) == col(Case.client_id))
            .order_by(col(Case.id))
        )
        return list(rows.all())


async def test_import_cases_happy_path(cli: CLI, services: Services, tmp_path: Path) -> None:
    staff_id = await attorney(services)
    path = write(
        tmp_path,
        "cases.csv",
        CASES_HEADER,
        "24-0001234,María,López,(202) 555-0143,63 Private Landlord/Tenant,Open,Spanish,"
        "03/15/2025,5151",
        '24-0001235,Tran,Nguyen,202-555-0144,"81 Immigration/Naturalization",Accepted,vi,,',
        "",
        "24-0001236,María,López,+12025550143,32 Divorce,Hearing scheduled,es,2025-04-01,",
    )
    run = await cli("import", "cases", path)
    assert run.code == 0, run.err
    assert run.last_line == "imported 3 cases"
    rows = await cases_in_db(services)
    got = [(c.reference, c.category, c.status, cl.language, c.client_id) for c, cl in rows]
    maria = rows[0][1].id
    assert got == [
        ("24-0001234", "housing", "Open", "es", maria),
        ("24-0001235", "immigration", "Accepted", "vi", rows[1][1].id),
        ("24-0001236", "family", "Hearing scheduled", "es", maria),  # the same client
    ]
    assert rows[0][0].assigned_staff_id == staff_id
    assert rows[0][0].opened_at.astimezone(NY).date().isoformat() == "2025-03-15"
    assert repo.client_name(services.vault, rows[0][1]) == "María López"
    # Imported cases are not announced to clients.
    assert await client_texts(services) == []
    async with services.sessions() as session:
        found = await repo.find_client_by_address(
            session, vault=services.vault, channel=Channel.SMS, address="+12025550144"
        )
    assert found is not None and found.id == rows[1][1].id


CASE_REJECTIONS = [
    (",Ann,Lee,2025550150,63,Open,en,,", "no case number"),
    ("24-0000001-EXTRA-LONG,Ann,Lee,2025550150,63,Open,en,,", "bad case number"),
    ("24-0000001,Ann,Lee,2025550150,63,Open,en,,", "case 24-0000001 repeats line 2"),
    ("24-0000009,Ann,Lee,2025550150,63,Open,en,,", "case 24-0000009 already exists"),
    ("24-0000002,Ann,Lee,12345,63,Open,en,,", "client phone: not a possible phone number"),
    ("24-0000003,,,2025550151,63,Open,en,,", "a new client needs a name"),
    ("24-0000004,Ann,Lee,2025550152,63,Open,Klingon,,", "unknown language 'Klingon'"),
    ("24-0000005,Ann,Lee,2025550153,Landlord,Open,en,,", "does not start with two digits"),
    ("24-0000006,Ann,Lee,2025550154,,Open,en,,", "no category and no legal problem code"),
    ("24-0000007,Ann,Lee,2025550155,63,Open,en,31/31/2025,", "date '31/31/2025' is not like"),
    ("24-0000008,Ann,Lee,2025550156,63,Open,en,,999", "no active attorney with Telegram id 999"),
    ("24-0000010,Ann,Lee,2025550157,63," + "x" * 65 + ",en,,", "status is longer than 64"),
    ("24-0000011,Ann,Lee,2025550158,63,Open,en,,abc", "attorney telegram id 'abc' is not"),
    ("24-0000012,Ann,Lee,+12025550199,63,Open,en,,", "belongs to an erased client"),
]


async def test_import_cases_rejects_each_bad_row_and_imports_nothing(
    cli: CLI, services: Services, tmp_path: Path
) -> None:
    await open_case(services, attorney=False)  # an existing client and case
    async with transaction(services.sessions) as session:
        client = await repo.create_client(
            session, vault=services.vault, channel=Channel.SMS, address="+12025550199", name="E"
        )
        await repo.erase_client(session, client=client)
        other = await repo.create_client(
            session, vault=services.vault, channel=Channel.SMS, address="+12025550198", name="O"
        )
        case = await repo.create_case(session, client=other, category="housing")
        case.reference = "24-0000009"
        session.add(case)
    lines = [CASES_HEADER, "24-0000001,Ann,Lee,2025550149,63,Open,en,,"]
    lines += [row for row, _reason in CASE_REJECTIONS]
    path = write(tmp_path, "cases.csv", *lines)
    before = await snapshot(services)

    run = await cli("import", "cases", path)
    run.one_line_error(f"{len(CASE_REJECTIONS)} of {len(CASE_REJECTIONS) + 1} rows rejected")
    assert "nothing imported" in run.err
    report = run.out.strip().splitlines()
    assert len(report) == len(CASE_REJECTIONS)
    for n, (line, (_row, reason)) in enumerate(zip(report, CASE_REJECTIONS, strict=True)):
        assert line.startswith(f"line {n + 3}: rejected: "), line
        assert reason in line, (line, reason)
    assert "2025550" not in run.out + run.err  # phone numbers are never echoed
    assert await snapshot(services) == before

    dry = await cli("import", "cases", path, "--dry-run")
    assert dry.code != 0
    assert await snapshot(services) == before

    skip = await cli("import", "cases", path, "--skip-bad")
    assert skip.code == 0, skip.err
    assert skip.last_line == f"imported 1 cases, {len(CASE_REJECTIONS)} rejected row(s) skipped"
    refs = [c.reference for c, _cl in await cases_in_db(services)]
    assert "24-0000001" in refs and "24-0000002" not in refs


async def test_import_dry_run_changes_nothing(cli: CLI, services: Services, tmp_path: Path) -> None:
    path = write(tmp_path, "cases.csv", CASES_HEADER, "24-0000001,Ann,Lee,2025550149,63,Open,,,")
    before = await snapshot(services)
    run = await cli("import", "cases", path, "--dry-run")
    assert run.code == 0, run.err
    assert run.last_line == "dry run: 1 cases would be imported; nothing changed"
    assert await snapshot(services) == before


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"Case Number,Client Name\n24-1,Ann\n", "missing column(s): client_phone"),
        (b"Case Number,Mobile Phone,Client Name\n24-1,2025550149,Mar\xeda\n", "not UTF-8"),
    ],
)
async def test_an_unreadable_file_is_one_error(
    cli: CLI, services: Services, tmp_path: Path, content: bytes | None, fragment: str
) -> None:
    path = tmp_path / "in.csv"
    if content is not None:
        path.write_bytes(content)
    before = await snapshot(services)
    (await cli("import", "cases", str(path))).one_line_error(fragment)
    assert await snapshot(services) == before


# --------------------------------------------------------------------------- import appointments


APPT_HEADER = "Case Number,Date,Start Time,Location,Event Type,Time Zone,What To Bring"


async def test_import_appointments_happy_path(cli: CLI, services: Services, tmp_path: Path) -> None:
    world = await open_case(services, attorney=False)
    day = local_in(12)
    path = write(
        tmp_path,
        "appointments.csv",
        APPT_HEADER,
        f"{world.reference},{day:%m/%d/%Y},9:30 AM,Housing Court Room 4,Court Hearing,,lease",
        f'{world.reference},{day:%Y-%m-%d},14:00,"Clinic, 2nd floor",Client Meeting,,',
        f"{world.reference},{day:%Y-%m-%d},4 PM,By phone,Phone call,America/Chicago,",
    )
    run = await cli("import", "appointments", path)
    assert run.code == 0, run.err
    assert run.last_line == "imported 3 appointments"
    appts = await appointments_in_db(services)
    assert [(a.kind, a.starts_at) for a in appts] == [
        ("hearing", day.astimezone(UTC)),
        ("meeting", day.replace(hour=14, minute=0).astimezone(UTC)),
        (
            "call",
            day.replace(hour=16, minute=0, tzinfo=ZoneInfo("America/Chicago")).astimezone(UTC),
        ),
    ]
    assert len(await client_texts(services, kind="appointment")) == 3
    for appt in appts:
        assert len(await reminder_rows(services, appt.id or 0)) == 3


async def test_import_appointments_rejects_each_bad_row(
    cli: CLI, services: Services, tmp_path: Path
) -> None:
    world = await open_case(services, attorney=False)
    ref = world.reference
    day = local_in(12)
    d = f"{day:%Y-%m-%d}"
    good = f"{ref},{d},9:30,Room 4,hearing,,"
    rejections = [
        (f"ZZZ-ZZZ,{d},9:30,Room 4,hearing,,", "no case ZZZ-ZZZ (import the cases first)"),
        (f"{ref},someday,9:30,Room 4,hearing,,", "date 'someday' is not like"),
        (f"{ref},{d},half past nine,Room 4,hearing,,", "time 'half past nine' is not like"),
        (f"{ref},,9:30,Room 4,hearing,,", "no start"),
        (f"{ref},2020-01-02,9:30,Room 4,hearing,,", "already passed"),
        (f"{ref},{d},10:30,,hearing,,", "location must not be empty"),
        (f"{ref},{d},11:30,Room 4,Birthday party,,", "event type 'Birthday party' is not"),
        (f"{ref},{d},12:30,Room 4,hearing,Mars/Base,", "unknown time zone"),
        (good, f"case {ref} at that time repeats line 2"),
        (f"{ref},{local_in(14):%Y-%m-%d},9:30,Room 4,hearing,,", "already has an appointment"),
    ]
    async with transaction(services.sessions) as session:
        from bot.casework import appointments
        from bot.casework.base import CLI as ACTOR

        case = await repo.require_case(session, reference=ref)
        await appointments.book(
            session, services, case, local_in(14).astimezone(UTC), "Room 1", actor=ACTOR
        )
    path = write(tmp_path, "a.csv", APPT_HEADER, good, *(row for row, _r in rejections))
    before = await snapshot(services)
    run = await cli("import", "appointments", path)
    run.one_line_error(f"{len(rejections)} of {len(rejections) + 1} rows rejected")
    report = run.out.strip().splitlines()
    for n, (line, (_row, reason)) in enumerate(zip(report, rejections, strict=True)):
        assert line.startswith(f"line {n + 3}: rejected: "), line
        assert reason in line, (line, reason)
    assert await snapshot(services) == before

    skip = await cli("import", "appointments", path, "--skip-bad")
    assert skip.code == 0, skip.err
    assert len(await appointments_in_db(services)) == 2  # the one booked before, and line 2

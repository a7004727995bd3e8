"""The admin commands: what an operator sees, what is stored, and nothing changed on bad input."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import os
import re
import stat
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.cli import main
from bot.clock import FakeClock
from bot.config import Settings
from bot.services import Services
from storage import repo
from storage.crypto import ERASED, Vault, generate_key
from storage.models import Case, Channel, Client, OutboxItem, OutboxStatus, Role, Staff
from tests.casework import LONG_STATUS, LONG_STATUS_REFUSAL
from tests.conftest import TEST_KEY, make_settings
from tests.storage.snapshot import snapshot

PHONE = "+12025550143"
REF_RE = re.compile(r"^[ACDEFGHJKMNPQRTWXY3467]{3}-[ACDEFGHJKMNPQRTWXY3467]{3}$")


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def last_line(self) -> str:
        return self.out.strip().splitlines()[-1]

    def assert_one_line_error(self, *fragments: str) -> None:
        assert self.code != 0
        lines = self.err.strip().splitlines()
        assert len(lines) == 1, self.err
        assert lines[0].startswith("probono: error: "), lines[0]
        for fragment in fragments:
            assert fragment in lines[0], lines[0]


CLI = Callable[..., Awaitable[Run]]


def _env_for(settings: Settings) -> dict[str, str]:
    keys = settings.probono_encryption_keys
    env = {
        "DATABASE_URL": settings.database_url,
        "PROBONO_DATA_DIR": str(settings.probono_data_dir),
        "PROBONO_ENV": settings.probono_env,
    }
    if keys is not None:
        env["PROBONO_ENCRYPTION_KEYS"] = keys.get_secret_value()
    return env


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    tmp_path: Path,
) -> Iterator[CLI]:
    """Runs `probono ...` in-process with the test's settings in the environment."""
    monkeypatch.chdir(tmp_path)  # no developer .env
    for name, value in _env_for(settings).items():
        monkeypatch.setenv(name, value)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    async def run(*argv: str, env: dict[str, str | None] | None = None) -> Run:
        for name, value in (env or {}).items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            # A thread, because main() runs its own event loop.
            code = await asyncio.to_thread(main, list(argv))
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    yield run
    # main() installs its own stderr handler; leave logging as pytest had it.
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


async def _client(services: Services, phone: str = PHONE) -> Client | None:
    async with services.sessions() as session:
        return await repo.find_client_by_address(
            session, vault=services.vault, channel=Channel.SMS, address=phone
        )


async def _staff(services: Services) -> list[Staff]:
    async with services.sessions() as session:
        return list((await session.exec(select(Staff).order_by(col(Staff.id)))).all())


async def _case(services: Services, reference: str) -> Case:
    async with services.sessions() as session:
        return await repo.require_case(session, reference=reference)


@pytest.fixture
async def client_with_case(cli: CLI) -> str:
    """A registered client with one housing case; returns its reference."""
    assert (await cli("client", "add", "--phone", PHONE, "--name", "Ana Díaz")).code == 0
    run = await cli("case", "add", "--phone", PHONE, "--category", "housing")
    assert run.code == 0, run.err
    return run.last_line


@pytest.fixture
async def attorney(cli: CLI) -> int:
    run = await cli(
        "staff", "add", "--name", "Jo Lawyer", "--role", "attorney", "--telegram-id", "4242"
    )
    assert run.code == 0, run.err
    return int(run.last_line)


# --------------------------------------------------------------------------- help


def test_probono_help_runs_as_a_program(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "probono"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROBONO_", "DATABASE_"))}
    done = subprocess.run(
        [str(exe), "--help"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for command in ("serve", "db", "staff", "client", "case", "keys"):
        assert command in done.stdout


@pytest.mark.parametrize("program", [["probono"], ["python", "-m", "bot.cli"]])
@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["client", "add", "--phone", "12", "--name", "Ana"], "--phone"),  # a CommandError
        (["case", "assign", "ABC-DEF"], "case assign: the following arguments are required"),
    ],
)
def test_bad_input_is_one_line_from_either_program(
    tmp_path: Path, settings: Settings, program: list[str], argv: list[str], fragment: str
) -> None:
    bin_dir = Path(sys.executable).parent
    exe = [str(bin_dir / "probono")] if program == ["probono"] else [sys.executable, *program[1:]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROBONO_", "DATABASE_"))}
    env.update(_env_for(settings))
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [*exe, *argv], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60
    )
    Run(done.returncode, done.stdout, done.stderr).assert_one_line_error(fragment)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["client", "add", "--name", "Ana"], "client add: the following arguments are required"),
        (["case", "frob"], "case: argument ACTION: invalid choice: 'frob'"),
        (["--nonsense"], "COMMAND"),
    ],
)
async def test_usage_errors_are_one_line(
    cli: CLI, services: Services, argv: list[str], fragment: str
) -> None:
    before = await snapshot(services)
    run = await cli(*argv)
    run.assert_one_line_error(fragment)
    assert run.code == 2
    assert await snapshot(services) == before


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["staff", "add"], "--telegram-id"),
        (["client", "add"], "--timezone"),
        (["client", "erase"], "--yes"),
        (["case", "add"], "reference"),
        (["case", "assign"], "--telegram-id"),
        (["case", "status"], "tell the client"),
        (["keys", "generate"], "PROBONO_ENCRYPTION_KEYS"),
        (["keys", "rotate"], "PROBONO_ENCRYPTION_KEYS"),
    ],
)
async def test_every_command_explains_itself(cli: CLI, argv: list[str], expected: str) -> None:
    run = await cli(*argv, "--help")
    assert run.code == 0
    assert expected in " ".join(run.out.split())


# --------------------------------------------------------------------------- staff


async def test_staff_add_stores_encrypted_staff_found_by_telegram_id(
    cli: CLI, services: Services
) -> None:
    run = await cli(
        "staff", "add", "--name", "Jo Lawyer", "--role", "Attorney",
        "--telegram-id", "4242", "--phone", "(202) 555-0199",
    )  # fmt: skip
    assert run.code == 0, run.err
    staff_id = int(run.last_line)
    async with services.sessions() as session:
        staff = await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=4242
        )
    assert staff is not None and staff.id == staff_id
    assert staff.role == Role.ATTORNEY
    assert repo.staff_name(services.vault, staff) == "Jo Lawyer"
    assert services.vault.open_text(staff.phone_enc, "staff.phone") == "+12025550199"


async def test_staff_add_without_contact_details(cli: CLI, services: Services) -> None:
    run = await cli("staff", "add", "--name", "Co Ordinator", "--role", "coordinator")
    assert run.code == 0, run.err
    [staff] = await _staff(services)
    assert staff.id == int(run.last_line) and staff.role == Role.COORDINATOR
    assert staff.telegram_id_hash is None and staff.phone_hash is None


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--name", "X", "--role", "judge"], "--role"),
        (["--name", "X", "--role", "attorney", "--telegram-id", "abc"], "--telegram-id"),
        (["--name", "X", "--role", "attorney", "--telegram-id", "-5"], "--telegram-id"),
        (["--name", "X", "--role", "attorney", "--phone", "12"], "--phone"),
        (["--name", "X", "--role", "attorney", "--phone", "call me"], "--phone"),
        (["--name", "   ", "--role", "attorney"], "--name"),
        (["--name", "Dup", "--role", "attorney", "--telegram-id", "4242"], "Telegram id"),
    ],
)
async def test_staff_add_refuses_bad_input(
    cli: CLI, services: Services, attorney: int, argv: list[str], fragment: str
) -> None:
    before = await snapshot(services)
    run = await cli("staff", "add", *argv)
    run.assert_one_line_error(fragment)
    assert await snapshot(services) == before


# --------------------------------------------------------------------------- clients


async def test_client_add_normalises_the_phone_and_encrypts(cli: CLI, services: Services) -> None:
    run = await cli(
        "client", "add", "--phone", "(202) 555-0143", "--name", "Ana Díaz",
        "--language", "es", "--timezone", "America/Chicago",
    )  # fmt: skip
    assert run.code == 0, run.err
    client = await _client(services, PHONE)
    assert client is not None and client.id == int(run.last_line)
    assert repo.client_name(services.vault, client) == "Ana Díaz"
    assert (client.language, client.timezone) == ("es", "America/Chicago")


async def test_client_add_uses_the_program_defaults(cli: CLI, services: Services) -> None:
    assert (await cli("client", "add", "--phone", PHONE, "--name", "Ana")).code == 0
    client = await _client(services)
    assert client is not None
    assert (client.language, client.timezone) == ("en", "America/New_York")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--phone", "555-01", "--name", "B"], "--phone"),
        (["--phone", "not a number", "--name", "B"], "--phone"),
        (["--phone", "+12025550177", "--name", "B", "--language", "klingon"], "--language"),
        (["--phone", "+12025550177", "--name", "B", "--timezone", "Mars/Base"], "--timezone"),
        (["--phone", "+12025550177", "--name", ""], "--name"),
        (["--phone", "202 555 0143", "--name", "Again"], "already has that phone"),
    ],
)
async def test_client_add_refuses_bad_input(
    cli: CLI, services: Services, client_with_case: str, argv: list[str], fragment: str
) -> None:
    before = await snapshot(services)
    run = await cli("client", "add", *argv)
    run.assert_one_line_error(fragment)
    assert PHONE not in run.err  # numbers stay out of error output
    assert await snapshot(services) == before


# --------------------------------------------------------------------------- cases


async def test_case_add_prints_a_readable_reference(cli: CLI, services: Services) -> None:
    assert (await cli("client", "add", "--phone", PHONE, "--name", "Ana")).code == 0
    run = await cli("case", "add", "--phone", PHONE, "--category", "Housing", "--status", "intake")
    assert run.code == 0, run.err
    assert REF_RE.match(run.last_line), run.last_line
    case = await _case(services, run.last_line)
    client = await _client(services)
    assert client is not None
    assert (case.client_id, case.category, case.status) == (client.id, "housing", "intake")
    async with services.sessions() as session:
        history = await repo.status_history(session, case_id=case.id or 0)
    assert [h.status for h in history] == ["intake"]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--phone", "+12025550177", "--category", "housing"], "no client"),
        (["--phone", "12", "--category", "housing"], "--phone"),
        (["--phone", PHONE, "--category", "housing law!"], "--category"),
        (["--phone", PHONE, "--category", "housing", "--status", "x" * 65], "status"),
        (["--phone", PHONE, "--category", "housing", "--status", "  "], "status"),
    ],
)
async def test_case_add_refuses_bad_input(
    cli: CLI, services: Services, client_with_case: str, argv: list[str], fragment: str
) -> None:
    before = await snapshot(services)
    run = await cli("case", "add", *argv)
    run.assert_one_line_error(fragment)
    assert await snapshot(services) == before


async def test_case_add_finds_a_client_who_only_used_probono_chat(
    cli: CLI, services: Services
) -> None:
    async with services.sessions() as session, session.begin():
        client = await repo.create_client(
            session, vault=services.vault, channel=Channel.CONSOLE, address=PHONE, name="Ana"
        )
    run = await cli("case", "add", "--phone", PHONE, "--category", "housing")
    assert run.code == 0, run.err
    assert (await _case(services, run.last_line)).client_id == client.id
    before = await snapshot(services)
    dup = await cli("client", "add", "--phone", PHONE, "--name", "Ana again")
    dup.assert_one_line_error("already has that phone")
    assert await snapshot(services) == before


async def test_case_add_refuses_an_erased_client(
    cli: CLI, services: Services, client_with_case: str
) -> None:
    assert (await cli("client", "erase", "--phone", PHONE, "--yes")).code == 0
    before = await snapshot(services)
    run = await cli("case", "add", "--phone", PHONE, "--category", "housing")
    run.assert_one_line_error("erased")
    assert await snapshot(services) == before


async def test_case_assign_to_an_attorney(
    cli: CLI, services: Services, client_with_case: str, attorney: int
) -> None:
    # References are read over the phone: lower case and no dash still find the case.
    typed = client_with_case.lower().replace("-", "")
    run = await cli("case", "assign", typed, "--telegram-id", "4242")
    assert run.code == 0, run.err
    assert (await _case(services, client_with_case)).assigned_staff_id == attorney


async def _outbox_texts(services: Services) -> list[tuple[str, int | None, str]]:
    """(kind, staff id, decrypted text) of every queued message, oldest first."""
    from storage.models import Message

    out = []
    async with services.sessions() as session:
        rows = await session.exec(
            select(OutboxItem, Message)
            .join(Message, col(Message.id) == col(OutboxItem.message_id))
            .order_by(col(OutboxItem.id))
        )
        for item, msg in rows.all():
            client = await session.get(Client, msg.client_id) if msg.client_id else None
            out.append((item.kind, item.staff_id, repo.message_body(services.vault, client, msg)))
    return out


async def test_case_assign_hands_the_case_over_like_the_coordinators_do(
    cli: CLI, services: Services, client_with_case: str, attorney: int
) -> None:
    run = await cli("case", "assign", client_with_case, "--telegram-id", "4242")
    assert run.code == 0, run.err
    sent = await _outbox_texts(services)
    to_client = [text for kind, staff_id, text in sent if staff_id is None]
    assert to_client == [
        f"Jo is now handling your case {client_with_case}. You can write here to reach them."
    ]
    handoffs = [text for kind, staff_id, text in sent if kind == "handoff"]
    assert [staff_id for kind, staff_id, _t in sent if kind == "handoff"] == [attorney]
    assert handoffs[0].startswith(f"Case {client_with_case} is now yours")
    assert "Ana Díaz" in handoffs[0]
    # Assigning again to the same attorney is not news to anyone.
    assert (await cli("case", "assign", client_with_case, "--telegram-id", "4242")).code == 0
    assert await _outbox_texts(services) == sent


@pytest.mark.parametrize(
    ("ref", "telegram_id", "fragment"),
    [
        ("ZZZ-ZZZ", "4242", "no case ZZZ-ZZZ"),
        (None, "999", "no active attorney"),
        (None, "777", "no active attorney"),  # a coordinator
        (None, "888", "no active attorney"),  # an attorney who left
        (None, "forty-two", "--telegram-id"),
    ],
)
async def test_case_assign_refuses(
    cli: CLI,
    services: Services,
    client_with_case: str,
    attorney: int,
    ref: str | None,
    telegram_id: str,
    fragment: str,
) -> None:
    await cli("staff", "add", "--name", "C", "--role", "coordinator", "--telegram-id", "777")
    run = await cli("staff", "add", "--name", "Gone", "--role", "attorney", "--telegram-id", "888")
    async with services.sessions() as session, session.begin():
        gone = await session.get(Staff, int(run.last_line))
        assert gone is not None
        gone.active = False
    before = await snapshot(services)
    run = await cli("case", "assign", ref or client_with_case, "--telegram-id", telegram_id)
    run.assert_one_line_error(fragment)
    assert await snapshot(services) == before


async def test_case_status_is_recorded_in_the_history(
    cli: CLI, services: Services, client_with_case: str
) -> None:
    run = await cli("case", "status", client_with_case, "hearing scheduled")
    assert run.code == 0, run.err
    case = await _case(services, client_with_case)
    assert case.status == "hearing scheduled"
    async with services.sessions() as session:
        history = await repo.status_history(session, case_id=case.id or 0)
    assert [h.status for h in history] == ["open", "hearing scheduled"]


async def test_case_status_tells_the_client_in_the_same_transaction(
    cli: CLI, services: Services, client_with_case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.casework import status

    seen: list[tuple[str, bool]] = []

    async def tell(session: Any, svc: Services, case: Case) -> None:
        seen.append((case.status, session.in_transaction()))

    monkeypatch.setattr(status, "tell_status_change", tell)
    assert (await cli("case", "status", client_with_case, "closed: won")).code == 0
    assert seen == [("closed: won", True)]

    async def broken(session: Any, svc: Services, case: Case) -> None:
        raise RuntimeError("could not queue the message")

    monkeypatch.setattr(status, "tell_status_change", broken)
    before = await snapshot(services)
    with pytest.raises(RuntimeError):
        await cli("case", "status", client_with_case, "appeal filed")
    # The client is never left untold about a status that was recorded.
    assert await snapshot(services) == before


@pytest.mark.parametrize(
    ("ref", "text", "fragment"),
    [("ZZZ-ZZZ", "won", "no case"), (None, "  ", "status"), (None, "y" * 65, "status")],
)
async def test_case_status_refuses(
    cli: CLI, services: Services, client_with_case: str, ref: str | None, text: str, fragment: str
) -> None:
    before = await snapshot(services)
    run = await cli("case", "status", ref or client_with_case, text)
    run.assert_one_line_error(fragment)
    assert await snapshot(services) == before


async def test_a_too_long_status_is_refused_in_the_words_of_the_api_and_telegram(
    cli: CLI, services: Services, client_with_case: str
) -> None:
    before = await snapshot(services)
    run = await cli("case", "status", client_with_case, LONG_STATUS)
    assert run.code == 2
    assert run.err == f"probono: error: {LONG_STATUS_REFUSAL}\n"
    assert await snapshot(services) == before


async def test_a_command_reads_the_clock_it_is_given(
    cli: CLI, services: Services, client_with_case: str
) -> None:
    later = FakeClock(datetime(2031, 5, 6, 7, 8, tzinfo=UTC))
    argv = ["case", "status", client_with_case, "appeal filed"]
    # The cli fixture has put the settings in the environment; main() gets a clock of its own.
    assert await asyncio.to_thread(main, argv, clock=later) == 0
    async with services.sessions() as session:
        case = await repo.require_case(session, reference=client_with_case)
        history = await repo.status_history(session, case_id=case.id or 0)
    newest = max(history, key=lambda h: h.id or 0)
    assert (newest.status, newest.at) == ("appeal filed", later.now)


# --------------------------------------------------------------------------- erase


async def _queue_for(services: Services) -> int:
    async with services.sessions() as session, session.begin():
        client = await repo.find_client_by_address(
            session, vault=services.vault, channel=Channel.SMS, address=PHONE
        )
        assert client is not None
        item = await repo.enqueue(session, vault=services.vault, client=client, text="See you")
        assert item is not None and item.id is not None
        return item.id


async def test_client_erase_with_yes(cli: CLI, services: Services, client_with_case: str) -> None:
    item_id = await _queue_for(services)
    run = await cli("client", "erase", "--phone", PHONE, "--yes")
    assert run.code == 0, run.err
    client = await _client(services)
    assert client is not None and client.erased_at is not None
    assert repo.client_name(services.vault, client) == ERASED
    async with services.sessions() as session:
        item = await session.get(OutboxItem, item_id)
    assert item is not None and item.status == OutboxStatus.SKIPPED
    again = await cli("client", "erase", "--phone", PHONE, "--yes")
    assert again.code == 0 and "already erased" in again.out


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "erased"), [("erase\n", True), ("no\n", False)])
async def test_client_erase_asks_on_a_terminal(
    cli: CLI,
    services: Services,
    client_with_case: str,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    erased: bool,
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal(answer))
    before = await snapshot(services)
    run = await cli("client", "erase", "--phone", PHONE)
    assert "for good" in run.out  # the prompt warned before anything happened
    client = await _client(services)
    assert client is not None
    if erased:
        assert run.code == 0 and client.wrapped_key is None
    else:
        run.assert_one_line_error("not erased")
        assert await snapshot(services) == before


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--phone", PHONE], "--yes"),  # stdin is not a terminal under pytest
        (["--phone", "+12025550177", "--yes"], "no client"),
        (["--phone", "0", "--yes"], "--phone"),
    ],
)
async def test_client_erase_refuses(
    cli: CLI, services: Services, client_with_case: str, argv: list[str], fragment: str
) -> None:
    before = await snapshot(services)
    run = await cli("client", "erase", *argv)
    run.assert_one_line_error(fragment)
    assert await snapshot(services) == before


# --------------------------------------------------------------------------- keys


async def test_keys_generate_prints_a_usable_new_key(cli: CLI) -> None:
    first, second = await cli("keys", "generate"), await cli("keys", "generate")
    assert first.code == second.code == 0
    assert first.last_line != second.last_line
    Vault([first.last_line, second.last_line])  # both are valid keys


async def test_keys_rotate_with_configured_keys(
    cli: CLI, services: Services, client_with_case: str, attorney: int
) -> None:
    new_key = generate_key()
    run = await cli("keys", "rotate", env={"PROBONO_ENCRYPTION_KEYS": f"{new_key},{TEST_KEY}"})
    assert run.code == 0, run.err
    assert "client data keys re-wrapped: 1" in run.out
    # The old key is gone: everything still reads and every lookup still works.
    only_new = {"PROBONO_ENCRYPTION_KEYS": new_key}
    run = await cli("case", "add", "--phone", PHONE, "--category", "family", env=only_new)
    assert run.code == 0, run.err
    assert (
        await cli("case", "assign", run.last_line, "--telegram-id", "4242", env=only_new)
    ).code == 0
    vault = Vault([new_key])
    async with services.sessions() as session:
        client = await repo.find_client_by_address(
            session, vault=vault, channel=Channel.SMS, address=PHONE
        )
        assert client is not None
        assert repo.client_name(vault, client) == "Ana Díaz"


async def test_keys_rotate_in_development_adds_a_key_to_the_key_file(
    cli: CLI, services: Services, settings: Settings
) -> None:
    dev = {"PROBONO_ENCRYPTION_KEYS": None, "PROBONO_ENV": "development"}
    run = await cli("client", "add", "--phone", PHONE, "--name", "Ana", env=dev)
    assert run.code == 0, run.err
    key_file = settings.key_file()
    [old_key] = key_file.read_text().split()

    run = await cli("keys", "rotate", env=dev)
    assert run.code == 0, run.err
    keys = key_file.read_text().split()
    assert len(keys) == 2 and keys[1] == old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    vault = Vault([keys[0]])  # the newest alone reads everything
    async with services.sessions() as session:
        client = await repo.find_client_by_address(
            session, vault=vault, channel=Channel.SMS, address=PHONE
        )
        assert client is not None and repo.client_name(vault, client) == "Ana"


async def test_keys_rotate_fails_cleanly_without_the_old_key(
    cli: CLI, services: Services, client_with_case: str
) -> None:
    before = await snapshot(services)
    run = await cli("keys", "rotate", env={"PROBONO_ENCRYPTION_KEYS": generate_key()})
    run.assert_one_line_error("nothing changed", "PROBONO_ENCRYPTION_KEYS")
    assert await snapshot(services) == before


# --------------------------------------------------------------------------- settings


async def test_production_refuses_an_unmigrated_database(cli: CLI, tmp_path: Path) -> None:
    db = tmp_path / "fresh" / "probono.db"
    env: dict[str, str | None] = {"DATABASE_URL": f"sqlite:///{db}", "PROBONO_ENV": "production"}
    run = await cli("staff", "add", "--name", "X", "--role", "attorney", env=env)
    run.assert_one_line_error("probono db upgrade")


async def test_development_migrates_a_new_database_itself(
    cli: CLI, tmp_path: Path, settings: Settings
) -> None:
    url = f"sqlite:///{tmp_path / 'fresh' / 'probono.db'}"
    env: dict[str, str | None] = {"DATABASE_URL": url, "PROBONO_ENV": "development"}
    run = await cli("staff", "add", "--name", "X", "--role", "attorney", env=env)
    assert run.code == 0, run.err
    fresh = Services.build(make_settings(url, settings.probono_data_dir))
    try:
        assert len(await _staff(fresh)) == 1
    finally:
        await fresh.close()


async def test_production_needs_encryption_keys(cli: CLI, services: Services) -> None:
    env: dict[str, str | None] = {"PROBONO_ENV": "production", "PROBONO_ENCRYPTION_KEYS": None}
    before = await snapshot(services)
    run = await cli("client", "add", "--phone", PHONE, "--name", "Ana", env=env)
    run.assert_one_line_error("PROBONO_ENCRYPTION_KEYS")
    assert await snapshot(services) == before


# --------------------------------------------------------------------------- weak settings

STRONG_SECRET = "q7Lm2Xv9Rt4Wk8Zp3Nb6Hc1Jd5"
ZERO_KEY = base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")
PATTERN_KEY = base64.urlsafe_b64encode(b"ab" * 16).decode().rstrip("=")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PROBONO_ENCRYPTION_KEYS": ZERO_KEY}, "PROBONO_ENCRYPTION_KEYS: key 1"),
        ({"PROBONO_ENCRYPTION_KEYS": PATTERN_KEY}, "PROBONO_ENCRYPTION_KEYS: key 1"),
        ({"PROBONO_ENCRYPTION_KEYS": f"{TEST_KEY},{ZERO_KEY}"}, "PROBONO_ENCRYPTION_KEYS: key 2"),
        ({"TELEGRAM_WEBHOOK_SECRET": "x"}, "TELEGRAM_WEBHOOK_SECRET"),
        ({"TELEGRAM_WEBHOOK_SECRET": "a" * 40}, "TELEGRAM_WEBHOOK_SECRET"),
        ({"PROBONO_API_TOKEN": "t"}, "PROBONO_API_TOKEN"),
        (
            {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "0" * 32},
            "TWILIO_AUTH_TOKEN",
        ),
        ({"PUBLIC_BASE_URL": "http://bot.legalaid.org"}, "PUBLIC_BASE_URL must start with https"),
        ({"PUBLIC_BASE_URL": "https://bot.example.org"}, "PUBLIC_BASE_URL is the example value"),
        ({"PROGRAM_CONTACT": None}, "PROGRAM_CONTACT is required"),
    ],
    ids=[
        "zero-key",
        "pattern-key",
        "second-key",
        "one-letter-secret",
        "repeated-secret",
        "short-token",
        "zero-twilio-token",
        "http-url",
        "example-url",
        "no-contact",
    ],
)
async def test_production_serve_refuses_weak_settings_naming_them(
    cli: CLI, services: Services, env: dict[str, str | None], named: str
) -> None:
    base: dict[str, str | None] = {
        "PROBONO_ENV": "production",
        "PROGRAM_CONTACT": "Call 555-0100 weekdays.",
        "PUBLIC_BASE_URL": "https://bot.legalaid.org",
        "TELEGRAM_WEBHOOK_SECRET": STRONG_SECRET,
    }
    before = await snapshot(services)
    run = await cli("serve", "--port", "0", env={**base, **env})
    run.assert_one_line_error(named)
    assert await snapshot(services) == before

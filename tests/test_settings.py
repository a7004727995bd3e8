"""Settings are read once, at start-up: a bad value stops every `probono` command with one
line naming the setting, and the rest of the bot reads the parsed value."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from datetime import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from bot.app import create_app
from bot.cli import main
from bot.config import ConfigError, Settings
from tests.conftest import TEST_KEY, make_settings

Run = Callable[..., Awaitable[tuple[int, str]]]

BAD = [
    ("QUIET_HOURS", "late", "must look like 21:00-08:00, not 'late'"),
    ("QUIET_HOURS", "21:00-8", "must look like 21:00-08:00, not '21:00-8'"),
    ("REMINDER_OFFSETS", "7d,soon", "'soon' is not like 7d, 1d or 2h"),
    ("SERVICE_AREA_ZIPS", "10001,1000", "'1000' is not a 5-digit ZIP code"),
    ("DEFAULT_TIMEZONE", "Mars/Olympus_Mons", "unknown time zone 'Mars/Olympus_Mons'"),
    ("DEFAULT_LANGUAGE", "klingon", "unknown language 'klingon'"),
]


@pytest.fixture
def probono(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings: Settings,
    tmp_path: Path,
) -> Iterator[Run]:
    """Runs `probono ...` in-process with the test's database and the given settings."""
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PROBONO_DATA_DIR", str(settings.probono_data_dir))
    monkeypatch.setenv("PROBONO_ENV", "test")
    monkeypatch.setenv("PROBONO_ENCRYPTION_KEYS", TEST_KEY)

    async def run(*argv: str, **env: str) -> tuple[int, str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(argv))  # main() runs its own loop
        except SystemExit as exc:
            code = int(exc.code or 0)
        return code, capsys.readouterr().err

    yield run


@pytest.mark.parametrize(("name", "value", "reason"), BAD)
@pytest.mark.parametrize("command", [("serve",), ("db", "upgrade"), ("keys", "generate")])
async def test_a_bad_setting_stops_every_command_naming_it(
    probono: Run, command: tuple[str, ...], name: str, value: str, reason: str
) -> None:
    code, err = await probono(*command, **{name: value})
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith(f"probono: error: setting {name}: {reason}"), line


@pytest.mark.parametrize(("name", "value", "reason"), BAD)
def test_settings_refuse_a_bad_value(
    database_url: str, tmp_path: Path, name: str, value: str, reason: str
) -> None:
    with pytest.raises(ValidationError) as info:
        make_settings(database_url, tmp_path, **{name: value})
    (error,) = info.value.errors()
    assert error["loc"] == (name,)
    assert reason in str(error["msg"])


def test_good_values_are_read_once_into_their_parsed_form(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url,
        tmp_path,
        QUIET_HOURS=" 22:30 - 07:00 ",
        REMINDER_OFFSETS="2h, 1d,30m,1d",
        SERVICE_AREA_ZIPS=" 10001, 10002-1234,100031234 ,",
        DEFAULT_TIMEZONE="America/Chicago",
        DEFAULT_LANGUAGE="es",
    )
    assert settings.quiet_hours == (time(22, 30), time(7, 0))
    assert settings.reminder_offsets == (86400, 7200, 1800)  # largest first, once each
    assert settings.service_area_zips == frozenset({"10001", "10002", "10003"})
    assert settings.default_timezone == "America/Chicago"
    assert settings.default_language == "es"
    off = make_settings(database_url, tmp_path, QUIET_HOURS="", REMINDER_OFFSETS="")
    assert off.quiet_hours is None and off.reminder_offsets == ()
    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert default.quiet_hours == (time(21), time(8))
    assert default.reminder_offsets == (7 * 86400, 86400, 2 * 3600)
    assert default.service_area_zips == frozenset()


async def test_good_values_still_run_commands_and_the_app(
    probono: Run, database_url: str, tmp_path: Path
) -> None:
    good = {
        "QUIET_HOURS": "22:00-07:00",
        "REMINDER_OFFSETS": "3d,1h",
        "SERVICE_AREA_ZIPS": "10001,10002",
        "DEFAULT_TIMEZONE": "America/Chicago",
        "DEFAULT_LANGUAGE": "es",
    }
    code, err = await probono("db", "upgrade", **good)
    assert code == 0, err
    app = create_app(make_settings(database_url, tmp_path / "data", **good))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200


def test_a_broken_statuses_file_stops_the_app(database_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "statuses.toml"
    bad.write_text("[fallback\n")
    settings = make_settings(database_url, tmp_path / "data", STATUSES_FILE=str(bad))
    with pytest.raises(ConfigError, match=r"statuses\.toml"):
        create_app(settings)

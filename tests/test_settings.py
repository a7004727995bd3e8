"""Settings are read once, at start-up: a bad value stops every `probono` command with one
line naming the setting, and the rest of the bot reads the parsed value."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from bot.app import create_app
from bot.cli import main
from bot.config import EXAMPLE_VALUES, ConfigError, Settings
from bot.handlers.cli_core import warn_if_exposed
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


# --------------------------------------------------------------------------- production

STRONG = {
    "PROBONO_ENV": "production",
    "PROGRAM_CONTACT": "Call 555-0100 weekdays.",
    "PUBLIC_BASE_URL": "https://bot.legalaid.org",
    "TELEGRAM_BOT_TOKEN": "123456:real-token",
    "TELEGRAM_WEBHOOK_SECRET": "q7Lm2Xv9Rt4Wk8Zp3Nb6Hc1Jd5",
    "PROBONO_API_TOKEN": "Zt8wQ3nL6vP1xR9kM4bH7cJ2",
    "TWILIO_ACCOUNT_SID": "AC0f3e9a1b2c4d5e6f7a8b9c0d1e2f3a4b",
    "TWILIO_AUTH_TOKEN": "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    "TWILIO_FROM_NUMBER": "+12025550199",
}


def test_strong_production_settings_start(database_url: str, tmp_path: Path) -> None:
    make_settings(database_url, tmp_path / "data", **STRONG).check_production()


def _examples() -> dict[str, str]:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    return dict(re.findall(r"^# ([A-Z][A-Z0-9_]+)=(\S+)$", example.read_text(), re.MULTILINE))


@pytest.mark.parametrize("name", sorted(EXAMPLE_VALUES))
def test_each_example_value_of_env_example_is_refused_in_production(
    database_url: str, tmp_path: Path, name: str
) -> None:
    assert _examples()[name] == EXAMPLE_VALUES[name], "keep EXAMPLE_VALUES and the file in step"
    settings = make_settings(
        database_url, tmp_path / "data", **{**STRONG, name: EXAMPLE_VALUES[name]}
    )
    with pytest.raises(ConfigError, match=f"^{name} is the example value"):
        settings.check_production()


def test_development_is_not_held_to_production_rules(database_url: str, tmp_path: Path) -> None:
    weak = {"TELEGRAM_WEBHOOK_SECRET": "x", "PUBLIC_BASE_URL": "http://192.168.1.5:8080"}
    make_settings(
        database_url, tmp_path / "data", PROBONO_ENV="development", **weak
    ).check_production()


@pytest.mark.parametrize(
    ("host", "loud"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("localhost", False),
        ("0.0.0.0", True),
        ("10.0.0.7", True),
    ],
)
def test_development_serve_on_a_shared_address_says_it_is_not_for_clients(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, loud: bool
) -> None:
    caplog.set_level(logging.WARNING)
    dev = make_settings(database_url, tmp_path / "data", PROBONO_ENV="development")
    warn_if_exposed(dev, host)
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert bool(said) == loud
    if loud:
        assert said[0].startswith("NOT FOR REAL CLIENTS") and host in said[0]
    caplog.clear()
    warn_if_exposed(make_settings(database_url, tmp_path / "data", **STRONG), host)
    assert not caplog.records  # production is checked instead

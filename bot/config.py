"""Settings: one pydantic-settings class, built in main() and passed in."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.i18n import LANGUAGES
from bot.logging_setup import LogFormat

log = logging.getLogger(__name__)

_OFFSET_RE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
_ZIP_RE = re.compile(r"^([0-9]{5})(?:-?[0-9]{4})?$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60}

# Quiet hours as (start, end) local times; the window may cross midnight (21:00-08:00).
QuietWindow = tuple[time, time]


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it."""


class Settings(BaseSettings):
    """Every setting of INTERFACES.md; read from the environment or a .env file."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field("sqlite:///./var/probono.db", alias="DATABASE_URL")
    probono_data_dir: Path = Field(Path("./var"), alias="PROBONO_DATA_DIR")
    probono_env: Literal["development", "production", "test"] = Field(
        "development", alias="PROBONO_ENV"
    )
    probono_encryption_keys: SecretStr | None = Field(None, alias="PROBONO_ENCRYPTION_KEYS")
    probono_api_token: SecretStr | None = Field(None, alias="PROBONO_API_TOKEN")
    program_name: str = Field("Legal Aid Line", alias="PROGRAM_NAME")
    program_contact: str = Field("", alias="PROGRAM_CONTACT")
    public_base_url: str | None = Field(None, alias="PUBLIC_BASE_URL")
    twilio_account_sid: str | None = Field(None, alias="TWILIO_ACCOUNT_SID")
    twilio_auth_token: SecretStr | None = Field(None, alias="TWILIO_AUTH_TOKEN")
    twilio_from_number: str | None = Field(None, alias="TWILIO_FROM_NUMBER")
    twilio_messaging_service_sid: str | None = Field(None, alias="TWILIO_MESSAGING_SERVICE_SID")
    twilio_api_base_url: str = Field("https://api.twilio.com", alias="TWILIO_API_BASE_URL")
    telegram_bot_token: SecretStr | None = Field(None, alias="TELEGRAM_BOT_TOKEN")
    telegram_webhook_secret: SecretStr | None = Field(None, alias="TELEGRAM_WEBHOOK_SECRET")
    telegram_api_base_url: str = Field("https://api.telegram.org", alias="TELEGRAM_API_BASE_URL")
    telegram_staff_chat_id: int | None = Field(None, alias="TELEGRAM_STAFF_CHAT_ID")
    default_language: str = Field("en", alias="DEFAULT_LANGUAGE")
    default_timezone: str = Field("America/New_York", alias="DEFAULT_TIMEZONE")
    # The next three are written as text ("21:00-08:00", "7d,1d,2h", "10001,10002") and read
    # once, when the settings are built: a bad value stops the process at start-up, naming
    # the setting, and everything else reads the parsed value.
    # Quiet hours, or None when turned off (QUIET_HOURS empty).
    quiet_hours: Annotated[QuietWindow | None, NoDecode] = Field(
        (time(21, 0), time(8, 0)), alias="QUIET_HOURS"
    )
    # Seconds before an appointment a reminder goes, largest first, no repeats.
    reminder_offsets: Annotated[tuple[int, ...], NoDecode] = Field(
        (7 * 86400, 86400, 2 * 3600), alias="REMINDER_OFFSETS"
    )
    sms_send_rate: float = Field(1.0, alias="SMS_SEND_RATE", gt=0)
    telegram_send_rate: float = Field(30.0, alias="TELEGRAM_SEND_RATE", gt=0)
    # Estimated price of one SMS segment in USD (Twilio US long code), for broadcast dry runs.
    sms_segment_cost: float = Field(0.0079, alias="SMS_SEGMENT_COST", ge=0)
    # ZIP codes (5 digits) the program serves; empty means everywhere.
    service_area_zips: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), alias="SERVICE_AREA_ZIPS"
    )
    intake_file: Path | None = Field(None, alias="INTAKE_FILE")
    checkin_after_days: int = Field(30, alias="CHECKIN_AFTER_DAYS", ge=1)
    # Case status over chat needs the client's PIN ("STATUS 1234") when on.
    probono_require_pin: bool = Field(False, alias="PROBONO_REQUIRE_PIN")
    # A program's own statuses and their client-facing words; unset uses bot/data/statuses.toml.
    statuses_file: Path | None = Field(None, alias="STATUSES_FILE")
    # The scheduler turns due reminders, check-ins and scheduled sends into messages.
    scheduler_enabled: bool = Field(True, alias="SCHEDULER_ENABLED")
    scheduler_interval_seconds: float = Field(30.0, alias="SCHEDULER_INTERVAL_SECONDS", gt=0)
    # text for a terminal; json (one object per line) for a log collector.
    log_format: LogFormat = Field("text", alias="LOG_FORMAT")

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @field_validator("default_timezone")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

    @field_validator("default_language")
    @classmethod
    def _known_language(cls, v: str) -> str:
        if v not in LANGUAGES:
            raise ValueError(f"unknown language {v!r} (one of {', '.join(LANGUAGES)})")
        return v

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _read_quiet_hours(cls, v: Any) -> Any:
        return _quiet_window(v) if isinstance(v, str) else v

    @field_validator("reminder_offsets", mode="before")
    @classmethod
    def _read_offsets(cls, v: Any) -> Any:
        return _offsets(v) if isinstance(v, str) else v

    @field_validator("service_area_zips", mode="before")
    @classmethod
    def _read_zips(cls, v: Any) -> Any:
        return _zips(v) if isinstance(v, str) else v

    @property
    def sms_enabled(self) -> bool:
        """SMS is on only when both Twilio credentials are set."""
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def telegram_enabled(self) -> bool:
        """Telegram is on only when a bot token is set."""
        return self.telegram_bot_token is not None

    @property
    def is_production(self) -> bool:
        return self.probono_env == "production"

    def check_production(self) -> None:
        """Refuse to run in production without real keys and secrets."""
        if not self.is_production:
            return
        if (
            self.probono_encryption_keys is None
            or not self.probono_encryption_keys.get_secret_value().strip()
        ):
            raise ConfigError("PROBONO_ENV=production needs PROBONO_ENCRYPTION_KEYS")
        if self.twilio_account_sid and not self.twilio_auth_token:
            raise ConfigError("TWILIO_ACCOUNT_SID is set but TWILIO_AUTH_TOKEN is missing")
        if self.sms_enabled and not (self.twilio_from_number or self.twilio_messaging_service_sid):
            raise ConfigError(
                "SMS needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID in production"
            )
        if self.sms_enabled and not self.public_base_url:
            raise ConfigError(
                "SMS needs PUBLIC_BASE_URL in production (signatures are checked against it)"
            )
        if self.telegram_enabled and self.public_base_url and not self.telegram_webhook_secret:
            raise ConfigError("TELEGRAM_WEBHOOK_SECRET is required with PUBLIC_BASE_URL")

    def key_file(self) -> Path:
        return self.probono_data_dir / "encryption.key"


def _quiet_window(raw: str) -> QuietWindow | None:
    """QUIET_HOURS ("21:00-08:00") as (start, end) local times; empty turns them off."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        start_s, end_s = raw.split("-")
        return time.fromisoformat(start_s.strip()), time.fromisoformat(end_s.strip())
    except ValueError as exc:
        raise ValueError(f"must look like 21:00-08:00, not {raw!r}") from exc


def _offsets(raw: str) -> tuple[int, ...]:
    """REMINDER_OFFSETS ("7d,1d,2h") in seconds, largest first."""
    out = set()
    for part in raw.split(","):
        if not part.strip():
            continue
        m = _OFFSET_RE.match(part)
        if not m:
            raise ValueError(f"{part.strip()!r} is not like 7d, 1d or 2h")
        out.add(int(m.group(1)) * _UNIT_SECONDS[m.group(2)])
    return tuple(sorted(out, reverse=True))


def _zips(raw: str) -> frozenset[str]:
    """SERVICE_AREA_ZIPS ("10001, 10002-1234") as 5-digit ZIP codes."""
    out = set()
    for part in raw.split(","):
        if not part.strip():
            continue
        m = _ZIP_RE.match(part.strip())
        if not m:
            raise ValueError(f"{part.strip()!r} is not a 5-digit ZIP code")
        out.add(m.group(1))
    return frozenset(out)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and .env), with explicit overrides for tests."""
    return Settings(**overrides)  # type: ignore[arg-type]


def data_dir_ready(settings: Settings) -> Path:
    """Create the data dir (mode 0700) and return it."""
    settings.probono_data_dir.mkdir(parents=True, exist_ok=True)
    # A shared mount may refuse; the key file is 0600 anyway.
    with contextlib.suppress(OSError):
        os.chmod(settings.probono_data_dir, 0o700)
    return settings.probono_data_dir

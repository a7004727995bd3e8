"""Settings: one pydantic-settings class, built in main() and passed in."""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
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

# The example values of .env.example: copied into a production configuration, they are a
# mistake (a test keeps this table and the file in step).
EXAMPLE_VALUES = {
    "PUBLIC_BASE_URL": "https://bot.example.org",
    "TWILIO_ACCOUNT_SID": "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "TWILIO_FROM_NUMBER": "+15551234567",
    "TWILIO_MESSAGING_SERVICE_SID": "MGxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "TELEGRAM_STAFF_CHAT_ID": "-1001234567890",
}
MIN_SECRET_LENGTH = 24
MIN_SECRET_KINDS = 6  # different characters: "aaaa...", "abab..." are not secrets
MIN_KEY_KINDS = 16  # different byte values in a 32-byte key; a random one has about 30


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
        """Refuse to run in production without real keys and secrets; one line names the setting."""
        if not self.is_production:
            return
        if (
            self.probono_encryption_keys is None
            or not self.probono_encryption_keys.get_secret_value().strip()
        ):
            raise ConfigError("PROBONO_ENV=production needs PROBONO_ENCRYPTION_KEYS")
        _check_keys(self.probono_encryption_keys.get_secret_value())
        for name, secret in (
            ("TELEGRAM_WEBHOOK_SECRET", self.telegram_webhook_secret),
            ("PROBONO_API_TOKEN", self.probono_api_token),
            ("TWILIO_AUTH_TOKEN", self.twilio_auth_token),
        ):
            if secret is not None:
                _check_secret(name, secret.get_secret_value())
        for name, value in (
            ("PUBLIC_BASE_URL", self.public_base_url),
            ("TWILIO_ACCOUNT_SID", self.twilio_account_sid),
            ("TWILIO_FROM_NUMBER", self.twilio_from_number),
            ("TWILIO_MESSAGING_SERVICE_SID", self.twilio_messaging_service_sid),
            ("TELEGRAM_STAFF_CHAT_ID", self.telegram_staff_chat_id),
        ):
            if value is not None and str(value).strip() == EXAMPLE_VALUES[name]:
                raise ConfigError(f"{name} is the example value of .env.example: set the real one")
        if self.public_base_url and not self.public_base_url.lower().startswith("https://"):
            raise ConfigError("PUBLIC_BASE_URL must start with https:// in production")
        if not self.program_contact.strip():
            raise ConfigError(
                "PROGRAM_CONTACT is required in production: HELP tells clients how to reach us"
            )
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


def _check_keys(raw: str) -> None:
    """Each master key is 32 bytes that look random: never all zeros or a repeated pattern."""
    for position, text in enumerate((k.strip() for k in raw.split(",") if k.strip()), 1):
        try:
            key = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (ValueError, binascii.Error):
            raise ConfigError(
                f"PROBONO_ENCRYPTION_KEYS: key {position} is not base64 (`probono keys generate`)"
            ) from None
        if len(key) != 32 or len(set(key)) < MIN_KEY_KINDS:
            raise ConfigError(
                f"PROBONO_ENCRYPTION_KEYS: key {position} is not 32 random bytes; "
                "make one with `probono keys generate`"
            )


def _check_secret(name: str, value: str) -> None:
    """A secret long enough and varied enough not to be guessed."""
    if len(value) < MIN_SECRET_LENGTH or len(set(value)) < MIN_SECRET_KINDS:
        raise ConfigError(
            f"{name} is too weak for production: use at least {MIN_SECRET_LENGTH} random characters"
        )


def is_loopback(host: str) -> bool:
    """True when ``host`` only listens on this machine (127.0.0.1, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


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

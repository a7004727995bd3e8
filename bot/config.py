"""Settings: one pydantic-settings class, built in main() and passed in."""

from __future__ import annotations

import contextlib
import logging
import os
import re
from datetime import time
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

_OFFSET_RE = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")


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
    quiet_hours: str = Field("21:00-08:00", alias="QUIET_HOURS")
    reminder_offsets: str = Field("7d,1d,2h", alias="REMINDER_OFFSETS")
    sms_send_rate: float = Field(1.0, alias="SMS_SEND_RATE", gt=0)
    telegram_send_rate: float = Field(30.0, alias="TELEGRAM_SEND_RATE", gt=0)
    # Estimated price of one SMS segment in USD (Twilio US long code), for broadcast dry runs.
    sms_segment_cost: float = Field(0.0079, alias="SMS_SEGMENT_COST", ge=0)
    service_area_zips: str = Field("", alias="SERVICE_AREA_ZIPS")
    intake_file: Path | None = Field(None, alias="INTAKE_FILE")
    checkin_after_days: int = Field(30, alias="CHECKIN_AFTER_DAYS", ge=1)
    # Case status over chat needs the client's PIN ("STATUS 1234") when on.
    probono_require_pin: bool = Field(False, alias="PROBONO_REQUIRE_PIN")
    # A program's own statuses and their client-facing words; unset uses bot/data/statuses.toml.
    statuses_file: Path | None = Field(None, alias="STATUSES_FILE")
    # The scheduler turns due reminders, check-ins and scheduled sends into messages.
    scheduler_enabled: bool = Field(True, alias="SCHEDULER_ENABLED")
    scheduler_interval_seconds: float = Field(30.0, alias="SCHEDULER_INTERVAL_SECONDS", gt=0)

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @field_validator("default_timezone")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {v!r}") from exc
        return v

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

    def quiet_window(self) -> tuple[time, time] | None:
        """QUIET_HOURS as (start, end) local times, or None when turned off."""
        raw = self.quiet_hours.strip()
        if not raw:
            return None
        try:
            start_s, end_s = raw.split("-")
            return time.fromisoformat(start_s.strip()), time.fromisoformat(end_s.strip())
        except ValueError as exc:
            raise ConfigError(f"QUIET_HOURS must look like 21:00-08:00, not {raw!r}") from exc

    def reminder_offset_list(self) -> list[int]:
        """REMINDER_OFFSETS in seconds, largest first."""
        out = []
        for part in self.reminder_offsets.split(","):
            if not part.strip():
                continue
            m = _OFFSET_RE.match(part)
            if not m:
                raise ConfigError(f"REMINDER_OFFSETS: {part.strip()!r} is not like 7d, 1d or 2h")
            n, unit = int(m.group(1)), m.group(2)
            out.append(n * {"d": 86400, "h": 3600, "m": 60}[unit])
        return sorted(set(out), reverse=True)

    def service_area(self) -> frozenset[str]:
        """ZIP codes (5 digits) the program serves; empty means everywhere."""
        return frozenset(z.strip()[:5] for z in self.service_area_zips.split(",") if z.strip())

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

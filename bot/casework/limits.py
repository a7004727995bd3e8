"""The one table of field limits, and the checks every entry point's input goes through.

Where a field is stored in a column of its own, its limit is that column's size (a test holds
them together); place, what to bring and names are stored encrypted, so their limits are ours.
"""

from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.casework.base import CaseworkError

STATUS_MAX = 64  # Case.status, CaseStatusChange.status
CATEGORY_MAX = 32  # Case.category
REFERENCE_MAX = 16  # Case.reference
TIMEZONE_MAX = 64  # Client.timezone, Appointment.timezone
SEGMENT_MAX = 256  # Broadcast.segment
NAME_MAX = 200
PLACE_MAX = 300
BRING_MAX = 300

LIMITS: dict[str, int] = {
    "status": STATUS_MAX,
    "category": CATEGORY_MAX,
    "reference": REFERENCE_MAX,
    "timezone": TIMEZONE_MAX,
    "segment": SEGMENT_MAX,
    "name": NAME_MAX,
    "place": PLACE_MAX,
    "bring": BRING_MAX,
}

CATEGORY_RE = re.compile(rf"^[a-z0-9][a-z0-9_-]{{0,{CATEGORY_MAX - 1}}}$")
# A program's own case number kept as the reference: 3-16 letters, digits and dashes.
REFERENCE_RE = re.compile(rf"[A-Z0-9][A-Z0-9-]{{2,{REFERENCE_MAX - 1}}}")


def check_text(raw: str | None, what: str, limit: int, *, required: bool) -> str | None:
    """Spaces collapsed; empty refused when required (else None), overlong text refused."""
    value = " ".join((raw or "").split())
    if not value:
        if required:
            raise CaseworkError(f"{what} must not be empty")
        return None
    if len(value) > limit:
        raise CaseworkError(f"{what} is longer than {limit} characters")
    return value


def check_status(raw: str | None) -> str:
    """A case status as it is recorded: one line, at most STATUS_MAX characters."""
    return check_text(raw, "status", STATUS_MAX, required=True) or ""


def check_name(raw: str | None, what: str = "name") -> str:
    """A person's full name, one line."""
    return check_text(raw, what, NAME_MAX, required=True) or ""


def check_category(raw: str) -> str:
    """A case category: a short lower-case word like housing or family."""
    value = raw.strip().lower()
    if not CATEGORY_RE.match(value):
        raise CaseworkError(
            f"category {raw!r} is not a short word like housing or family "
            f"(letters, digits, - and _; at most {CATEGORY_MAX})"
        )
    return value


def check_timezone(raw: str) -> str:
    """An IANA time zone name."""
    value = raw.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise CaseworkError(
            f"unknown time zone {raw!r} (use a name like America/New_York)"
        ) from None
    return value

"""Phone numbers: parse what a person typed into E.164, or say why not."""

from __future__ import annotations

import phonenumbers


class PhoneError(ValueError):
    """Not a usable phone number."""


def normalize_phone(raw: str, region: str = "US") -> str:
    """Return the number in E.164 (+15551234567) or raise PhoneError."""
    text = (raw or "").strip()
    if not text:
        raise PhoneError("a phone number is required")
    try:
        num = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise PhoneError(f"not a phone number: {exc}") from None
    if not phonenumbers.is_possible_number(num):
        raise PhoneError("not a possible phone number (wrong length)")
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)

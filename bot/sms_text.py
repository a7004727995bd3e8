"""SMS text: GSM-7 or UCS-2, segment counts, and splitting long text at safe places."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38 basic character set (ESC, 0x1B, is the switch to the extension table, not text).
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# The extension table: each costs two septets (ESC + the character).
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

SINGLE_GSM7 = 160
PART_GSM7 = 153  # 7 septets of each part go to the concatenation header
SINGLE_UCS2 = 70
PART_UCS2 = 67

# Twilio refuses a body longer than this (error 21617); longer text goes as several messages.
MAX_BODY = 1600

_ZWJ = "\u200d"


@dataclass(frozen=True)
class SegmentInfo:
    """How a text travels as SMS: its encoding, its length in units, and its segments."""

    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    segments: int


def is_gsm7(text: str) -> bool:
    """True when every character is in the GSM-7 basic or extension table."""
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def encoding(text: str) -> Encoding:
    """GSM-7 when possible; one character outside it turns the whole message into UCS-2."""
    return "GSM-7" if is_gsm7(text) else "UCS-2"


def char_units(ch: str, enc: Encoding) -> int:
    """What one character costs: extension characters take two septets, astral ones two units."""
    if enc == "GSM-7":
        return 2 if ch in GSM7_EXTENSION else 1
    return 2 if ord(ch) > 0xFFFF else 1


def units(text: str, enc: Encoding | None = None) -> int:
    """The text's length as the network counts it."""
    enc = enc or encoding(text)
    return sum(char_units(ch, enc) for ch in text)


def segment_count(text: str) -> int:
    """How many SMS segments the text is billed as (an empty message is still one)."""
    return analyze(text).segments


def analyze(text: str) -> SegmentInfo:
    """Encoding, length in units, and number of segments."""
    enc = encoding(text)
    n = units(text, enc)
    single = SINGLE_GSM7 if enc == "GSM-7" else SINGLE_UCS2
    if n <= single:
        return SegmentInfo(enc, n, 1)
    # A character never straddles two parts, so count greedily rather than dividing.
    return SegmentInfo(enc, n, len(split_segments(text)))


def _continues(text: str, i: int) -> bool:
    """True when a cut before ``text[i]`` would break a visible character apart."""
    if i <= 0 or i >= len(text):
        return False
    ch = text[i]
    if text[i - 1] == _ZWJ or ch == _ZWJ:
        return True
    if unicodedata.category(ch) in ("Mn", "Mc", "Me"):
        return True
    cp = ord(ch)
    # Variation selectors, emoji skin tones, and tag characters modify what precedes them.
    return 0xFE00 <= cp <= 0xFE0F or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F


def split_segments(text: str) -> list[str]:
    """The parts a phone receives for a long message; a character never straddles two."""
    enc = encoding(text)
    single, part = (SINGLE_GSM7, PART_GSM7) if enc == "GSM-7" else (SINGLE_UCS2, PART_UCS2)
    if units(text, enc) <= single:
        return [text]
    parts: list[str] = []
    start, used = 0, 0
    for i, ch in enumerate(text):
        cost = char_units(ch, enc)
        if used + cost > part:
            parts.append(text[start:i])
            start, used = i, 0
        used += cost
    parts.append(text[start:])
    return parts


def _cut_point(text: str, limit: int) -> int:
    """Where to cut ``text`` so the head fits ``limit`` UTF-16 units: a space if possible."""
    used, fit = 0, 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > limit:
            break
        fit = i + 1
    else:
        return len(text)
    # Prefer the last whitespace in the head (a word boundary), unless it is very early.
    for j in range(fit, 0, -1):
        if text[j - 1].isspace() and j > fit // 2:
            return j
    # One long word: cut at the last place that does not break a character apart.
    j = fit
    while j > 1 and _continues(text, j):
        j -= 1
    return max(j, 1)


def split_text(text: str, limit: int = MAX_BODY) -> list[str]:
    """Split text into messages of at most ``limit`` UTF-16 units, on word boundaries."""
    if limit < 2:
        raise ValueError("limit must be at least 2")
    rest = text.strip()
    parts: list[str] = []
    while rest:
        cut = _cut_point(rest, limit)
        head = rest[:cut].rstrip()
        if head:
            parts.append(head)
        rest = rest[cut:].lstrip()
    return parts or [""]


def truncate(text: str, limit: int = MAX_BODY, ellipsis: str = "…") -> str:
    """The text cut to ``limit`` UTF-16 units at a word boundary, marked with an ellipsis."""
    if units(text, "UCS-2") <= limit:
        return text
    head = split_text(text, limit - units(ellipsis, "UCS-2"))[0]
    return head + ellipsis

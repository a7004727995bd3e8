"""GSM-7 and UCS-2 detection, segment counts, and splitting that never breaks a character."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.sms_text import (
    MAX_BODY,
    analyze,
    encoding,
    segment_count,
    split_segments,
    split_text,
    truncate,
    units,
)


@pytest.mark.parametrize(
    ("text", "enc", "n_units", "segments"),
    [
        ("", "GSM-7", 0, 1),
        ("Hello", "GSM-7", 5, 1),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("Año: señor, café, über", "GSM-7", 22, 1),  # ñ, é, ü are GSM-7
        ("€" * 80, "GSM-7", 160, 1),  # extension characters count double
        ("€" * 81, "GSM-7", 162, 2),
        ("{[~]}", "GSM-7", 10, 1),
        ("Sí, mañana", "UCS-2", 10, 1),  # í is not: the whole text is UCS-2
        ("á" * 70, "UCS-2", 70, 1),
        ("á" * 71, "UCS-2", 71, 2),
        ("á" * 134, "UCS-2", 134, 2),
        ("á" * 135, "UCS-2", 135, 3),
        ("😀" * 35, "UCS-2", 70, 1),  # astral characters take two UTF-16 units
        ("😀" * 36, "UCS-2", 72, 2),
        ("你好", "UCS-2", 2, 1),
        ("مرحبا\u200f", "UCS-2", 6, 1),
    ],
)
def test_encoding_units_and_segments(text: str, enc: str, n_units: int, segments: int) -> None:
    info = analyze(text)
    assert (info.encoding, info.units, info.segments) == (enc, n_units, segments)
    assert encoding(text) == enc and units(text) == n_units and segment_count(text) == segments


def test_an_extension_character_never_straddles_two_segments() -> None:
    text = "a" * 152 + "€" + "b" * 10
    parts = split_segments(text)
    assert parts[0] == "a" * 152  # 152 + 2 would exceed 153 septets
    assert "".join(parts) == text


def test_a_surrogate_pair_never_straddles_two_segments() -> None:
    text = "á" * 66 + "😀" + "é" * 5
    parts = split_segments(text)
    assert parts[0] == "á" * 66
    assert "".join(parts) == text


def test_long_text_splits_on_word_boundaries() -> None:
    words = ["palabra"] * 400
    parts = split_text(" ".join(words), 160)
    assert all(len(p) <= 160 for p in parts)
    assert all(not p.startswith(" ") and not p.endswith(" ") for p in parts)
    assert " ".join(parts).split() == words  # no word was cut


def test_a_reply_over_1600_characters_is_split() -> None:
    text = ("Su audiencia es el lunes. " * 100).strip()
    assert len(text) > MAX_BODY
    parts = split_text(text)
    assert len(parts) == 2 and all(len(p) <= MAX_BODY for p in parts)


def test_split_never_cuts_an_emoji_sequence() -> None:
    family = "👩\u200d👩\u200d👧"  # one visible character, joined by ZWJ
    text = family * 100
    for part in split_text(text, 21):
        assert not part.startswith("\u200d") and not part.endswith("\u200d")
    assert "".join(split_text(text, 21)) == text


def test_truncate_marks_the_cut() -> None:
    assert truncate("short") == "short"
    cut = truncate("word " * 1000, 100)
    assert units(cut, "UCS-2") <= 100 and cut.endswith("…")


@given(st.text(max_size=2000), st.integers(min_value=2, max_value=400))
def test_split_text_keeps_every_character_within_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    for part in parts:
        assert units(part, "UCS-2") <= limit
    assert "".join("".join(parts).split()) == "".join(text.split())


@given(st.text(max_size=1000))
def test_segments_join_back_and_fit(text: str) -> None:
    parts = split_segments(text)
    assert "".join(parts) == text
    assert len(parts) == segment_count(text) or text == ""
    if len(parts) > 1:
        limit = 153 if encoding(text) == "GSM-7" else 67
        assert all(units(p, encoding(text)) <= limit for p in parts)

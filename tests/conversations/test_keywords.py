"""Opt-out, opt-in and help words: every spelling a person might send, and nothing else."""

from __future__ import annotations

import pytest

from bot import keywords
from bot.i18n import gettext
from bot.keywords import HELP, START, STOP, match, normalise, reply_language

STOP_WORDS = [
    "STOP",
    "stop",
    "Stop",
    "  sToP  ",
    "STOP.",
    "stop!!!",
    "STOPALL",
    "stop all",
    "UNSUBSCRIBE",
    "Unsubscribe.",
    "cancel",
    "END",
    "quit",
    "Revoke",
    "OPTOUT",
    "opt out",
    "Opt-Out",
    "opt_out",
    "please stop",
    "STOP please",
    "stop texting me",
    "Don't text me",
    "\u200fSTOP\u200f",  # RTL marks around it
    "🛑 STOP 🛑",
    "ＳＴＯＰ",  # full-width letters
    "PARAR",
    "parar",
    "Para",
    "ALTO",
    "alto!",
    "CANCELAR",
    "cancelar.",
    "no más",
    "NO MAS",
    "No más mensajes",
    "baja",
    "darme de baja",
    "por favor parar",
]


@pytest.mark.parametrize("text", STOP_WORDS)
def test_every_opt_out_spelling_is_recognised(text: str) -> None:
    found = match(text)
    assert found is not None and found.action == STOP, text


@pytest.mark.parametrize(
    ("text", "action"),
    [
        ("START", START),
        ("start", START),
        ("Unstop", START),
        ("YES", START),
        ("yes!", START),
        ("Sí", START),
        ("comenzar", START),
        ("HELP", HELP),
        ("help?", HELP),
        ("INFO", HELP),
        ("Ayuda", HELP),
    ],
)
def test_start_and_help(text: str, action: str) -> None:
    found = match(text)
    assert found is not None and found.action == action


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "stop the eviction",
        "I can't stop crying",
        "cancel my appointment",
        "cancelar mi cita",
        "the end of the month",
        "helpful",
        "STOPPED",
        "estoy en alto riesgo",
        "😀",
    ],
)
def test_ordinary_messages_are_not_keywords(text: str) -> None:
    assert match(text) is None


def test_normalise() -> None:
    assert normalise("  ¡No   más!  ") == "NO MAS"
    assert normalise("\u200fstop\u200e") == "STOP"
    assert normalise("don’t") == "DONT"


def test_reply_language() -> None:
    spanish = match("PARAR")
    english = match("STOP")
    assert spanish is not None and english is not None
    assert reply_language(spanish, "en") == "es"  # they wrote Spanish to a default client
    assert reply_language(english, "es") == "es"  # STOP is understood everywhere
    assert reply_language(english, "vi") == "vi"


def test_texts_in_english_and_spanish_and_a_fallback() -> None:
    assert "STOP" in keywords.text("en", "notice")
    assert "PARAR" in keywords.text("es", "notice")
    # Other languages come from their Babel catalog, else English.
    assert keywords.text("vi", "notice") == gettext("vi", keywords.TEXTS["en"]["notice"])
    assert keywords.text("xx", "notice") == keywords.text("en", "notice")
    assert keywords.text("en", "stopped", program="Legal Aid").startswith("Legal Aid")


def test_every_language_has_every_text() -> None:
    for lang, table in keywords.TEXTS.items():
        assert set(table) == set(keywords.TEXTS["en"]), lang
        assert set(keywords.KEYWORDS[lang]) <= {STOP, START, HELP}

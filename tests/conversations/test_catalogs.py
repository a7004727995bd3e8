"""Every client-facing string of the intake is in the catalogs, translated, and SMS-sized."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_file

from bot.casework.status import DEFAULT_STATUSES
from bot.conversations.dialogue_file import load_dialogue
from bot.conversations.engine import render
from bot.conversations.intake import ACTIONS, DEFAULT_INTAKE
from bot.i18n import (
    LOCALES_DIR,
    _catalog,
    available_languages,
    dialogue_msgids,
    extract_dialogue,
    extract_statuses,
    gettext,
    missing_translations,
    status_msgids,
)

ROOT = Path(__file__).resolve().parents[2]
OWN_CODE = [
    ROOT / "bot" / "conversations" / name
    for name in ("engine.py", "answers.py", "client.py", "intake.py")
]
KEYWORDS = {"N_": None, "gettext": (2,)}
PLACEHOLDER = re.compile(r"\{(\w*)\}")


def _code_msgids() -> list[str]:
    out = []
    for path in OWN_CODE:
        for _line, message, _comments, _ctx in extract_from_file("python", path, KEYWORDS):
            assert isinstance(message, str)
            out.append(message)
    return out


def test_spanish_is_offered() -> None:
    assert available_languages()[:2] == ["en", "es"]


@pytest.mark.parametrize("lang", ["es"])
def test_every_intake_string_is_translated(lang: str) -> None:
    msgids = _code_msgids() + dialogue_msgids(DEFAULT_INTAKE)
    assert len(msgids) > 100
    assert missing_translations(lang, msgids) == []


def test_the_template_holds_every_intake_string() -> None:
    template = (LOCALES_DIR / "messages.pot").read_text(encoding="utf-8")
    for msgid in dialogue_msgids(DEFAULT_INTAKE):
        first_line = msgid.replace('"', '\\"')[:40]
        assert first_line in template.replace('"\n"', ""), f"run `make translations`: {msgid}"


@pytest.mark.parametrize("lang", [lang for lang in available_languages() if lang != "en"])
def test_every_status_text_is_translated(lang: str) -> None:
    msgids = status_msgids(DEFAULT_STATUSES)
    assert "a court date has been set" in msgids and "your file is closed" in msgids
    assert missing_translations(lang, msgids) == []
    # One way to translate the shipped statuses: the catalogs, not inline client_LANG keys.
    assert not re.search(r"^(client|discreet)_\w+\s*=", DEFAULT_STATUSES.read_text(), re.M)


def test_the_extractor_reads_the_statuses_file() -> None:
    found = list(
        extract_statuses(io.BytesIO(DEFAULT_STATUSES.read_bytes()), [], ["TRANSLATORS:"], {})
    )
    messages = [m for _l, _f, m, _c in found]
    assert messages == status_msgids(DEFAULT_STATUSES)
    assert "the status is now: {status}" in messages
    assert all(line > 0 for line, *_rest in found)
    template = (LOCALES_DIR / "messages.pot").read_text(encoding="utf-8")
    for msgid in messages:
        assert f'msgid "{msgid}"' in template.replace('"\n"', ""), "run `make translations`"


@pytest.mark.parametrize("lang", ["es"])
def test_translations_keep_their_placeholders(lang: str) -> None:
    for msgid, translated in _catalog(lang).items():
        assert sorted(PLACEHOLDER.findall(msgid)) == sorted(PLACEHOLDER.findall(translated)), msgid
        assert ("|" in msgid) == ("|" in translated) or "|" not in msgid, msgid


def test_the_extractor_reads_the_dialogue_file() -> None:
    found = list(
        extract_dialogue(io.BytesIO(DEFAULT_INTAKE.read_bytes()), [], ["TRANSLATORS:"], {})
    )
    messages = [m for _l, _f, m, _c in found]
    assert "What is your full name?" in messages
    assert "Housing or eviction" in messages
    assert "eviction|evicted|landlord|rent|apartment|lease" in messages
    assert all(line > 0 for line, *_rest in found)
    assert all(c[0].startswith("TRANSLATORS: state ") for *_r, c in found)


@pytest.mark.parametrize("lang", ["en", "es"])
def test_each_question_fits_in_two_text_messages(lang: str) -> None:
    """Twilio suggests staying under 320 characters; the summary, built from answers, aside."""
    dialogue = load_dialogue(DEFAULT_INTAKE, actions=ACTIONS)
    params = {
        **dialogue.params,
        "program": "Legal Aid Line",
        "contact": "",
        "reference": "K7M-4PX",
        "reference_spoken": "K 7 M, 4 P X",
    }
    for spec in dialogue.states.values():
        for prompt in spec.prompt:
            lines = [render(gettext(lang, prompt), params)]
            lines += [f"{i}. {gettext(lang, c.label)}" for i, c in enumerate(spec.choices, 1)]
            text = "\n".join(lines)
            assert len(text) <= 320, f"{spec.name} in {lang}: {len(text)} characters"
        if spec.example:
            assert len(gettext(lang, spec.example)) <= 160, spec.name

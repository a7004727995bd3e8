"""Translations per message, never per process: Babel catalogs chosen per recipient."""

from __future__ import annotations

import logging
import sys
import tomllib
from collections.abc import Iterator, Sequence
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_time
from babel.messages.pofile import read_po

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).resolve().parent / "locales"

# Each language named in itself, in the order the language menu shows them.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "es": "Español",
    "zh": "中文",
    "vi": "Tiếng Việt",
    "ar": "العربية",
    "ht": "Kreyòl ayisyen",
}


def N_(msgid: str) -> str:
    """Marks a string for extraction without translating it here."""
    return msgid


@cache
def _catalog(lang: str, locales_dir: Path = LOCALES_DIR) -> dict[str, str]:
    path = locales_dir / lang / "LC_MESSAGES" / "messages.po"
    if not path.exists():
        return {}
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=lang)
    out: dict[str, str] = {}
    for msg in catalog:
        usable = isinstance(msg.id, str) and isinstance(msg.string, str) and msg.string
        if msg.id and usable and not msg.fuzzy:
            out[str(msg.id)] = str(msg.string)
    return out


def available_languages() -> list[str]:
    """Languages offered: English and every language with a catalog, in menu order."""
    return [code for code in LANGUAGES if code == "en" or _catalog(code)]


def gettext(lang: str, msgid: str, /, **params: object) -> str:
    """Translate ``msgid`` into ``lang`` (falling back to English) and fill its placeholders."""
    text = _catalog(lang).get(msgid, msgid) if lang != "en" else msgid
    if not params:
        return text
    try:
        return text.format(**params)
    except (KeyError, IndexError, ValueError):
        # A broken translation must never cost the client their message.
        log.error("translation of a message into %s has bad placeholders", lang)
        return msgid.format(**params)


# CLDR has almost no date data for Haitian Creole ("2026 M03 10"); Haiti's French reads
# naturally to Kreyòl readers ("10 mars 2026") and its month names are near the Kreyòl ones.
DATE_LOCALES: dict[str, str] = {"ht": "fr_HT"}


# CLDR puts narrow/thin no-break spaces in times ("10:30\u202fAM"); outside GSM-7, one of them
# turns a whole SMS into UCS-2 (up to three times the segments). Phones show a plain space fine.
_ODD_SPACES = str.maketrans({"\u202f": " ", "\u2009": " ", "\u00a0": " "})


def format_datetime(when: datetime, lang: str, tz: str) -> str:
    """A date and time as a person in that language and time zone reads it."""
    zone = ZoneInfo(tz)
    local = when.astimezone(zone)
    try:
        locale = Locale.parse(DATE_LOCALES.get(lang, lang))
    except (ValueError, TypeError, UnknownLocaleError):
        locale = Locale.parse("en")
    # The medium date with its weekday ("Tue, Mar 10, 2026"), the short time (no seconds: an
    # appointment is never at 10:30:00), joined the way the locale joins them.
    date_pattern = locale.datetime_skeletons.get("yMMMEd") or locale.date_formats["medium"]
    date = format_date(local, format=date_pattern.pattern, locale=locale)
    time = format_time(local, format="short", locale=locale, tzinfo=zone)
    joined = str(locale.datetime_formats["medium"]).replace("{1}", date).replace("{0}", time)
    return joined.translate(_ODD_SPACES)


def reload() -> None:
    """Forget loaded catalogs (after `make translations`)."""
    _catalog.cache_clear()


# --------------------------------------------------------------------------- catalog tooling


def _dialogue_strings(raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(msgid, translator comment) for each client-facing string of a dialogue table."""
    states = raw.get("states")
    if not isinstance(states, dict):
        return
    for name, state in states.items():
        if not isinstance(state, dict):
            continue
        for key, what in (
            ("prompt", "the question or message"),
            ("discreet_prompt", "the same for a client whose phone is not safe (neutral words)"),
        ):
            prompts = state.get(key)
            for prompt in [prompts] if isinstance(prompts, str) else prompts or []:
                if isinstance(prompt, str):
                    yield prompt, f"state {name}: {what}"
        for key, what in (
            ("example", "the re-ask with an example"),
            ("discreet_example", "the re-ask for a client whose phone is not safe (neutral)"),
            ("label", "summary label"),
        ):
            if isinstance(state.get(key), str):
                yield state[key], f"state {name}: {what}"
        for choice in state.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("label"), str):
                yield choice["label"], f"state {name}: an option"
            if isinstance(choice.get("discreet_label"), str):
                yield (
                    choice["discreet_label"],
                    f"state {name}: the option {choice.get('value')} in neutral words",
                )
            if isinstance(choice.get("keywords"), str):
                yield (
                    choice["keywords"],
                    f"state {name}: words that pick the option {choice.get('value')}, "
                    "separated by | (lower case)",
                )


def extract_dialogue(
    fileobj: IO[bytes],
    keywords: Sequence[str],
    comment_tags: Sequence[str],
    options: dict[str, Any],
) -> Iterator[tuple[int, str, str, list[str]]]:
    """Babel extractor for dialogue files (TOML): prompts, examples, labels and option words.

    Used from babel.cfg as ``[bot.i18n.extract_dialogue: bot/data/**.toml]``.
    """
    data = fileobj.read()
    text = data.decode("utf-8")
    raw = tomllib.loads(text)
    lines = text.splitlines()
    for msgid, comment in _dialogue_strings(raw):
        # The line the string starts on, for translators' reference (0 when escaped).
        needle = msgid.split("\n")[0][:40]
        lineno = next((i for i, line in enumerate(lines, start=1) if needle in line), 0)
        yield lineno, "", msgid, [f"TRANSLATORS: {comment}"]


def _status_strings(raw: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(msgid, translator comment) for what a client reads about each status of a statuses file."""
    tables: list[tuple[str, Any]] = [("fallback", raw.get("fallback"))]
    statuses = raw.get("statuses")
    if isinstance(statuses, dict):
        tables += [(f"statuses.{name}", table) for name, table in statuses.items()]
    for name, table in tables:
        if not isinstance(table, dict):
            continue
        if isinstance(table.get("client"), str):
            yield table["client"], f"[{name}]: the case status in plain words, for the client"
        if isinstance(table.get("discreet"), str):
            yield (
                table["discreet"],
                f"[{name}]: the same for a client in discreet mode (never the kind of case)",
            )


def extract_statuses(
    fileobj: IO[bytes],
    keywords: Sequence[str],
    comment_tags: Sequence[str],
    options: dict[str, Any],
) -> Iterator[tuple[int, str, str, list[str]]]:
    """Babel extractor for the statuses file (TOML): each status's client and discreet texts.

    Used from babel.cfg as ``[bot.i18n.extract_statuses: bot/data/statuses.toml]``.
    """
    text = fileobj.read().decode("utf-8")
    lines = text.splitlines()
    for msgid, comment in _status_strings(tomllib.loads(text)):
        quoted = f'"{msgid}"'
        lineno = next((i for i, line in enumerate(lines, start=1) if quoted in line), 0)
        yield lineno, "", msgid, [f"TRANSLATORS: {comment}"]


def status_msgids(path: Path) -> list[str]:
    """Every client-facing text of a statuses file (tests check each one is translated)."""
    with path.open("rb") as fh:
        return [m for m, _c in _status_strings(tomllib.load(fh))]


def dialogue_msgids(path: Path) -> list[str]:
    """Every client-facing string of a dialogue file (tests check each one is translated)."""
    with path.open("rb") as fh:
        return [m for m, _c in _dialogue_strings(tomllib.load(fh))]


def missing_translations(lang: str, msgids: Sequence[str]) -> list[str]:
    """The msgids with no translation in ``lang``'s catalog."""
    catalog = _catalog(lang)
    return [m for m in dict.fromkeys(msgids) if m not in catalog]


def _catalog_stats(argv: Sequence[str]) -> int:
    """`python -m bot.i18n [LANG...]`: how much of the template each catalog translates."""
    from babel.messages.pofile import read_po as _read

    template = LOCALES_DIR / "messages.pot"
    with template.open("rb") as fh:
        msgids = [str(m.id) for m in _read(fh) if m.id and isinstance(m.id, str)]
    langs = list(argv) or [code for code in LANGUAGES if code != "en"]
    worst = 0
    for lang in langs:
        if not (LOCALES_DIR / lang / "LC_MESSAGES" / "messages.po").exists():
            print(f"{lang}: no catalog")
            continue
        missing = missing_translations(lang, msgids)
        print(f"{lang}: {len(msgids) - len(missing)}/{len(msgids)} translated")
        for msgid in missing:
            print(f"  missing: {msgid[:70]!r}")
        worst = max(worst, len(missing))
    return 1 if worst and argv else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_catalog_stats(sys.argv[1:]))

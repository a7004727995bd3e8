"""Translations per message, never per process: Babel catalogs chosen per recipient."""

from __future__ import annotations

import logging
from datetime import datetime
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_datetime as babel_format_datetime
from babel.messages.pofile import read_po

log = logging.getLogger(__name__)

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"

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


def format_datetime(when: datetime, lang: str, tz: str) -> str:
    """A date and time as a person in that language and time zone reads it."""
    local = when.astimezone(ZoneInfo(tz))
    try:
        locale = Locale.parse(lang)
    except (ValueError, TypeError):
        locale = Locale.parse("en")
    return babel_format_datetime(local, format="medium", locale=locale, tzinfo=ZoneInfo(tz))


def reload() -> None:
    """Forget loaded catalogs (after `make translations`)."""
    _catalog.cache_clear()

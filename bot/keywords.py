"""Opt-out, opt-in and help keywords per language, and the texts that answer them.

A table, so a language is added by adding rows: ``KEYWORDS[lang]`` lists the whole messages
(after ``normalise``) that mean stop, start or help, and ``TEXTS[lang]`` holds the answers.
Matching is on the whole message: "STOP" opts out, "stop the eviction" does not.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from bot.i18n import N_, gettext

STOP = "stop"
START = "start"
HELP = "help"

# Whole messages, written as normalise() leaves them (upper case, no accents or punctuation).
# English: Twilio's defaults (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT;
# START, UNSTOP, YES; HELP, INFO) and the FCC's 2024 "reasonable means" of revoking consent.
KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        STOP: (
            "STOP",
            "STOPALL",
            "STOP ALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "REVOKE",
            "OPTOUT",
            "OPT OUT",
            "STOP TEXTING",
            "STOP TEXTING ME",
            "STOP MESSAGING ME",
            "STOP MESSAGES",
            "NO MORE TEXTS",
            "NO MORE MESSAGES",
            "DONT TEXT ME",
        ),
        START: ("START", "UNSTOP", "YES"),
        HELP: ("HELP", "INFO"),
    },
    "es": {
        STOP: (
            "PARAR",
            "PARA",
            "ALTO",
            "CANCELAR",
            "DETENER",
            "BAJA",
            "DAR DE BAJA",
            "DARME DE BAJA",
            "NO MAS",
            "NO MAS MENSAJES",
            "NO ME ESCRIBAN",
            "SALIR",
        ),
        START: ("COMENZAR", "INICIAR", "REANUDAR", "SI"),
        HELP: ("AYUDA",),
    },
    # zh, vi, ar, ht: machine-drafted like their catalogs; a native speaker should review them.
    # Words a client could type as an answer (Vietnamese "dung" is often "đúng", yes; "Huy"
    # is a name) are left out: a false STOP silences court reminders.
    "zh": {  # Simplified, and the Traditional forms phones also produce
        STOP: (
            "停止",
            "退订",
            "退訂",
            "取消订阅",
            "取消訂閱",
            "取消",
            "不要再发了",
            "不要再發了",
            "别再发了",
            "別再發了",
            "请停止",
            "請停止",
            "退出",
        ),
        START: ("开始", "開始", "订阅", "訂閱", "重新订阅", "重新訂閱"),
        HELP: ("帮助", "幫助", "求助"),
    },
    "vi": {
        STOP: (
            "DUNG LAI",
            "DUNG NHAN TIN",
            "DUNG NHAN TIN NUA",
            "NGUNG",
            "NGUNG LAI",
            "NGUNG NHAN TIN",
            "HUY DANG KY",
            "HUY NHAN TIN",
            "KHONG NHAN TIN NUA",
        ),
        START: ("BAT DAU", "DANG KY", "DANG KY LAI"),
        HELP: ("GIUP", "GIUP DO", "TRO GIUP"),
    },
    "ar": {
        STOP: (
            "توقف",
            "اوقف",
            "ايقاف",
            "الغاء",
            "الغاء الاشتراك",
            "لا ترسل",
            "لا ترسلوا",
            "لا تراسلني",
            "كفى",
        ),
        START: ("ابدا", "اشتراك", "اشترك"),
        HELP: ("مساعدة", "مساعده"),
    },
    "ht": {
        STOP: (
            "SISPANN",
            "KANPE",
            "ANILE",
            "DEZABONE",
            "PA VOYE MESAJ ANKO",
            "PA EKRI M ANKO",
            "MWEN PA VLE MESAJ ANKO",
        ),
        START: ("KOMANSE", "ABONE", "REABONE"),
        HELP: ("EDE", "MWEN BEZWEN ED"),
    },
}

# Words a person adds around a keyword that do not change it ("please stop", "stop por favor").
FILLER = frozenset(
    {"PLEASE", "PLS", "PLZ", "POR FAVOR", "FAVOR", "NOW", "YA", "AHORA"}
    | {"VUI LONG", "LAM ON", "TANPRI", "من فضلك", "لو سمحت"}
)

# The answers. Each stays within one SMS segment where the language allows.
TEXTS: dict[str, dict[str, str]] = {
    "en": {
        "stopped": N_(
            "{program}: you are unsubscribed and will get no more messages. Reply START to "
            "resubscribe."
        ),
        "started": N_("{program}: you are subscribed again. Reply HELP for help, STOP to opt out."),
        "help": N_("{program}. {contact}Reply STOP to opt out."),
        "notice": N_("Reply STOP to opt out, HELP for help."),
    },
    "es": {
        "stopped": (
            "{program}: ya no recibirá más mensajes. Responda START para volver a suscribirse."
        ),
        "started": (
            "{program}: está suscrito de nuevo. Responda AYUDA para ayuda, PARAR para cancelar."
        ),
        "help": "{program}. {contact}Responda PARAR para no recibir más mensajes.",
        "notice": "Responda PARAR para cancelar, AYUDA para ayuda.",
    },
}


@dataclass(frozen=True)
class KeywordMatch:
    """A message that is a keyword: what it asks for, and the language of the word used."""

    action: str  # STOP | START | HELP
    language: str


def normalise(text: str) -> str:
    """Upper case, no accents, no punctuation, emoji or invisible marks, single spaces."""
    # Vietnamese đ has no decomposition; people who type without accents write d.
    decomposed = unicodedata.normalize("NFKD", text).replace("đ", "d").replace("Đ", "D")
    out: list[str] = []
    for ch in decomposed:
        cat = unicodedata.category(ch)
        if cat == "Mn" or cat == "Cf" or ch in "'’`´":
            continue  # accents, RTL/LTR marks and zero-width joiners; "don't" -> "DONT"
        out.append(ch if ch.isalnum() else " ")
    return " ".join("".join(out).upper().split())


def _strip_filler(words: str) -> str:
    text = f" {words} "
    for filler in sorted(FILLER, key=len, reverse=True):
        text = text.replace(f" {filler} ", " ")
    return " ".join(text.split())


def match(text: str) -> KeywordMatch | None:
    """The keyword this whole message is, if it is one."""
    norm = normalise(text)
    if not norm:
        return None
    candidates = [norm]
    stripped = _strip_filler(norm)
    if stripped and stripped != norm:
        candidates.append(stripped)
    for candidate in candidates:
        for lang, table in KEYWORDS.items():
            for action, words in table.items():
                if candidate in words:
                    return KeywordMatch(action=action, language=lang)
    return None


def reply_language(found: KeywordMatch, client_language: str) -> str:
    """Answer in the client's language, unless they used a word of another (not English) one.

    English keywords are understood everywhere, so a Spanish speaker's STOP is answered in
    Spanish; a default-language client who writes PARAR is answered in Spanish.
    """
    if found.language in ("en", client_language):
        return client_language
    return found.language


def text(lang: str, key: str, **params: object) -> str:
    """A compliance text in ``lang``: this table first, then the Babel catalog, then English."""
    table = TEXTS.get(lang, {})
    template = table[key] if key in table else gettext(lang, TEXTS["en"][key])
    try:
        return template.format(**params)
    except (KeyError, IndexError, ValueError):
        return TEXTS["en"][key].format(**params)

"""Every language complete and checked: catalogs, placeholders, dates, keywords, SMS segments.

The catalog checks read ``bot/locales/`` and the code generically: a language added, a string
added to the code, or a translation that drifts makes them fail without editing this file.
"""

from __future__ import annotations

import string
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from sqlmodel import col, select

from bot import keywords, sms_text
from bot.casework import appointments
from bot.casework.base import CLI
from bot.casework.status import load_statuses
from bot.clock import FakeClock
from bot.conversations import status
from bot.conversations.answers import NO_WORDS, NUMBER_WORDS, YES_WORDS, phrases
from bot.conversations.client import AGENT_WORDS, BACK_WORDS, MENU_WORDS, RESTART_WORDS
from bot.i18n import LANGUAGES, LOCALES_DIR, available_languages, format_datetime, gettext
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Channel, Client, Message, OutboxItem
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[1]
CATALOGS = sorted(LOCALES_DIR.glob("*/LC_MESSAGES/messages.po"))
TRANSLATED = [p.parts[-3] for p in CATALOGS if p.parts[-3] != "en"]
# The six languages the program offers; any other catalog in bot/locales/ is checked the same way.
REQUIRED = ["en", "es", "zh", "vi", "ar", "ht"]
EXTRACT_KEYWORDS = {"N_": None, "gettext": (2,)}  # as `make translations` extracts


def load(lang: str) -> Catalog:
    with (LOCALES_DIR / lang / "LC_MESSAGES" / "messages.po").open("rb") as fh:
        return read_po(fh, locale=lang)


def msgids(catalog: Catalog) -> list[str]:
    return [str(m.id) for m in catalog if m.id and isinstance(m.id, str)]


def fields(text: str) -> list[str]:
    """The placeholders of a format string, e.g. ["program", "when"]."""
    return sorted(name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name)


def is_word_list(msgid: str) -> bool:
    """Words clients may type ("yes|y|yeah"): read, never sent."""
    return "|" in msgid


# --------------------------------------------------------------------------- completeness


def test_every_required_language_has_a_catalog_and_is_offered() -> None:
    assert [p.parts[-3] for p in CATALOGS] == sorted(p.parts[-3] for p in CATALOGS)
    have = {p.parts[-3] for p in CATALOGS}
    assert set(REQUIRED) <= have
    assert set(REQUIRED) <= set(available_languages())
    assert set(have) <= set(LANGUAGES), "name every catalog's language in bot.i18n.LANGUAGES"


def test_the_english_catalog_holds_every_string_of_the_code() -> None:
    """A string added to the code or the intake file without `make translations` fails here."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    found = {
        message
        for _file, _line, message, _comments, _ctx in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=EXTRACT_KEYWORDS
        )
        if isinstance(message, str)
    }
    assert len(found) > 100
    english = set(msgids(load("en")))
    missing = sorted(found - english)
    assert not missing, f"run `make translations`; not in the catalogs: {missing[:10]}"
    stale = sorted(english - found)
    assert not stale, f"run `make translations`; no longer in the code: {stale[:10]}"


@pytest.mark.parametrize("lang", TRANSLATED)
def test_catalog_is_complete_with_no_fuzzy_entry(lang: str) -> None:
    english = msgids(load("en"))
    catalog = load(lang)
    problems = []
    for msgid in english:
        message = catalog.get(msgid)
        if message is None:
            problems.append(f"missing: {msgid!r}")
        elif not message.string or not str(message.string).strip():
            problems.append(f"untranslated: {msgid!r}")
        elif message.fuzzy:
            problems.append(f"fuzzy: {msgid!r}")
    extra = set(msgids(catalog)) - set(english)
    problems += [f"not in the English catalog: {m!r}" for m in sorted(extra)]
    assert not problems, f"{lang}: {len(problems)} problems:\n" + "\n".join(problems[:20])


@pytest.mark.parametrize("lang", TRANSLATED)
def test_no_translation_drops_or_renames_a_placeholder(lang: str) -> None:
    bad = []
    for message in load(lang):
        if not message.id or not message.string:
            continue
        msgid, text = str(message.id), str(message.string)
        try:
            if fields(msgid) != fields(text):
                bad.append(f"{msgid!r}: {fields(msgid)} became {fields(text)}")
        except ValueError as exc:  # an unbalanced brace
            bad.append(f"{msgid!r}: {exc}")
    assert not bad, f"{lang}:\n" + "\n".join(bad)


@pytest.mark.parametrize("lang", TRANSLATED)
def test_word_lists_stay_word_lists(lang: str) -> None:
    """A "|" list translated as a sentence would never match what a client types."""
    for msgid in filter(is_word_list, msgids(load("en"))):
        words = [w for w in gettext(lang, msgid).split("|") if w.strip()]
        assert words, msgid
        assert all(len(w) <= 60 for w in words), (lang, msgid)
    numbers = gettext(lang, NUMBER_WORDS).split("|")
    assert len(numbers) == 13, f"{lang}: zero to twelve, in order"


def test_the_english_catalog_is_the_identity() -> None:
    for message in load("en"):
        if message.id and message.string:
            assert message.string == message.id


# --------------------------------------------------------------------------- one locale per message


@pytest.fixture
async def svc(database_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Services]:
    services = Services.build(make_settings(database_url, tmp_path / "d"), clock=clock)
    yield services
    await services.close()


async def test_each_recipient_gets_their_own_language_and_time_zone(svc: Services) -> None:
    """Two clients, two languages, one process, their messages written in turn."""
    people = {
        "zh": ("+12025550101", "America/Los_Angeles"),
        "ar": ("+12025550102", "America/Chicago"),
    }
    cases = {}
    async with transaction(svc.sessions) as session:
        for lang, (phone, tz) in people.items():
            client = await repo.create_client(
                session,
                vault=svc.vault,
                channel=Channel.SMS,
                address=phone,
                language=lang,
                timezone=tz,
            )
            cases[lang] = (client, await repo.create_case(session, client=client, category="x"))
    at = [datetime(2026, 3, 20, 17, 0, tzinfo=UTC), datetime(2026, 4, 2, 15, 30, tzinfo=UTC)]
    for when in at:  # zh, ar, zh, ar
        for lang in people:
            async with transaction(svc.sessions) as session:
                case = await repo.require_case(session, reference=cases[lang][1].reference)
                await appointments.book(
                    session, svc, case, when, "Room 9", kind="hearing", actor=CLI
                )
    async with svc.sessions() as session:
        rows = (
            await session.exec(
                select(OutboxItem, Message)
                .join(Message, col(Message.id) == col(OutboxItem.message_id))
                .order_by(col(OutboxItem.id))
            )
        ).all()
        texts = [
            repo.message_body(svc.vault, await session.get(Client, item.client_id), msg)
            for item, msg in rows
        ]
    assert len(texts) == 4
    zh_first, ar_first, zh_second, ar_second = texts
    # 17:00 UTC is 10:00 in Los Angeles and 12:00 in Chicago (daylight time from March 8).
    assert zh_first.startswith("Legal Aid Line：您的法庭听证已定于2026年3月20日周五 10:00")
    assert "2026年4月2日周四 08:30" in zh_second
    assert ar_first.startswith("Legal Aid Line: تم حجز جلسة المحكمة في الجمعة، 20 مارس 2026")
    assert "12:00 م" in ar_first and "10:30 ص" in ar_second
    assert "سنذكّرك قبل الموعد." in ar_second and "我们会提前提醒您。" in zh_second


@pytest.mark.parametrize(
    ("lang", "tz", "winter", "summer"),
    [
        ("en", "America/New_York", "Sat, Mar 7, 2026, 9:00 AM", "Tue, Mar 10, 2026, 10:00 AM"),
        ("es", "America/Chicago", "sáb, 7 mar 2026, 8:00", "mar, 10 mar 2026, 9:00"),
        ("zh", "America/Los_Angeles", "2026年3月7日周六 06:00", "2026年3月10日周二 07:00"),
        ("vi", "America/New_York", "09:00 Thứ 7, 7 thg 3, 2026", "10:00 Thứ 3, 10 thg 3, 2026"),
        (
            "ar",
            "America/Chicago",
            "السبت، 7 مارس 2026، 8:00 ص",
            "الثلاثاء، 10 مارس 2026، 9:00 ص",
        ),
        ("ht", "America/New_York", "sam. 7 mars 2026, 09:00", "mar. 10 mars 2026, 10:00"),
        ("zh", "Pacific/Honolulu", "2026年3月7日周六 04:00", "2026年3月10日周二 04:00"),
    ],
)
def test_dates_in_each_locale_and_time_zone(lang: str, tz: str, winter: str, summer: str) -> None:
    """14:00 UTC either side of the US change to daylight time (March 8, 2026)."""
    assert format_datetime(datetime(2026, 3, 7, 14, 0, tzinfo=UTC), lang, tz) == winter
    assert format_datetime(datetime(2026, 3, 10, 14, 0, tzinfo=UTC), lang, tz) == summer


# --------------------------------------------------------------------------- keywords


# A word of each kind per language, as a client would type it (accents and case as they come).
TYPED = {
    "en": {"stop": "Stop", "start": "START", "help": "help", "status": "status 1234",
           "yes": "Yes", "no": "no", "back": "back", "restart": "start over"},
    "es": {"stop": "Parar", "start": "comenzar", "help": "Ayuda", "status": "estado 1234",
           "yes": "sí", "no": "No", "back": "atrás", "restart": "reiniciar"},
    "zh": {"stop": "退订", "start": "开始", "help": "帮助", "status": "状态 1234",
           "yes": "是的", "no": "不", "back": "返回", "restart": "重新开始"},
    "vi": {"stop": "Dừng lại", "start": "bat dau", "help": "Giúp đỡ", "status": "Tình trạng 1234",
           "yes": "vâng", "no": "không", "back": "quay lại", "restart": "làm lại"},
    "ar": {"stop": "توقف", "start": "ابدأ", "help": "مساعدة", "status": "الحالة 1234",
           "yes": "نعم", "no": "لا", "back": "رجوع", "restart": "ابدأ من جديد"},
    "ht": {"stop": "Sispann", "start": "kòmanse", "help": "Ede", "status": "estati 1234",
           "yes": "wi", "no": "non", "back": "retounen", "restart": "rekòmanse"},
}  # fmt: skip


def test_every_offered_language_has_keywords() -> None:
    assert set(available_languages()) <= set(TYPED)
    assert set(available_languages()) <= set(keywords.KEYWORDS)
    for lang, table in keywords.KEYWORDS.items():
        assert set(table) == {keywords.STOP, keywords.START, keywords.HELP}, lang
        for words in table.values():
            assert all(keywords.normalise(w) == w for w in words), lang


@pytest.mark.parametrize("lang", REQUIRED)
def test_keywords_work_in_each_language(lang: str) -> None:
    typed = TYPED[lang]
    for action in (keywords.STOP, keywords.START, keywords.HELP):
        found = keywords.match(typed[action])
        assert found is not None and found.action == action, (lang, action)
        assert found.language in (lang, "en")
        # The answer is in the client's language, and not the English one.
        key = {"stop": "stopped", "start": "started", "help": "help"}[action]
        answer = keywords.text(lang, key, program="Legal Aid Line", contact="")
        assert "Legal Aid Line" in answer
        if lang != "en":
            assert answer != keywords.text("en", key, program="Legal Aid Line", contact="")
    # English keywords work for everyone.
    assert keywords.match("STOP") == keywords.KeywordMatch("stop", "en")
    request = status.parse_request(typed["status"])
    assert request is not None and request.pin == "1234", lang
    langs = ["en", lang]
    for word, msgid in (("yes", YES_WORDS), ("no", NO_WORDS), ("back", BACK_WORDS),
                        ("restart", RESTART_WORDS)):  # fmt: skip
        assert keywords.normalise(typed[word]) in phrases(msgid, langs), (lang, word)


def test_no_answer_a_client_may_type_is_a_stop_word() -> None:
    """A false STOP silences court reminders: no word list of any language holds one."""
    stop = {w for table in keywords.KEYWORDS.values() for w in table[keywords.STOP]}
    lists = [m for m in msgids(load("en")) if is_word_list(m)]
    clashes = []
    for lang in available_languages():
        for msgid in lists:
            for phrase in phrases(msgid, [lang]):
                if phrase in stop:
                    clashes.append(f"{lang}: {phrase!r} in {msgid!r}")
    assert not clashes, "\n".join(clashes)


@pytest.mark.parametrize("lang", [code for code in REQUIRED if code != "en"])
def test_words_the_texts_tell_clients_to_send_are_understood(lang: str) -> None:
    """The words a translated text tells clients to send (BACK, MENU, STATUS...) are matched."""
    told = {
        "Reply BACK to go back, RESTART to start over, or AGENT to talk to a person.": [
            BACK_WORDS,
            RESTART_WORDS,
            AGENT_WORDS,
        ],
        "Thank you. We passed your message on. Reply MENU to see your options.": [MENU_WORDS],
    }
    for msgid, lists in told.items():
        text = keywords.normalise(gettext(lang, msgid))
        for words in lists:
            # Substrings: Chinese has no spaces between words.
            assert any(w in text for w in phrases(words, [lang])), (lang, words)
    pin_text = gettext(lang, "Please reply STATUS and your PIN, for example: STATUS 1234")
    example = pin_text.rsplit(":", 1)[-1].rsplit("：", 1)[-1].strip()
    request = status.parse_request(example)
    assert request is not None and request.pin == "1234", (lang, example)


# --------------------------------------------------------------------------- SMS segments

LONG_WHEN = datetime(2026, 9, 30, 23, 45, tzinfo=UTC)  # a long month name, two-digit day
# Long, plausible values for every placeholder a template may have. A new placeholder without
# one fails the test below, so its worst case is thought about.
LONG_VALUES: dict[str, str] = {
    "program": "Legal Services of Northern Virginia",
    "place": "Housing Court, 111 Centre Street, Room 1127",
    "bring": "your lease, rent receipts and any court papers",
    "reference": "K7M-4PX",
    "ref": "K7M-4PX",
    "reference_spoken": "K 7 M, 4 P X",
    "name": "Maria Guadalupe Hernandez",
    "text": "Can you come to our office on Monday at 10?",
    "contact": "Call 555-123-4567, Mon-Fri 9-5. ",
    "referral": "https://www.lawhelp.org/find-help",
    "response_days": "10",
    "max": "2000",
    "min": "1",
    "status": "motion to dismiss filed, awaiting ruling",
}
MAX_SEGMENTS = 3


def long_values(lang: str, tmp_path: Path) -> dict[str, str]:
    when = format_datetime(LONG_WHEN, lang, "America/Los_Angeles")
    kinds = [appointments.NEUTRAL_KIND, *appointments.KIND_LABELS.values()]
    book = load_statuses(make_settings("sqlite:///unused.db", tmp_path))
    entries = [book.fallback, *book.statuses.values()]
    labels = [e.label(lang, discreet=d) for e in entries for d in (False, True)]
    return {
        **LONG_VALUES,
        "when": when,
        "old": when,
        "new": when,
        "kind": max((gettext(lang, k) for k in kinds), key=len),
        "label": max(labels, key=len),
        "button": gettext(lang, "Share my phone number"),
    }


@pytest.mark.parametrize("lang", REQUIRED)
def test_every_template_fits_three_sms_segments_at_its_longest(lang: str, tmp_path: Path) -> None:
    values = long_values(lang, tmp_path)
    over, unknown = [], set()
    for msgid in msgids(load("en")):
        if is_word_list(msgid):
            continue
        names = fields(msgid)
        unknown |= {n for n in names if n not in values}
        if unknown:
            continue
        text = gettext(lang, msgid).format(**{n: values[n] for n in names})
        info = sms_text.analyze(text)
        if info.segments > MAX_SEGMENTS:
            over.append(f"{info.segments} {info.encoding} segments ({info.units}): {msgid!r}")
    assert not unknown, f"give these placeholders a long plausible value: {sorted(unknown)}"
    assert not over, f"{lang}: over {MAX_SEGMENTS} segments at the longest:\n" + "\n".join(over)


def test_segment_counting_knows_gsm7_from_ucs2() -> None:
    """The same notice costs one GSM-7 segment in English and a UCS-2 one elsewhere."""
    for lang, encoding in (("en", "GSM-7"), ("es", "GSM-7"), ("zh", "UCS-2"), ("ar", "UCS-2")):
        info = sms_text.analyze(keywords.text(lang, "notice"))
        assert (info.encoding, info.segments) == (encoding, 1), lang

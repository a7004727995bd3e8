"""Typed answer readers: a client's words as a count, an amount, a date, a choice, yes or no.

Each reader returns the value or raises Reask with a short hint (an msgid) to re-ask with.
Words a client may type come from the Babel catalogs, so every reader understands the
client's language as well as English.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache

from babel import Locale, UnknownLocaleError
from babel.dates import get_day_names, get_month_names

from bot.conversations.dialogue_file import StateSpec
from bot.i18n import N_, gettext
from bot.keywords import normalise
from bot.phones import PhoneError, normalize_phone

# Words a client may type, one msgid per meaning; translators give "|"-separated variants.
# TRANSLATORS: words that mean "yes", separated by |. Keep them lower case.
YES_WORDS = N_("yes|y|yeah|yep|ok|okay|sure|correct|right")
# TRANSLATORS: words that mean "no", separated by |.
NO_WORDS = N_("no|n|nope|not")
# TRANSLATORS: answers meaning "there is none / skip this question", separated by |.
SKIP_WORDS = N_("skip|none|no one|nobody|nothing|n/a|na")
# TRANSLATORS: answers meaning "I do not know", separated by |.
UNKNOWN_WORDS = N_("don't know|dont know|do not know|not sure|unknown|no idea|idk")
# TRANSLATORS: the word for today, and its variants, separated by |.
TODAY_WORDS = N_("today")
# TRANSLATORS: the word for tomorrow, and its variants, separated by |.
TOMORROW_WORDS = N_("tomorrow")
# TRANSLATORS: the numbers zero to twelve written as words, in order, separated by |;
# several forms of one number are separated by / (uno/una).
NUMBER_WORDS = N_("zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve")
# TRANSLATORS: answers meaning "no income at all", separated by |.
ZERO_INCOME_WORDS = N_("none|nothing|no income|zero|no money")
# TRANSLATORS: ways to say an amount is per week, separated by |.
PER_WEEK_WORDS = N_("a week|per week|weekly|each week|every week|week|wk")
# TRANSLATORS: ways to say an amount is paid every two weeks, separated by |.
PER_TWO_WEEKS_WORDS = N_("every two weeks|every 2 weeks|biweekly|bi-weekly|two weeks|2 weeks")
# TRANSLATORS: ways to say an amount is per year, separated by |.
PER_YEAR_WORDS = N_("a year|per year|yearly|annually|annual|each year|year|yr")
# TRANSLATORS: ways to say an amount is per month, separated by |.
PER_MONTH_WORDS = N_("a month|per month|monthly|each month|month|mo")

HINT_CHOICE = N_("Please reply with the number of one option.")
HINT_YESNO = N_("Please reply 1 for yes or 2 for no.")
HINT_TEXT = N_("Please answer in words.")
HINT_TOO_LONG = N_("That is a bit long. Please keep it under {max} characters.")
HINT_NUMBER = N_("Please send a number, for example: 3")
HINT_NUMBER_RANGE = N_("Please send a number from {min} to {max}.")
HINT_MONEY = N_("Please send an amount in dollars, for example: $1,200")
HINT_DATE = N_("Please send a date, for example: 3/15 or March 15")
HINT_DATE_RANGE = N_("Please check the date. For example: 3/15 or March 15")
HINT_ZIP = N_("Please send your 5-digit ZIP code, for example: 10001")
HINT_PHONE = N_("Please send a phone number, for example: 555-123-4567")
HINT_PIN = N_("Please send 4 to 6 digits, for example: 4821")

# Languages that write a numeric date month first (3/15); the others write it day first.
MONTH_FIRST = frozenset({"en", "zh"})


class Reask(Exception):
    """The answer does not fit the question: re-ask with this hint (an msgid) and params."""

    def __init__(self, hint: str, **params: object) -> None:
        super().__init__(hint)
        self.hint = hint
        self.params = params


def phrases(msgid: str, langs: Iterable[str]) -> frozenset[str]:
    """The normalised variants of a "|"-separated word list in every one of ``langs``."""
    return _phrases(msgid, tuple(langs))


@cache
def _phrases(msgid: str, langs: tuple[str, ...]) -> frozenset[str]:
    # Cached like the catalogs they come from: answers are read against these lists several
    # times a turn, and normalising them again each time was 7% of an intake turn.
    out: set[str] = set()
    for lang in langs:
        for part in gettext(lang, msgid).split("|"):
            word = normalise(part)
            if word:
                out.add(word)
    return frozenset(out)


def fold(text: str) -> str:
    """Lower case without accents, keeping digits and the punctuation of numbers and dates."""
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Cf"))
    return " ".join(kept.casefold().split())


def has_phrase(norm: str, options: Iterable[str]) -> str | None:
    """The longest option that appears in ``norm`` (normalised) as whole words."""
    padded = f" {norm} "
    for option in sorted(options, key=len, reverse=True):
        if f" {option} " in padded:
            return option
    return None


def clean_text(text: str) -> str:
    """Drop control characters (NUL, escapes) but keep line breaks; trim."""
    kept = "".join(ch for ch in text if ch == "\n" or ch.isprintable())
    return kept.strip()


def parse_text(text: str, spec: StateSpec, langs: Iterable[str]) -> str | None:
    """A free-text answer: trimmed, within the length limits, with letters where asked."""
    value = clean_text(text)
    if spec.skippable and normalise(value) in phrases(SKIP_WORDS, langs):
        return None
    if len(value) > spec.max_length:
        raise Reask(HINT_TOO_LONG, max=spec.max_length)
    if len(value) < max(spec.min_length, 1):
        raise Reask(spec.example or HINT_TEXT)
    if spec.letters and not any(ch.isalpha() for ch in value):
        raise Reask(spec.example or HINT_TEXT)
    return value


def number_words(langs: Iterable[str]) -> dict[str, int]:
    """Numbers written as words (zero to twelve) in every one of ``langs``."""
    out: dict[str, int] = {}
    for lang in langs:
        for i, forms in enumerate(gettext(lang, NUMBER_WORDS).split("|")):
            for word in forms.split("/"):
                norm = normalise(word)
                if norm:
                    out.setdefault(norm, i)
    return out


def parse_count(text: str, langs: Iterable[str], lo: Decimal | None, hi: Decimal | None) -> int:
    """A whole number from digits ("3", "3 people") or a word ("three", "tres")."""
    if len(text) > 200:
        raise Reask(HINT_NUMBER)
    found = re.findall(r"\d+(?:[.,]\d+)?", unicodedata.normalize("NFKC", text))
    value: int | None = None
    if len(found) == 1 and found[0].isdigit() and len(found[0]) <= 9:
        value = int(found[0])
    elif not found:
        words = number_words(langs)
        hits = {words[w] for w in normalise(text).split() if w in words}
        if len(hits) == 1:
            value = hits.pop()
    if value is None:
        raise Reask(HINT_NUMBER)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise Reask(HINT_NUMBER_RANGE, min=lo if lo is not None else 0, max=hi if hi else "")
    return value


def _amount(raw: str) -> Decimal:
    """'1,200.50', '1.200,50', '1200', '1.200' as a Decimal; Reask when it is not one."""
    if "," in raw and "." in raw:
        dec = "," if raw.rfind(",") > raw.rfind(".") else "."
        thousands = "." if dec == "," else ","
        whole, _, frac = raw.rpartition(dec)
        groups = whole.split(thousands)
        if any(len(g) != 3 for g in groups[1:]) or not frac.isdigit() or len(frac) > 2:
            raise Reask(HINT_MONEY)
        return Decimal("".join(groups) + "." + frac)
    for sep in (",", "."):
        if sep in raw:
            parts = raw.split(sep)
            if len(parts) == 2 and len(parts[1]) in (1, 2):
                return Decimal(parts[0] + "." + parts[1])  # a decimal mark: 1200,50
            if all(len(p) == 3 for p in parts[1:]) and 1 <= len(parts[0]) <= 3:
                return Decimal("".join(parts))  # thousands: 1,200 or 1.200
            raise Reask(HINT_MONEY)
    return Decimal(raw)


def parse_money(text: str, langs: Iterable[str]) -> Decimal:
    """A monthly amount in dollars: "$1,200", "1200/month", "1.200,50", "300 a week", "2k"."""
    if len(text) > 200:
        raise Reask(HINT_MONEY)
    langs = list(langs)
    norm = normalise(text)
    if norm and norm in phrases(ZERO_INCOME_WORDS, langs):
        return Decimal("0.00")
    per = Decimal(1)
    folded = fold(unicodedata.normalize("NFKC", text))
    for msgid, factor in (
        (PER_TWO_WEEKS_WORDS, Decimal(26) / 12),
        (PER_WEEK_WORDS, Decimal(52) / 12),
        (PER_YEAR_WORDS, Decimal(1) / 12),
        (PER_MONTH_WORDS, Decimal(1)),
    ):
        hit = has_phrase(norm, phrases(msgid, langs))
        if hit:
            per = factor
            if re.search(r"\d", hit):
                # "every 2 weeks": that 2 is not the amount.
                words = r"\W+".join(re.escape(w) for w in hit.split())
                folded = re.sub(words, " ", folded, count=1, flags=re.IGNORECASE)
            break
    matches = re.findall(r"(\d(?:[\d.,]*\d)?)\s*(k\b)?", folded, flags=re.IGNORECASE)
    if len(matches) != 1:
        raise Reask(HINT_MONEY)
    raw, kilo = matches[0]
    try:
        amount = _amount(raw)
    except InvalidOperation as exc:
        raise Reask(HINT_MONEY) from exc
    if kilo:
        amount *= 1000
    monthly = (amount * per).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return monthly


def parse_zip(text: str) -> str:
    """A US ZIP code: five digits, a ZIP+4 is cut to its first five."""
    if len(text) > 100:
        raise Reask(HINT_ZIP)
    found = re.findall(r"(?<!\d)(\d{5})(?:[-\s]?\d{4})?(?!\d)", unicodedata.normalize("NFKC", text))
    if len(set(found)) != 1 or found[0] == "00000":
        raise Reask(HINT_ZIP)
    return str(found[0])


def parse_phone(text: str) -> str:
    """A phone number in E.164."""
    if len(text) > 40:
        raise Reask(HINT_PHONE)
    try:
        return normalize_phone(unicodedata.normalize("NFKC", text))
    except PhoneError as exc:
        raise Reask(HINT_PHONE) from exc


PIN_DIGITS = re.compile(r"^[0-9]{4,6}$")


def parse_pin(text: str, example: str | None = None) -> str:
    """A PIN of 4 to 6 digits (spaces ignored); Reask with the example otherwise."""
    # Arabic-Indic and other decimal digits count, stored as 0-9 so STATUS 1234 matches later.
    value = "".join(str(unicodedata.decimal(c, c)) for c in "".join(text.split()))
    if not PIN_DIGITS.match(value):
        raise Reask(example or HINT_PIN)
    return value


def parse_yesno(text: str, choice: str | None, langs: Iterable[str]) -> bool:
    """Yes or no: 1/2, a button, or the words in any offered language."""
    if choice in ("yes", "no"):
        return choice == "yes"
    norm = normalise(text)
    if norm in ("1", "2"):
        return norm == "1"
    langs = list(langs)
    yes, no = phrases(YES_WORDS, langs), phrases(NO_WORDS, langs)
    for candidate in (norm, norm.split(" ")[0] if norm else ""):
        is_yes, is_no = candidate in yes, candidate in no
        if is_yes != is_no:
            return is_yes
    raise Reask(HINT_YESNO)


def parse_choice(
    text: str,
    choice: str | None,
    options: Sequence[tuple[str, str, AbstractSet[str]]],
) -> str:
    """The value of the option picked by button, number, label or one of its words.

    ``options`` holds (value, shown label, extra normalised words) in the order shown.
    """
    values = [v for v, _l, _w in options]
    if choice is not None and choice in values:
        return choice
    norm = normalise(text)
    if not norm:
        raise Reask(HINT_CHOICE)
    if norm.isdigit():
        index = int(norm) - 1 if len(norm) <= 3 else -1
        if 0 <= index < len(options):
            return options[index][0]
        raise Reask(HINT_CHOICE)
    labels = [normalise(label) for _v, label, _w in options]
    for (value, _label, words), label in zip(options, labels, strict=True):
        if norm == label or norm == normalise(value) or norm in words:
            return value
    # Part of one label ("housing" for "Housing or eviction"), or one option's words in it.
    if len(norm) >= 3:
        partial = {v for (v, _l, _w), lab in zip(options, labels, strict=True) if norm in lab}
        if len(partial) == 1:
            return partial.pop()
    hits = {v for v, _l, words in options if has_phrase(norm, words)}
    if len(hits) == 1:
        return hits.pop()
    raise Reask(HINT_CHOICE)


@cache
def _name_map(lang: str, kind: str) -> dict[str, int]:
    """Month (1-12) or weekday (0-6) names in ``lang`` and English, normalised."""
    out: dict[str, int] = {}
    for code in dict.fromkeys((lang, "en")):
        try:
            locale = Locale.parse(code)
        except (UnknownLocaleError, ValueError):
            continue
        for width in ("wide", "abbreviated"):
            if kind == "month":
                names = get_month_names(width, locale=locale)
            else:
                names = get_day_names(width, locale=locale)
            for num, name in names.items():
                norm = normalise(str(name))
                if norm and len(norm) >= 3:
                    out.setdefault(norm, int(num))
    return out


def _build_date(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day)
    except ValueError as exc:
        raise Reask(HINT_DATE) from exc


def _with_year(today: date, month: int, day: int, year: int | None) -> date:
    if year is not None:
        return _build_date(year if year >= 100 else 2000 + year, month, day)
    # No year: the next time this day comes, unless it was only weeks ago (a missed date).
    candidate = _build_date(today.year, month, day) if (month, day) != (2, 29) else None
    if candidate is None:
        for y in range(today.year, today.year + 4):
            try:
                candidate = date(y, 2, 29)
                break
            except ValueError:
                continue
    assert candidate is not None
    if candidate < today - timedelta(days=30):
        candidate = _build_date(candidate.year + 1, month, day)
    return candidate


def parse_date(text: str, *, lang: str, langs: Iterable[str], today: date) -> date:
    """A calendar date: 3/15, 15/3 (day first outside English), 2026-03-15, March 15,
    15 de marzo, today, tomorrow, or a weekday (the next one)."""
    if len(text) > 100:
        raise Reask(HINT_DATE)
    langs = list(langs)
    raw = unicodedata.normalize("NFKC", text)
    norm = normalise(raw)
    if not norm:
        raise Reask(HINT_DATE)
    if has_phrase(norm, phrases(TOMORROW_WORDS, langs)):
        return today + timedelta(days=1)
    if has_phrase(norm, phrases(TODAY_WORDS, langs)):
        return today
    m = re.search(r"(?<!\d)(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?!\d)", raw)
    if m:
        return _build_date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    m = re.search(r"(\d{1,2})\s*月\s*(\d{1,2})", raw)
    if m:
        return _with_year(today, int(m.group(1)), int(m.group(2)), None)
    m = re.search(r"(?<![\d/.-])(\d{1,2})[/.-](\d{1,2})(?:[/.-](\d{4}|\d{2}))?(?![/.-]?\d)", raw)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        year = int(m.group(3)) if m.group(3) else None
        month, day = (a, b) if lang in MONTH_FIRST else (b, a)
        if month > 12 and day <= 12:
            month, day = day, month
        if not 1 <= month <= 12:
            raise Reask(HINT_DATE)
        return _with_year(today, month, day, year)
    months = _name_map(lang, "month")
    hit = has_phrase(norm, months)
    if hit:
        rest = f" {norm} ".replace(f" {hit} ", " ")
        numbers = [int(n) for n in re.findall(r"\d+", rest)]
        days = [n for n in numbers if 1 <= n <= 31]
        years = [n for n in numbers if n >= 1000]
        if len(days) != 1 or len(years) > 1:
            raise Reask(HINT_DATE)
        return _with_year(today, months[hit], days[0], years[0] if years else None)
    if not re.search(r"\d", norm):
        weekdays = _name_map(lang, "day")
        wd = has_phrase(norm, weekdays)
        if wd:
            ahead = (weekdays[wd] - today.weekday()) % 7 or 7
            return today + timedelta(days=ahead)
    raise Reask(HINT_DATE)

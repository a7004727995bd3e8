"""Channel-neutral dialogue engine: a dialogue is a table of states loaded from a data file.

A step takes the stored progress and one inbound message and gives the next progress and
the replies. Questions are typed (text, choice, number, money, date, yesno, zip, phone); an
answer that does not fit gets a short re-ask with an example, in the client's language.
Every client-facing string is an English msgid translated through the Babel catalogs
(``bot.i18n.extract_dialogue`` pulls them out of the data file). Named actions, supplied
by the caller, do the work a table cannot (database checks, creating the case) and may
steer the dialogue by returning an outcome the state maps to a next state.
"""

from __future__ import annotations

import contextlib
import re
import string
import tomllib
import unicodedata
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, get_day_names, get_month_names
from babel.numbers import format_currency

from bot.channels.base import Choice
from bot.conversations.base import Reply, Turn
from bot.conversations.keywords import normalise
from bot.i18n import LANGUAGES, N_, available_languages, gettext
from bot.phones import PhoneError, normalize_phone

QUESTION_TYPES = frozenset(
    {"text", "choice", "number", "money", "date", "yesno", "zip", "phone", "pin"}
)
STATE_TYPES = QUESTION_TYPES | {"summary", "action", "end"}
FIX_SUFFIX = ":fix"  # the state a summary moves to when the client wants to correct an answer
MAX_HOPS = 20  # action states chained in one step; more means a loop in the data
MAX_INPUT = 2000  # characters of one answer looked at; longer input is re-asked, not parsed

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

SORRY = N_("Sorry, I did not understand.")
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

LABEL_YES = N_("Yes")
LABEL_NO = N_("No")
LABEL_CONFIRM = N_("Yes, that is right")
LABEL_FIX = N_("Fix something")
FIX_PROMPT = N_("What do you want to fix?")
VALUE_NONE = N_("None")
VALUE_UNKNOWN = N_("Not sure")
RESUME = N_("Welcome back! Let's continue where we left off.")
MAX_HISTORY = 60  # answered states kept for "back"

# Languages that write a numeric date month first (3/15); the others write it day first.
MONTH_FIRST = frozenset({"en", "zh"})


class DialogueError(ValueError):
    """The dialogue file is wrong; the one-line message names the file, state and field."""


class Reask(Exception):
    """The answer does not fit the question: re-ask with this hint (an msgid) and params."""

    def __init__(self, hint: str, **params: object) -> None:
        super().__init__(hint)
        self.hint = hint
        self.params = params


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ChoiceSpec:
    """One option: the value stored, the label shown (an msgid) and words that pick it."""

    value: str
    label: str
    keywords: str | None = None  # an msgid of "|"-separated words


@dataclass(frozen=True)
class StateSpec:
    """One state of a dialogue, as the data file describes it."""

    name: str
    type: str
    prompt: tuple[str, ...] = ()
    field: str | None = None
    choices: tuple[ChoiceSpec, ...] = ()
    choices_from: str | None = None
    multilingual: bool = False
    next: str | None = None
    branches: Mapping[str, str] = dc_field(default_factory=dict)
    outcomes: Mapping[str, str] = dc_field(default_factory=dict)
    action: str | None = None
    example: str | None = None
    label: str | None = None
    min: Decimal | None = None
    max: Decimal | None = None
    min_length: int = 1
    max_length: int = 500
    letters: bool = False
    skippable: bool = False
    unknown_ok: bool = False
    min_days: int = -365
    max_days: int = 3 * 365
    fields: tuple[str, ...] = ()

    @property
    def is_question(self) -> bool:
        return self.type in QUESTION_TYPES


@dataclass(frozen=True)
class Dialogue:
    """A whole dialogue: its states, where it starts, and fixed values its texts may use."""

    name: str
    start: str
    version: int
    states: Mapping[str, StateSpec]
    params: Mapping[str, str]
    source: str = "<dialogue>"


_COMMON_KEYS = {"type", "prompt", "next", "branches", "outcomes", "action", "label"}
_KEYS_BY_TYPE: dict[str, set[str]] = {
    "text": {"field", "example", "min_length", "max_length", "letters", "skippable"},
    "choice": {"field", "example", "choices", "choices_from", "multilingual"},
    "number": {"field", "example", "min", "max"},
    "money": {"field", "example", "min", "max"},
    "date": {"field", "example", "min_days", "max_days", "unknown_ok"},
    "yesno": {"field", "example"},
    "zip": {"field", "example"},
    "phone": {"field", "example"},
    "pin": {"field", "example"},
    "summary": {"fields"},
    "action": set(),
    "end": set(),
}
CHOICE_SOURCES = frozenset({"languages"})
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")


def _str_list(raw: Any, where: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(p, str) and p.strip() for p in raw):
        raise DialogueError(f"{where} must be a text or a list of texts")
    return tuple(raw)


def _int(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise DialogueError(f"{where} must be a whole number, not {raw!r}")
    return raw


def _state_map(raw: Any, where: str) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise DialogueError(f'{where} must be a table of answer = "state"')
    return {str(k): v for k, v in raw.items()}


def _parse_state(name: str, raw: Any, where: str) -> StateSpec:
    if not isinstance(raw, dict):
        raise DialogueError(f"{where}: must be a table")
    kind = raw.get("type")
    if kind not in STATE_TYPES:
        raise DialogueError(
            f"{where}: unknown type {kind!r} (expected one of {', '.join(sorted(STATE_TYPES))})"
        )
    allowed = _COMMON_KEYS | _KEYS_BY_TYPE[kind]
    for key in raw:
        if key not in allowed:
            raise DialogueError(f"{where}: unknown key {key!r} for a {kind} state")
    prompt = _str_list(raw["prompt"], f"{where}: prompt") if "prompt" in raw else ()
    if kind != "action" and not prompt:
        raise DialogueError(f"{where}: a {kind} state needs a prompt")
    fld = raw.get("field", name) if kind in QUESTION_TYPES else None
    if fld is not None and (not isinstance(fld, str) or not _FIELD_RE.match(fld)):
        raise DialogueError(f"{where}: field must be a lower-case name like household_size")
    choices: list[ChoiceSpec] = []
    for i, item in enumerate(raw.get("choices", []) or []):
        cw = f"{where}: choices[{i}]"
        if not isinstance(item, dict):
            raise DialogueError(f"{cw} must be a table with value and label")
        for key in item:
            if key not in ("value", "label", "keywords"):
                raise DialogueError(f"{cw}: unknown key {key!r}")
        value, label, kw = item.get("value"), item.get("label"), item.get("keywords")
        if not isinstance(value, str) or not _FIELD_RE.match(value):
            raise DialogueError(f"{cw}: value must be a lower-case name like housing")
        if not isinstance(label, str) or not label.strip():
            raise DialogueError(f"{cw}: label must be a text")
        if kw is not None and (not isinstance(kw, str) or not kw.strip()):
            raise DialogueError(f'{cw}: keywords must be a text like "rent|landlord"')
        choices.append(ChoiceSpec(value=value, label=label, keywords=kw))
    values = [c.value for c in choices]
    if len(set(values)) != len(values):
        raise DialogueError(f"{where}: two choices have the same value")
    choices_from = raw.get("choices_from")
    if kind == "choice":
        if choices_from is not None and choices_from not in CHOICE_SOURCES:
            raise DialogueError(
                f"{where}: choices_from must be one of {', '.join(sorted(CHOICE_SOURCES))}"
            )
        if bool(choices) == bool(choices_from):
            raise DialogueError(f"{where}: a choice state needs choices or choices_from")
    for key in ("example", "label"):
        if key in raw and (not isinstance(raw[key], str) or not raw[key].strip()):
            raise DialogueError(f"{where}: {key} must be a text")
    lo = hi = None
    if "min" in raw or "max" in raw:
        for key in ("min", "max"):
            val = raw.get(key)
            if val is not None and (isinstance(val, bool) or not isinstance(val, int | float)):
                raise DialogueError(f"{where}: {key} must be a number")
        lo = Decimal(str(raw["min"])) if "min" in raw else None
        hi = Decimal(str(raw["max"])) if "max" in raw else None
        if lo is not None and hi is not None and lo > hi:
            raise DialogueError(f"{where}: min is larger than max")
    bools = {}
    for key in ("letters", "skippable", "unknown_ok", "multilingual"):
        if key in raw and not isinstance(raw[key], bool):
            raise DialogueError(f"{where}: {key} must be true or false")
        bools[key] = bool(raw.get(key, False))
    min_length = _int(raw.get("min_length", 1), f"{where}: min_length")
    max_length = _int(raw.get("max_length", 500), f"{where}: max_length")
    if not 0 <= min_length <= max_length <= MAX_INPUT:
        raise DialogueError(f"{where}: need 0 <= min_length <= max_length <= {MAX_INPUT}")
    fields = _str_list(raw["fields"], f"{where}: fields") if "fields" in raw else ()
    if kind == "summary" and not fields:
        raise DialogueError(f"{where}: a summary needs fields (the states it shows)")
    action = raw.get("action")
    if action is not None and not isinstance(action, str):
        raise DialogueError(f"{where}: action must be a name")
    if kind == "action" and action is None:
        raise DialogueError(f"{where}: an action state needs an action")
    nxt = raw.get("next")
    if nxt is not None and not isinstance(nxt, str):
        raise DialogueError(f"{where}: next must be a state name")
    return StateSpec(
        name=name,
        type=kind,
        prompt=prompt,
        field=fld,
        choices=tuple(choices),
        choices_from=choices_from,
        multilingual=bools["multilingual"],
        next=nxt,
        branches=_state_map(raw.get("branches"), f"{where}: branches"),
        outcomes=_state_map(raw.get("outcomes"), f"{where}: outcomes"),
        action=action,
        example=raw.get("example"),
        label=raw.get("label"),
        min=lo,
        max=hi,
        min_length=min_length,
        max_length=max_length,
        letters=bools["letters"],
        skippable=bools["skippable"],
        unknown_ok=bools["unknown_ok"],
        min_days=_int(raw.get("min_days", -365), f"{where}: min_days"),
        max_days=_int(raw.get("max_days", 3 * 365), f"{where}: max_days"),
        fields=fields,
    )


def _check_links(dialogue: Dialogue, actions: Collection[str], src: str) -> None:
    states = dialogue.states
    if dialogue.start not in states:
        raise DialogueError(f"{src}: start state {dialogue.start!r} does not exist")
    for name, spec in states.items():
        where = f"{src}: state {name!r}"
        if spec.action is not None and spec.action not in actions:
            known = ", ".join(sorted(actions)) or "none"
            raise DialogueError(f"{where}: unknown action {spec.action!r} (known: {known})")
        targets = [("next", spec.next)] if spec.next else []
        targets += [(f"branches.{k}", v) for k, v in spec.branches.items()]
        targets += [(f"outcomes.{k}", v) for k, v in spec.outcomes.items()]
        for key, target in targets:
            if target not in states:
                raise DialogueError(f"{where}: {key} goes to {target!r}, which does not exist")
        if spec.type == "end":
            if spec.next or spec.branches:
                raise DialogueError(f"{where}: an end state has no next or branches")
            continue
        if spec.type == "yesno":
            bad = set(spec.branches) - {"yes", "no"}
            if bad:
                raise DialogueError(f"{where}: branches of a yes/no question are yes and no")
        elif spec.type == "choice" and spec.choices:
            bad = set(spec.branches) - {c.value for c in spec.choices}
            if bad:
                raise DialogueError(f"{where}: branches.{sorted(bad)[0]} is not a choice value")
        elif spec.type == "summary":
            if set(spec.branches) - {"confirm"}:
                raise DialogueError(f"{where}: a summary only branches on confirm")
            for fname in spec.fields:
                target_spec = states.get(fname)
                if target_spec is None or not target_spec.is_question:
                    raise DialogueError(f"{where}: fields lists {fname!r}, which is not a question")
                if not target_spec.label:
                    raise DialogueError(
                        f"{src}: state {fname!r}: needs a label to be shown in the summary"
                    )
        elif spec.branches and spec.type not in ("yesno", "choice"):
            raise DialogueError(f"{where}: only yes/no and choice questions have branches")
        if not spec.next and not (spec.type == "summary" and "confirm" in spec.branches):
            if spec.type == "action" and spec.outcomes:
                continue
            raise DialogueError(f"{where}: needs next (where to go after it)")
    # Every state can be reached, and chains of action states end somewhere.
    seen: set[str] = set()
    todo = [dialogue.start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = states[name]
        todo += [t for t in (spec.next, *spec.branches.values(), *spec.outcomes.values()) if t]
        if spec.type == "summary":
            todo += list(spec.fields)
    unreached = sorted(set(states) - seen)
    if unreached:
        raise DialogueError(f"{src}: state {unreached[0]!r} can never be reached")
    for name, spec in states.items():
        if spec.type != "action":
            continue
        chain, cur = [name], spec
        while cur.type == "action":
            nxts = [t for t in (cur.next, *cur.outcomes.values()) if t]
            nxt = next((t for t in nxts if states[t].type == "action"), None)
            if nxt is None:
                break
            if nxt in chain:
                raise DialogueError(f"{src}: action states loop: {' -> '.join([*chain, nxt])}")
            chain.append(nxt)
            cur = states[nxt]


def parse_dialogue(raw: Mapping[str, Any], *, actions: Collection[str], source: str) -> Dialogue:
    """Check a dialogue table and build it; raises DialogueError naming what is wrong."""
    head = raw.get("dialogue")
    if not isinstance(head, dict):
        raise DialogueError(f"{source}: needs a [dialogue] table with name and start")
    for key in head:
        if key not in ("name", "start", "version"):
            raise DialogueError(f"{source}: [dialogue]: unknown key {key!r}")
    name, start = head.get("name"), head.get("start")
    if not isinstance(name, str) or not isinstance(start, str):
        raise DialogueError(f"{source}: [dialogue] needs name and start (texts)")
    version = _int(head.get("version", 1), f"{source}: [dialogue] version")
    params_raw = raw.get("params", {})
    if not isinstance(params_raw, dict) or not all(
        isinstance(v, str | int) and not isinstance(v, bool) for v in params_raw.values()
    ):
        raise DialogueError(f"{source}: [params] values must be texts or numbers")
    states_raw = raw.get("states")
    if not isinstance(states_raw, dict) or not states_raw:
        raise DialogueError(f"{source}: needs [states.NAME] tables")
    for key in raw:
        if key not in ("dialogue", "params", "states"):
            raise DialogueError(f"{source}: unknown table [{key}]")
    states: dict[str, StateSpec] = {}
    for sname, sraw in states_raw.items():
        if not _FIELD_RE.match(sname):
            raise DialogueError(f"{source}: state name {sname!r} must be lower-case letters")
        states[sname] = _parse_state(sname, sraw, f"{source}: state {sname!r}")
    dialogue = Dialogue(
        name=name,
        start=start,
        version=version,
        states=states,
        params={str(k): str(v) for k, v in params_raw.items()},
        source=source,
    )
    _check_links(dialogue, actions, source)
    return dialogue


def load_dialogue(path: Path, *, actions: Collection[str]) -> Dialogue:
    """Read a dialogue file (TOML) and check it; raises DialogueError with a one-line reason."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise DialogueError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise DialogueError(f"{path.name}: not valid TOML ({exc})") from exc
    return parse_dialogue(raw, actions=actions, source=path.name)


# --------------------------------------------------------------------------- reading answers


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


def _has_phrase(norm: str, options: Iterable[str]) -> str | None:
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
        hit = _has_phrase(norm, phrases(msgid, langs))
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
    hits = {v for v, _l, words in options if _has_phrase(norm, words)}
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
    if _has_phrase(norm, phrases(TOMORROW_WORDS, langs)):
        return today + timedelta(days=1)
    if _has_phrase(norm, phrases(TODAY_WORDS, langs)):
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
    hit = _has_phrase(norm, months)
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
        wd = _has_phrase(norm, weekdays)
        if wd:
            ahead = (weekdays[wd] - today.weekday()) % 7 or 7
            return today + timedelta(days=ahead)
    raise Reask(HINT_DATE)


# --------------------------------------------------------------------------- showing things


def render(template: str, params: Mapping[str, Any]) -> str:
    """Fill {placeholders}; one the caller does not know stays visible instead of failing."""

    class _Keep(dict[str, Any]):
        def __missing__(self, key: str) -> str:
            return "{" + key + "}"

    try:
        return string.Formatter().vformat(template, (), _Keep(params))
    except (ValueError, IndexError, AttributeError):
        return template


def babel_locale(lang: str) -> Locale:
    """The locale used for numbers and dates: US conventions where the language has them."""
    for code in (f"{lang}_US", lang, "en_US"):
        try:
            return Locale.parse(code)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse("en_US")


def format_money(amount: Decimal | str, lang: str) -> str:
    """Dollars as the client reads them; whole amounts without cents ("$1,200")."""
    value = Decimal(amount)
    locale = babel_locale(lang)
    if value == value.to_integral_value():
        return str(
            format_currency(value, "USD", locale=locale, format="¤#,##0", currency_digits=False)
        )
    return str(format_currency(value, "USD", locale=locale))


def format_day(day: date, lang: str) -> str:
    return str(format_date(day, format="medium", locale=babel_locale(lang)))


# --------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """Where a client is in a dialogue and what they answered (stored encrypted)."""

    state: str
    answers: dict[str, Any] = dc_field(default_factory=dict)
    vars: dict[str, Any] = dc_field(default_factory=dict)  # values actions set for the texts
    history: list[str] = dc_field(default_factory=list)  # answered states, for "back"
    return_to: str | None = None  # the summary to go back to after fixing one answer

    def to_data(self) -> dict[str, Any]:
        data = {"answers": self.answers, "vars": self.vars, "return_to": self.return_to}
        return {key: value for key, value in data.items() if value}

    @classmethod
    def from_stored(
        cls, state: str, data: Mapping[str, Any], history: list[str] | None
    ) -> Progress:
        answers = data.get("answers")
        vars_ = data.get("vars")
        ret = data.get("return_to")
        return cls(
            state=state,
            answers=dict(answers) if isinstance(answers, dict) else {},
            vars=dict(vars_) if isinstance(vars_, dict) else {},
            history=[h for h in (history or []) if isinstance(h, str)],
            return_to=ret if isinstance(ret, str) else None,
        )


@dataclass
class Step:
    """What an action sees: the turn, the dialogue, the progress and the answer just given."""

    turn: Turn
    engine: Engine
    progress: Progress
    state: StateSpec
    value: Any = None

    @property
    def lang(self) -> str:
        return self.turn.lang

    def say(self, msgid: str, *, choices: tuple[Choice, ...] = (), **params: object) -> None:
        """Send the client one more message, translated into their language."""
        text = render(
            gettext(self.lang, msgid), {**self.engine.params(self.turn, self.progress), **params}
        )
        self.turn.replies.append(Reply(text=text, choices=choices, urgent=True))


Action = Callable[[Step], Awaitable[str | None]]


class Engine:
    """Runs one dialogue: asks its questions, reads the answers, calls its actions."""

    def __init__(self, dialogue: Dialogue, actions: Mapping[str, Action]) -> None:
        missing = {s.action for s in dialogue.states.values() if s.action} - set(actions)
        if missing:
            raise DialogueError(f"{dialogue.source}: unknown action {sorted(missing)[0]!r}")
        self.dialogue = dialogue
        self.actions = actions

    # -- helpers --

    @staticmethod
    def languages(turn: Turn) -> list[str]:
        """Languages whose words answer a question: the client's and English.

        Not every offered language: one language's "yes" or "two" can be another's "no" or
        "in" (Haitian Creole "de" is two; Spanish "de" is "of").
        """
        return list(dict.fromkeys([turn.lang, "en"]))

    @staticmethod
    def all_languages(turn: Turn) -> list[str]:
        """Every offered language, the client's first (for words that work everywhere)."""
        return list(dict.fromkeys([turn.lang, "en", *available_languages()]))

    def params(self, turn: Turn, progress: Progress) -> dict[str, Any]:
        settings = turn.services.settings
        contact = settings.program_contact.strip()
        return {
            **self.dialogue.params,
            "program": settings.program_name,
            "contact": contact,
            **progress.vars,
        }

    def spec(self, name: str) -> StateSpec | None:
        base = name[: -len(FIX_SUFFIX)] if name.endswith(FIX_SUFFIX) else name
        return self.dialogue.states.get(base)

    def is_finished(self, progress: Progress) -> bool:
        spec = self.spec(progress.state)
        return spec is None or spec.type == "end"

    def _t(self, turn: Turn, progress: Progress, msgid: str, lang: str | None = None) -> str:
        return render(gettext(lang or turn.lang, msgid), self.params(turn, progress))

    def _options(self, turn: Turn, spec: StateSpec) -> list[tuple[str, str, frozenset[str]]]:
        """(value, label in the client's language, words that pick it) for each option."""
        langs = self.languages(turn)
        if spec.type == "yesno":
            return [
                ("yes", gettext(turn.lang, LABEL_YES), phrases(YES_WORDS, langs)),
                ("no", gettext(turn.lang, LABEL_NO), phrases(NO_WORDS, langs)),
            ]
        if spec.type == "summary":
            return [
                ("confirm", gettext(turn.lang, LABEL_CONFIRM), phrases(YES_WORDS, langs)),
                ("fix", gettext(turn.lang, LABEL_FIX), phrases(NO_WORDS, langs)),
            ]
        if spec.choices_from == "languages":
            out = []
            for code in available_languages():
                # Each language named in itself, and also findable by its code and English name.
                words = {normalise(code), normalise(LANGUAGES[code])}
                with contextlib.suppress(UnknownLocaleError, ValueError):
                    words.add(normalise(Locale.parse(code).get_display_name("en") or ""))
                out.append((code, LANGUAGES[code], frozenset(w for w in words if w)))
            return out
        return [
            (
                c.value,
                gettext(turn.lang, c.label),
                phrases(c.keywords, langs) if c.keywords else frozenset(),
            )
            for c in spec.choices
        ]

    def _choices(self, turn: Turn, spec: StateSpec) -> tuple[Choice, ...]:
        if spec.type not in ("choice", "yesno", "summary"):
            return ()
        return tuple(Choice(value=v, label=label) for v, label, _w in self._options(turn, spec))

    def _fix_options(
        self, turn: Turn, progress: Progress, spec: StateSpec
    ) -> list[tuple[str, str, set[str]]]:
        return [
            (name, gettext(turn.lang, self.dialogue.states[name].label or name), set())
            for name in self._shown_fields(progress, spec)
        ]

    def _shown_fields(self, progress: Progress, spec: StateSpec) -> list[str]:
        fields = []
        for name in spec.fields:
            fld = self.dialogue.states[name].field
            if fld is not None and fld in progress.answers:
                fields.append(name)
        return fields

    def show_value(self, turn: Turn, spec: StateSpec, value: Any) -> str:
        """An answer as the client should read it back, in their language."""
        lang = turn.lang
        if value is None:
            empty = VALUE_UNKNOWN if spec.type == "date" else VALUE_NONE
            return gettext(lang, empty)
        if spec.type == "yesno":
            return gettext(lang, LABEL_YES if value else LABEL_NO)
        if spec.type == "choice":
            for v, label, _w in self._options(turn, spec):
                if v == value:
                    return label
            return str(value)
        if spec.type == "money":
            return format_money(Decimal(str(value)), lang)
        if spec.type == "date":
            try:
                return format_day(date.fromisoformat(str(value)), lang)
            except ValueError:
                return str(value)
        text = " ".join(str(value).split())
        return text if len(text) <= 40 else text[:39] + "…"

    # -- asking --

    def prompt(self, turn: Turn, progress: Progress) -> None:
        """(Re)send the current question."""
        name = progress.state
        spec = self.spec(name)
        if spec is None:
            return
        if name.endswith(FIX_SUFFIX):
            options = self._fix_options(turn, progress, spec)
            turn.replies.append(
                Reply(
                    text=self._t(turn, progress, FIX_PROMPT),
                    choices=tuple(Choice(v, label) for v, label, _w in options),
                    urgent=True,
                )
            )
            return
        texts = [self._prompt_text(turn, progress, spec, p) for p in spec.prompt]
        if spec.type == "summary":
            lines = []
            for fname in self._shown_fields(progress, spec):
                fspec = self.dialogue.states[fname]
                assert fspec.field is not None and fspec.label is not None
                shown = self.show_value(turn, fspec, progress.answers.get(fspec.field))
                lines.append(f"{gettext(turn.lang, fspec.label)}: {shown}")
            texts[-1] = "\n".join([texts[-1], *lines]) if texts else "\n".join(lines)
        for i, text in enumerate(texts):
            last = i == len(texts) - 1
            choices = self._choices(turn, spec) if last else ()
            turn.replies.append(Reply(text=text, choices=choices, urgent=True))

    def _prompt_text(self, turn: Turn, progress: Progress, spec: StateSpec, msgid: str) -> str:
        if not spec.multilingual:
            return self._t(turn, progress, msgid)
        shown = dict.fromkeys(
            self._t(turn, progress, msgid, lang) for lang in available_languages()
        )
        return "\n".join(shown)

    def reask(self, turn: Turn, progress: Progress, problem: Reask) -> None:
        """Say the answer did not fit, with an example, and show the options again."""
        spec = self.spec(progress.state)
        if spec is None:
            return
        hint = problem.hint
        if (
            hint in (HINT_TEXT, HINT_CHOICE)
            and spec.example
            and not progress.state.endswith(FIX_SUFFIX)
        ):
            hint = spec.example
        params = {**self.params(turn, progress), **problem.params}
        langs = available_languages() if spec.multilingual else [turn.lang]
        texts = dict.fromkeys(
            f"{gettext(lang, SORRY)} {render(gettext(lang, hint), params)}" for lang in langs
        )
        if progress.state.endswith(FIX_SUFFIX):
            choices = tuple(
                Choice(v, label) for v, label, _w in self._fix_options(turn, progress, spec)
            )
        else:
            choices = self._choices(turn, spec)
        turn.replies.append(Reply(text="\n".join(texts), choices=choices, urgent=True))

    # -- moving --

    async def begin(self, turn: Turn) -> Progress:
        """Start the dialogue from its first state."""
        progress = Progress(state=self.dialogue.start)
        await self._enter(turn, progress, self.dialogue.start)
        return progress

    async def _enter(self, turn: Turn, progress: Progress, name: str) -> None:
        for _ in range(MAX_HOPS):
            spec = self.dialogue.states[name]
            if spec.type != "action":
                progress.state = name
                if spec.type == "end":
                    progress.return_to = None
                if spec.type == "summary":
                    progress.answers = self.live_answers(progress.answers)
                self.prompt(turn, progress)
                return
            assert spec.action is not None
            outcome = await self.actions[spec.action](Step(turn, self, progress, spec))
            target = spec.outcomes.get(outcome) if outcome else None
            nxt = target or spec.next
            if nxt is None:
                raise DialogueError(
                    f"{self.dialogue.source}: state {name!r}: outcome {outcome!r} has no state"
                )
            name = nxt
        raise DialogueError(f"{self.dialogue.source}: more than {MAX_HOPS} action states in a row")

    def parse(self, turn: Turn, progress: Progress, spec: StateSpec) -> Any:
        """The answer to ``spec`` in this message, or Reask."""
        msg = turn.message
        text = msg.text or ""
        if len(text) > MAX_INPUT:
            raise Reask(HINT_TOO_LONG, max=spec.max_length if spec.type == "text" else 100)
        langs = self.languages(turn)
        kind = spec.type
        if progress.state.endswith(FIX_SUFFIX):
            return parse_choice(text, msg.choice, self._fix_options(turn, progress, spec))
        if kind in ("choice", "summary"):
            return parse_choice(text, msg.choice, self._options(turn, spec))
        if kind == "yesno":
            return parse_yesno(text, msg.choice, langs)
        if kind == "text":
            return parse_text(text, spec, langs)
        if kind == "number":
            return parse_count(text, langs, spec.min, spec.max)
        if kind == "money":
            amount = parse_money(text, langs)
            if (spec.min is not None and amount < spec.min) or (
                spec.max is not None and amount > spec.max
            ):
                raise Reask(spec.example or HINT_MONEY)
            return str(amount)
        if kind == "zip":
            return parse_zip(text)
        if kind == "phone":
            return parse_phone(text)
        if kind == "pin":
            return parse_pin(text, spec.example)
        if kind == "date":
            if spec.unknown_ok and _has_phrase(normalise(text), phrases(UNKNOWN_WORDS, langs)):
                return None
            today = turn.services.clock().astimezone(_zone(turn)).date()
            day = parse_date(text, lang=turn.lang, langs=langs, today=today)
            if not spec.min_days <= (day - today).days <= spec.max_days:
                raise Reask(HINT_DATE_RANGE)
            return day.isoformat()
        raise Reask(HINT_TEXT)  # pragma: no cover - load_dialogue only admits known types

    async def handle(
        self, turn: Turn, progress: Progress | None, *, resumed: bool = False
    ) -> Progress:
        """Read this message as the answer to the current question and move on."""
        if progress is None or self.spec(progress.state) is None or self.is_finished(progress):
            return await self.begin(turn)
        spec = self.spec(progress.state)
        assert spec is not None
        try:
            value = self.parse(turn, progress, spec)
        except Reask as problem:
            if resumed:
                turn.say(self._t(turn, progress, RESUME))
                self.prompt(turn, progress)
            else:
                self.reask(turn, progress, problem)
            return progress
        if progress.state.endswith(FIX_SUFFIX):
            progress.history.append(progress.state)
            progress.return_to = spec.name
            await self._enter(turn, progress, str(value))
            return progress
        if spec.type == "summary":
            if value == "fix":
                progress.history.append(spec.name)
                progress.state = spec.name + FIX_SUFFIX
                self.prompt(turn, progress)
                return progress
            progress.history.append(spec.name)
            progress.return_to = None
            target = spec.branches.get("confirm") or spec.next
            assert target is not None
            await self._enter(turn, progress, target)
            return progress
        assert spec.field is not None
        if spec.type != "pin":  # a PIN only reaches the action (which hashes it), never answers
            progress.answers[spec.field] = value
        outcome = None
        if spec.action:
            outcome = await self.actions[spec.action](Step(turn, self, progress, spec, value))
        key = ("yes" if value else "no") if spec.type == "yesno" else str(value)
        if outcome and outcome in spec.outcomes:
            target = spec.outcomes[outcome]
        elif key in spec.branches:
            target = spec.branches[key]
        elif progress.return_to:
            target, progress.return_to = progress.return_to, None
        else:
            assert spec.next is not None
            target = spec.next
        progress.history.append(spec.name)
        del progress.history[:-MAX_HISTORY]
        await self._enter(turn, progress, target)
        return progress

    def back(self, turn: Turn, progress: Progress) -> None:
        """Go back to the previous question and ask it again."""
        while progress.history:
            prev = progress.history.pop()
            if self.spec(prev) is not None:
                progress.state = prev
                break
        self.prompt(turn, progress)

    def live_answers(self, answers: Mapping[str, Any]) -> dict[str, Any]:
        """The answers on the path the client's answers lead through, from the start.

        A changed answer can take the dialogue down another branch ("no court date"
        after a date was given); what was said on the branch no longer taken is dropped.
        """
        live: dict[str, Any] = {}
        name: str | None = self.dialogue.start
        seen: set[str] = set()
        while name is not None and name not in seen:
            seen.add(name)
            spec = self.dialogue.states[name]
            if spec.type in ("end", "summary"):
                break
            if spec.type == "action":
                name = spec.next
                continue
            assert spec.field is not None
            if spec.field not in answers:
                break
            value = answers[spec.field]
            live[spec.field] = value
            key = ("yes" if value else "no") if spec.type == "yesno" else str(value)
            name = spec.branches.get(key, spec.next)
        return live


def _zone(turn: Turn) -> ZoneInfo:
    try:
        return ZoneInfo(turn.client.timezone or turn.services.settings.default_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(turn.services.settings.default_timezone)

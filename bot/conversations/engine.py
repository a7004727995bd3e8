"""Channel-neutral dialogue runner: asks a dialogue's questions and moves through its states.

A step takes the stored progress and one inbound message and gives the next progress and
the replies. The dialogue is a table of states (bot.conversations.dialogue_file); answers
are read by the typed readers of bot.conversations.answers, and one that does not fit gets
a short re-ask with an example, in the client's language. Every client-facing string is an
English msgid translated through the Babel catalogs. Named actions, supplied by the caller,
do the work a table cannot (database checks, creating the case) and may steer the dialogue
by returning an outcome the state maps to a next state.
"""

from __future__ import annotations

import contextlib
import string
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import date
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date
from babel.numbers import format_currency

from bot.conversations.answers import (
    HINT_CHOICE,
    HINT_DATE_RANGE,
    HINT_MONEY,
    HINT_TEXT,
    HINT_TOO_LONG,
    NO_WORDS,
    UNKNOWN_WORDS,
    YES_WORDS,
    Reask,
    has_phrase,
    parse_choice,
    parse_count,
    parse_date,
    parse_money,
    parse_phone,
    parse_pin,
    parse_text,
    parse_yesno,
    parse_zip,
    phrases,
)
from bot.conversations.base import Turn
from bot.conversations.dialogue_file import MAX_INPUT, Dialogue, DialogueError, StateSpec
from bot.core import Choice, Reply
from bot.discreet import is_discreet
from bot.i18n import LANGUAGES, N_, available_languages, gettext
from bot.keywords import normalise

FIX_SUFFIX = ":fix"  # the state a summary moves to when the client wants to correct an answer
MAX_HOPS = 20  # action states chained in one step; more means a loop in the data

SORRY = N_("Sorry, I did not understand.")

LABEL_YES = N_("Yes")
LABEL_NO = N_("No")
LABEL_CONFIRM = N_("Yes, that is right")
LABEL_FIX = N_("Fix something")
FIX_PROMPT = N_("What do you want to fix?")
VALUE_NONE = N_("None")
VALUE_UNKNOWN = N_("Not sure")
RESUME = N_("Welcome back! Let's continue where we left off.")
MAX_HISTORY = 60  # answered states kept for "back"


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

    @staticmethod
    def discreet(turn: Turn) -> bool:
        """The client said this phone is not safe: neutral wording, nothing read back."""
        return is_discreet(turn.client)

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
        discreet = self.discreet(turn)
        return [
            (
                c.value,
                gettext(turn.lang, c.discreet_label if discreet and c.discreet_label else c.label),
                phrases(c.keywords, langs) if c.keywords else frozenset(),
            )
            for c in spec.choices
        ]

    def _choices(self, turn: Turn, spec: StateSpec) -> tuple[Choice, ...]:
        if spec.type not in ("choice", "yesno", "summary"):
            return ()
        options = self._options(turn, spec)
        if spec.type == "choice" and self.discreet(turn):
            # A button's hidden data travels to the phone too ("violence"); its number picks
            # the same option, as on SMS.
            return tuple(Choice(str(i), label) for i, (_v, label, _w) in enumerate(options, 1))
        return tuple(Choice(value=v, label=label) for v, label, _w in options)

    def _fix_options(
        self, turn: Turn, progress: Progress, spec: StateSpec
    ) -> list[tuple[str, str, set[str]]]:
        return [
            (name, gettext(turn.lang, self.dialogue.states[name].label or name), set())
            for name in self._shown_fields(turn, progress, spec)
        ]

    def _shown_fields(self, turn: Turn, progress: Progress, spec: StateSpec) -> list[str]:
        """The summary's answers this client may read: none marked sensitive when discreet."""
        hide = self.discreet(turn)
        fields = []
        for name in spec.fields:
            shown = self.dialogue.states[name]
            if hide and shown.sensitive:
                continue
            if shown.field is not None and shown.field in progress.answers:
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
        texts = [self._prompt_text(turn, progress, spec, p) for p in self.prompts(turn, spec)]
        if spec.type == "summary":
            lines = []
            for fname in self._shown_fields(turn, progress, spec):
                fspec = self.dialogue.states[fname]
                assert fspec.field is not None and fspec.label is not None
                shown = self.show_value(turn, fspec, progress.answers.get(fspec.field))
                lines.append(f"{gettext(turn.lang, fspec.label)}: {shown}")
            texts[-1] = "\n".join([texts[-1], *lines]) if texts else "\n".join(lines)
        for i, text in enumerate(texts):
            last = i == len(texts) - 1
            choices = self._choices(turn, spec) if last else ()
            turn.replies.append(Reply(text=text, choices=choices, urgent=True))

    def prompts(self, turn: Turn, spec: StateSpec) -> tuple[str, ...]:
        """What the state says: its neutral wording to a client in discreet mode, if it has one."""
        if spec.discreet_prompt and self.discreet(turn):
            return spec.discreet_prompt
        return spec.prompt

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
        example = spec.example
        if self.discreet(turn) and spec.discreet_example:
            example = spec.discreet_example
        fixing = progress.state.endswith(FIX_SUFFIX)
        if hint == spec.example or (hint in (HINT_TEXT, HINT_CHOICE) and example and not fixing):
            hint = example or hint
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
            if spec.unknown_ok and has_phrase(normalise(text), phrases(UNKNOWN_WORDS, langs)):
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

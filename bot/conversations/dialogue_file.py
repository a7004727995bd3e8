"""The dialogue file: a table of states in TOML, loaded and checked once at start-up.

A broken file stops the process with one line that names the file, the state and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

QUESTION_TYPES = frozenset(
    {"text", "choice", "number", "money", "date", "yesno", "zip", "phone", "pin"}
)
STATE_TYPES = QUESTION_TYPES | {"summary", "action", "end"}
MAX_INPUT = 2000  # characters of one answer looked at; longer input is re-asked, not parsed


class DialogueError(ValueError):
    """The dialogue file is wrong; the one-line message names the file, state and field."""


@dataclass(frozen=True)
class ChoiceSpec:
    """One option: the value stored, the label shown (an msgid) and words that pick it."""

    value: str
    label: str
    keywords: str | None = None  # an msgid of "|"-separated words
    discreet_label: str | None = None  # the label a client in discreet mode reads instead


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
    # What a client in discreet mode reads instead (neutral words), and whether the answer
    # itself is never read back to such a client.
    discreet_prompt: tuple[str, ...] = ()
    discreet_example: str | None = None
    sensitive: bool = False

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


ChoiceSource = Literal["languages"]  # options a choice state can take from the program
CHOICE_SOURCES = frozenset(get_args(ChoiceSource))
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")


# --------------------------------------------------------------------------- the file's schema
# What a [states.NAME] table may hold, by type. strict: TOML types as written (no "3" for 3,
# no 1 for true); extra keys refused, so a misspelt key is an error, not a silent default.


def _name(value: str) -> str:
    if not _FIELD_RE.match(value):
        raise ValueError("not a lower-case name")
    return value


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("blank")
    return value


def _one_or_more(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Name = Annotated[str, AfterValidator(_name)]
Text = Annotated[str, AfterValidator(_text)]
Texts = Annotated[list[Text], BeforeValidator(_one_or_more), Field(min_length=1)]


class _Table(BaseModel):
    """A TOML table of the file: only the keys named, each of the type written."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ChoiceFile(_Table):
    """One option of a choice state, as written in the file."""

    value: Name
    label: Text
    keywords: Text | None = None
    discreet_label: Text | None = None


class _State(_Table):
    """The keys every state may have; each type below adds its own."""

    type: str
    prompt: Texts | None = None
    next: str | None = None
    branches: dict[str, str] = {}
    outcomes: dict[str, str] = {}
    action: str | None = None
    label: Text | None = None
    discreet_prompt: Texts | None = None


class _Question(_State):
    """A state that asks something and keeps the answer."""

    prompt: Texts
    field: Name | None = None  # where the answer is kept; the state's name when unset
    example: Text | None = None
    discreet_example: Text | None = None
    sensitive: bool = False


class TextState(_Question):
    type: Literal["text"]
    min_length: int = 1
    max_length: int = 500
    letters: bool = False
    skippable: bool = False

    @model_validator(mode="after")
    def _lengths(self) -> TextState:
        if not 0 <= self.min_length <= self.max_length <= MAX_INPUT:
            raise _wrong(f"need 0 <= min_length <= max_length <= {MAX_INPUT}")
        return self


class ChoiceState(_Question):
    type: Literal["choice"]
    choices: list[ChoiceFile] = []
    choices_from: ChoiceSource | None = None
    multilingual: bool = False

    @model_validator(mode="after")
    def _options(self) -> ChoiceState:
        values = [c.value for c in self.choices]
        if len(set(values)) != len(values):
            raise _wrong("two choices have the same value")
        if bool(self.choices) == bool(self.choices_from):
            raise _wrong("a choice state needs choices or choices_from")
        return self


class _Ranged(_Question):
    min: int | float | None = None
    max: int | float | None = None

    @model_validator(mode="after")
    def _range(self) -> _Ranged:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _wrong("min is larger than max")
        return self


class NumberState(_Ranged):
    type: Literal["number"]


class MoneyState(_Ranged):
    type: Literal["money"]


class DateState(_Question):
    type: Literal["date"]
    min_days: int = -365
    max_days: int = 3 * 365
    unknown_ok: bool = False


class YesNoState(_Question):
    type: Literal["yesno"]


class ZipState(_Question):
    type: Literal["zip"]


class PhoneState(_Question):
    type: Literal["phone"]


class PinState(_Question):
    type: Literal["pin"]


class SummaryState(_State):
    type: Literal["summary"]
    prompt: Texts
    fields: Texts  # the question states it reads back


class ActionState(_State):
    type: Literal["action"]
    action: str


class EndState(_State):
    type: Literal["end"]
    prompt: Texts


StateFile = Annotated[
    TextState
    | ChoiceState
    | NumberState
    | MoneyState
    | DateState
    | YesNoState
    | ZipState
    | PhoneState
    | PinState
    | SummaryState
    | ActionState
    | EndState,
    Field(discriminator="type"),
]


class HeadFile(_Table):
    name: str
    start: str
    version: int = 1


class DialogueFile(_Table):
    """A whole dialogue file: [dialogue], [params] and the [states.NAME] tables."""

    dialogue: HeadFile
    params: dict[str, str | int] = {}
    states: Annotated[dict[Name, StateFile], Field(min_length=1)]


def _wrong(message: str) -> PydanticCustomError:
    """A check across keys of one table; its message is shown as it is."""
    return PydanticCustomError("dialogue", message)


# --------------------------------------------------------------------------- one-line errors
# What each key must be, for the message naming it ("min must be a number").
_WHOLE = ("min_length", "max_length", "min_days", "max_days")  # the message shows the value
_FLAGS = ("letters", "skippable", "unknown_ok", "multilingual", "sensitive")
_MUST = {
    "prompt": "must be a text or a list of texts",
    "discreet_prompt": "must be a text or a list of texts",
    "fields": "must be a text or a list of texts",
    "field": "must be a lower-case name like household_size",
    "value": "must be a lower-case name like housing",
    "label": "must be a text",
    "example": "must be a text",
    "discreet_example": "must be a text",
    "discreet_label": "must be a text",
    "keywords": 'must be a text like "rent|landlord"',
    "choices": "must be a list of tables with value and label",
    "choices_from": f"must be one of {', '.join(sorted(CHOICE_SOURCES))}",
    "min": "must be a number",
    "max": "must be a number",
    **dict.fromkeys(_WHOLE, "must be a whole number"),
    **dict.fromkeys(_FLAGS, "must be true or false"),
    "next": "must be a state name",
    "action": "must be a name",
    "branches": 'must be a table of answer = "state"',
    "outcomes": 'must be a table of answer = "state"',
}
# What a state of each type cannot do without.
_NEEDS = {"prompt": "a prompt", "action": "an action", "fields": "fields (the states it shows)"}


def _explain(error: ErrorDetails, source: str) -> str:
    """One pydantic error as one line naming the file, the table and the key."""
    loc, kind = error["loc"], error["type"]
    if not loc:
        return f"{source}: {error['msg']}"
    top = str(loc[0])
    if top == "states" and len(loc) > 1:
        return _explain_state(str(loc[1]), list(loc[2:]), error, source)
    if top == "dialogue":
        if len(loc) == 1:
            return f"{source}: needs a [dialogue] table with name and start"
        if kind == "extra_forbidden":
            return f"{source}: [dialogue]: unknown key {loc[1]!r}"
        if loc[1] == "version":
            return f"{source}: [dialogue] version must be a whole number, not {error['input']!r}"
        return f"{source}: [dialogue] needs name and start (texts)"
    if top == "params":
        return f"{source}: [params] values must be texts or numbers"
    if top == "states":
        return f"{source}: needs [states.NAME] tables"
    return f"{source}: unknown table [{top}]"


def _explain_state(name: str, rest: list[Any], error: ErrorDetails, source: str) -> str:
    where = f"{source}: state {name!r}"
    kind = error["type"]
    if rest == ["[key]"]:
        return f"{source}: state name {name!r} must be lower-case letters"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = error["input"].get("type") if isinstance(error["input"], dict) else None
        expected = ", ".join(sorted(STATE_TYPES))
        return f"{where}: unknown type {tag!r} (expected one of {expected})"
    if not rest:
        return f"{where}: must be a table"
    state_type, path = str(rest[0]), rest[1:]
    if not path:  # a check across keys: its message says it all
        return f"{where}: {error['msg']}"
    inside, key = _shown(path[:-1]), path[-1]
    if kind == "extra_forbidden":
        if inside:
            return f"{where}: {inside}: unknown key {key!r}"
        return f"{where}: unknown key {key!r} for a {state_type} state"
    if kind in ("missing", "too_short") and not inside and key in _NEEDS:
        article = "an" if state_type[0] in "aeiou" else "a"
        return f"{where}: {article} {state_type} state needs {_NEEDS[key]}"
    if path[:1] == ["choices"] and len(path) == 2 and isinstance(path[1], int):
        return f"{where}: choices[{path[1]}] must be a table with value and label"
    return f"{where}: {_must(path, error)}"


def _must(path: list[Any], error: ErrorDetails) -> str:
    """What the innermost key of ``path`` with known words must be: "min must be a number"."""
    for i in range(len(path) - 1, -1, -1):
        key = path[i]
        if isinstance(key, str) and key in _MUST:
            said = f"{_shown(path[: i + 1])} {_MUST[key]}"
            return f"{said}, not {error['input']!r}" if key in _WHOLE else said
    return f"{_shown(path)}: {error['msg']}"


def _shown(path: list[Any]) -> str:
    """A place inside a state as the file's author reads it: choices[0]: value."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f": {part}" if out else str(part))
    return out


# --------------------------------------------------------------------------- building and linking


def _to_spec(name: str, state: _State) -> StateSpec:
    """The runner's view of one checked state; keys its type has not take their defaults."""
    kind = state.type
    bounds = [getattr(state, key, None) for key in ("min", "max")]
    lo, hi = (None if b is None else Decimal(str(b)) for b in bounds)
    return StateSpec(
        name=name,
        type=kind,
        prompt=tuple(state.prompt or ()),
        field=(getattr(state, "field", None) or name) if kind in QUESTION_TYPES else None,
        choices=tuple(
            ChoiceSpec(
                value=c.value, label=c.label, keywords=c.keywords, discreet_label=c.discreet_label
            )
            for c in getattr(state, "choices", ())
        ),
        choices_from=getattr(state, "choices_from", None),
        multilingual=getattr(state, "multilingual", False),
        next=state.next,
        branches=dict(state.branches),
        outcomes=dict(state.outcomes),
        action=state.action,
        example=getattr(state, "example", None),
        label=state.label,
        min=lo,
        max=hi,
        min_length=getattr(state, "min_length", 1),
        max_length=getattr(state, "max_length", 500),
        letters=getattr(state, "letters", False),
        skippable=getattr(state, "skippable", False),
        unknown_ok=getattr(state, "unknown_ok", False),
        min_days=getattr(state, "min_days", -365),
        max_days=getattr(state, "max_days", 3 * 365),
        fields=tuple(getattr(state, "fields", ())),
        discreet_prompt=tuple(state.discreet_prompt or ()),
        discreet_example=getattr(state, "discreet_example", None),
        sensitive=getattr(state, "sensitive", False),
    )


def _check_targets(dialogue: Dialogue, actions: Collection[str]) -> None:
    """Every action is known and every next, branch and outcome names a state."""
    states, src = dialogue.states, dialogue.source
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


def _check_ways_on(dialogue: Dialogue, name: str, spec: StateSpec) -> None:
    """A state's branches fit its type, and every state but an end leads somewhere."""
    states, src = dialogue.states, dialogue.source
    where = f"{src}: state {name!r}"
    if spec.type == "end":
        if spec.next or spec.branches:
            raise DialogueError(f"{where}: an end state has no next or branches")
        return
    if spec.type == "yesno":
        if set(spec.branches) - {"yes", "no"}:
            raise DialogueError(f"{where}: branches of a yes/no question are yes and no")
    elif spec.type == "choice" and spec.choices:
        bad = set(spec.branches) - {c.value for c in spec.choices}
        if bad:
            raise DialogueError(f"{where}: branches.{sorted(bad)[0]} is not a choice value")
    elif spec.type == "summary":
        if set(spec.branches) - {"confirm"}:
            raise DialogueError(f"{where}: a summary only branches on confirm")
        for fname in spec.fields:
            shown = states.get(fname)
            if shown is None or not shown.is_question:
                raise DialogueError(f"{where}: fields lists {fname!r}, which is not a question")
            if not shown.label:
                raise DialogueError(
                    f"{src}: state {fname!r}: needs a label to be shown in the summary"
                )
    elif spec.branches and spec.type != "choice":
        raise DialogueError(f"{where}: only yes/no and choice questions have branches")
    if spec.next or (spec.type == "summary" and "confirm" in spec.branches):
        return
    if spec.type == "action" and spec.outcomes:
        return
    raise DialogueError(f"{where}: needs next (where to go after it)")


def _check_reach(dialogue: Dialogue) -> None:
    """Every state can be reached from the start, and chains of action states end."""
    states, src = dialogue.states, dialogue.source
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
    try:
        checked = DialogueFile.model_validate(raw)
    except ValidationError as exc:
        raise DialogueError(_explain(exc.errors()[0], source)) from None
    dialogue = Dialogue(
        name=checked.dialogue.name,
        start=checked.dialogue.start,
        version=checked.dialogue.version,
        states={name: _to_spec(name, state) for name, state in checked.states.items()},
        params={key: str(value) for key, value in checked.params.items()},
        source=source,
    )
    _check_targets(dialogue, actions)
    for name, spec in dialogue.states.items():
        _check_ways_on(dialogue, name, spec)
    _check_reach(dialogue)
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

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
from typing import Any

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

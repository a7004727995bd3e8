"""The engine's pieces without a database: answer readers, the dialogue loader, eligibility."""

from __future__ import annotations

import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from bot.conversations import eligibility as elig
from bot.conversations.answers import (
    HINT_DATE,
    HINT_MONEY,
    HINT_NUMBER_RANGE,
    Reask,
    parse_choice,
    parse_count,
    parse_date,
    parse_money,
    parse_phone,
    parse_text,
    parse_yesno,
    parse_zip,
)
from bot.conversations.dialogue_file import DialogueError, StateSpec, load_dialogue, parse_dialogue
from bot.conversations.engine import format_money
from bot.conversations.intake import ACTIONS, DEFAULT_INTAKE, spoken_reference, urgency_reasons

LANGS = ["en", "es"]
MONDAY = date(2026, 3, 2)


@pytest.mark.parametrize(
    ("text", "monthly"),
    [
        ("$1,200", "1200.00"),
        ("1200", "1200.00"),
        ("1200/month", "1200.00"),
        ("$1,200 a month", "1200.00"),
        ("1.200,50", "1200.50"),
        ("1,200.50", "1200.50"),
        ("1200,50", "1200.50"),
        ("1.200", "1200.00"),
        ("1.200 al mes", "1200.00"),
        ("$ 950.75", "950.75"),
        ("2k", "2000.00"),
        ("$1.5k", "1500.00"),
        ("300 a week", "1300.00"),
        ("300 por semana", "1300.00"),
        ("600 every 2 weeks", "1300.00"),
        ("600 cada dos semanas", "1300.00"),
        ("24000 a year", "2000.00"),
        ("24,000 al año", "2000.00"),
        ("0", "0.00"),
        ("nothing", "0.00"),
        ("nada", "0.00"),
        ("１２００", "1200.00"),  # full-width digits
    ],
)
def test_money_is_read_as_monthly(text: str, monthly: str) -> None:
    assert parse_money(text, LANGS) == Decimal(monthly)


@pytest.mark.parametrize(
    "text", ["", "a lot", "between 1000 and 2000", "1,20,0", "12.34.5", "$", "x" * 300]
)
def test_money_that_is_not_one_amount_is_reasked(text: str) -> None:
    with pytest.raises(Reask) as info:
        parse_money(text, LANGS)
    assert info.value.hint == HINT_MONEY


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("3/15", "en", date(2026, 3, 15)),
        ("15/3", "es", date(2026, 3, 15)),
        ("3/15", "es", date(2026, 3, 15)),  # 15 cannot be a month: read the other way
        ("3/5", "en", date(2026, 3, 5)),
        ("3/5", "es", date(2026, 5, 3)),
        ("03/15/2027", "en", date(2027, 3, 15)),
        ("15-03-27", "es", date(2027, 3, 15)),
        ("2026-04-01", "es", date(2026, 4, 1)),
        ("March 15", "en", date(2026, 3, 15)),
        ("mar 15, 2026", "en", date(2026, 3, 15)),
        ("15 de marzo", "es", date(2026, 3, 15)),
        ("el 2 de abril", "es", date(2026, 4, 2)),
        ("Jan 10", "en", date(2027, 1, 10)),  # already past: next year
        ("2/20", "en", date(2026, 2, 20)),  # ten days ago: a missed date, kept this year
        ("1/20", "en", date(2027, 1, 20)),
        ("today", "en", MONDAY),
        ("hoy", "es", MONDAY),
        ("tomorrow", "en", date(2026, 3, 3)),
        ("mañana", "es", date(2026, 3, 3)),
        ("friday", "en", date(2026, 3, 6)),
        ("el viernes", "es", date(2026, 3, 6)),
        ("monday", "en", date(2026, 3, 9)),  # today is Monday: the next one
        ("3月15日", "zh", date(2026, 3, 15)),
    ],
)
def test_dates(text: str, lang: str, expected: date) -> None:
    assert parse_date(text, lang=lang, langs=LANGS, today=MONDAY) == expected


@pytest.mark.parametrize("text", ["", "soon", "13/13", "2/30", "31 de febrero", "99", "4/5/6/7"])
def test_not_dates(text: str) -> None:
    with pytest.raises(Reask) as info:
        parse_date(text, lang="en", langs=LANGS, today=MONDAY)
    assert info.value.hint == HINT_DATE


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("3 people", 3), ("we are 4", 4), ("three", 3), ("tres", 3), ("una", 1), ("Uno", 1)],
)
def test_counts(text: str, value: int) -> None:
    assert parse_count(text, LANGS, Decimal(1), Decimal(20)) == value


@pytest.mark.parametrize("text", ["0", "21", "99999999999999999999", "2.5", "3 or 4", "many", ""])
def test_counts_out_of_range_or_unclear(text: str) -> None:
    with pytest.raises(Reask):
        parse_count(text, LANGS, Decimal(1), Decimal(20))


def test_count_range_hint_names_the_range() -> None:
    with pytest.raises(Reask) as info:
        parse_count("45", LANGS, Decimal(1), Decimal(20))
    assert info.value.hint == HINT_NUMBER_RANGE
    assert info.value.params == {"min": Decimal(1), "max": Decimal(20)}


@pytest.mark.parametrize(
    ("text", "zip_code"),
    [("10001", "10001"), ("my zip is 10001-1234", "10001"), ("02134 ", "02134")],
)
def test_zip(text: str, zip_code: str) -> None:
    assert parse_zip(text) == zip_code


@pytest.mark.parametrize("text", ["1000", "100011", "00000", "10001 or 10002", "abc", ""])
def test_not_zip(text: str) -> None:
    with pytest.raises(Reask):
        parse_zip(text)


def test_phone() -> None:
    assert parse_phone("(212) 555-0147") == "+12125550147"
    with pytest.raises(Reask):
        parse_phone("call me")


@pytest.mark.parametrize(
    ("text", "choice", "value"),
    [
        ("yes", None, True),
        ("Sí", None, True),
        ("si claro", None, True),
        ("1", None, True),
        ("no", None, False),
        ("2", None, False),
        ("NOPE", None, False),
        ("", "yes", True),
        ("whatever", "no", False),
    ],
)
def test_yes_no(text: str, choice: str | None, value: bool) -> None:
    assert parse_yesno(text, choice, LANGS) is value


def test_choice_by_number_label_word_and_button() -> None:
    options: list[tuple[str, str, set[str]]] = [
        ("housing", "Housing or eviction", {"LANDLORD", "RENT"}),
        ("family", "Family or domestic violence", {"CUSTODY"}),
        ("other", "Something else", set()),
    ]
    assert parse_choice("2", None, options) == "family"
    assert parse_choice("#2.", None, options) == "family"
    assert parse_choice("housing or EVICTION", None, options) == "housing"
    assert parse_choice("housing", None, options) == "housing"
    assert parse_choice("my landlord is evicting me", None, options) == "housing"
    assert parse_choice("", "other", options) == "other"
    for bad in ("4", "0", "landlord custody", "", "🙂"):
        with pytest.raises(Reask):
            parse_choice(bad, None, options)


def test_text_limits() -> None:
    spec = StateSpec(name="name", type="text", prompt=("?",), field="name", letters=True)
    assert parse_text("  Maria  Lopez \x00", spec, LANGS) == "Maria  Lopez"
    for bad in ("", "   ", "12345", "x" * 501):
        with pytest.raises(Reask):
            parse_text(bad, spec, LANGS)
    skippable = StateSpec(name="o", type="text", prompt=("?",), field="o", skippable=True)
    assert parse_text("SKIP", skippable, LANGS) is None
    assert parse_text("nadie", skippable, LANGS) is None


def test_money_is_shown_in_the_clients_language() -> None:
    assert format_money("1200", "en") == "$1,200"
    assert format_money("1200.5", "es") == "$1,200.50"


def test_spoken_reference() -> None:
    assert spoken_reference("K7M-4PX") == "K 7 M, 4 P X"


def test_urgency() -> None:
    soon = {"has_deadline": True, "deadline": "2026-03-09", "danger": "none"}
    assert urgency_reasons(soon, MONDAY) == ["deadline_soon"]
    later = {"has_deadline": True, "deadline": "2026-03-10", "danger": "none"}
    assert urgency_reasons(later, MONDAY) == []
    missed = {"has_deadline": True, "deadline": "2026-02-27", "danger": "violence"}
    assert urgency_reasons(missed, MONDAY) == ["deadline_soon", "violence"]
    assert urgency_reasons({"has_deadline": False, "danger": "lockout"}, MONDAY) == ["lockout"]


# --------------------------------------------------------------------------- eligibility


def test_guidelines_2025_figures() -> None:
    g = elig.load_guidelines()
    assert g.year == 2025 and "HHS" in g.source and g.thresholds == (125, 200)
    assert elig.guideline_for(g, "contiguous", 1) == 15650
    assert elig.guideline_for(g, "contiguous", 8) == 54150
    assert elig.guideline_for(g, "alaska", 1) == 19550
    assert elig.guideline_for(g, "alaska", 2) == 19550 + 6880
    assert elig.guideline_for(g, "hawaii", 3) == 17990 + 2 * 6330


@pytest.mark.parametrize(
    ("zip_code", "region"),
    [("99501", "alaska"), ("96813", "hawaii"), ("10001", "contiguous"), ("20001", "contiguous")],
)
def test_region_by_zip(zip_code: str, region: str) -> None:
    assert elig.region_for_zip(zip_code) == region


@pytest.mark.parametrize(
    ("household", "monthly", "within", "percent"),
    [
        (1, "1630.20", 125, 125),  # 19,562.40 a year: under the 125% line (19,562.50)
        (1, "1630.21", 200, 125),  # 19,562.52: two cents over it
        (1, "1800", 200, 138),
        (1, "2608.33", 200, 200),
        (1, "2608.34", None, 200),
        (4, "0", 125, 0),
        (3, "1200", 125, 54),
    ],
)
def test_assess_bands(household: int, monthly: str, within: int | None, percent: int) -> None:
    g = elig.load_guidelines()
    result = elig.assess(
        g, household=household, monthly_income=Decimal(monthly), region="contiguous"
    )
    assert result["within_percent"] == within
    assert result["percent_of_guideline"] == percent
    assert result["eligible"] is (within is not None)
    assert result["year"] == 2025 and result["household_size"] == household
    assert result["limits_annual"] == {
        "125": elig.guideline_for(g, "contiguous", household) * 1.25,
        "200": elig.guideline_for(g, "contiguous", household) * 2.0,
    }
    assert "income" not in str(sorted(result)), "the raw income stays in the encrypted intake"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"year": "2025"}, "year"),
        ({"source": ""}, "source"),
        ({"thresholds": []}, "thresholds"),
        ({"regions": {"alaska": {"first_person": 1, "each_additional": 1}}}, "contiguous"),
    ],
)
def test_guidelines_file_errors_name_the_field(change: dict[str, Any], message: str) -> None:
    raw = tomllib.loads(elig.DEFAULT_GUIDELINES.read_text())
    raw.update(change)
    with pytest.raises(elig.GuidelinesError, match=message):
        elig.parse_guidelines(raw)


# --------------------------------------------------------------------------- the dialogue file


def _intake_raw() -> dict[str, Any]:
    return tomllib.loads(DEFAULT_INTAKE.read_text())


def test_the_shipped_intake_loads() -> None:
    dialogue = load_dialogue(DEFAULT_INTAKE, actions=ACTIONS)
    assert dialogue.start == "language"
    kinds = {s.type for s in dialogue.states.values()}
    assert {"text", "choice", "number", "money", "date", "yesno", "zip", "phone"} <= kinds


def _break(path: list[str], value: Any) -> dict[str, Any]:
    raw = _intake_raw()
    node = raw
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return raw


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["states", "zip", "type"], "zipcode", "state 'zip': unknown type 'zipcode'"),
        (["states", "zip", "promt"], "x", "state 'zip': unknown key 'promt'"),
        (["states", "name", "prompt"], _DELETE, "state 'name': a text state needs a prompt"),
        (["states", "name", "next"], "nowhere", "state 'name': next goes to 'nowhere'"),
        (["states", "zip", "action"], "check_moon", "state 'zip': unknown action 'check_moon'"),
        (["states", "household", "min"], "one", "state 'household': min must be a number"),
        (["states", "household", "max"], 0, "state 'household': min is larger than max"),
        (["states", "welcome", "branches"], {"maybe": "name"}, "branches of a yes/no"),
        (["states", "category", "branches"], {"pets": "name"}, "branches.pets is not a choice"),
        (["states", "category", "choices"], [], "needs choices or choices_from"),
        (["states", "summary", "fields"], ["nope"], "fields lists 'nope'"),
        (["states", "name", "field"], "Full Name", "field must be a lower-case name"),
        (["dialogue", "start"], "begin", "start state 'begin' does not exist"),
        (["states", "orphan"], {"type": "end", "prompt": "Hi"}, "state 'orphan' can never be"),
        (["states", "danger", "next"], _DELETE, "state 'danger': needs next"),
        (["states", "not_table"], "oops", "state 'not_table': must be a table"),
        (["states", "name", "max_length"], "50", "state 'name': max_length must be a whole number"),
        (["states", "name", "letters"], 1, "state 'name': letters must be true or false"),
        (["states", "danger", "sensitive"], "yes", "state 'danger': sensitive must be true or"),
        (["states", "danger", "discreet_prompt"], 3, "state 'danger': discreet_prompt must be"),
        (["states", "danger", "discreet_example"], 3, "state 'danger': discreet_example must"),
        (["states", "done", "sensitive"], True, "state 'done': unknown key 'sensitive'"),
        (["states", "name", "prompt"], ["Name?", " "], "state 'name': prompt must be a text"),
        (["states", "name", "min_days"], 3, "state 'name': unknown key 'min_days' for a text"),
        (["states", "create", "action"], _DELETE, "state 'create': an action state needs an"),
        (["states", "category", "choices_from"], "zips", "state 'category': choices_from must"),
        (
            ["states", "category", "choices"],
            [{"value": "a", "label": "A", "kw": "x"}],
            "state 'category': choices[0]: unknown key 'kw'",
        ),
        (
            ["states", "category", "choices"],
            [{"value": "a", "label": "A", "discreet_label": 2}],
            "state 'category': choices[0]: discreet_label must be a text",
        ),
        (
            ["states", "category", "choices"],
            [{"value": "A b", "label": "A"}],
            "state 'category': choices[0]: value must be a lower-case name",
        ),
        (["states", "Bad"], {"type": "end", "prompt": "x"}, "state name 'Bad' must be lower-case"),
        (["dialogue", "author"], "me", "[dialogue]: unknown key 'author'"),
        (["params", "on"], True, "[params] values must be texts or numbers"),
        (["extra"], {}, "unknown table [extra]"),
    ],
)
def test_dialogue_errors_are_one_line_and_name_the_state(
    path: list[str], value: Any, message: str
) -> None:
    raw = _break(path, value)
    with pytest.raises(DialogueError) as info:
        parse_dialogue(raw, actions=ACTIONS, source="intake.toml")
    text = str(info.value)
    assert message in text, text
    assert text.startswith("intake.toml: ") and "\n" not in text


def test_action_states_that_loop_are_refused() -> None:
    raw = _intake_raw()
    raw["states"]["create"]["next"] = "again"
    raw["states"]["again"] = {
        "type": "action",
        "action": "create_case",
        "next": "create",
        "outcomes": {"created": "done"},
    }
    with pytest.raises(DialogueError, match="action states loop"):
        parse_dialogue(raw, actions=ACTIONS, source="intake.toml")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "intake.toml"
    broken.write_text("[dialogue\nname=")
    with pytest.raises(DialogueError, match=r"intake\.toml: not valid TOML"):
        load_dialogue(broken, actions=ACTIONS)
    with pytest.raises(DialogueError, match="file not found"):
        load_dialogue(tmp_path / "nope.toml", actions=ACTIONS)

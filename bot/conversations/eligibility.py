"""Income eligibility against the HHS poverty guidelines: pure functions over a data table."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_GUIDELINES = Path(__file__).resolve().parent.parent / "data" / "poverty_guidelines.toml"

# ZIP prefixes outside the 48 contiguous states that HHS gives their own figures.
_ALASKA_PREFIXES = ("995", "996", "997", "998", "999")
_HAWAII_PREFIXES = ("967", "968")


class GuidelinesError(ValueError):
    """The guidelines file is missing or malformed; the message names the file and the field."""


@dataclass(frozen=True)
class Region:
    """One HHS table: the figure for one person and for each additional person (annual USD)."""

    key: str
    label: str
    first_person: int
    each_additional: int


@dataclass(frozen=True)
class Guidelines:
    """One year's poverty guidelines, with where they come from."""

    year: int
    source: str
    thresholds: tuple[int, ...]  # percentages, ascending
    regions: dict[str, Region]


def _positive_int(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw <= 0:
        raise GuidelinesError(f"{where} must be a positive whole number, not {raw!r}")
    return raw


def parse_guidelines(raw: dict[str, Any], name: str = "poverty guidelines") -> Guidelines:
    """Check and convert the TOML table; raises GuidelinesError naming the bad field."""
    year = _positive_int(raw.get("year"), f"{name}: year")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise GuidelinesError(f"{name}: source must say where the figures come from")
    thresholds_raw = raw.get("thresholds")
    if not isinstance(thresholds_raw, list) or not thresholds_raw:
        raise GuidelinesError(f"{name}: thresholds must be a list of percentages like [125, 200]")
    thresholds = tuple(sorted(_positive_int(t, f"{name}: thresholds") for t in thresholds_raw))
    regions_raw = raw.get("regions")
    if not isinstance(regions_raw, dict) or "contiguous" not in regions_raw:
        raise GuidelinesError(f"{name}: needs a [regions.contiguous] table")
    regions: dict[str, Region] = {}
    for key, table in regions_raw.items():
        if not isinstance(table, dict):
            raise GuidelinesError(f"{name}: regions.{key} must be a table")
        regions[key] = Region(
            key=key,
            label=str(table.get("label", key)),
            first_person=_positive_int(
                table.get("first_person"), f"{name}: regions.{key}.first_person"
            ),
            each_additional=_positive_int(
                table.get("each_additional"), f"{name}: regions.{key}.each_additional"
            ),
        )
    return Guidelines(year=year, source=source.strip(), thresholds=thresholds, regions=regions)


@cache
def load_guidelines(path: Path = DEFAULT_GUIDELINES) -> Guidelines:
    """Read and check the guidelines file (cached per path)."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError as exc:
        raise GuidelinesError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise GuidelinesError(f"{path}: not valid TOML ({exc})") from exc
    return parse_guidelines(raw, str(path.name))


def region_for_zip(zip_code: str | None) -> str:
    """Which HHS table applies: Alaska and Hawaii by ZIP prefix, else the contiguous states."""
    z = (zip_code or "").strip()
    if z.startswith(_ALASKA_PREFIXES):
        return "alaska"
    if z.startswith(_HAWAII_PREFIXES):
        return "hawaii"
    return "contiguous"


def guideline_for(guidelines: Guidelines, region: str, household: int) -> int:
    """The annual guideline for a household of this size in this region."""
    if household < 1:
        raise ValueError("household size must be at least 1")
    table = guidelines.regions.get(region) or guidelines.regions["contiguous"]
    return table.first_person + table.each_additional * (household - 1)


def _money(value: Decimal) -> float:
    return float(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def assess(
    guidelines: Guidelines, *, household: int, monthly_income: Decimal, region: str
) -> dict[str, Any]:
    """Where a household's income falls against each threshold, with every figure used.

    The result is stored on the case as it is (JSON), so a later reader can see which
    year's table, which region and which limits the decision was made with. The income
    itself is not in it: it stays in the encrypted intake answers.
    """
    region_key = region if region in guidelines.regions else "contiguous"
    base = Decimal(guideline_for(guidelines, region_key, household))
    annual = Decimal(monthly_income) * 12
    limits = {str(pct): _money(base * pct / 100) for pct in guidelines.thresholds}
    within = next((pct for pct in guidelines.thresholds if annual <= base * pct / 100), None)
    percent = int((annual * 100 / base).to_integral_value(rounding=ROUND_HALF_UP))
    return {
        "year": guidelines.year,
        "source": guidelines.source,
        "region": region_key,
        "household_size": household,
        "guideline_annual": int(base),
        "limits_annual": limits,
        "percent_of_guideline": percent,
        "within_percent": within,  # the lowest threshold the income is at or below; None: above all
        "eligible": within is not None,
    }

"""Quiet hours in the client's wall time: across midnight, through DST gaps and overlaps,
and off when the setting is empty."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.quiet_hours import hold_until
from tests.conftest import make_settings

NY = "America/New_York"
NIGHT = (time(21), time(8))  # the default 21:00-08:00, crossing midnight


def ny(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(NY), fold=fold).astimezone(UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("local", "release"),
    [
        ((2026, 3, 2, 20, 59), None),  # before the window
        ((2026, 3, 2, 21, 0), (2026, 3, 3, 8, 0)),  # its first minute
        ((2026, 3, 2, 23, 30), (2026, 3, 3, 8, 0)),  # before midnight: tomorrow morning
        ((2026, 3, 3, 0, 0), (2026, 3, 3, 8, 0)),  # after midnight: this morning
        ((2026, 3, 3, 7, 59), (2026, 3, 3, 8, 0)),
        ((2026, 3, 3, 8, 0), None),  # the window's end is outside it
        ((2026, 3, 3, 12, 0), None),
    ],
)
def test_a_window_crossing_midnight(
    local: tuple[int, ...], release: tuple[int, ...] | None
) -> None:
    got = hold_until(ny(*local), NY, NIGHT)
    assert got == (ny(*release) if release else None)


def test_a_window_within_one_day() -> None:
    lunch = (time(12), time(13))
    assert hold_until(ny(2026, 3, 3, 12, 30), NY, lunch) == ny(2026, 3, 3, 13, 0)
    assert hold_until(ny(2026, 3, 3, 11, 59), NY, lunch) is None
    assert hold_until(ny(2026, 3, 3, 13, 0), NY, lunch) is None


def test_the_window_is_the_clients_wall_time() -> None:
    now = datetime(2026, 3, 3, 4, 0, tzinfo=UTC)  # 23:00 in New York, 20:00 in Los Angeles
    assert hold_until(now, NY, NIGHT) == ny(2026, 3, 3, 8, 0)
    assert hold_until(now, "America/Los_Angeles", NIGHT) is None


def test_the_dst_gap_night_still_ends_at_eight() -> None:
    # 2026-03-08: New York skips 02:00-03:00. The night is an hour shorter, and ends at 08:00
    # daylight time (12:00 UTC), not 08:00 standard time.
    start = ny(2026, 3, 7, 23, 0)
    assert hold_until(start, NY, NIGHT) == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)
    assert hold_until(start, NY, NIGHT) - start == timedelta(hours=8)
    after_jump = datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # 03:30 EDT
    assert hold_until(after_jump, NY, NIGHT) == datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def test_a_window_ending_inside_the_gap_ends_just_after_it() -> None:
    # 02:30 does not exist on 2026-03-08: the end moves forward with the clocks (03:30 EDT),
    # never back into the night nor a day later.
    window = (time(21), time(2, 30))
    now = ny(2026, 3, 8, 1, 45)  # 06:45 UTC, standard time
    got = hold_until(now, NY, window)
    assert got == datetime(2026, 3, 8, 7, 30, tzinfo=UTC)
    assert got is not None and timedelta(0) < got - now < timedelta(hours=1)
    assert hold_until(datetime(2026, 3, 8, 7, 30, tzinfo=UTC), NY, window) is None


def test_the_dst_overlap_night_ends_at_eight_standard_time() -> None:
    # 2026-11-01: New York repeats 01:00-02:00. The night is an hour longer.
    start = ny(2026, 10, 31, 23, 0)  # EDT
    assert hold_until(start, NY, NIGHT) == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)
    assert hold_until(start, NY, NIGHT) - start == timedelta(hours=10)
    for fold in (0, 1):  # both 01:30s are inside the window
        assert hold_until(ny(2026, 11, 1, 1, 30, fold=fold), NY, NIGHT) == datetime(
            2026, 11, 1, 13, 0, tzinfo=UTC
        )


def test_a_window_ending_inside_the_overlap() -> None:
    window = (time(22), time(1, 30))
    # The first 01:10 (daylight time) waits for the first 01:30.
    assert hold_until(ny(2026, 11, 1, 1, 10), NY, window) == ny(2026, 11, 1, 1, 30)
    # The first 01:45 is outside the window; so is the second one (standard time)...
    assert hold_until(ny(2026, 11, 1, 1, 45), NY, window) is None
    # ...but the second 01:10 is inside it again, and waits for the second 01:30, not a day.
    second = ny(2026, 11, 1, 1, 10, fold=1)
    assert hold_until(second, NY, window) == ny(2026, 11, 1, 1, 30, fold=1)
    assert hold_until(second, NY, window) - second == timedelta(minutes=20)


@given(
    st.datetimes(
        min_value=datetime(2026, 1, 1),
        max_value=datetime(2027, 12, 31),
        timezones=st.just(UTC),
    ),
    st.sampled_from([NY, "Europe/London", "Australia/Lord_Howe", "America/Los_Angeles"]),
)
def test_a_held_message_is_released_outside_the_window_within_a_night(
    now: datetime, tz: str
) -> None:
    got = hold_until(now, tz, NIGHT)
    if got is None:
        return
    assert now < got <= now + timedelta(hours=12)
    assert hold_until(got, tz, NIGHT) is None


def test_an_empty_setting_turns_quiet_hours_off(tmp_path: Path) -> None:
    off = make_settings("sqlite:///unused.db", tmp_path, QUIET_HOURS="")
    assert off.quiet_hours is None
    assert hold_until(ny(2026, 3, 3, 2, 0), NY, off.quiet_hours) is None
    spaces = make_settings("sqlite:///unused.db", tmp_path, QUIET_HOURS="   ")
    assert spaces.quiet_hours is None
    default = make_settings("sqlite:///unused.db", tmp_path, QUIET_HOURS="21:00-08:00")
    assert default.quiet_hours == NIGHT
    # A bad value is refused when the settings are built, not when a message is held.
    with pytest.raises(ValidationError, match="QUIET_HOURS"):
        make_settings("sqlite:///unused.db", tmp_path, QUIET_HOURS="late")

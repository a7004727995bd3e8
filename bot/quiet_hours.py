"""Quiet hours in the client's local time: when a non-urgent message may go out."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def _in_window(local: time, start: time, end: time) -> bool:
    if start <= end:
        return start <= local < end
    return local >= start or local < end  # the window crosses midnight (21:00-08:00)


def hold_until(now: datetime, tz: str, window: tuple[time, time] | None) -> datetime | None:
    """None when a message may go now; else the aware UTC moment quiet hours end.

    Works on wall-clock time in ``tz``, so a DST change (a missing or repeated hour) moves
    the end of the window with the clocks rather than breaking it.
    """
    if window is None:
        return None
    start, end = window
    zone = ZoneInfo(tz)
    local = now.astimezone(zone)
    if not _in_window(local.timetz().replace(tzinfo=None), start, end):
        return None
    day = local.date()
    if start > end and local.time() >= start:
        day += timedelta(days=1)
    candidate = datetime.combine(day, end, tzinfo=zone)
    # A wall time that does not exist (DST gap) normalises forward through UTC.
    result = candidate.astimezone(UTC)
    if result <= now:
        # A wall time that comes twice (DST overlap): its second occurrence may be ahead.
        second = candidate.replace(fold=1).astimezone(UTC)
        result = second if second > now else (candidate + timedelta(days=1)).astimezone(UTC)
    return result

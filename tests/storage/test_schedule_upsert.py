"""upsert_scheduled, the one way to plan a timed row: replace, move if pending, or keep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import select

from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import ScheduledItem, ScheduleStatus

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
KEY = "someday:1"


async def _plan(services: Services, **kw: Any) -> int | None:
    async with transaction(services.sessions) as session:
        return await repo.upsert_scheduled(session, kind="someday", unique_key=KEY, now=NOW, **kw)


async def _rows(services: Services) -> list[ScheduledItem]:
    async with services.sessions() as session:
        return list((await session.exec(select(ScheduledItem))).all())


async def _claim(services: Services) -> datetime:
    lease = NOW + timedelta(hours=5)
    async with transaction(services.sessions) as session:
        ids = await repo.claim_scheduled(
            session, now=NOW + timedelta(hours=4), lease_until=lease, kinds=["someday"]
        )
    assert len(ids) == 1
    return lease


async def test_replace_plans_the_row_afresh_and_drops_a_claim(services: Services) -> None:
    first = await _plan(services, due_at=NOW + timedelta(hours=1), payload={"n": 1})
    await _claim(services)
    again = await _plan(services, due_at=NOW + timedelta(days=1), payload={"n": 2}, client_id=None)
    (row,) = await _rows(services)
    assert first == again == row.id
    assert (row.status, row.due_at, row.lease_until, row.done_at, row.payload) == (
        ScheduleStatus.PENDING,
        NOW + timedelta(days=1),
        None,
        None,
        {"n": 2},
    )


async def test_a_row_planned_as_skipped_is_done_now(services: Services) -> None:
    await _plan(services, due_at=NOW - timedelta(hours=1), status=ScheduleStatus.SKIPPED)
    (row,) = await _rows(services)
    assert (row.status, row.done_at) == (ScheduleStatus.SKIPPED, NOW)


async def test_keep_leaves_an_existing_row_whatever_its_status(services: Services) -> None:
    assert await _plan(services, due_at=NOW, if_exists="keep") is not None
    lease = await _claim(services)
    async with transaction(services.sessions) as session:
        (row_id,) = [r.id for r in (await session.exec(select(ScheduledItem))).all()]
        assert row_id is not None
        assert await repo.take_claimed(session, item_id=row_id, lease_until=lease, now=NOW)
    assert await _plan(services, due_at=NOW + timedelta(days=3), if_exists="keep") is None
    (row,) = await _rows(services)
    assert (row.status, row.due_at) == (ScheduleStatus.DONE, NOW)


async def test_move_if_pending_moves_only_a_row_not_yet_taken(services: Services) -> None:
    await _plan(services, due_at=NOW + timedelta(hours=1), if_exists="move_if_pending")
    moved = await _plan(services, due_at=NOW + timedelta(hours=3), if_exists="move_if_pending")
    (row,) = await _rows(services)
    assert (moved, row.due_at) == (row.id, NOW + timedelta(hours=3))
    await _claim(services)
    assert (
        await _plan(services, due_at=NOW + timedelta(days=9), if_exists="move_if_pending") is None
    )
    (row,) = await _rows(services)
    assert (row.status, row.due_at) == (ScheduleStatus.CLAIMED, NOW + timedelta(hours=3))


async def test_a_row_the_session_holds_reads_as_planned(services: Services) -> None:
    await _plan(services, due_at=NOW + timedelta(hours=1))
    async with transaction(services.sessions) as session:
        held = (await session.exec(select(ScheduledItem))).one()
        await repo.upsert_scheduled(
            session, kind="someday", unique_key=KEY, due_at=NOW + timedelta(hours=5), now=NOW
        )
        assert held.due_at == NOW + timedelta(hours=5)

"""Timed work: one way to plan a scheduled row, claiming due rows, settling them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import (
    ScheduledItem,
    ScheduleStatus,
)
from storage.types import utcnow


async def schedule_item(
    session: AsyncSession,
    *,
    kind: str,
    unique_key: str,
    due_at: datetime,
    client_id: int | None = None,
    case_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> ScheduledItem:
    """Create the one row with this key, or move it back to pending at ``due_at``."""
    item = (
        await session.exec(select(ScheduledItem).where(ScheduledItem.unique_key == unique_key))
    ).first()
    if item is None:
        item = ScheduledItem(kind=kind, unique_key=unique_key, due_at=due_at)
    item.due_at = due_at
    item.status = ScheduleStatus.PENDING
    item.client_id = client_id
    item.case_id = case_id
    item.payload = payload
    item.lease_until = None
    item.done_at = None
    session.add(item)
    await session.flush()
    return item


async def cancel_scheduled_item(
    session: AsyncSession, *, unique_key: str, at: datetime | None = None
) -> bool:
    """Withdraw a pending row; True when there was one."""
    item = (
        await session.exec(
            select(ScheduledItem).where(
                ScheduledItem.unique_key == unique_key,
                ScheduledItem.status == ScheduleStatus.PENDING,
            )
        )
    ).first()
    if item is None:
        return False
    item.status = ScheduleStatus.CANCELLED
    item.done_at = at or utcnow()
    session.add(item)
    await session.flush()
    return True


async def scheduled_for_appointment(
    session: AsyncSession, *, appointment_id: int, kind: str
) -> Sequence[ScheduledItem]:
    """An appointment's timed rows of one kind, earliest due first."""
    rows = await session.exec(
        select(ScheduledItem)
        .where(ScheduledItem.appointment_id == appointment_id, ScheduledItem.kind == kind)
        .order_by(col(ScheduledItem.due_at), col(ScheduledItem.id))
    )
    return rows.all()


def _claimable(now: datetime, kinds: Sequence[str]) -> Any:
    """Due pending rows, and claimed rows whose claimer let the lease run out (it died)."""
    return and_(
        col(ScheduledItem.kind).in_(list(kinds)),
        or_(
            and_(
                col(ScheduledItem.status) == ScheduleStatus.PENDING,
                col(ScheduledItem.due_at) <= now,
            ),
            and_(
                col(ScheduledItem.status) == ScheduleStatus.CLAIMED,
                col(ScheduledItem.lease_until) < now,
            ),
        ),
    )


async def claim_scheduled(
    session: AsyncSession,
    *,
    now: datetime,
    lease_until: datetime,
    kinds: Sequence[str],
    limit: int = 100,
) -> list[int]:
    """Claim up to ``limit`` due rows of these kinds, earliest first; returns their ids.

    One UPDATE whose subquery takes ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
    schedulers claim side by side without sharing a row; on SQLite the UPDATE holds the single
    write lock and its WHERE is re-checked, so a row already claimed is never claimed again.
    The lease is the claim's token: only its holder can settle the row (``take_claimed``).
    """
    if not kinds:
        return []
    due = (
        select(ScheduledItem.id)
        .where(_claimable(now, kinds))
        .order_by(col(ScheduledItem.due_at), col(ScheduledItem.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.exec(
        update(ScheduledItem)
        .where(col(ScheduledItem.id).in_(due.scalar_subquery()), _claimable(now, kinds))
        .values(status=ScheduleStatus.CLAIMED, lease_until=lease_until)
        .returning(col(ScheduledItem.id), col(ScheduledItem.due_at))
    )
    return [row[0] for row in sorted(result.all(), key=lambda r: (r[1], r[0]))]


async def take_claimed(
    session: AsyncSession, *, item_id: int, lease_until: datetime, now: datetime
) -> ScheduledItem | None:
    """Settle a claimed row as done, if the claim is still ours; the row is then locked.

    Run first in the transaction that does the row's work: a row moved, cancelled or
    re-claimed since (its lease changed) is left alone and None comes back.
    """
    result = await session.exec(
        update(ScheduledItem)
        .where(
            col(ScheduledItem.id) == item_id,
            col(ScheduledItem.status) == ScheduleStatus.CLAIMED,
            col(ScheduledItem.lease_until) == lease_until,
        )
        .values(status=ScheduleStatus.DONE, done_at=now, lease_until=None)
    )
    if result.rowcount != 1:
        return None
    return await session.get(ScheduledItem, item_id, populate_existing=True)


async def retry_claimed_later(
    session: AsyncSession,
    *,
    item_id: int,
    lease_until: datetime,
    retry_at: datetime,
    max_attempts: int,
    now: datetime,
) -> bool:
    """After a failed attempt: keep the claim until ``retry_at``, or give up. True if given up."""
    item = await session.get(ScheduledItem, item_id, populate_existing=True)
    if item is None or item.status != ScheduleStatus.CLAIMED or item.lease_until != lease_until:
        return False
    attempts = int((item.payload or {}).get("attempts", 0)) + 1
    item.payload = {**(item.payload or {}), "attempts": attempts}
    gave_up = attempts >= max_attempts
    if gave_up:
        item.status, item.done_at, item.lease_until = ScheduleStatus.SKIPPED, now, None
    else:
        item.lease_until = retry_at  # an expired lease is how a row is picked up again
    session.add(item)
    await session.flush()
    return gave_up


async def schedule_once(
    session: AsyncSession,
    *,
    kind: str,
    unique_key: str,
    due_at: datetime,
    client_id: int | None = None,
    case_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Create the row with this key unless it exists (whatever its status); True if created.

    INSERT ... ON CONFLICT DO NOTHING, so two processes planning the same row make one.
    """
    values = {
        "kind": kind,
        "unique_key": unique_key,
        "due_at": due_at,
        "status": ScheduleStatus.PENDING,
        "client_id": client_id,
        "case_id": case_id,
        "payload": payload,
        "created_at": utcnow(),
    }
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(ScheduledItem).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(ScheduledItem).values(**values)
    result = await session.exec(stmt.on_conflict_do_nothing(index_elements=["unique_key"]))
    return bool(result.rowcount)


async def latest_prompt(
    session: AsyncSession, *, client_id: int, kinds: Sequence[str], since: datetime
) -> ScheduledItem | None:
    """The client's most recently sent reminder or check-in (a row done since ``since``)."""
    return await session.scalar(
        select(ScheduledItem)
        .where(
            ScheduledItem.client_id == client_id,
            col(ScheduledItem.kind).in_(list(kinds)),
            ScheduledItem.status == ScheduleStatus.DONE,
            col(ScheduledItem.done_at) >= since,
        )
        .order_by(col(ScheduledItem.done_at).desc(), col(ScheduledItem.id).desc())
        .limit(1)
    )

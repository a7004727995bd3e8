"""Timed work: one way to plan a scheduled row, claiming due rows, settling them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import (
    ScheduledItem,
    ScheduleStatus,
)
from storage.types import utcnow

IfExists = Literal["replace", "move_if_pending", "keep"]


async def upsert_scheduled(
    session: AsyncSession,
    *,
    kind: str,
    unique_key: str,
    due_at: datetime,
    now: datetime,
    if_exists: IfExists = "replace",
    status: str = ScheduleStatus.PENDING,
    client_id: int | None = None,
    case_id: int | None = None,
    appointment_id: int | None = None,
    broadcast_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> int | None:
    """The one way to plan a timed row: create the row with this key, or, when it exists,

    - ``replace``: plan it afresh (every field, ``status`` again, any claim on it dropped);
    - ``move_if_pending``: move its due time, if it has not been taken yet;
    - ``keep``: leave it as it is, whatever its status.

    One INSERT ... ON CONFLICT, so two processes planning the same key make one row. A row
    planned in another status than pending (a reminder whose time has passed) is done at
    ``now``. Returns the row's id, or None when an existing row was left alone.
    """
    values: dict[str, Any] = {
        "kind": kind,
        "unique_key": unique_key,
        "due_at": due_at,
        "status": status,
        "client_id": client_id,
        "case_id": case_id,
        "appointment_id": appointment_id,
        "broadcast_id": broadcast_id,
        "payload": payload,
        "lease_until": None,
        "done_at": None if status == ScheduleStatus.PENDING else now,
        "created_at": now,
    }
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(ScheduledItem).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(ScheduledItem).values(**values)
    if if_exists == "keep":
        stmt = stmt.on_conflict_do_nothing(index_elements=["unique_key"])
    elif if_exists == "move_if_pending":
        stmt = stmt.on_conflict_do_update(
            index_elements=["unique_key"],
            set_={"due_at": due_at},
            where=col(ScheduledItem.status) == ScheduleStatus.PENDING,
        )
    else:
        planned = {k: v for k, v in values.items() if k not in ("unique_key", "created_at")}
        stmt = stmt.on_conflict_do_update(index_elements=["unique_key"], set_=planned)
    result = await session.exec(stmt.returning(col(ScheduledItem.id)))
    row_id: int | None = result.scalar_one_or_none()
    if row_id is not None:
        # The statement bypassed the session: a copy of the row it holds would be stale.
        held = session.sync_session.identity_map.get(
            session.sync_session.identity_key(ScheduledItem, row_id)
        )
        if held is not None:
            await session.refresh(held)
    return row_id


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


def settle_scheduled_item(
    session: AsyncSession, *, item: ScheduledItem, status: str, now: datetime
) -> None:
    """Record how a taken row's work ended: done, skipped or cancelled, at ``now``."""
    item.status = status
    item.done_at = now
    session.add(item)


def withdraw_scheduled_item(session: AsyncSession, *, item: ScheduledItem, now: datetime) -> bool:
    """Cancel a row not yet run; a claimed one loses its claim and is not run. True if withdrawn."""
    if item.status not in (ScheduleStatus.PENDING, ScheduleStatus.CLAIMED):
        return False
    item.status, item.done_at, item.lease_until = ScheduleStatus.CANCELLED, now, None
    session.add(item)
    return True

"""Staff members' dialogue state (the /broadcast wizard): one row per staff member.

Loaded and saved in the transaction of the message that moves the dialogue on, so any
process can take the next message and a rolled-back message moves nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import StaffDialogue


class StaleDialogue(RuntimeError):
    """Another process moved this dialogue on first; the message's transaction rolls back."""


async def load_staff_dialogue(session: AsyncSession, *, staff_id: int) -> StaffDialogue | None:
    """The staff member's dialogue, locked for this transaction on PostgreSQL.

    The lock makes a second message of the same staff member, taken by another process at
    the same moment, wait and then read what this one saved.
    """
    stmt = (
        select(StaffDialogue)
        .where(StaffDialogue.staff_id == staff_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.exec(stmt)).first()


async def start_staff_dialogue(
    session: AsyncSession, *, staff_id: int, flow: str, data: dict[str, Any], at: datetime
) -> StaffDialogue:
    """Begin a dialogue, replacing whatever dialogue the staff member was in."""
    row = await load_staff_dialogue(session, staff_id=staff_id)
    if row is None:
        row = StaffDialogue(staff_id=staff_id, flow=flow, data=data, version=1, updated_at=at)
        session.add(row)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            raise StaleDialogue("dialogue was started by another process") from exc
        return row
    row.flow, row.data, row.version, row.updated_at = flow, data, row.version + 1, at
    session.add(row)
    await session.flush()
    return row


async def save_staff_dialogue(
    session: AsyncSession,
    *,
    staff_id: int,
    data: dict[str, Any],
    expected_version: int,
    at: datetime,
) -> int:
    """Write the dialogue's new state if nobody else did since it was read; the new version.

    Raises StaleDialogue when another process got there first.
    """
    result = await session.exec(
        update(StaffDialogue)
        .where(
            col(StaffDialogue.staff_id) == staff_id,
            col(StaffDialogue.version) == expected_version,
        )
        .values(data=data, version=expected_version + 1, updated_at=at)
    )
    if result.rowcount != 1:
        raise StaleDialogue("dialogue was moved on by another process")
    return expected_version + 1


async def end_staff_dialogue(
    session: AsyncSession, *, staff_id: int, version: int | None = None
) -> bool:
    """Forget the staff member's dialogue (only at ``version``, if given); True if it was."""
    stmt = delete(StaffDialogue).where(col(StaffDialogue.staff_id) == staff_id)
    if version is not None:
        stmt = stmt.where(col(StaffDialogue.version) == version)
    result = await session.exec(stmt)
    return bool(result.rowcount == 1)


async def take_staff_dialogue(
    session: AsyncSession, *, staff_id: int, version: int
) -> StaffDialogue | None:
    """Take (delete) the dialogue if it is at ``version``; None when it is not, or no more.

    The row lock waits for a transaction still moving this dialogue on (SQLite has a single
    writer anyway), so a state saved by a transaction that then rolls back is never taken,
    and of two processes taking the same state one gets it.
    """
    row = await load_staff_dialogue(session, staff_id=staff_id)
    if row is None or row.version != version:
        return None
    await session.delete(row)
    await session.flush()
    return row


async def staff_dialogues_of_flow(
    session: AsyncSession, *, flow: str, updated_before: datetime
) -> list[StaffDialogue]:
    """Every dialogue of one kind left untouched since ``updated_before`` (a handful at most)."""
    rows = await session.exec(
        select(StaffDialogue).where(
            StaffDialogue.flow == flow, col(StaffDialogue.updated_at) < updated_before
        )
    )
    return list(rows.all())


async def forget_staff_dialogues(session: AsyncSession, *, before: datetime) -> int:
    """Forget every dialogue untouched since ``before`` (abandoned); returns how many."""
    result = await session.exec(delete(StaffDialogue).where(col(StaffDialogue.updated_at) < before))
    return int(result.rowcount or 0)

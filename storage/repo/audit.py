"""The audit log: one row per sensitive action, and counting refused ones."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import (
    AuditLog,
)


async def audit(
    session: AsyncSession,
    *,
    actor_kind: str,
    action: str,
    actor_id: int | None = None,
    case_id: int | None = None,
    client_id: int | None = None,
    allowed: bool = True,
    detail: str | None = None,
) -> None:
    """Write one audit row. ``detail`` must never hold client content."""
    session.add(
        AuditLog(
            actor_kind=actor_kind,
            actor_id=actor_id,
            action=action,
            case_id=case_id,
            client_id=client_id,
            allowed=allowed,
            detail=detail[:256] if detail else None,
        )
    )
    await session.flush()


async def failed_attempts(
    session: AsyncSession, *, client_id: int, action: str, since: datetime
) -> int:
    """How many refused ``action`` audit rows this client has since ``since``."""
    total = await session.scalar(
        select(func.count())
        .select_from(AuditLog)
        .where(
            AuditLog.client_id == client_id,
            AuditLog.action == action,
            col(AuditLog.allowed).is_(False),
            col(AuditLog.at) >= since,
        )
    )
    return int(total or 0)

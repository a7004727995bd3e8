"""What several processes on one database share: leases (one holder at a time) and send rates."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, literal, update
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Lease, SendRate

# A shared next slot further ahead than this is not a backlog but a clock that stepped back
# (or another time base): it starts again from now rather than stalling every sender.
RATE_HORIZON = 10.0


def _insert(session: AsyncSession, model: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


async def take_lease(
    session: AsyncSession, *, name: str, holder: str, now: datetime, ttl: timedelta
) -> bool:
    """Take or renew the lease ``name`` until ``now + ttl``; True when ``holder`` holds it.

    One INSERT ... ON CONFLICT: it succeeds when nobody holds the lease, when ``holder``
    already does (a renewal), or when the last holder let it expire.
    """
    stmt = _insert(session, Lease).values(name=name, holder=holder, expires_at=now + ttl)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
        where=(col(Lease.holder) == holder) | (col(Lease.expires_at) <= now),
    )
    result = await session.exec(stmt.returning(col(Lease.holder)))
    taken: str | None = result.scalar_one_or_none()
    return taken == holder


async def release_lease(session: AsyncSession, *, name: str, holder: str, now: datetime) -> None:
    """Give the lease up now (if ``holder`` has it), so another process takes it at once."""
    await session.exec(
        update(Lease)
        .where(col(Lease.name) == name, col(Lease.holder) == holder)
        .values(expires_at=now)
    )


async def lease_holder(session: AsyncSession, *, name: str, now: datetime) -> str | None:
    """Who holds the lease ``name`` now; None when nobody does."""
    lease = await session.get(Lease, name, populate_existing=True)
    if lease is None or lease.expires_at <= now:
        return None
    return lease.holder


async def claim_send_slots(
    session: AsyncSession, *, channel: str, sender: str, count: int, rate: float, now: float
) -> float:
    """Claim ``count`` consecutive send slots of ``sender`` at ``rate`` per second.

    Returns the first slot's time (seconds since the epoch); slot ``i`` is at
    ``first + i / rate``. One atomic statement moves the shared next free slot to
    ``max(next_at, now) + count / rate``, so any number of processes claiming together
    get slots that never overlap: together they send at ``rate`` at most.
    """
    span = count / rate
    stmt = _insert(session, SendRate).values(channel=channel, sender=sender, next_at=now + span)
    current = col(SendRate.next_at)
    start = case(
        ((current < now) | (current > now + RATE_HORIZON), literal(now)),
        else_=current,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["channel", "sender"], set_={"next_at": start + span}
    )
    result = await session.exec(stmt.returning(col(SendRate.next_at)))
    end: float = result.scalar_one()
    return end - span

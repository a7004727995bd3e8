"""Broadcasts: bulk sends to many clients, and the queries behind segments and reports."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import func, insert, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import Vault
from storage.models import (
    Appointment,
    Broadcast,
    Case,
    Client,
    Direction,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    ScheduledItem,
    ScheduleKind,
    ScheduleStatus,
)
from storage.repo.clients import (
    client_key,
)
from storage.repo.common import chunked
from storage.repo.outbox import (
    existing_dedupe_keys,
)
from storage.repo.schedule import upsert_scheduled
from storage.types import utcnow


@dataclass(frozen=True)
class BulkMessage:
    """One message of a bulk send; ``text`` None records the client as skipped (``reason``)."""

    client: Client
    channel: str
    identity_id: int | None
    dedupe_key: str
    text: str | None
    reason: str | None = None


async def enqueue_many(
    session: AsyncSession,
    *,
    vault: Vault,
    messages: Sequence[BulkMessage],
    kind: str,
    priority: int,
    due_at: datetime,
    broadcast_id: int | None = None,
    now: datetime | None = None,
) -> int:
    """Queue many client messages in a few statements (a broadcast); returns rows written.

    The bulk twin of ``enqueue``: same rows, same encryption, but one INSERT per table per
    call, because a row-at-a-time loop takes tens of seconds for ten thousand clients. A
    message whose dedupe key already exists is left alone, so re-running after a crash
    writes only what is missing. Erased clients and ``text=None`` become skipped rows with
    no body: the reason is kept, nothing is sent, and a re-run does not try them again.
    ``now`` stamps the rows' creation (the real time when not given).
    """
    taken = await existing_dedupe_keys(session, keys=[m.dedupe_key for m in messages])
    todo: list[BulkMessage] = []
    seen: set[str] = set()
    clients: set[int] = set()
    for m in messages:
        if m.dedupe_key in taken or m.dedupe_key in seen:
            continue
        if m.client.id in clients:
            raise ValueError("enqueue_many takes one message per client per call")
        seen.add(m.dedupe_key)
        clients.add(m.client.id)  # type: ignore[arg-type]
        todo.append(m)
    if not todo:
        return 0
    now = now or utcnow()
    message_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for m in todo:
        assert m.client.id is not None
        reason = m.reason
        body_enc: bytes | None = None
        if m.text is not None and m.client.wrapped_key is None:
            reason = "client erased"
        elif m.text is not None:
            body_enc = client_key(vault, m.client).seal_text(m.text, "message.body")
        skipped = body_enc is None
        message_rows.append(
            {
                "direction": Direction.OUT,
                "channel": m.channel,
                "client_id": m.client.id,
                "body_enc": body_enc,
                "status": MessageStatus.CANCELLED if skipped else MessageStatus.QUEUED,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        outbox_rows.append(
            {
                "dedupe_key": m.dedupe_key,
                "channel": m.channel,
                "client_id": m.client.id,
                "kind": kind,
                "priority": priority,
                "urgent": False,
                "due_at": due_at,
                "status": OutboxStatus.SKIPPED if skipped else OutboxStatus.PENDING,
                "attempts": 0,
                "last_error": (reason or "skipped")[:200] if skipped else None,
                "broadcast_id": broadcast_id,
                "extra": {"identity_id": m.identity_id} if m.identity_id is not None else None,
                "created_at": now,
            }
        )
    # Matched back by client (one message per client per call): asking the database to keep
    # the parameters' order makes SQLite insert row by row, ten times slower.
    inserted = await session.exec(
        insert(Message).returning(col(Message.id), col(Message.client_id)), params=message_rows
    )
    by_client = {client_id: message_id for message_id, client_id in inserted.all()}
    for row in outbox_rows:
        row["message_id"] = by_client[row["client_id"]]
    await session.exec(insert(OutboxItem), params=outbox_rows)
    return len(todo)


class BroadcastStatus(StrEnum):
    """Where a broadcast stands (``Broadcast.status``)."""

    DRAFT = "draft"
    SCHEDULED = "scheduled"
    SENDING = "sending"
    DONE = "done"
    CANCELLED = "cancelled"


class SegmentClient(NamedTuple):
    """What choosing a broadcast's recipients needs of a client, and nothing they wrote."""

    id: int
    language: str | None
    erased: bool
    discreet: bool


def broadcast_schedule_key(broadcast_id: int) -> str:
    """The key of a broadcast's one scheduled row."""
    return f"{ScheduleKind.BROADCAST}:{broadcast_id}"


async def get_broadcast(session: AsyncSession, *, broadcast_id: int) -> Broadcast | None:
    return await session.get(Broadcast, broadcast_id)


async def create_broadcast(
    session: AsyncSession,
    *,
    segment: str,
    texts: dict[str, str],
    fallback_language: str | None,
    discreet_safe: bool,
    staff_id: int | None,
    now: datetime,
) -> Broadcast:
    """A new broadcast, a draft until it is scheduled or sent."""
    row = Broadcast(
        segment=segment,
        texts=texts,
        fallback_language=fallback_language,
        discreet_safe=discreet_safe,
        created_by_staff_id=staff_id,
        status=BroadcastStatus.DRAFT,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def schedule_broadcast(
    session: AsyncSession, *, broadcast: Broadcast, at: datetime, now: datetime
) -> None:
    """Send it at ``at``: one scheduled row per broadcast, moved (not added) on a new time."""
    assert broadcast.id is not None
    broadcast.status = BroadcastStatus.SCHEDULED
    broadcast.scheduled_at = at
    session.add(broadcast)
    await upsert_scheduled(
        session,
        kind=ScheduleKind.BROADCAST,
        unique_key=broadcast_schedule_key(broadcast.id),
        due_at=at,
        now=now,
        if_exists="move_if_pending",
        broadcast_id=broadcast.id,
    )
    await session.flush()


async def start_sending_broadcast(
    session: AsyncSession, *, broadcast: Broadcast, recipients: int
) -> None:
    """Its outbox rows are being written now, for ``recipients`` clients."""
    broadcast.status = BroadcastStatus.SENDING
    broadcast.recipients = recipients
    session.add(broadcast)
    await session.flush()


async def finish_broadcast(session: AsyncSession, *, broadcast: Broadcast, now: datetime) -> None:
    """A sending broadcast with nothing left pending is done."""
    broadcast.status = BroadcastStatus.DONE
    broadcast.finished_at = now
    session.add(broadcast)
    await session.flush()


async def cancel_broadcast(session: AsyncSession, *, broadcast: Broadcast, now: datetime) -> int:
    """Cancel a broadcast's pending rows and its scheduled send; returns the rows cancelled.

    One UPDATE guarded by ``status = pending``: a row a dispatcher has already claimed is not
    touched (it is on its way), and a cancelled row is never claimed. What was sent stays sent.
    """
    broadcast_id = broadcast.id
    assert broadcast_id is not None
    pending = (
        OutboxItem.broadcast_id == broadcast_id,
        OutboxItem.status == OutboxStatus.PENDING,
    )
    pending_ids = select(OutboxItem.id).where(*pending).scalar_subquery()
    msg_ids = select(OutboxItem.message_id).where(*pending).scalar_subquery()
    await session.exec(
        update(Message)
        .where(col(Message.id).in_(msg_ids), col(Message.status) == MessageStatus.QUEUED)
        .values(status=MessageStatus.CANCELLED, updated_at=now)
    )
    result = await session.exec(
        update(OutboxItem)
        .where(col(OutboxItem.id).in_(pending_ids), col(OutboxItem.status) == OutboxStatus.PENDING)
        .values(status=OutboxStatus.CANCELLED, last_error="broadcast cancelled")
    )
    await session.exec(
        update(ScheduledItem)
        .where(
            col(ScheduledItem.unique_key) == broadcast_schedule_key(broadcast_id),
            col(ScheduledItem.status) == ScheduleStatus.PENDING,
        )
        .values(status=ScheduleStatus.CANCELLED, done_at=now)
    )
    if broadcast.status not in (BroadcastStatus.DONE, BroadcastStatus.CANCELLED):
        broadcast.status = BroadcastStatus.CANCELLED
        broadcast.finished_at = now
        session.add(broadcast)
    await session.flush()
    return int(result.rowcount or 0)


async def broadcast_outcome_counts(
    session: AsyncSession, *, broadcast_id: int
) -> list[tuple[str, str | None, str, int]]:
    """A broadcast's outbox rows counted by (row status, last error, message status)."""
    rows = await session.exec(
        select(OutboxItem.status, OutboxItem.last_error, Message.status, func.count())
        .join(Message, col(Message.id) == col(OutboxItem.message_id))
        .where(OutboxItem.broadcast_id == broadcast_id)
        .group_by(col(OutboxItem.status), col(OutboxItem.last_error), col(Message.status))
    )
    return [(status, error, msg_status, int(n)) for status, error, msg_status, n in rows.all()]


def _open_case_terms(category: str | None, status: str | None, staff_id: int | None) -> list[Any]:
    conds: list[Any] = [col(Case.closed).is_(False)]
    if category is not None:
        conds.append(col(Case.category) == category)
    if status is not None:
        # Statuses are free text typed by people: compare without regard to case.
        conds.append(func.lower(col(Case.status)) == status.lower())
    if staff_id is not None:
        conds.append(col(Case.assigned_staff_id) == staff_id)
    return conds


async def clients_with_open_case(
    session: AsyncSession,
    *,
    category: str | None = None,
    status: str | None = None,
    staff_id: int | None = None,
) -> set[int]:
    """Clients with an open case of this category, status and attorney (None: any)."""
    rows = await session.exec(
        select(Case.client_id).where(*_open_case_terms(category, status, staff_id)).distinct()
    )
    return set(rows.all())


async def open_case_appointments_between(
    session: AsyncSession,
    *,
    start: datetime,
    end: datetime,
    category: str | None = None,
    status: str | None = None,
    staff_id: int | None = None,
) -> list[tuple[int, datetime, str]]:
    """(client id, start, client's time zone) of scheduled appointments in [start, end) on
    open cases of this category, status and attorney (None: any)."""
    rows = await session.exec(
        select(Case.client_id, Appointment.starts_at, Client.timezone)
        .join(Appointment, col(Appointment.case_id) == col(Case.id))
        .join(Client, col(Client.id) == col(Case.client_id))
        .where(
            *_open_case_terms(category, status, staff_id),
            col(Appointment.status) == "scheduled",
            col(Appointment.starts_at) >= start,
            col(Appointment.starts_at) < end,
        )
    )
    return [(client_id, starts_at, tz) for client_id, starts_at, tz in rows.all()]


async def segment_clients(
    session: AsyncSession,
    *,
    language: str | None = None,
    unset_language_matches: bool = False,
    client_ids: Iterable[int] | None = None,
) -> list[SegmentClient]:
    """Clients speaking ``language`` (None: any), among ``client_ids`` (None: all).

    ``unset_language_matches``: a client with no language counts as speaking it (it is the
    default one).
    """
    base = select(Client.id, Client.language, Client.wrapped_key, Client.discreet)
    if language is not None:
        lang_cond: Any = col(Client.language) == language
        if unset_language_matches:
            lang_cond = lang_cond | col(Client.language).is_(None) | (col(Client.language) == "")
        base = base.where(lang_cond)
    rows: list[Any] = []
    if client_ids is None:
        rows = list((await session.exec(base.order_by(col(Client.id)))).all())
    else:
        for chunk in chunked(client_ids):
            rows += (await session.exec(base.where(col(Client.id).in_(chunk)))).all()
    return [
        SegmentClient(cid, lang, wrapped is None, bool(discreet))
        for cid, lang, wrapped, discreet in rows
    ]


async def clients_with_discreet_open_case(
    session: AsyncSession, *, client_ids: Iterable[int]
) -> set[int]:
    """Which of these clients have an open case marked discreet."""
    out: set[int] = set()
    for chunk in chunked(client_ids):
        rows = await session.exec(
            select(Case.client_id)
            .where(col(Case.discreet), col(Case.closed).is_(False), col(Case.client_id).in_(chunk))
            .distinct()
        )
        out.update(rows.all())
    return out

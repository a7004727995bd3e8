"""The outbox: queueing a message, claiming due rows, and settling each row's outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, tuple_, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import Vault
from storage.models import (
    Channel,
    Client,
    Direction,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    Priority,
    Staff,
)
from storage.repo.clients import (
    client_key,
    reply_identity,
)
from storage.types import utcnow


async def enqueue(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    text: str,
    kind: str = "reply",
    priority: int = Priority.REPLY,
    channel: str | None = None,
    dedupe_key: str | None = None,
    due_at: datetime | None = None,
    urgent: bool = False,
    case_id: int | None = None,
    broadcast_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> OutboxItem | None:
    """Queue one message to a client, in the caller's transaction. The one road out.

    Returns None when the client cannot be reached (erased, or no identity). A client who
    has opted out still gets a row, which the dispatcher skips: the decision is taken at
    send time, so an opt-out that arrives after queueing still holds.
    """
    assert client.id is not None
    if client.wrapped_key is None:
        return None
    if dedupe_key is not None:
        existing = (
            await session.exec(select(OutboxItem).where(OutboxItem.dedupe_key == dedupe_key))
        ).first()
        if existing is not None:
            return existing
    ident = await reply_identity(session, client_id=client.id, channel=channel)
    if ident is None:
        return None
    key = client_key(vault, client)
    msg = Message(
        direction=Direction.OUT,
        channel=ident.channel,
        client_id=client.id,
        case_id=case_id,
        body_enc=key.seal_text(text, "message.body"),
        status=MessageStatus.QUEUED,
    )
    session.add(msg)
    await session.flush()
    item = OutboxItem(
        message_id=msg.id,  # type: ignore[arg-type]
        dedupe_key=dedupe_key,
        channel=ident.channel,
        client_id=client.id,
        kind=kind,
        priority=priority,
        urgent=urgent,
        due_at=due_at or utcnow(),
        broadcast_id=broadcast_id,
        extra={"identity_id": ident.id, **(extra or {})},
    )
    session.add(item)
    await session.flush()
    return item


async def enqueue_staff(
    session: AsyncSession,
    *,
    vault: Vault,
    text: str,
    staff: Staff | None = None,
    chat_id: int | None = None,
    client: Client | None = None,
    case_id: int | None = None,
    kind: str = "staff",
    dedupe_key: str | None = None,
    extra: dict[str, Any] | None = None,
    due_at: datetime | None = None,
) -> OutboxItem | None:
    """Queue a Telegram message to a staff member or the staff group.

    When ``client`` is given the text is encrypted under that client's key (it may hold
    what they wrote), so erasing the client erases it here too.
    """
    if dedupe_key is not None:
        existing = (
            await session.exec(select(OutboxItem).where(OutboxItem.dedupe_key == dedupe_key))
        ).first()
        if existing is not None:
            return existing
    if staff is None and chat_id is None:
        raise ValueError("enqueue_staff needs staff or chat_id")
    if client is not None:
        if client.wrapped_key is None:
            return None
        body_enc = client_key(vault, client).seal_text(text, "message.body")
    else:
        body_enc = vault.seal_text(text, "message.body")
    msg = Message(
        direction=Direction.OUT,
        channel=Channel.TELEGRAM,
        client_id=client.id if client else None,
        staff_id=staff.id if staff else None,
        case_id=case_id,
        body_enc=body_enc,
        status=MessageStatus.QUEUED,
    )
    session.add(msg)
    await session.flush()
    item = OutboxItem(
        message_id=msg.id,  # type: ignore[arg-type]
        dedupe_key=dedupe_key,
        channel=Channel.TELEGRAM,
        staff_id=staff.id if staff else None,
        client_id=client.id if client else None,
        kind=kind,
        priority=Priority.STAFF,
        urgent=True,  # staff are not held by client quiet hours
        due_at=due_at or utcnow(),
        extra={"chat_id": chat_id, **(extra or {})} if chat_id is not None else (extra or None),
    )
    session.add(item)
    await session.flush()
    return item


async def existing_dedupe_keys(session: AsyncSession, *, keys: Sequence[str]) -> set[str]:
    """Which of these outbox dedupe keys are already taken."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        rows = await session.exec(
            select(OutboxItem.dedupe_key).where(col(OutboxItem.dedupe_key).in_(chunk))
        )
        found.update(k for k in rows.all() if k is not None)
    return found


CLAIM_WINDOW = 200  # rows at the head of the outbox that a claim looks at first


async def claim_outbox(
    session: AsyncSession,
    *,
    channel: str,
    limit: int,
    now: datetime,
    claimer: str,
    lease_until: datetime,
) -> list[OutboxItem]:
    """Claim up to ``limit`` due rows of one channel: replies first, then oldest due.

    At most one row per client, and none while another of theirs is in flight: a client's
    messages go out one at a time, in order, whichever dispatcher sends them.
    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL lets several dispatchers claim side by side; on
    SQLite the UPDATE takes the database's single write lock, so one claimer runs at a time.
    ``claimer`` names the claim on the rows (for people reading the table).
    """
    other = aliased(OutboxItem)
    same_client = (
        col(other.client_id) == col(OutboxItem.client_id),
        col(other.channel) == col(OutboxItem.channel),
    )
    # Two checks, each an equality on (client_id, status) that ix_outbox_client_status
    # answers directly; as one OR, PostgreSQL without fresh statistics read every pending row.
    in_flight = select(other.id).where(*same_client, other.status == OutboxStatus.SENDING)
    earlier = select(other.id).where(
        *same_client,
        other.status == OutboxStatus.PENDING,
        col(other.due_at) <= now,
        tuple_(col(other.priority), col(other.due_at), col(other.id))
        < tuple_(col(OutboxItem.priority), col(OutboxItem.due_at), col(OutboxItem.id)),
    )
    ahead = or_(in_flight.exists(), earlier.exists())
    due_now = (
        OutboxItem.status == OutboxStatus.PENDING,
        OutboxItem.channel == channel,
        col(OutboxItem.due_at) <= now,
    )
    order = (col(OutboxItem.priority), col(OutboxItem.due_at), col(OutboxItem.id))
    # The "ahead" check runs only on the head of the queue, fetched first as plain ids: run on
    # every due row (10,000 after a broadcast) it made each claim take a second or more on
    # PostgreSQL, whatever the planner's statistics. Only if the head's rows are all held
    # back behind their clients' earlier ones, with more rows beyond it, is the whole queue
    # searched.
    window = max(4 * limit, CLAIM_WINDOW)
    head = list(
        await session.exec(select(OutboxItem.id).where(*due_now).order_by(*order).limit(window))
    )
    if not head:
        return []
    ids: list[int] = []
    scopes: list[Any] = [col(OutboxItem.id).in_(head)]
    if len(head) == window:
        scopes.append(None)
    for scope in scopes:
        due = (
            select(OutboxItem.id)
            .where(*due_now, ~ahead)
            .order_by(*order)
            .limit(limit - len(ids))
            .with_for_update(skip_locked=True)
        )
        if scope is not None:
            due = due.where(scope)
        result = await session.exec(
            update(OutboxItem)
            .where(col(OutboxItem.id).in_(due.scalar_subquery()))
            .values(status=OutboxStatus.SENDING, claimed_by=claimer, lease_until=lease_until)
            .returning(col(OutboxItem.id))
        )
        ids.extend(result.scalars().all())
        if len(ids) >= limit:
            break
    if not ids:
        return []
    rows = await session.exec(
        select(OutboxItem)
        .where(col(OutboxItem.id).in_(ids))
        .order_by(*order)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def outbox_item_for_message(session: AsyncSession, *, message_id: int) -> OutboxItem | None:
    """The outbox row that sent this message."""
    return await session.scalar(select(OutboxItem).where(OutboxItem.message_id == message_id))


async def expired_sending(
    session: AsyncSession, *, now: datetime, limit: int = 200
) -> Sequence[OutboxItem]:
    """Rows a dispatcher claimed and never settled (it died): locked, so one process decides."""
    rows = await session.exec(
        select(OutboxItem)
        .where(
            OutboxItem.status == OutboxStatus.SENDING,
            col(OutboxItem.lease_until) < now,
        )
        .order_by(col(OutboxItem.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return rows.all()


async def delay_later_rows(session: AsyncSession, *, item: OutboxItem, until: datetime) -> None:
    """Hold a client's later pending rows behind one being retried, so they arrive in order."""
    if item.client_id is None:
        return
    await session.exec(
        update(OutboxItem)
        .where(
            col(OutboxItem.client_id) == item.client_id,
            col(OutboxItem.channel) == item.channel,
            col(OutboxItem.status) == OutboxStatus.PENDING,
            col(OutboxItem.id) > item.id,
            col(OutboxItem.priority) >= item.priority,
            col(OutboxItem.due_at) < until,
        )
        .values(due_at=until)
    )


async def pending_due_count(
    session: AsyncSession, *, channels: Sequence[str] | None, now: datetime
) -> int:
    """How many rows of these channels (None: of every channel) are due and waiting."""
    if channels is not None and not channels:
        return 0
    query = (
        select(func.count())
        .select_from(OutboxItem)
        .where(OutboxItem.status == OutboxStatus.PENDING, col(OutboxItem.due_at) <= now)
    )
    if channels is not None:
        query = query.where(col(OutboxItem.channel).in_(list(channels)))
    return int(await session.scalar(query) or 0)


async def review_count(session: AsyncSession) -> int:
    """How many rows wait for a person to resend or drop them (the review backlog)."""
    total = await session.scalar(
        select(func.count()).select_from(OutboxItem).where(OutboxItem.status == OutboxStatus.REVIEW)
    )
    return int(total or 0)


async def outbox_items_of_kind(
    session: AsyncSession, *, kind: str, since: datetime, limit: int = 500
) -> Sequence[tuple[OutboxItem, Message]]:
    """Recent outbox rows of one kind, with their messages (to follow their delivery)."""
    rows = await session.exec(
        select(OutboxItem, Message)
        .join(Message, col(Message.id) == col(OutboxItem.message_id))
        .where(OutboxItem.kind == kind, col(OutboxItem.created_at) >= since)
        .order_by(col(OutboxItem.id))
        .limit(limit)
    )
    return rows.all()


# Row-status transitions of a claimed row and its message. They change the objects the
# dispatcher holds (already in the session, often preloaded) rather than issuing statements,
# so a batch of outcomes is written in one flush.


def mark_outbox_sending(
    session: AsyncSession, *, item: OutboxItem, msg: Message, now: datetime
) -> None:
    """A claimed row is about to be handed to its channel: one more attempt."""
    msg.status = MessageStatus.SENDING
    msg.attempts += 1
    msg.updated_at = now
    item.attempts += 1
    session.add(msg)
    session.add(item)


def hold_outbox_until(session: AsyncSession, *, item: OutboxItem, until: datetime) -> None:
    """Give a claimed row back, due again at ``until`` (quiet hours): not an attempt."""
    item.status = OutboxStatus.PENDING
    item.due_at = until
    item.claimed_by = None
    item.lease_until = None
    session.add(item)


def skip_outbox(
    session: AsyncSession,
    *,
    item: OutboxItem,
    msg: Message | None,
    reason: str,
    now: datetime,
) -> None:
    """Nothing will be sent for this row (opted out, erased, no address); ``reason`` says why."""
    item.status = OutboxStatus.SKIPPED
    item.lease_until = None
    item.last_error = reason
    session.add(item)
    if msg is not None:
        msg.status = MessageStatus.CANCELLED
        msg.updated_at = now
        session.add(msg)


def fail_outbox_unprepared(session: AsyncSession, *, item: OutboxItem, reason: str) -> None:
    """A claimed row that could not even be prepared (unreadable key, bad time zone)."""
    item.status = OutboxStatus.FAILED
    item.lease_until = None
    item.last_error = reason
    session.add(item)


def mark_outbox_sent(
    session: AsyncSession,
    *,
    item: OutboxItem,
    msg: Message,
    provider_id: str | None,
    now: datetime,
) -> None:
    """The channel took the message; ``provider_id`` is how its delivery reports name it."""
    item.status = OutboxStatus.SENT
    item.sent_at = now
    item.lease_until = None
    item.last_error = None
    msg.provider_id = provider_id
    msg.status = MessageStatus.SENT
    msg.error_code = None
    msg.updated_at = now
    session.add(item)
    session.add(msg)


def _record_send_error(
    item: OutboxItem, msg: Message, *, error: str, error_code: str, now: datetime
) -> None:
    item.lease_until = None
    item.last_error = error[:200]
    msg.error_code = error_code[:32]
    msg.updated_at = now


async def retry_outbox_at(
    session: AsyncSession,
    *,
    item: OutboxItem,
    msg: Message,
    due_at: datetime,
    error: str,
    error_code: str,
    now: datetime,
) -> None:
    """A send failed for now: pending again at ``due_at``, the client's later rows behind it."""
    _record_send_error(item, msg, error=error, error_code=error_code, now=now)
    item.status = OutboxStatus.PENDING
    item.due_at = due_at
    item.claimed_by = None
    msg.status = MessageStatus.QUEUED
    await delay_later_rows(session, item=item, until=due_at)
    session.add(item)
    session.add(msg)


def mark_outbox_failed(
    session: AsyncSession,
    *,
    item: OutboxItem,
    msg: Message,
    error: str,
    error_code: str,
    now: datetime,
) -> None:
    """A send failed for good (refused, or out of tries)."""
    _record_send_error(item, msg, error=error, error_code=error_code, now=now)
    item.status = OutboxStatus.FAILED
    msg.status = MessageStatus.FAILED
    session.add(item)
    session.add(msg)


def hold_outbox_for_review(
    session: AsyncSession,
    *,
    item: OutboxItem,
    msg: Message | None,
    reason: str,
    now: datetime,
) -> None:
    """Whether it went out is unknown: a person decides; never resent blindly."""
    item.status = OutboxStatus.REVIEW
    item.lease_until = None
    item.last_error = reason[:200]
    session.add(item)
    if msg is not None:
        msg.status = MessageStatus.REVIEW
        msg.updated_at = now
        session.add(msg)

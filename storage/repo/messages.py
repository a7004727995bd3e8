"""Messages: storing inbound ones, claiming them for processing, documents, threads."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import ERASED, Vault
from storage.models import (
    Client,
    Direction,
    Document,
    Message,
    MessageStatus,
    OutboxItem,
    Staff,
)
from storage.repo.clients import (
    client_key,
)


async def store_inbound(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    channel: str,
    provider_id: str,
    body: str,
    media: list[dict[str, Any]] | None = None,
) -> Message:
    """Store an inbound message (body encrypted) as received, not yet processed."""
    key = client_key(vault, client)
    msg = Message(
        direction=Direction.IN,
        channel=channel,
        provider_id=provider_id,
        client_id=client.id,
        body_enc=key.seal_text(body, "message.body"),
        media=media,
        status=MessageStatus.RECEIVED,
    )
    session.add(msg)
    await session.flush()
    return msg


def message_body(vault: Vault, client: Client | None, msg: Message) -> str:
    """A message's text; '[erased]' for an erased client."""
    if msg.body_enc is None:
        return ""
    if client is None:
        return vault.open_text(msg.body_enc, "message.body") or ""
    return client_key(vault, client).open_text(msg.body_enc, "message.body") or ERASED


async def find_message(session: AsyncSession, *, channel: str, provider_id: str) -> Message | None:
    """The message a provider knows by this id on this channel (webhook dedupe, callbacks)."""
    return await session.scalar(
        select(Message).where(Message.channel == channel, Message.provider_id == provider_id)
    )


async def find_messages(
    session: AsyncSession, *, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Message]:
    """``find_message`` for many (channel, provider id) pairs, in one query per channel."""
    found: dict[tuple[str, str], Message] = {}
    by_channel: dict[str, set[str]] = {}
    for channel, provider_id in keys:
        by_channel.setdefault(channel, set()).add(provider_id)
    for channel, ids in by_channel.items():
        rows = await session.exec(
            select(Message).where(Message.channel == channel, col(Message.provider_id).in_(ids))
        )
        for msg in rows.all():
            assert msg.provider_id is not None
            found[(channel, msg.provider_id)] = msg
    return found


async def claim_inbound(session: AsyncSession, *, message_id: int, at: datetime) -> bool:
    """Mark a received inbound message processed; True only for the one caller that did.

    The guarded UPDATE is the claim: a second process finds the row no longer ``received``.
    Done inside the transaction that handles the message, so a rollback un-claims it.
    """
    result = await session.exec(
        update(Message)
        .where(
            col(Message.id) == message_id,
            col(Message.direction) == Direction.IN,
            col(Message.status) == MessageStatus.RECEIVED,
        )
        .values(status=MessageStatus.PROCESSED, processed_at=at, updated_at=at)
    )
    return bool(result.rowcount == 1)


async def next_unprocessed_inbound(session: AsyncSession, *, client_id: int) -> Message | None:
    """A client's oldest inbound message not yet processed (they are handled in order)."""
    return await session.scalar(
        select(Message)
        .where(
            Message.client_id == client_id,
            Message.direction == Direction.IN,
            Message.status == MessageStatus.RECEIVED,
        )
        .order_by(col(Message.id))
        .limit(1)
    )


async def clients_with_unprocessed_inbound(
    session: AsyncSession, *, before: datetime | None = None, limit: int = 500
) -> list[int]:
    """Clients with stored but unprocessed inbound messages (after a crash or restart)."""
    query = select(Message.client_id).where(
        Message.direction == Direction.IN,
        Message.status == MessageStatus.RECEIVED,
        col(Message.client_id).is_not(None),
    )
    if before is not None:
        query = query.where(col(Message.created_at) <= before)
    rows = await session.exec(query.distinct().limit(limit))
    return [cid for cid in rows.all() if cid is not None]


async def add_document(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    content: bytes,
    content_type: str,
    message_id: int | None = None,
    case_id: int | None = None,
) -> Document:
    """Store a file the client sent, encrypted under their key (erasure covers it)."""
    assert client.id is not None
    doc = Document(
        client_id=client.id,
        case_id=case_id,
        message_id=message_id,
        content_type=content_type[:128],
        size=len(content),
        content_enc=client_key(vault, client).seal(content, b"document.content"),
    )
    session.add(doc)
    await session.flush()
    return doc


def document_content(vault: Vault, client: Client, doc: Document) -> bytes | None:
    """A document's bytes; None for an erased client."""
    key = client_key(vault, client)
    if key.erased or doc.content_enc is None:
        return None
    return key.open(doc.content_enc, b"document.content")


async def store_staff_inbound(
    session: AsyncSession,
    *,
    vault: Vault,
    staff: Staff,
    channel: str,
    provider_id: str,
    body: str,
) -> Message:
    """Store a staff member's message (sealed under the master key): staff are not clients."""
    msg = Message(
        direction=Direction.IN,
        channel=channel,
        provider_id=provider_id,
        staff_id=staff.id,
        client_id=None,
        body_enc=vault.seal_text(body, "message.body"),
        status=MessageStatus.RECEIVED,
    )
    session.add(msg)
    await session.flush()
    return msg


async def client_thread(
    session: AsyncSession, *, client_id: int, reply_kind: str, limit: int = 10
) -> list[tuple[Message, OutboxItem | None]]:
    """The client's recent words and the attorney's replies (``reply_kind`` rows), oldest first.

    The bot's own automated replies are left out: the thread is the human conversation.
    """
    rows = await session.exec(
        select(Message, OutboxItem)
        .join(OutboxItem, col(OutboxItem.message_id) == col(Message.id), isouter=True)
        .where(
            Message.client_id == client_id,
            (col(Message.direction) == Direction.IN) | (col(OutboxItem.kind) == reply_kind),
        )
        .order_by(col(Message.id).desc())
        .limit(limit)
    )
    return list(reversed([(m, o) for m, o in rows.all()]))


async def wrote_since(session: AsyncSession, *, client_id: int, message_id: int) -> bool:
    """True when the client was sent anything after this message (the prompt is stale)."""
    found = await session.scalar(
        select(Message.id)
        .where(
            Message.client_id == client_id,
            Message.direction == Direction.OUT,
            col(Message.staff_id).is_(None),
            col(Message.id) > message_id,
        )
        .limit(1)
    )
    return found is not None


def mark_inbound_processed(session: AsyncSession, *, msg: Message, now: datetime) -> None:
    """An inbound message needs no more handling (a provider's STOP event, say)."""
    msg.status = MessageStatus.PROCESSED
    msg.processed_at = now
    session.add(msg)


def mark_inbound_failed(session: AsyncSession, *, msg: Message, now: datetime) -> None:
    """An inbound message that could not be handled: kept, marked for a person to look at."""
    msg.status = MessageStatus.FAILED
    msg.updated_at = now
    session.add(msg)


async def record_inbound_failure(
    session: AsyncSession, *, message_id: int, max_attempts: int, now: datetime
) -> bool:
    """Count a failed attempt at a received message; after ``max_attempts`` it is failed.

    True when this attempt failed it for good (a person has to look at it).
    """
    msg = await session.get(Message, message_id)
    if msg is None or msg.status != MessageStatus.RECEIVED:
        return False
    msg.attempts += 1
    msg.updated_at = now
    failed = msg.attempts >= max_attempts
    if failed:
        msg.status = MessageStatus.FAILED
    session.add(msg)
    return failed


# Provider statuses in the order a sent message moves through them; a late delivery report
# never moves a message backwards (reports can arrive out of order).
_DELIVERY_RANK = {
    "accepted": 1,
    "scheduled": 1,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
    "canceled": 4,
}


def record_delivery_report(
    session: AsyncSession, *, msg: Message, status: str, error_code: str | None, now: datetime
) -> None:
    """A provider's word on a sent message: its status, unless that would be a step back."""
    if _DELIVERY_RANK.get(status, 1) >= _DELIVERY_RANK.get(msg.status, 0):
        msg.status = status
    if error_code:
        msg.error_code = error_code
    msg.updated_at = now
    session.add(msg)

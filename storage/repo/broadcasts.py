"""Broadcasts: bulk sends to many clients, and the queries behind segments and reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import Vault
from storage.models import (
    Client,
    Direction,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
)
from storage.repo.clients import (
    client_key,
)
from storage.repo.outbox import (
    existing_dedupe_keys,
)
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
) -> int:
    """Queue many client messages in a few statements (a broadcast); returns rows written.

    The bulk twin of ``enqueue``: same rows, same encryption, but one INSERT per table per
    call, because a row-at-a-time loop takes tens of seconds for ten thousand clients. A
    message whose dedupe key already exists is left alone, so re-running after a crash
    writes only what is missing. Erased clients and ``text=None`` become skipped rows with
    no body: the reason is kept, nothing is sent, and a re-run does not try them again.
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
    now = utcnow()
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

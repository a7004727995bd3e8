"""Dialogue state: loading and saving a client's conversation with version checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import Vault
from storage.models import (
    Client,
    ConversationState,
)
from storage.repo.clients import (
    client_key,
)
from storage.types import utcnow


class StaleConversation(RuntimeError):
    """Another process moved this conversation on first; roll back and handle the turn again."""


async def load_conversation(
    session: AsyncSession, *, client_id: int, lock: bool = True
) -> ConversationState | None:
    """The client's dialogue state, locked for this transaction on PostgreSQL."""
    stmt = (
        select(ConversationState)
        .where(ConversationState.client_id == client_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


def conversation_data(vault: Vault, client: Client, conv: ConversationState) -> dict[str, Any]:
    """The answers so far, decrypted; empty for an erased client."""
    data = client_key(vault, client).open_json(conv.data_enc, "conversation.data")
    return data if isinstance(data, dict) else {}


async def save_conversation(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    flow: str,
    state: str,
    data: dict[str, Any],
    history: list[str],
    expected_version: int | None,
    nudged_at: datetime | None = None,
    at: datetime | None = None,
) -> int:
    """Write the dialogue state if nobody else did since it was read; returns the new version.

    ``expected_version`` is the version that was loaded (None: there was no row). Raises
    StaleConversation when another process got there first.
    """
    assert client.id is not None
    now = at or utcnow()
    data_enc = (
        client_key(vault, client).seal_json(data, "conversation.data")
        if data and client.wrapped_key is not None
        else None
    )
    if expected_version is None:
        conv = ConversationState(
            client_id=client.id,
            flow=flow,
            state=state,
            data_enc=data_enc,
            history=history,
            version=1,
            nudged_at=nudged_at,
            updated_at=now,
        )
        session.add(conv)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            raise StaleConversation("conversation was started by another process") from exc
        return 1
    result = await session.exec(
        update(ConversationState)
        .where(
            col(ConversationState.client_id) == client.id,
            col(ConversationState.version) == expected_version,
        )
        .values(
            flow=flow,
            state=state,
            data_enc=data_enc,
            history=history,
            version=expected_version + 1,
            nudged_at=nudged_at,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        raise StaleConversation("conversation was moved on by another process")
    return expected_version + 1

"""Erasing a client: their data key is destroyed, and nothing pending is sent to them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework.base import Actor, audit, require_coordinator
from storage import repo
from storage.models import Client

if TYPE_CHECKING:
    from bot.services import Services


@dataclass(frozen=True)
class Erased:
    """The erased client; ``already`` when they were erased before."""

    client_id: int
    already: bool


async def erase_client(
    session: AsyncSession, services: Services, *, actor: Actor, client: Client
) -> Erased:
    """Destroys the client's data key: their name, messages and answers read as erased."""
    assert client.id is not None
    await require_coordinator(session, actor, action="client.erase")
    if client.wrapped_key is None:
        return Erased(client.id, already=True)
    await repo.erase_client(session, client=client, at=services.clock())
    await audit(session, actor, "client.erase", None, client_id=client.id)
    return Erased(client.id, already=False)

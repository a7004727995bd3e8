"""Case status: telling a client about a change, and answering "STATUS". (Issue 6 fills this in.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import Case

if TYPE_CHECKING:
    from bot.conversations.base import Turn
    from bot.services import Services


async def tell_status_change(session: AsyncSession, services: Services, case: Case) -> None:
    """Tells the client, in their language, that their case's status changed."""
    return None


async def answer_status(turn: Turn) -> bool:
    """Answers a STATUS request from a verified identity; returns True when it handled the turn."""
    return False

"""Replies to reminders and check-ins (1 confirm / 2 cannot come). (Issue 6 fills this in.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.conversations.base import Turn


async def handle_reply(turn: Turn) -> bool:
    """Handles an answer to a pending reminder or check-in; True when it did."""
    return False

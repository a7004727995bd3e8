"""A client's message, after opt-out keywords: reminder answers, status, intake or the menu."""

from __future__ import annotations

from bot.conversations import reminders, status
from bot.conversations.base import Turn


async def respond(turn: Turn) -> None:
    """Runs the client's side of the conversation for one inbound message."""
    if await reminders.handle_reply(turn):
        return
    if await status.answer_status(turn):
        return
    # Issue 4 replaces this with the intake engine and the open-case menu.
    turn.say(f"Welcome to {turn.services.settings.program_name}.")

"""What a dialogue step receives (a Turn) and returns (Replies), independent of channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core import Choice, InboundMessage, Reply
from storage.models import ChannelIdentity, Client, Message

if TYPE_CHECKING:
    from bot.services import Services


@dataclass
class Turn:
    """One inbound client message being handled, inside the transaction that stores the result."""

    services: Services
    session: AsyncSession
    client: Client
    identity: ChannelIdentity
    message: InboundMessage
    stored: Message  # the inbound row (its id links documents and replies)
    replies: list[Reply] = field(default_factory=list)
    first_contact: bool = False  # no message was ever sent to this identity

    @property
    def lang(self) -> str:
        return self.client.language or self.services.settings.default_language

    @property
    def text(self) -> str:
        return self.message.text

    def say(self, text: str, *choices: Choice, urgent: bool = True) -> None:
        """Queue a reply to this client (sent after the handler commits)."""
        self.replies.append(Reply(text=text, choices=tuple(choices), urgent=urgent))

"""The interface every transport implements: what it is asked to send, and how it fails."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.core import Choice, Media


@dataclass(frozen=True)
class OutboundMessage:
    """What a channel is asked to send: text, and optionally choices to render."""

    address: str
    text: str
    choices: tuple[Choice, ...] = ()
    status_callback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SendErrorKind(StrEnum):
    RETRY = "retry"  # 429, 5xx, timeouts: try again later
    PERMANENT = "permanent"  # invalid number and the like: never retry
    STOPPED = "stopped"  # the recipient opted out at the provider (21610, blocked)


class SendError(Exception):
    """A send failed; ``kind`` says what to do about it."""

    def __init__(
        self,
        kind: SendErrorKind,
        code: str,
        message: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{kind}: {code} {message}".strip())
        self.kind = kind
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True)
class SendResult:
    provider_id: str
    status: str = "sent"


@dataclass(frozen=True)
class FetchedMedia:
    """An attachment's bytes, downloaded from the provider."""

    content: bytes
    content_type: str


class MediaError(Exception):
    """An attachment could not be downloaded; the message is handled without it."""


class ChannelSender(abc.ABC):
    """Sends one message on one channel; raises SendError on failure."""

    name: str

    @abc.abstractmethod
    async def send(self, message: OutboundMessage) -> SendResult:
        """Sends the message and returns the provider's id."""

    async def fetch_media(self, media: Media) -> FetchedMedia:
        """Downloads an attachment the client sent; channels without media raise MediaError."""
        raise MediaError(f"the {self.name} channel cannot fetch media")

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Releases connections."""

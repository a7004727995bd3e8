"""The channel-neutral message types and the interface every transport implements."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    """Things a provider tells us that are not messages."""

    MESSAGE = "message"
    STOPPED = "stopped"  # the client stopped us (STOP at the carrier, blocked the bot)


class ProviderKeyword(StrEnum):
    """A keyword the provider has already answered itself (Twilio Advanced Opt-Out)."""

    STOP = "STOP"
    START = "START"
    HELP = "HELP"


@dataclass(frozen=True)
class Media:
    """A photo or document attached to an inbound message, not yet fetched."""

    url: str
    content_type: str = "application/octet-stream"


@dataclass(frozen=True)
class SharedContact:
    """A phone number the sender shared (Telegram's contact button, or a contact card)."""

    phone: str
    own: bool  # the sender's own number, as the platform vouches; not someone else's card


@dataclass(frozen=True)
class TelegramDetails:
    """Where on Telegram a message was written: what staff handling and the audit need."""

    from_id: int  # the sender's user id (staff are recognised by it)
    chat_id: int | None = None
    chat_type: str = "private"  # private, group, supergroup
    message_id: int | None = None  # the message itself (a pressed button's card)
    reply_to: str | None = None  # provider id of the message replied to ("chat:message")
    callback_query_id: str | None = None  # a pressed button, to stop its spinner

    @property
    def private(self) -> bool:
        return self.chat_type == "private"


@dataclass(frozen=True)
class InboundMessage:
    """One message from a client or staff member, whatever channel it came by."""

    channel: str
    address: str  # E.164 phone number, Telegram user id, console phone
    provider_id: str  # MessageSid, update_id: the dedupe key
    text: str = ""
    media: tuple[Media, ...] = ()
    kind: EventKind = EventKind.MESSAGE
    choice: str | None = None  # a button the client pressed (Telegram callback data)
    contact: SharedContact | None = None
    telegram: TelegramDetails | None = None  # set for Telegram messages only
    # Set when the provider already replied to this keyword: the bot records, never re-answers.
    provider_answered: ProviderKeyword | None = None


@dataclass(frozen=True)
class Choice:
    """One option of a question: the value stored and the label shown."""

    value: str
    label: str


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

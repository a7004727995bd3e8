"""What several layers share: the inbound message every channel makes, the reply every
dialogue returns, and the outbox kinds the opt-out rules depend on.

It sits below everything else in bot/ (it imports only storage's enums), so channels,
dialogues, casework, the outbox and the entry points can all import it without an arrow
pointing up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from storage.models import Channel


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
class Reply:
    """One message to the client: text, and choices the channel renders (numbers or buttons)."""

    text: str
    choices: tuple[Choice, ...] = ()
    urgent: bool = False  # goes out even in quiet hours (answers to a waiting client are)
    # A button that shares the client's own phone number, with this label (channels that
    # have one render it; elsewhere the text alone is sent).
    ask_phone: str | None = None
    clear_buttons: bool = False  # takes away a button offered before (ask_phone's)


# Outbox kinds the router writes. An opted-out identity still gets the one confirmation of
# its opt-out and the answer to HELP; nothing else.
OPTOUT_CONFIRM = "optout_confirm"
OPTIN_CONFIRM = "optin_confirm"
HELP_REPLY = "help"
BYPASS_OPT_OUT = frozenset({OPTOUT_CONFIRM, HELP_REPLY})
# These texts already say how to stop and get help, so they count as the first-contact notice.
CARRIES_NOTICE = frozenset({HELP_REPLY, OPTIN_CONFIRM})
# Channels where a first message must carry "Reply STOP to opt out, HELP for help."
NOTICE_CHANNELS = frozenset({Channel.SMS, Channel.CONSOLE})

"""Telegram: python-telegram-bot as a library inside our server — parse updates, send, poll.

PTB's ``Application`` is built with ``updater(None)`` and ``job_queue(None)``: our aiohttp
server receives the webhook, our database is the update queue, and our dispatcher owns
retries and rate limits, so PTB's own rate limiter stays off. This module knows the Bot API
and nothing of clients, cases or staff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeDefault,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    KeyboardButton,
    Message,
    ReplyKeyboardMarkup,
    ReplyKeyboardRemove,
    ReplyParameters,
    Update,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.ext import Application, ExtBot

from bot.channels.base import (
    ChannelSender,
    FetchedMedia,
    MediaError,
    OutboundMessage,
    SendError,
    SendErrorKind,
    SendResult,
)
from bot.config import ConfigError, Settings
from bot.core import Choice, EventKind, InboundMessage, Media, SharedContact, TelegramDetails
from storage.models import Channel

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
ALLOWED_UPDATES = ("message", "callback_query", "my_chat_member")
MEDIA_PREFIX = "telegram-file:"
TEXT_LIMIT = 4096  # Bot API limit for one message
CALLBACK_DATA_LIMIT = 64  # bytes
POLL_TIMEOUT = 25  # seconds Telegram holds a getUpdates open
POLL_BACKOFF_MAX = 60.0
_CHAT_ID = re.compile(r"-?\d{1,20}")  # a user id, or a group's negative id

UpdateSink = Callable[[Update], Awaitable[None]]
TelegramApp = Application[Any, Any, Any, Any, Any, Any]


def _opt_into_timedelta() -> None:
    # PTB 22 warns (a DeprecationWarning) every time RetryAfter is built unless the process
    # opts into its next major version's timedelta durations; we read them as timedelta.
    os.environ.setdefault("PTB_TIMEDELTA", "true")


def build_application(settings: Settings) -> TelegramApp:
    """PTB as a library: our base URL, no updater, no job queue, no PTB rate limiter."""
    if settings.telegram_bot_token is None:
        raise ConfigError("TELEGRAM_BOT_TOKEN is not set")
    _opt_into_timedelta()
    base = settings.telegram_api_base_url.rstrip("/")
    return (
        Application.builder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(f"{base}/bot")
        .base_file_url(f"{base}/file/bot")
        .updater(None)
        .job_queue(None)
        .build()
    )


# --------------------------------------------------------------------------- inbound


def _sender_id(update: Update) -> int | None:
    user = update.effective_user
    return user.id if user is not None else None


def _media_of(message: Message) -> tuple[Media, ...]:
    """The largest photo size, or the document / voice / audio / video, as a file reference."""
    if message.photo:
        return (Media(url=MEDIA_PREFIX + message.photo[-1].file_id, content_type="image/jpeg"),)
    for attachment, default_type in (
        (message.document, "application/octet-stream"),
        (message.voice, "audio/ogg"),
        (message.audio, "audio/mpeg"),
        (message.video, "video/mp4"),
    ):
        if attachment is not None:
            content_type = getattr(attachment, "mime_type", None) or default_type
            return (Media(url=MEDIA_PREFIX + attachment.file_id, content_type=content_type),)
    return ()


def parse_update(update: Update) -> InboundMessage | None:
    """One update as our InboundMessage, or None for updates we do not act on.

    ``telegram`` says where it was written: the chat, the message replied to (as the
    provider id a sent message is stored under) and a pressed button's callback id.
    """
    sender = _sender_id(update)
    if sender is None:
        return None
    provider_id = str(update.update_id)

    if update.callback_query is not None:
        cq = update.callback_query
        data = cq.data or ""
        card = cq.message
        return InboundMessage(
            channel=Channel.TELEGRAM,
            address=str(sender),
            provider_id=provider_id,
            text=data,
            choice=data,
            telegram=TelegramDetails(
                from_id=sender,
                chat_id=card.chat.id if card is not None else None,
                chat_type=card.chat.type if card is not None else "private",
                message_id=card.message_id if card is not None else None,
                callback_query_id=cq.id,
            ),
        )

    if update.my_chat_member is not None:
        member = update.my_chat_member
        if member.chat.type == "private" and member.new_chat_member.status == "kicked":
            return InboundMessage(
                channel=Channel.TELEGRAM,
                address=str(sender),
                provider_id=provider_id,
                kind=EventKind.STOPPED,
                telegram=TelegramDetails(
                    from_id=sender, chat_id=member.chat.id, chat_type=member.chat.type
                ),
            )
        return None

    message = update.message
    if message is None:
        return None  # edited messages, channel posts and the rest are not acted on
    replied = message.reply_to_message
    contact = message.contact
    return InboundMessage(
        channel=Channel.TELEGRAM,
        address=str(sender),
        provider_id=provider_id,
        text=message.text or message.caption or "",
        media=_media_of(message),
        # Only the sender's own number, sent by the share button, carries their user id.
        contact=SharedContact(phone=contact.phone_number, own=contact.user_id == sender)
        if contact is not None
        else None,
        telegram=TelegramDetails(
            from_id=sender,
            chat_id=message.chat.id,
            chat_type=message.chat.type,
            message_id=message.message_id,
            reply_to=sent_id(message.chat.id, replied.message_id) if replied is not None else None,
        ),
    )


def sent_id(chat_id: int | str, message_id: int) -> str:
    """The provider id of a message in a chat: Telegram numbers messages per chat."""
    return f"{chat_id}:{message_id}"


def split_sent_id(provider_id: str) -> tuple[int, int] | None:
    """(chat id, message id) of a provider id made by ``sent_id`` (an edit's id too)."""
    parts = provider_id.split(":")
    try:
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        return None


def _message_id_in(value: Any, chat_id: int) -> int | None:
    """A message id given as a number, or as the provider id of a message in this chat."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isdigit():
            return int(value)
        found = split_sent_id(value)
        if found is not None and found[0] == chat_id:
            return found[1]
    return None


# --------------------------------------------------------------------------- outbound


def _callback_data(choice: Choice, position: int) -> str:
    # Telegram refuses callback data over 64 bytes; the choice's number works like on SMS.
    if 0 < len(choice.value.encode("utf-8")) <= CALLBACK_DATA_LIMIT:
        return choice.value
    return str(position)


def inline_keyboard(choices: Sequence[Choice]) -> InlineKeyboardMarkup:
    """One button per row: labels in any language stay readable on a small phone."""
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton(c.label[:64], callback_data=_callback_data(c, i))]
            for i, c in enumerate(choices, start=1)
        ]
    )


def _choices_of(message: OutboundMessage) -> tuple[Choice, ...]:
    if message.choices:
        return message.choices
    raw = message.extra.get("choices") or ()
    out = []
    for item in raw:
        value, label = (item[0], item[1]) if isinstance(item, list | tuple) else (item, item)
        out.append(Choice(value=str(value), label=str(label)))
    return tuple(out)


def _split_text(text: str) -> list[str]:
    """Pieces of at most TEXT_LIMIT characters, cut at a line or word break when possible."""
    pieces: list[str] = []
    rest = text
    while len(rest) > TEXT_LIMIT:
        cut = rest.rfind("\n", 0, TEXT_LIMIT)
        if cut < TEXT_LIMIT // 2:
            cut = rest.rfind(" ", 0, TEXT_LIMIT)
        if cut < TEXT_LIMIT // 2:
            cut = TEXT_LIMIT
        pieces.append(rest[:cut])
        rest = rest[cut:].lstrip()
    pieces.append(rest)
    return [p for p in pieces if p] or [text]


@dataclass
class ChatPacer:
    """Telegram's per-chat limits (about 1/s in a private chat, 20/min in a group).

    A short burst is allowed, as Telegram itself allows; beyond it the sender asks the
    dispatcher to come back later (a retry with ``retry_after``) instead of sleeping.
    """

    burst: int = 3
    private_per_second: float = 1.0
    group_per_second: float = 20 / 60
    monotonic: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._buckets: dict[int, tuple[float, float]] = {}

    def wait_for(self, chat_id: int) -> float:
        """Seconds to wait before sending to ``chat_id`` (0: send now, and count it)."""
        rate = self.private_per_second if chat_id > 0 else self.group_per_second
        now = self.monotonic()
        tokens, last = self._buckets.get(chat_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[chat_id] = (tokens - 1.0, now)
            return 0.0
        self._buckets[chat_id] = (tokens, now)
        return (1.0 - tokens) / rate


def _retry_seconds(exc: RetryAfter) -> float:
    value: Any = exc.retry_after
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def map_error(exc: TelegramError) -> SendError:
    """A Bot API error as what the dispatcher should do about it."""
    text = str(exc).lower()
    if isinstance(exc, RetryAfter):
        return SendError(SendErrorKind.RETRY, "429", "flood control", _retry_seconds(exc))
    if isinstance(exc, Forbidden):
        if "blocked" in text or "deactivated" in text:
            return SendError(SendErrorKind.STOPPED, "403", "bot was blocked by the user")
        return SendError(SendErrorKind.PERMANENT, "403", "forbidden")
    if isinstance(exc, ChatMigrated):
        return SendError(SendErrorKind.PERMANENT, "chat_migrated", "group became a supergroup")
    if isinstance(exc, BadRequest):
        if "chat not found" in text:
            return SendError(SendErrorKind.PERMANENT, "400", "chat not found")
        return SendError(SendErrorKind.PERMANENT, "400", "bad request")
    if isinstance(exc, TimedOut):
        return SendError(SendErrorKind.RETRY, "timeout", "timed out")
    if isinstance(exc, InvalidToken):
        # The operator's token is wrong; keep the messages until it is fixed.
        return SendError(SendErrorKind.RETRY, "invalid_token", "TELEGRAM_BOT_TOKEN rejected")
    if isinstance(exc, NetworkError):
        return SendError(SendErrorKind.RETRY, "network", "network error")
    return SendError(SendErrorKind.RETRY, "telegram", type(exc).__name__)


class TelegramSender(ChannelSender):
    """Sends outbox rows to Telegram chats: text, buttons, replies to cards, edits.

    ``extra`` may carry ``choices`` ([[value, label], ...]: inline buttons),
    ``reply_to_message_id`` (answer a message in that chat), ``edit_message_id`` (change a
    message the bot sent; both take a message id or the provider id the message was
    recorded under), ``request_contact`` (a one-time button that shares the
    user's phone number, with this label) and ``remove_keyboard``.
    """

    name = Channel.TELEGRAM

    def __init__(self, channel: TelegramChannel, *, pacer: ChatPacer | None = None) -> None:
        self.channel = channel
        self.pacer = pacer or ChatPacer()

    async def send(self, message: OutboundMessage) -> SendResult:
        """Sends the message (or edits one) and returns "chat:message" as the provider id."""
        if not _CHAT_ID.fullmatch(message.address):
            raise SendError(SendErrorKind.PERMANENT, "address", "not a Telegram chat id")
        chat_id = int(message.address)
        if not self.channel.ready:
            raise SendError(SendErrorKind.RETRY, "not_ready", "Telegram is not connected yet")
        wait = self.pacer.wait_for(chat_id)
        if wait > 0:
            raise SendError(SendErrorKind.RETRY, "pace", "per-chat limit", wait)
        bot = self.channel.bot
        extra = message.extra
        try:
            edit_id = _message_id_in(extra.get("edit_message_id"), chat_id)
            if edit_id is not None:
                return await self._edit(bot, chat_id, edit_id, message.text)
            return await self._send(bot, chat_id, message, extra)
        except TelegramError as exc:
            raise map_error(exc) from None

    async def _edit(self, bot: ExtBot[Any], chat_id: int, message_id: int, text: str) -> SendResult:
        try:
            await bot.edit_message_text(text[:TEXT_LIMIT], chat_id=chat_id, message_id=message_id)
        except BadRequest as exc:
            # Editing to the same text is not an error for us: the message says what it should.
            if "not modified" not in str(exc).lower():
                raise
        # The edited message keeps its own provider id; this row gets a distinct one.
        edit_id = f"{sent_id(chat_id, message_id)}:edit:{uuid.uuid4().hex[:12]}"
        return SendResult(provider_id=edit_id)

    async def _send(
        self, bot: ExtBot[Any], chat_id: int, message: OutboundMessage, extra: dict[str, Any]
    ) -> SendResult:
        markup: InlineKeyboardMarkup | ReplyKeyboardMarkup | ReplyKeyboardRemove | None = None
        choices = _choices_of(message)
        if choices:
            markup = inline_keyboard(choices)
        elif extra.get("request_contact"):
            markup = ReplyKeyboardMarkup(
                [[KeyboardButton(str(extra["request_contact"]), request_contact=True)]],
                one_time_keyboard=True,
                resize_keyboard=True,
            )
        elif extra.get("remove_keyboard"):
            markup = ReplyKeyboardRemove()
        reply_to = _message_id_in(extra.get("reply_to_message_id"), chat_id)
        reply = (
            ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
            if reply_to is not None
            else None
        )
        pieces = _split_text(message.text)
        sent: Message | None = None
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            sent = await bot.send_message(
                chat_id,
                piece,
                reply_markup=markup if last else None,
                reply_parameters=reply if i == 0 else None,
            )
        assert sent is not None
        # The last piece carries the buttons, and a reply to any piece finds its row.
        return SendResult(provider_id=sent_id(chat_id, sent.message_id))

    async def fetch_media(self, media: Media) -> FetchedMedia:
        """Downloads a photo or document a user sent."""
        try:
            content = await self.channel.fetch_media(media)
        except (TelegramError, ValueError) as exc:
            raise MediaError(f"Telegram file could not be fetched ({type(exc).__name__})") from None
        return FetchedMedia(content=content, content_type=media.content_type)

    async def close(self) -> None:
        """Releases the Bot API connections."""
        await self.channel.stop()


# --------------------------------------------------------------------------- lifecycle


class TelegramChannel:
    """The bot's connection: initialised with the server, webhook or long polling."""

    def __init__(self, settings: Settings, *, application: TelegramApp | None = None) -> None:
        self.settings = settings
        self.application = application or build_application(settings)
        self.ready = False
        self._poller: asyncio.Task[None] | None = None
        self._sink: UpdateSink | None = None
        self._auto_poll = True
        self._connector: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._poll_failing = False  # the last getUpdates failed

    @property
    def bot(self) -> ExtBot[Any]:
        bot: ExtBot[Any] = self.application.bot
        return bot

    @property
    def webhook_url(self) -> str | None:
        base = self.settings.public_base_url
        return f"{base}{WEBHOOK_PATH}" if base else None

    def readiness(self) -> tuple[bool, str]:
        """Whether updates can reach us now: the webhook registered, or the poller reading."""
        if not self.ready:
            return False, "not connected to Telegram"
        if self.webhook_url:
            return True, "webhook set"
        if self._poller is None or self._poller.done():
            return False, "poller stopped"
        if self._poll_failing:
            return False, "polling failing"
        return True, "polling"

    def parse(self, data: dict[str, Any]) -> Update:
        """A webhook body as PTB's Update (raises ValueError/KeyError/TypeError if malformed)."""
        if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
            raise ValueError("not a Telegram update")
        return Update.de_json(data, self.bot)

    @property
    def long_polls(self) -> bool:
        """True when updates come by long polling (no public URL for a webhook)."""
        return self.webhook_url is None

    @property
    def polling(self) -> bool:
        """True while this process long-polls getUpdates."""
        return self._poller is not None and not self._poller.done()

    async def start(
        self,
        sink: UpdateSink,
        *,
        on_ready: Callable[[], Awaitable[None]],
        poll: bool = True,
    ) -> None:
        """Connects (retrying in the background if Telegram is unreachable), then registers
        the webhook, or starts long polling when there is no public URL.

        ``poll=False``: connect without polling; ``start_polling`` starts it later (only one
        process may poll a bot at a time, and the caller decides which).
        """
        if self.webhook_url and self.settings.telegram_webhook_secret is None:
            raise ConfigError("TELEGRAM_WEBHOOK_SECRET is required with PUBLIC_BASE_URL")
        self._stopping = False
        self._sink = sink
        self._auto_poll = poll
        try:
            await self._connect(sink, on_ready)
        except (NetworkError, InvalidToken) as exc:
            log.warning("Telegram is not reachable yet (%s); retrying in the background", exc)
            self._connector = asyncio.create_task(self._keep_connecting(sink, on_ready))

    async def _connect(self, sink: UpdateSink, on_ready: Callable[[], Awaitable[None]]) -> None:
        app = self.application
        await app.initialize()  # getMe; does nothing the second time
        if not app.running:
            await app.start()
        if self.webhook_url:
            secret = self.settings.telegram_webhook_secret
            assert secret is not None
            await self.bot.set_webhook(
                url=self.webhook_url,
                secret_token=secret.get_secret_value(),
                allowed_updates=list(ALLOWED_UPDATES),
            )
        else:
            # A webhook left from an earlier deployment would make getUpdates fail (409).
            await self.bot.delete_webhook(drop_pending_updates=False)
        self.ready = True
        if self._auto_poll:
            self.start_polling()
        try:
            await on_ready()
        except TelegramError as exc:
            log.warning("Telegram start-up step failed: %s", type(exc).__name__)

    async def _keep_connecting(
        self, sink: UpdateSink, on_ready: Callable[[], Awaitable[None]]
    ) -> None:
        delay = 5.0
        while not self._stopping:
            await asyncio.sleep(delay)
            try:
                await self._connect(sink, on_ready)
                log.info("Telegram connected")
                return
            except (NetworkError, InvalidToken) as exc:
                log.warning("Telegram still not reachable (%s)", type(exc).__name__)
                delay = min(delay * 2, 300.0)

    def start_polling(self) -> None:
        """Starts long polling, once connected; does nothing if already polling."""
        if not self.ready or self._stopping or self._sink is None or not self.long_polls:
            return
        if self.polling:
            return
        self._poller = asyncio.create_task(self._poll(self._sink), name="telegram-poll")

    async def stop_polling(self) -> None:
        """Stops long polling now (an update being stored is read again by the next poller)."""
        task, self._poller = self._poller, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _poll(self, sink: UpdateSink) -> None:
        """Long polling: each update goes to ``sink`` (which stores it) before the next offset.

        The offset only moves past an update once it is stored, so a crash re-reads it and
        the store's dedupe on update_id keeps it to one.
        """
        offset: int | None = None
        backoff = 1.0
        while not self._stopping:
            try:
                updates = await self.bot.get_updates(
                    offset=offset,
                    timeout=timedelta(seconds=POLL_TIMEOUT),
                    allowed_updates=list(ALLOWED_UPDATES),
                )
                self._poll_failing = False
                for update in updates:
                    await sink(update)
                    offset = update.update_id + 1
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                await asyncio.sleep(_retry_seconds(exc))
            except Exception as exc:
                # Network trouble, or the database briefly away: wait and read again.
                self._poll_failing = True
                log.warning("Telegram polling failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, POLL_BACKOFF_MAX)

    async def set_commands(
        self,
        default: Sequence[tuple[str, str]],
        per_chat: dict[int, Sequence[tuple[str, str]]],
    ) -> None:
        """The command menu: one list for everyone, one per staff chat."""
        await self.bot.set_my_commands(
            [BotCommand(c, d) for c, d in default], scope=BotCommandScopeDefault()
        )
        for chat_id, commands in per_chat.items():
            try:
                await self.bot.set_my_commands(
                    [BotCommand(c, d) for c, d in commands], scope=BotCommandScopeChat(chat_id)
                )
            except BadRequest:
                # A staff member who never opened the bot has no chat yet; next start.
                log.info("could not set the command menu for one staff chat")

    async def answer_callback(self, callback_query_id: str) -> None:
        """Stops the button's spinner; best effort, the answer itself goes by the outbox."""
        with contextlib.suppress(TelegramError):
            await self.bot.answer_callback_query(callback_query_id)

    def answer_callback_soon(self, callback_query_id: str) -> None:
        """``answer_callback`` in the background (kept, and cancelled at stop)."""
        task = asyncio.create_task(self.answer_callback(callback_query_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def fetch_media(self, media: Media) -> bytes:
        """Downloads a photo or document the user sent (getFile, then the file URL)."""
        if not media.url.startswith(MEDIA_PREFIX):
            raise ValueError("not a Telegram file reference")
        file = await self.bot.get_file(media.url.removeprefix(MEDIA_PREFIX))
        return bytes(await file.download_as_bytearray())

    async def stop(self) -> None:
        """Stops polling and closes PTB's connections; safe to call twice."""
        self._stopping = True
        self.ready = False
        for task in (self._poller, self._connector, *self._background):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._poller = self._connector = None
        app = self.application
        if app.running:
            await app.stop()
        await app.shutdown()  # does nothing when never initialised

"""The one inbound router: every channel's verified, parsed message is routed here.

Twilio, Telegram (webhook and long polling) and the console hand their InboundMessage to
``receive``. Staff come first: a staff member's message is stored without a client and
handled by the staff commands (bot/handlers/staff.py) in the same transaction. A group that
is not the staff group is no client channel: nothing is stored, staff commands are
audited. A shared phone number (or /link) is stored and answered by the linking dialogue
at once, since the number itself is never kept. Anything else is a client's message,
stored by ``inbound.store`` and processed by ``inbound.route``: opt-out words, then the
client's dialogue.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from enum import StrEnum

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.conversations import link
from bot.conversations.base import Turn
from bot.core import EventKind, InboundMessage, TelegramDetails
from bot.handlers import inbound
from bot.handlers import staff as staff_handlers
from bot.handlers.inbound import InboundProcessor
from bot.metrics import Metrics
from bot.outgoing import queue_reply
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Channel, ChannelIdentity, Client, Message, Staff

log = logging.getLogger(__name__)


class Road(StrEnum):
    """Which way the router sent a message."""

    STAFF = "staff"  # handled by the staff commands, in the transaction that stores it
    REFUSED = "refused"  # a group that is not a staff place: nothing stored
    LINK = "link"  # a shared number or /link, answered by the linking dialogue at once
    CLIENT = "client"  # stored, then processed by ``inbound.route``


# Commands only staff have; from anyone else they are an attempt worth auditing. /status is
# not one: from a client it is their own status request, audited as such (status.ask).
STAFF_ONLY = frozenset({"cases", "case", "reply", "find", "assign", "appt", "broadcast"})
# Prefixes of the data of buttons only staff are sent; pressed anywhere else they were forged.
STAFF_BUTTONS = frozenset({"assign", "assignto", staff_handlers.BROADCAST_BUTTON})
# Chat apps whose accounts can be linked to the client who texts from the same phone.
LINKABLE = frozenset({Channel.TELEGRAM})
STAFF_FAILED = "Sorry, that did not work and nothing was sent. Please try again."


async def receive(
    services: Services,
    message: InboundMessage,
    *,
    processor: InboundProcessor | None = None,
    metrics: Metrics | None = None,
    poke: Callable[[], None] | None = None,
) -> Road:
    """Routes one verified, parsed message of any channel; returns once it is stored (and,
    for staff and linking, handled)."""
    chat = message.telegram
    staff = await _staff_sender(services, chat)
    if chat is not None and staff is not None and (chat.private or _staff_chat(services, chat)):
        await _staff_message(services, staff, message)
        road = Road.STAFF
    elif chat is not None and not chat.private:
        # Only the coordinators' group is a staff place; in any other group even staff
        # commands would show case details to people who are not staff.
        await _refused_in_group(services, message, staff=staff)
        return Road.REFUSED
    elif message.channel in LINKABLE and (
        message.contact is not None or _command(message) == link.COMMAND
    ):
        await _link_message(services, message)
        road = Road.LINK
    else:
        await _client_message(services, message, processor=processor, metrics=metrics)
        road = Road.CLIENT
    if poke is not None:
        poke()
    return road


async def _staff_sender(services: Services, chat: TelegramDetails | None) -> Staff | None:
    """The active staff member who sent this, found by their Telegram id (never by text)."""
    if chat is None:
        return None  # staff work on Telegram only
    async with services.sessions() as session:
        return await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=chat.from_id
        )


def _staff_chat(services: Services, chat: TelegramDetails) -> bool:
    return chat.chat_id is not None and chat.chat_id == services.settings.telegram_staff_chat_id


def _command(message: InboundMessage) -> str | None:
    text = message.text.strip()
    if message.choice or not text.startswith("/"):
        return None
    name, _ = staff_handlers.split_command(text)
    return name


async def _seen(session: AsyncSession, message: InboundMessage) -> bool:
    found = await repo.find_message(
        session, channel=message.channel, provider_id=message.provider_id
    )
    return found is not None


async def store_staff(
    session: AsyncSession, services: Services, staff: Staff, message: InboundMessage
) -> Message | None:
    """Store a staff member's message (sealed, no client) in the caller's transaction.

    None when this provider id is stored already (a resent update).
    """
    if await _seen(session, message):
        return None
    return await repo.store_staff_inbound(
        session,
        vault=services.vault,
        staff=staff,
        channel=message.channel,
        provider_id=message.provider_id,
        body=message.text,
    )


async def _staff_message(services: Services, staff: Staff, message: InboundMessage) -> None:
    """Store a staff member's message and run it (bot/handlers/staff.py), committed together."""
    if message.kind != EventKind.MESSAGE:
        return  # a staff member blocking the bot is not a client opting out
    try:
        async with transaction(services.sessions) as session:
            stored = await store_staff(session, services, staff, message)
            if stored is None:
                return
            await staff_handlers.handle_staff_message(
                session, services, staff=staff, message=message, stored=stored
            )
            repo.mark_inbound_processed(session, msg=stored, now=services.clock())
    except IntegrityError:
        return  # the same update, stored a moment ago by another process
    except Exception as exc:
        # Type only: the exception may quote what was written. The update is kept as failed,
        # so Telegram does not resend it for a day, and the staff member is told.
        log.error("staff update failed: %s", type(exc).__name__)
        await _staff_failed(services, staff, message)


async def _staff_failed(services: Services, staff: Staff, message: InboundMessage) -> None:
    with contextlib.suppress(IntegrityError):
        async with transaction(services.sessions) as session:
            stored = await store_staff(session, services, staff, message)
            if stored is None:
                return
            repo.mark_inbound_failed(session, msg=stored, now=services.clock())
            await repo.enqueue_staff(
                session,
                vault=services.vault,
                due_at=services.clock(),
                text=STAFF_FAILED,
                staff=staff,
            )


async def _refused_in_group(
    services: Services, message: InboundMessage, *, staff: Staff | None
) -> None:
    """A group that is not a staff place (or a stranger in one): nothing is stored or said,
    staff commands are audited."""
    command = _command(message)
    if command is None and not message.choice:
        return
    async with transaction(services.sessions) as session:
        await repo.audit(
            session,
            actor_kind="staff" if staff is not None else "stranger",
            actor_id=staff.id if staff is not None else None,
            action="staff.command",
            allowed=False,
            detail="button in a group" if message.choice else f"/{command} in a group",
        )


async def _link_message(services: Services, message: InboundMessage) -> None:
    """Store a shared number (or /link) and answer it with the linking dialogue, together."""
    settings = services.settings
    now = services.clock()
    try:
        async with transaction(services.sessions) as session:
            if await _seen(session, message):
                return
            client, ident = await repo.client_for_address(
                session,
                vault=services.vault,
                channel=message.channel,
                address=message.address,
                language=settings.default_language,
                timezone=settings.default_timezone,
            )
            ident.last_inbound_at = now
            session.add(ident)
            stored = await repo.store_inbound(
                session,
                vault=services.vault,
                client=client,
                channel=message.channel,
                provider_id=message.provider_id,
                # The shared number is never kept with the message.
                body="" if message.contact is not None else message.text,
            )
            repo.mark_inbound_processed(session, msg=stored, now=now)
            turn = Turn(
                services=services,
                session=session,
                client=client,
                identity=ident,
                message=message,
                stored=stored,
                first_contact=ident.notice_sent_at is None,
            )
            await link.respond(turn)
            for reply in turn.replies:
                await queue_reply(
                    session, services, turn.client, reply, channel=turn.identity.channel
                )
    except IntegrityError:
        return  # stored a moment ago by another process


async def _client_message(
    services: Services,
    message: InboundMessage,
    *,
    processor: InboundProcessor | None,
    metrics: Metrics | None,
) -> None:
    """A client's message: stored, then processed in the background by ``inbound.route``."""
    known: ChannelIdentity | None = None
    if message.channel in LINKABLE:
        async with services.sessions() as session:
            known = await repo.find_identity(
                session, vault=services.vault, channel=message.channel, address=message.address
            )
    stored = await inbound.store(services, message)
    log.info(
        "inbound message %s %s",
        stored.message_id,
        "repeated" if stored.duplicate else "stored",
        extra={
            "message_id": stored.message_id,
            "client_id": stored.client_id,
            "channel": message.channel,
        },
    )
    if metrics is not None:
        counter = metrics.inbound_duplicates if stored.duplicate else metrics.inbound
        counter.labels(channel=message.channel).inc()
    if not stored.duplicate:
        await _audit_staff_attempt(services, message, stored.client_id)
        if message.channel in LINKABLE and known is None and message.kind == EventKind.MESSAGE:
            await _offer_link(services, stored.client_id, message.channel)
    if processor is not None:
        processor.submit(stored.client_id)


async def _offer_link(services: Services, client_id: int, channel: str) -> None:
    """Offers a new chat client the button that links them to the client who texts us."""
    async with transaction(services.sessions) as session:
        client = await session.get(Client, client_id)
        if client is None:
            return
        lang = client.language or services.settings.default_language
        await queue_reply(session, services, client, link.offer(lang), channel=channel)


async def _audit_staff_attempt(services: Services, message: InboundMessage, client_id: int) -> None:
    """Audits what only staff may do, tried from an account that is not (or no longer) staff.

    The message still goes on to ``inbound.route``, which answers it as any client's text: it knows
    no staff button and never looks at what a message replies to, so nothing is acted on
    and nothing reaches the client of a card. The row names this account's client (never
    the card's client) and holds no text of the message.
    """
    chat = message.telegram
    if chat is None:
        return  # staff work on Telegram only: elsewhere a "/cases" is just text
    command = _command(message)
    if command in STAFF_ONLY:
        detail = f"/{command} from a non-staff Telegram account"
        await _refused(services, "staff.command", client_id, detail)
    elif message.choice and message.choice.split(":", 1)[0] in STAFF_BUTTONS:
        # The case in forged data is not vouched for, so it is not recorded.
        detail = "staff button from a non-staff account"
        await _refused(services, "staff.command", client_id, detail)
    elif chat.reply_to:
        async with services.sessions() as session:
            card = await repo.find_message(
                session, channel=message.channel, provider_id=chat.reply_to
            )
        # A reply can only quote a message of the same private chat, so a message sent to a
        # staff member here was sent to this very account while it was staff.
        if card is not None and card.staff_id is not None:
            detail = "reply to a card from an account not staff"
            await _refused(services, "relay.reply", client_id, detail, case_id=card.case_id)


async def _refused(
    services: Services, action: str, client_id: int, detail: str, *, case_id: int | None = None
) -> None:
    async with transaction(services.sessions) as session:
        await repo.audit(
            session,
            actor_kind="client",
            action=action,
            case_id=case_id,
            client_id=client_id,
            allowed=False,
            detail=detail,
        )

"""POST /telegram/webhook and the Telegram lifecycle: verify, store, acknowledge, process.

Every update, from the webhook or from long polling, goes through ``receive``:

- a staff member's update is stored without creating a client and handled by the staff
  commands in the same transaction (they only write rows), committed before the 200;
- a shared contact (or /link) links this Telegram account to an existing SMS client, only
  when the contact is the sender's own, also stored and handled in one transaction;
- anything else from a private chat is a client message: stored through the same
  ``inbound.store`` as SMS, then processed after the commit by the same router.

Strangers in a group are ignored: the coordinators' group is not a client channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from telegram import Update

from bot.appkeys import DISPATCHER, METRICS, SERVICES
from bot.channels.base import EventKind, InboundMessage
from bot.channels.telegram import (
    WEBHOOK_PATH,
    TelegramChannel,
    TelegramSender,
    parse_update,
)
from bot.conversations import relay
from bot.handlers import staff as staff_handlers
from bot.handlers.inbound import PROCESSOR, store
from bot.i18n import gettext
from bot.phones import PhoneError, normalize_phone
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Channel, ChannelIdentity, Client, MessageStatus, Staff

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
TELEGRAM = web.AppKey("telegram", TelegramChannel)
REPORT_EVERY = 5.0  # seconds between checks of attorney replies' delivery status

# Commands only staff have; from anyone else they are an attempt worth auditing. /status is
# not one: from a client it is their own status request, audited as such (status.ask).
STAFF_ONLY = frozenset({"cases", "case", "reply", "find", "assign", "appt", "broadcast"})
# Prefixes of the data of buttons only staff are sent; pressed anywhere else they were forged.
STAFF_BUTTONS = frozenset({"assign", "assignto", staff_handlers.BROADCAST_BUTTON})


# --------------------------------------------------------------------------- webhook


def _secret_ok(settings_secret: str | None, given: str | None) -> bool:
    if not settings_secret or given is None:
        return False
    # Constant time: the comparison must not tell an attacker how much of a guess matched.
    return hmac.compare_digest(given.encode("utf-8"), settings_secret.encode("utf-8"))


async def webhook(request: web.Request) -> web.Response:
    """Stores one update sent with the right secret token, then answers 200."""
    app = request.app
    services = app[SERVICES]
    secret = services.settings.telegram_webhook_secret
    if not _secret_ok(
        secret.get_secret_value() if secret else None, request.headers.get(SECRET_HEADER)
    ):
        app[METRICS].webhook_rejected.labels(channel=Channel.TELEGRAM).inc()
        return web.Response(status=403, text="forbidden")
    try:
        data = await request.json()
        update = app[TELEGRAM].parse(data)
    except (ValueError, KeyError, TypeError, AttributeError):
        # Telegram resends an update it got an error for; a shape we cannot read would be
        # resent for a day, so it is acknowledged and dropped (nothing of it is logged).
        log.warning("ignored a Telegram update that could not be parsed")
        return web.Response(status=200)
    await receive(app, update)
    return web.Response(status=200)


async def receive(app: web.Application, update: Update) -> None:
    """Stores (and for staff and linking, handles) one update; client messages go on to the
    router after the commit."""
    services = app[SERVICES]
    inbound = parse_update(update)
    if inbound is None:
        return
    from_id = int(inbound.extra["from_id"])
    async with services.sessions() as session:
        staff = await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=from_id
        )
    private = inbound.extra.get("chat_type", "private") == "private"
    staff_chat = inbound.extra.get("chat_id") == services.settings.telegram_staff_chat_id
    if staff is not None and (private or staff_chat):
        await _staff_update(app, staff, inbound)
    elif not private:
        # Only the coordinators' group is a staff place; in any other group even staff
        # commands would show case details to people who are not staff.
        await _stranger_in_group(services, inbound, staff=staff)
        return
    elif inbound.extra.get("contact") is not None or _command(inbound) == "link":
        await _link_update(app, inbound)
    else:
        await _client_update(app, inbound)
    callback_id = inbound.extra.get("callback_query_id")
    if callback_id:
        # Stops the button's spinner. Not a message, and not worth delaying the 200 for.
        app[TELEGRAM].answer_callback_soon(str(callback_id))


def _command(inbound: InboundMessage) -> str | None:
    text = inbound.text.strip()
    if inbound.choice or not text.startswith("/"):
        return None
    name, _ = staff_handlers.split_command(text)
    return name


def _poke(app: web.Application) -> None:
    dispatcher = app.get(DISPATCHER)
    if dispatcher is not None:
        dispatcher.poke()


async def _client_update(app: web.Application, inbound: InboundMessage) -> None:
    """A client's message: stored like an SMS, then the same router handles it."""
    services = app[SERVICES]
    metrics = app[METRICS]
    command = _command(inbound)
    async with services.sessions() as session:
        known = await repo.find_identity(
            session, vault=services.vault, channel=Channel.TELEGRAM, address=inbound.address
        )
    stored = await store(services, inbound)
    if stored.duplicate:
        metrics.inbound_duplicates.labels(channel=Channel.TELEGRAM).inc()
        return
    metrics.inbound.labels(channel=Channel.TELEGRAM).inc()
    await _audit_staff_attempt(services, inbound, command, stored.client_id)
    if known is None and inbound.kind == EventKind.MESSAGE:
        await _offer_link(services, stored.client_id)
        _poke(app)
    processor = app.get(PROCESSOR)
    if processor is not None:
        processor.submit(stored.client_id)


async def _audit_staff_attempt(
    services: Services, inbound: InboundMessage, command: str | None, client_id: int
) -> None:
    """Audits what only staff may do, tried from an account that is not (or no longer) staff.

    The message still goes on to the client router, which answers it as any client's text:
    it knows no staff button and never looks at what a message replies to, so nothing is
    acted on and nothing reaches the client of a card. The row names this account's client
    (never the card's client) and holds no text of the message.
    """
    if command in STAFF_ONLY:
        detail = f"/{command} from a non-staff Telegram account"
        await _refused(services, "staff.command", client_id, detail)
    elif inbound.choice and inbound.choice.split(":", 1)[0] in STAFF_BUTTONS:
        # The case in forged data is not vouched for, so it is not recorded.
        detail = "staff button from a non-staff account"
        await _refused(services, "staff.command", client_id, detail)
    elif inbound.extra.get("reply_to"):
        async with services.sessions() as session:
            card = await repo.find_message(
                session, channel=Channel.TELEGRAM, provider_id=str(inbound.extra["reply_to"])
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


async def _stranger_in_group(
    services: Services, inbound: InboundMessage, *, staff: Staff | None
) -> None:
    """A group that is not a staff place (or a stranger in one): nothing is stored or said,
    staff commands are audited."""
    command = _command(inbound)
    if command is None and not inbound.choice:
        return
    async with transaction(services.sessions) as session:
        await repo.audit(
            session,
            actor_kind="staff" if staff is not None else "stranger",
            actor_id=staff.id if staff is not None else None,
            action="staff.command",
            allowed=False,
            detail="button in a group" if inbound.choice else f"/{command} in a group",
        )


# --------------------------------------------------------------------------- staff


async def _staff_update(app: web.Application, staff: Staff, inbound: InboundMessage) -> None:
    """Stores a staff member's message (no client) and runs it, committed together."""
    services = app[SERVICES]
    if inbound.kind != EventKind.MESSAGE:
        return  # a staff member blocking the bot is not a client opting out
    try:
        async with transaction(services.sessions) as session:
            if await _seen(session, inbound):
                return
            stored = await repo.store_staff_inbound(
                session,
                vault=services.vault,
                staff=staff,
                channel=Channel.TELEGRAM,
                provider_id=inbound.provider_id,
                body=inbound.text,
            )
            await staff_handlers.handle_staff_message(
                session, services, staff=staff, message=inbound, stored=stored
            )
            stored.status = MessageStatus.PROCESSED
            stored.processed_at = services.clock()
            session.add(stored)
    except IntegrityError:
        return  # the same update, stored a moment ago by another process
    except Exception as exc:
        # Type only: the exception may quote what was written. The update is kept as failed,
        # so Telegram does not resend it for a day, and the staff member is told.
        log.error("staff update failed: %s", type(exc).__name__)
        await _staff_failed(services, staff, inbound)
    _poke(app)


async def _seen(session: Any, inbound: InboundMessage) -> bool:
    found = await repo.find_message(
        session, channel=Channel.TELEGRAM, provider_id=inbound.provider_id
    )
    return found is not None


async def _staff_failed(services: Services, staff: Staff, inbound: InboundMessage) -> None:
    with contextlib.suppress(IntegrityError):
        async with transaction(services.sessions) as session:
            if await _seen(session, inbound):
                return
            stored = await repo.store_staff_inbound(
                session,
                vault=services.vault,
                staff=staff,
                channel=Channel.TELEGRAM,
                provider_id=inbound.provider_id,
                body=inbound.text,
            )
            stored.status = MessageStatus.FAILED
            session.add(stored)
            await repo.enqueue_staff(
                session,
                vault=services.vault,
                due_at=services.clock(),
                text="Sorry, that did not work and nothing was sent. Please try again.",
                staff=staff,
            )


# --------------------------------------------------------------------------- linking


def _link_button(lang: str) -> str:
    return gettext(lang, "Share my phone number")


async def _offer_link(services: Services, client_id: int) -> None:
    """Offers a new Telegram client the button that links them to an SMS client."""
    async with transaction(services.sessions) as session:
        client = await session.get(Client, client_id)
        if client is None:
            return
        await _say(
            session,
            services,
            client,
            gettext(
                client.language,
                "Have you already texted us from your phone? Tap “{button}” below to connect "
                "this chat to your case. Otherwise, let's begin.",
                button=_link_button(client.language),
            ),
            request_contact=True,
        )


async def _say(
    session: Any,
    services: Services,
    client: Client,
    text: str,
    *,
    request_contact: bool = False,
    remove_keyboard: bool = False,
) -> None:
    extra: dict[str, Any] = {}
    if request_contact:
        extra["request_contact"] = _link_button(client.language)
    if remove_keyboard:
        extra["remove_keyboard"] = True
    await repo.enqueue(
        session,
        vault=services.vault,
        client=client,
        text=text,
        channel=Channel.TELEGRAM,
        due_at=services.clock(),
        urgent=True,
        extra=extra or None,
    )


def _contact_phone(raw: str) -> str | None:
    digits = "".join(ch for ch in raw if ch.isdigit())
    if not digits:
        return None
    try:
        # Telegram sends the number without its "+" but always with the country code.
        return normalize_phone("+" + digits)
    except PhoneError:
        return None


async def _link_update(app: web.Application, inbound: InboundMessage) -> None:
    """Links this Telegram account to the client with the shared phone number — only when the
    contact is the sender's own (contact.user_id == from.id), as Telegram's button sends it."""
    services = app[SERVICES]
    now = services.clock()
    try:
        async with transaction(services.sessions) as session:
            if await _seen(session, inbound):
                return
            client, ident, _created = await repo.get_or_create_client(
                session,
                vault=services.vault,
                channel=Channel.TELEGRAM,
                address=inbound.address,
                language=services.settings.default_language,
                timezone=services.settings.default_timezone,
            )
            if client.wrapped_key is None:
                client = await repo.restart_erased_identity(
                    session,
                    vault=services.vault,
                    identity=ident,
                    address=inbound.address,
                    language=services.settings.default_language,
                    timezone=services.settings.default_timezone,
                )
            ident.last_inbound_at = now
            session.add(ident)
            stored = await repo.store_inbound(
                session,
                vault=services.vault,
                client=client,
                channel=Channel.TELEGRAM,
                provider_id=inbound.provider_id,
                body="" if inbound.extra.get("contact") else inbound.text,
            )
            stored.status = MessageStatus.PROCESSED
            stored.processed_at = now
            session.add(stored)
            await _link(session, services, client, ident, inbound)
    except IntegrityError:
        return  # stored a moment ago by another process
    _poke(app)


async def _link(
    session: Any,
    services: Services,
    client: Client,
    ident: ChannelIdentity,
    inbound: InboundMessage,
) -> None:
    lang = client.language
    contact = inbound.extra.get("contact")
    if contact is None:
        await _say(
            session,
            services,
            client,
            gettext(
                lang,
                "Tap “{button}” below to connect this chat to your case.",
                button=_link_button(lang),
            ),
            request_contact=True,
        )
        return

    async def refuse(reason: str, text: str, *, again: bool = True) -> None:
        await repo.audit(
            session,
            actor_kind="client",
            action="identity.link",
            client_id=client.id,
            allowed=False,
            detail=reason,
        )
        await _say(session, services, client, text, request_contact=again)

    if contact.get("user_id") != int(inbound.extra["from_id"]):
        await refuse(
            "contact of someone else",
            gettext(
                lang,
                "I can only connect your own phone number. Please tap “{button}” below "
                "instead of sending a contact.",
                button=_link_button(lang),
            ),
        )
        return
    phone = _contact_phone(str(contact.get("phone") or ""))
    owner = (
        await repo.find_client_by_address(
            session, vault=services.vault, channel=Channel.SMS, address=phone
        )
        if phone
        else None
    )
    if owner is None or owner.wrapped_key is None:
        await refuse(
            "no client with that number",
            gettext(
                lang,
                "We have no case for this phone number. Just write here and we will help you.",
            ),
            again=False,
        )
        return
    if owner.id == client.id:
        await _say(
            session,
            services,
            client,
            gettext(lang, "This chat is already connected to your case."),
            remove_keyboard=True,
        )
        return
    assert client.id is not None
    if await repo.open_cases(session, client_id=client.id):
        await refuse(
            "this Telegram account has its own case",
            gettext(
                lang,
                "This chat already has its own case. A coordinator will connect the two.",
            ),
            again=False,
        )
        return
    await repo.relink_identity(session, vault=services.vault, identity=ident, client=owner)
    await repo.audit(
        session,
        actor_kind="client",
        action="identity.link",
        client_id=owner.id,
        detail=f"telegram linked (was client {client.id})",
    )
    await _say(
        session,
        services,
        owner,
        gettext(
            owner.language,
            "Done: this chat is now connected to your case. You can write here or by text "
            "message, whichever is easier.",
        ),
        remove_keyboard=True,
    )


# --------------------------------------------------------------------------- lifecycle


async def sync_commands(app: web.Application) -> None:
    """Telegram's command menu: client commands for everyone, each staff chat its role's."""
    services = app[SERVICES]
    per_chat: dict[int, Any] = {}
    async with services.sessions() as session:
        for member in await repo.active_staff(session):
            tid = repo.staff_telegram_id(services.vault, member)
            if tid is not None:
                per_chat[tid] = staff_handlers.commands_for(member)
    group = services.settings.telegram_staff_chat_id
    if group is not None:
        per_chat[group] = staff_handlers.COORDINATOR_COMMANDS
    await app[TELEGRAM].set_commands(staff_handlers.CLIENT_COMMANDS, per_chat)


async def _report_loop(app: web.Application) -> None:
    services = app[SERVICES]
    while True:
        await asyncio.sleep(REPORT_EVERY)
        try:
            if await relay.report_deliveries(services):
                _poke(app)
            if await staff_handlers.report_broadcasts(services):
                _poke(app)
        except Exception as exc:
            log.error("delivery report failed: %s", type(exc).__name__)


async def telegram_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connects the bot (webhook or long polling) for the application's lifetime."""
    channel = app[TELEGRAM]

    async def sink(update: Update) -> None:
        await receive(app, update)

    async def on_ready() -> None:
        await sync_commands(app)

    await channel.start(sink, on_ready=on_ready)
    reporter = asyncio.create_task(_report_loop(app), name="telegram-delivery-reports")
    yield
    reporter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reporter
    await channel.stop()


def setup(app: web.Application) -> None:
    """Adds the webhook route, the Telegram sender and its lifecycle when a token is set."""
    services = app[SERVICES]
    if not services.settings.telegram_enabled:
        return
    channel = TelegramChannel(services.settings)
    app[TELEGRAM] = channel
    services.senders[Channel.TELEGRAM] = TelegramSender(channel)
    app.router.add_post(WEBHOOK_PATH, webhook)
    app.cleanup_ctx.append(telegram_ctx)

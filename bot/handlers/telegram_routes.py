"""POST /telegram/webhook and the Telegram lifecycle: verify, parse, hand to the router.

Every update, from the webhook or from long polling, goes through ``receive``: parsed into
one InboundMessage and handed to the same router as an SMS (``router.receive``), which
stores it before the 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from telegram import Update

from bot.appkeys import DISPATCHER, METRICS, SERVICES
from bot.channels.telegram import (
    WEBHOOK_PATH,
    TelegramChannel,
    TelegramSender,
    parse_update,
)
from bot.dispatch import process_name
from bot.handlers import router
from bot.handlers import staff as staff_handlers
from bot.handlers.inbound import PROCESSOR
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Channel

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name, not a secret
TELEGRAM = web.AppKey("telegram", TelegramChannel)


# --------------------------------------------------------------------------- webhook


def _secret_ok(settings_secret: str | None, given: str | None) -> bool:
    if not settings_secret or given is None:
        return False
    # Constant time: the comparison must not tell an attacker how much of a guess matched.
    return hmac.compare_digest(given.encode("utf-8"), settings_secret.encode("utf-8"))


async def webhook_route(request: web.Request) -> web.Response:
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
    """Hands one update to the router; a pressed button's spinner is stopped after."""
    inbound = parse_update(update)
    if inbound is None:
        return
    dispatcher = app.get(DISPATCHER)
    road = await router.receive(
        app[SERVICES],
        inbound,
        processor=app.get(PROCESSOR),
        metrics=app[METRICS],
        poke=dispatcher.poke if dispatcher is not None else None,
    )
    chat = inbound.telegram
    if road != router.Road.REFUSED and chat is not None and chat.callback_query_id:
        # Stops the button's spinner. Not a message, and not worth delaying the 200 for.
        app[TELEGRAM].answer_callback_soon(chat.callback_query_id)


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


POLL_LEASE = "telegram-poller"


class PollerLease:
    """Exactly one process long-polls Telegram (it allows one consumer): the lease holder.

    Every ``renew_every`` seconds the holder renews the lease for ``ttl``, and every other
    process tries to take it: when the holder dies it stops renewing and another takes over
    once the lease expires; when it stops cleanly it gives the lease up for the next try.
    A holder that cannot renew (its lease expired, the database is away) stops polling
    before another may start.
    """

    RENEW_EVERY = 3.0
    TTL = timedelta(seconds=15)

    def __init__(
        self,
        services: Services,
        channel: TelegramChannel,
        *,
        name: str | None = None,
        renew_every: float = RENEW_EVERY,
        ttl: timedelta = TTL,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.services = services
        self.channel = channel
        self.name = (name or process_name())[:64]
        self.renew_every = renew_every
        self.ttl = ttl
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    async def step(self) -> bool:
        """Take or renew the lease, and poll exactly when held; True when held."""
        try:
            async with transaction(self.services.sessions) as session:
                held = await repo.take_lease(
                    session,
                    name=POLL_LEASE,
                    holder=self.name,
                    now=self.services.clock(),
                    ttl=self.ttl,
                )
        except Exception as exc:
            log.warning("Telegram poller lease could not be renewed: %s", type(exc).__name__)
            held = False
        if held:
            self.channel.start_polling()
        elif self.channel.polling:
            log.info("Telegram poller lease lost; another process polls")
            await self.channel.stop_polling()
        return held

    async def _run(self) -> None:
        while True:
            await self.step()
            await self._sleep(self.renew_every)

    def start(self) -> None:
        """Keeps trying for the lease in the background until ``stop``."""
        self._task = asyncio.create_task(self._run(), name="telegram-poller-lease")

    async def stop(self) -> None:
        """Stops polling, then gives the lease up so another process takes over at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.channel.stop_polling()
        with contextlib.suppress(Exception):
            async with transaction(self.services.sessions) as session:
                await repo.release_lease(
                    session, name=POLL_LEASE, holder=self.name, now=self.services.clock()
                )


POLLER = web.AppKey("telegram_poller", PollerLease)


async def telegram_ctx(app: web.Application) -> AsyncIterator[None]:
    """Connects the bot (webhook or long polling) for the application's lifetime.

    Without a webhook, polling is left to ``PollerLease``: one process at a time.
    """
    channel = app[TELEGRAM]

    async def sink(update: Update) -> None:
        await receive(app, update)

    async def on_ready() -> None:
        await sync_commands(app)
        if poller is not None:
            await poller.step()  # poll at once rather than at the next renewal

    poller = app.get(POLLER)
    await channel.start(sink, on_ready=on_ready, poll=False)
    if poller is not None:
        poller.start()
    yield
    if poller is not None:
        await poller.stop()
    await channel.stop()


def setup(app: web.Application, *, webhook: bool = True, poller: bool = True) -> None:
    """Adds the webhook route (``webhook``), the Telegram sender and its lifecycle when a
    token is set; without a public URL, ``poller`` processes take turns to long-poll."""
    services = app[SERVICES]
    if not services.settings.telegram_enabled:
        return
    channel = TelegramChannel(services.settings)
    app[TELEGRAM] = channel
    services.senders[Channel.TELEGRAM] = TelegramSender(channel)
    if channel.long_polls and poller:
        app[POLLER] = PollerLease(services, channel)
    if webhook:
        app.router.add_post(WEBHOOK_PATH, webhook_route)
    app.cleanup_ctx.append(telegram_ctx)

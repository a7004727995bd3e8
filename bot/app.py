"""create_app(settings): the one place the parts are wired together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.appkeys import METRICS, SERVICES
from bot.casework.status import load_statuses
from bot.config import Settings
from bot.conversations import intake
from bot.dispatch import dispatcher_ctx
from bot.handlers import api, health, telegram_routes, twilio_routes
from bot.handlers.inbound import processor_ctx
from bot.metrics import Metrics
from bot.scheduler import scheduler_ctx
from bot.services import Services

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, services: Services | None = None) -> web.Application:
    """Build the aiohttp application: routes, and background work started and stopped with it."""
    settings.check_production()
    intake.check_intake(settings)  # a broken intake file stops the bot before it answers anyone
    load_statuses(settings)  # so does a broken statuses file, before the first status
    app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[health.request_timer])
    svc = services or Services.build(settings)
    app[SERVICES] = svc
    app[METRICS] = Metrics()
    health.setup(app)
    twilio_routes.setup(app)
    api.setup(app)

    async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        if services is None:  # we built them, we close them
            await svc.close()

    app.cleanup_ctx.append(_services_ctx)
    # Telegram (route, sender, webhook or polling) before the dispatcher that sends through it.
    telegram_routes.setup(app)
    # The dispatcher first: the inbound processor wakes it; stopped in reverse order.
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(processor_ctx)
    # Reminders, check-ins and scheduled sends become outbox rows; wakes the dispatcher.
    app.cleanup_ctx.append(scheduler_ctx)
    return app

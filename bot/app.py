"""create_app(settings): the one place the parts are wired together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from enum import StrEnum

from aiohttp import web

from bot.appkeys import METRICS, SERVICES
from bot.casework.status import load_statuses
from bot.config import Settings
from bot.conversations import intake
from bot.dispatch import dispatcher_ctx
from bot.handlers import api, health, telegram_routes, twilio_routes
from bot.handlers.inbound import SWEEP_EVERY, processor_ctx
from bot.metrics import Metrics
from bot.scheduler import scheduler_ctx
from bot.services import Services

log = logging.getLogger(__name__)


class ProcessRole(StrEnum):
    """What a `probono serve` process does; any number of each share one PostgreSQL database."""

    ALL = "all"  # everything below, in one process (the only choice on SQLite)
    WEB = "web"  # verify, store and acknowledge webhooks; pages and the API
    WORKER = "worker"  # process stored inbound, dispatch the outbox, the scheduler, polling


# How often a worker looks for messages web processes stored: they cannot hand them over.
WORKER_SWEEP_SECONDS = 0.5


def create_app(
    settings: Settings,
    *,
    services: Services | None = None,
    role: ProcessRole | str = ProcessRole.ALL,
) -> web.Application:
    """Build the aiohttp application for ``role``: routes, and background work started and
    stopped with it."""
    role = ProcessRole(role)
    settings.check_production()
    intake.check_intake(settings)  # a broken intake file stops the bot before it answers anyone
    load_statuses(settings)  # so does a broken statuses file, before the first status
    app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[health.request_timer])
    svc = services or Services.build(settings)
    app[SERVICES] = svc
    app[METRICS] = Metrics()
    web_role = role in (ProcessRole.ALL, ProcessRole.WEB)
    worker_role = role in (ProcessRole.ALL, ProcessRole.WORKER)
    health.setup(app)
    twilio_routes.setup(app, routes=web_role)
    if web_role:
        api.setup(app)

    async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        if services is None:  # we built them, we close them
            await svc.close()

    app.cleanup_ctx.append(_services_ctx)
    # Telegram (route, sender, webhook or polling) before the dispatcher that sends through it.
    telegram_routes.setup(app, webhook=web_role, poller=worker_role)
    if not worker_role:
        return app
    if role == ProcessRole.WORKER:
        app[SWEEP_EVERY] = WORKER_SWEEP_SECONDS
    # The dispatcher first: the inbound processor wakes it; stopped in reverse order.
    app.cleanup_ctx.append(dispatcher_ctx)
    app.cleanup_ctx.append(processor_ctx)
    # Reminders, check-ins and scheduled sends become outbox rows; wakes the dispatcher.
    app.cleanup_ctx.append(scheduler_ctx)
    return app

"""create_app(settings): the one place the parts are wired together."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from bot.appkeys import METRICS, SERVICES
from bot.config import Settings
from bot.handlers import health
from bot.metrics import Metrics
from bot.services import Services

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, services: Services | None = None) -> web.Application:
    """Build the aiohttp application: routes, and background work started and stopped with it."""
    settings.check_production()
    app = web.Application(client_max_size=2 * 1024 * 1024)
    svc = services or Services.build(settings)
    app[SERVICES] = svc
    app[METRICS] = Metrics()
    health.setup(app)

    async def _services_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        if services is None:  # we built them, we close them
            await svc.close()

    app.cleanup_ctx.append(_services_ctx)
    return app

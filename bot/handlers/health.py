"""GET /healthz and GET /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.appkeys import METRICS, SERVICES
from storage.db import ping


async def healthz(request: web.Request) -> web.Response:
    """Answers 200 when the database answers, 503 otherwise."""
    services = request.app[SERVICES]
    ok = await ping(services.engine)
    body = {
        "status": "ok" if ok else "unavailable",
        "database": "ok" if ok else "unreachable",
        "sms": services.settings.sms_enabled,
        "telegram": services.settings.telegram_enabled,
    }
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    """Serves the Prometheus text exposition."""
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)

"""GET /healthz (liveness), GET /readyz (readiness) and GET /metrics, and the request timer."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import SQLAlchemyError

from bot.appkeys import METRICS, SERVICES
from bot.handlers.telegram_routes import POLL_LEASE, TELEGRAM
from bot.handlers.twilio_routes import CREDENTIALS
from storage import repo
from storage.db import ping
from storage.migrate import current_revision, head_revision

# Requests that matched no route share one label: raw paths would make a series per scan.
UNMATCHED = "unmatched"
# Any other method a client invents is "other", for the same reason.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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


def _check(ok: bool, detail: str) -> dict[str, Any]:
    return {"ok": ok, "detail": detail}


async def _migrations(request: web.Request) -> dict[str, Any]:
    try:
        current = await current_revision(request.app[SERVICES].engine)
    except (SQLAlchemyError, OSError) as exc:
        return _check(False, f"cannot read the revision ({type(exc).__name__})")
    head = head_revision()
    if current == head:
        return _check(True, f"at {head}")
    return _check(False, f"database at {current or 'nothing'}, code needs {head}")


def _sms(request: web.Request) -> dict[str, Any]:
    watch = request.app.get(CREDENTIALS)
    if watch is None:
        return _check(False, "no SMS sender (TWILIO_FROM_NUMBER or a messaging service)")
    if watch.result is None:
        return _check(False, "asking Twilio about the credentials")
    return _check(watch.result.ok, watch.result.detail)


async def _telegram(request: web.Request, *, database: bool) -> dict[str, Any]:
    """The webhook set, or updates polled: by this process, or by the one holding the lease
    (Telegram allows one poller; the others stand by, ready to take over)."""
    channel = request.app.get(TELEGRAM)
    if channel is None:
        return _check(False, "not set up")
    ok, detail = channel.readiness()
    if ok or not (channel.ready and channel.long_polls and not channel.polling and database):
        return _check(ok, detail)
    services = request.app[SERVICES]
    async with services.sessions() as session:
        holder = await repo.lease_holder(session, name=POLL_LEASE, now=services.clock())
    if holder is None:
        return _check(False, "no process polls Telegram")
    return _check(True, "standing by: another process polls")


async def readyz(request: web.Request) -> web.Response:
    """Answers 200 when migrations are current, the database answers and every configured
    channel can carry messages; 503 naming what fails."""
    services = request.app[SERVICES]
    settings = services.settings
    database = await ping(services.engine)
    checks: dict[str, dict[str, Any]] = {
        "database": _check(database, "answers" if database else "unreachable"),
        "migrations": (
            await _migrations(request) if database else _check(False, "database unreachable")
        ),
    }
    if settings.sms_enabled:
        checks["sms"] = _sms(request)
    if settings.telegram_enabled:
        checks["telegram"] = await _telegram(request, database=database)
    failing = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "not ready" if failing else "ready", "failing": failing, "checks": checks}
    return web.json_response(body, status=503 if failing else 200)


async def metrics(request: web.Request) -> web.Response:
    """Serves the Prometheus text exposition, the database-wide gauges read now."""
    services = request.app[SERVICES]
    registry = request.app[METRICS]
    # A database that is away leaves the gauges at their last value; the scrape still answers.
    if await ping(services.engine):
        await registry.refresh_database_gauges(services.sessions, now=services.clock())
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@web.middleware
async def request_timer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Times every request by its route template (``/api/cases/{ref}/status``), never its path."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        method = request.method if request.method in METHODS else "other"
        request.app[METRICS].http_seconds.labels(
            method=method, route=route, status=str(status)
        ).observe(time.perf_counter() - started)


def setup(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)

"""CLI: serve and db upgrade."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from aiohttp import web
from sqlalchemy.engine import make_url

from bot.config import Settings, is_loopback
from bot.handlers.cli_common import CommandError, ensure_migrated
from storage import migrate

log = logging.getLogger(__name__)


async def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    """Applies migrations to the configured database."""
    await migrate.upgrade_async(settings.database_url)
    print(f"database at revision {migrate.head_revision()}")
    return 0


ROLES = ("all", "web", "worker")


def check_role(role: str, database_url: str) -> None:
    """SQLite is one process's database: only ``all`` runs on it."""
    if role != "all" and make_url(database_url).get_backend_name() == "sqlite":
        raise CommandError(
            f"--role {role} needs PostgreSQL: a SQLite database is not shared between "
            "processes, so run one `probono serve` (--role all)"
        )


async def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Runs one process's role (webhooks, dispatcher, scheduler) until SIGTERM or Ctrl-C."""
    from bot.app import create_app

    settings.check_production()  # before anything is touched: weak settings name themselves
    warn_if_exposed(settings, args.host)
    check_role(args.role, settings.database_url)
    await ensure_migrated(settings)
    app = create_app(settings, role=args.role)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    log.info("serving (%s) on http://%s:%s", args.role, args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0


def warn_if_exposed(settings: Settings, host: str) -> None:
    """Says loudly that a development server reachable from other machines is not for clients."""
    if settings.is_production or is_loopback(host):
        return
    log.warning(
        "NOT FOR REAL CLIENTS: PROBONO_ENV=%s is listening on %s, reachable from other "
        "machines; its key may be generated on disk and its secrets are not checked. "
        "Use PROBONO_ENV=production for real clients.",
        settings.probono_env,
        host,
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "serve",
        help="run webhooks, dispatcher and scheduler",
        description="Run the bot. One process does everything (--role all); on PostgreSQL, "
        "any number of web and worker processes can share the database instead.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="all: everything (default, the only role on SQLite); web: verify, store and "
        "acknowledge webhooks, serve the API and health; worker: answer stored messages, "
        "send the outbox, run the scheduler and the Telegram poller (PostgreSQL only)",
    )
    p.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database maintenance")
    dbs = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dbs.add_parser("upgrade", help="apply migrations")
    up.set_defaults(func=cmd_db_upgrade)

"""The `probono` command line: one parser, subcommands registered by bot/handlers/cli_*.py."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from bot.clock import Clock, system_clock
from bot.config import ConfigError, Settings, load_settings
from bot.handlers.cli_common import CommandError
from bot.logging_setup import setup_logging

# Each module has register(subparsers) and adds its commands with set_defaults(func=...).
COMMAND_MODULES = [
    "bot.handlers.cli_core",
    "bot.handlers.cli_chat",
    "bot.handlers.cli_admin",
    "bot.handlers.cli_broadcast",
    "bot.handlers.cli_appointments",
    "bot.handlers.cli_import",
]

Command = Callable[[argparse.Namespace, Settings], Awaitable[int | None]]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors read like every other error: one line."""

    def error(self, message: str) -> NoReturn:
        # Subcommand parsers are named "probono case assign"; say which one complained.
        where = self.prog.removeprefix("probono").strip()
        fail(f"{where}: {message}" if where else message)


def build_parser() -> argparse.ArgumentParser:
    # add_subparsers() makes every subcommand parser of the same class, so all are one-line.
    parser = _Parser(
        prog="probono",
        description="probono-bot: SMS and Telegram client engagement for legal-aid programs.",
        epilog="Settings come from the environment or a .env file; see .env.example.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"probono: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _invalid(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    # A validator's own words, without pydantic's "Value error, " in front of them.
    error = first.get("ctx", {}).get("error")
    msg = str(error) if isinstance(error, ValueError) else first.get("msg")
    return f"setting {where}: {msg}" if where else str(msg)


def main(argv: Sequence[str] | None = None, *, clock: Clock = system_clock) -> int:
    """Parse, build settings, run the command; errors become one line and a non-zero exit.

    The command reads time from ``clock`` (``args.clock``), so a test can run it at any date.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.clock = clock
    setup_logging(verbose=args.verbose)
    try:
        settings = load_settings()
    except ValidationError as exc:
        fail(_invalid(exc))
    except ConfigError as exc:
        fail(str(exc))
    if settings.log_format != "text":
        setup_logging(verbose=args.verbose, fmt=settings.log_format)
    func: Any = args.func
    try:
        result = asyncio.run(func(args, settings))
    except (CommandError, ConfigError) as exc:
        fail(str(exc))
    except ValidationError as exc:
        fail(_invalid(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `probono` command line: one parser, subcommands registered by bot/handlers/cli_*.py."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from pydantic import ValidationError

from bot.config import ConfigError, Settings, load_settings
from bot.logging_setup import setup_logging

# Each module has register(subparsers) and adds its commands with set_defaults(func=...).
COMMAND_MODULES = [
    "bot.handlers.cli_core",
    "bot.handlers.cli_chat",
    "bot.handlers.cli_admin",
    "bot.handlers.cli_broadcast",
    "bot.handlers.cli_cases",
]

Command = Callable[[argparse.Namespace, Settings], Awaitable[int | None]]


class CommandError(Exception):
    """Bad input or a refused operation: one line on stderr, exit code 2, nothing changed."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, build settings, run the command; errors become one line and a non-zero exit."""
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(verbose=args.verbose)
    try:
        settings = load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        fail(f"setting {where}: {first.get('msg')}")
    func: Any = args.func
    try:
        result = asyncio.run(func(args, settings))
    except (CommandError, ConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

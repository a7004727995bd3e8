"""CLI: `probono chat` talks to the bot in the terminal as a client, through the real path."""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import uuid

from bot.channels.console import ConsoleSender
from bot.config import Settings
from bot.core import InboundMessage
from bot.dispatch import Dispatcher
from bot.handlers import router
from bot.handlers.cli_common import CommandError, clock_of, ensure_migrated
from bot.handlers.inbound import InboundProcessor
from bot.i18n import LANGUAGES
from bot.phones import PhoneError, normalize_phone
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Channel

QUIT = "/quit"


def _start_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[str | None]) -> None:
    """Read stdin in a daemon thread, so Ctrl-C or exit never waits for a blocked read."""

    def _read() -> None:
        while True:
            line = sys.stdin.readline()
            loop.call_soon_threadsafe(queue.put_nowait, line if line else None)
            if not line:
                return

    threading.Thread(target=_read, name="chat-stdin", daemon=True).start()


async def _ensure_client(services: Services, phone: str, language: str | None) -> int:
    """The console identity for this phone: the existing client's if they text us, else new."""
    settings = services.settings
    async with transaction(services.sessions) as session:
        vault = services.vault
        ident = await repo.find_identity(
            session, vault=vault, channel=Channel.CONSOLE, address=phone
        )
        if ident is not None:
            return ident.client_id
        known = await repo.find_client_by_address(
            session, vault=vault, channel=Channel.SMS, address=phone
        )
        if known is not None and known.wrapped_key is not None:
            await repo.add_identity(
                session, vault=vault, client=known, channel=Channel.CONSOLE, address=phone
            )
            assert known.id is not None
            return known.id
        client = await repo.create_client(
            session,
            vault=vault,
            channel=Channel.CONSOLE,
            address=phone,
            language=language or settings.default_language,
            timezone=settings.default_timezone,
        )
        assert client.id is not None
        return client.id


async def cmd_chat(args: argparse.Namespace, settings: Settings) -> int:
    """Talks to the bot as the client with this phone number until /quit or end of input."""
    try:
        phone = normalize_phone(args.phone)
    except PhoneError as exc:
        raise CommandError(str(exc)) from None
    if args.language is not None and args.language not in LANGUAGES:
        raise CommandError(f"unknown language {args.language!r}; one of {', '.join(LANGUAGES)}")
    await ensure_migrated(settings)
    # Someone is waiting at the keyboard: quiet hours would only hide the answers.
    services = Services.build(
        settings.model_copy(update={"quiet_hours": None}), clock=clock_of(args)
    )
    # Only the console: this process never texts or messages anyone.
    services.senders = {Channel.CONSOLE: ConsoleSender(out=sys.stdout)}
    dispatcher = Dispatcher(services)
    processor = InboundProcessor(services)
    interactive = sys.stdin.isatty()
    try:
        client_id = await _ensure_client(services, phone, args.language)
        print(f"Talking to {settings.program_name}. Type {QUIT} or press Ctrl-D to leave.")
        await processor.process_client(client_id)
        await dispatcher.drain()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        _start_reader(asyncio.get_running_loop(), queue)
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = await queue.get()
            if line is None:
                break
            text = line.rstrip("\r\n")
            if text.strip() == QUIT:
                break
            if not text.strip():
                continue
            inbound = InboundMessage(
                channel=Channel.CONSOLE,
                address=phone,
                provider_id=f"console-{uuid.uuid4().hex}",
                text=text,
            )
            await router.receive(services, inbound, processor=processor)
            await processor.drain()
            await dispatcher.drain()
    finally:
        await services.close()
    if interactive:
        print()
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "chat",
        help="talk to the bot in the terminal as a client (no credentials needed)",
        description="Talk to the bot as the client with this phone number, through the same "
        "conversation, store and outbox as SMS. Leave with /quit or Ctrl-D.",
    )
    p.add_argument("--phone", required=True, help="the client's phone number, e.g. +15551234567")
    p.add_argument(
        "--language",
        default=None,
        help=f"language of a new client ({', '.join(LANGUAGES)}); default DEFAULT_LANGUAGE",
    )
    p.set_defaults(func=cmd_chat)

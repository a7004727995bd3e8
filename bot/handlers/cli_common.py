"""What the CLI commands share: services for one command, lookups, and input checks that
turn a bad flag into one line naming it."""

from __future__ import annotations

import argparse
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework import limits
from bot.casework.base import CaseworkError
from bot.clock import Clock, system_clock
from bot.config import Settings
from bot.i18n import LANGUAGES, available_languages
from bot.phones import PhoneError, normalize_phone
from bot.services import Services
from storage import migrate, repo
from storage.models import Case, Channel, Client, Role

log = logging.getLogger(__name__)


class CommandError(Exception):
    """Bad input or a refused operation: one line on stderr, exit code 2, nothing changed."""


# --------------------------------------------------------------------------- plumbing


async def ensure_migrated(settings: Settings) -> None:
    """Migrate in development; in production refuse to run on an old schema."""
    if await migrate.is_up_to_date(settings.database_url):
        return
    if settings.is_production:
        raise CommandError("the database is not migrated: run `probono db upgrade` first")
    log.info("migrating the development database")
    await migrate.upgrade_async(settings.database_url)


async def migrated(settings: Settings) -> None:
    """Refuses an old schema in production, migrates in development; quietly."""
    noisy = logging.getLogger("alembic.runtime.migration")
    before = noisy.level
    # Alembic announces its context on every check; an admin command's stderr is for errors.
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        noisy.setLevel(logging.WARNING)
    try:
        await ensure_migrated(settings)
    finally:
        noisy.setLevel(before)


def clock_of(args: argparse.Namespace) -> Clock:
    """The clock `probono` was started with (bot.cli.main puts it on the arguments)."""
    clock: Clock = getattr(args, "clock", system_clock)
    return clock


@asynccontextmanager
async def services_for(args: argparse.Namespace, settings: Settings) -> AsyncIterator[Services]:
    """Services for one command, on a migrated database, closed afterwards."""
    await migrated(settings)
    services = Services.build(settings, clock=clock_of(args))
    try:
        yield services
    finally:
        await services.close()


@contextmanager
def refusals(prefix: str = "") -> Iterator[None]:
    """A casework refusal becomes the command's one-line error, in the same words."""
    try:
        yield
    except CaseworkError as exc:
        raise CommandError(f"{prefix}{exc}") from None


def checked(check: Callable[[str], str], raw: str, flag: str) -> str:
    """A casework input check applied to a flag; the refusal names the flag."""
    with refusals(f"{flag}: "):
        return check(raw)


# --------------------------------------------------------------------------- lookups

# Channels whose address is a phone number: `probono chat` clients count as well as SMS ones.
PHONE_CHANNELS = (Channel.SMS, Channel.CONSOLE)


async def find_by_phone(services: Services, session: AsyncSession, phone: str) -> Client | None:
    """The client with this number on any phone channel, if there is one."""
    for channel in PHONE_CHANNELS:
        client = await repo.find_client_by_address(
            session, vault=services.vault, channel=channel, address=phone
        )
        if client is not None:
            return client
    return None


async def client_by_phone(services: Services, session: AsyncSession, phone: str) -> Client:
    """The client with this number, or the command's error."""
    client = await find_by_phone(services, session, phone)
    if client is None:
        raise CommandError(
            "no client with that phone number (register one with `probono client add`)"
        )
    return client


async def case_by_reference(session: AsyncSession, reference: str) -> Case:
    """The case with this reference, or the command's error."""
    case = await repo.get_case(session, reference=reference)
    if case is None:
        raise CommandError(f"no case {repo.normalize_reference(reference)}")
    return case


# --------------------------------------------------------------------------- input checks


def phone(raw: str) -> str:
    """--phone as E.164."""
    try:
        return normalize_phone(raw)
    except PhoneError as exc:
        # The message never repeats the number: it may end up in a shell history or a log.
        raise CommandError(f"--phone: {exc}") from None


def name(raw: str) -> str:
    """--name, one line."""
    with refusals():
        return limits.check_name(raw, "--name")


def role(raw: str) -> str:
    """--role: attorney or coordinator."""
    roles = [r.value for r in Role]
    value = raw.strip().lower()
    if value not in roles:
        raise CommandError(f"--role must be one of {', '.join(roles)}, not {raw!r}")
    return value


def telegram_id(raw: str) -> int:
    """--telegram-id: a positive number."""
    text = raw.strip()
    if not text.isdigit() or int(text) <= 0:
        raise CommandError(
            f"--telegram-id must be a positive number (a Telegram user id), not {raw!r}"
        )
    return int(text)


def language(raw: str) -> str:
    """--language: a language the bot writes in."""
    known = list(dict.fromkeys([*LANGUAGES, *available_languages()]))
    value = raw.strip().lower()
    if value not in known:
        raise CommandError(f"--language must be one of {', '.join(known)}, not {raw!r}")
    return value


def timezone(raw: str) -> str:
    """--timezone: an IANA zone."""
    return checked(limits.check_timezone, raw, "--timezone")


def category(raw: str) -> str:
    """--category: a short word."""
    return checked(limits.check_category, raw, "--category")


def status(raw: str) -> str:
    """A case status (the words are casework's, the same on every entry point)."""
    with refusals():
        return limits.check_status(raw)

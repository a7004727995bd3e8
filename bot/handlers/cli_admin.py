"""CLI: staff, clients, cases, keys and erasure — the program's administration commands."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import TypeAlias

from sqlmodel import col, select

from bot.casework.assign import assign_case
from bot.casework.base import CLI as ACTOR
from bot.casework.erase import erase_client
from bot.casework.status import change_status
from bot.config import Settings
from bot.handlers import cli_common as common
from bot.handlers.cli_common import CommandError, refusals, services_for
from bot.i18n import LANGUAGES
from bot.keys import load_vault, prepend_key_file
from storage import repo
from storage.crypto import CryptoError, generate_key
from storage.db import transaction
from storage.models import Channel, Role, Staff
from storage.rotate import RotationError, rotate_keys

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- staff


async def cmd_staff_add(args: argparse.Namespace, settings: Settings) -> int:
    """Registers an attorney or coordinator; prints their staff id."""
    name = common.name(args.name)
    role = common.role(args.role)
    telegram_id = common.telegram_id(args.telegram_id) if args.telegram_id is not None else None
    phone = common.phone(args.phone) if args.phone is not None else None
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        if telegram_id is not None:
            hashes = services.vault.blind_indexes(
                repo.staff_index_kind("telegram"), str(telegram_id)
            )
            other = await session.scalar(
                select(Staff.id).where(col(Staff.telegram_id_hash).in_(hashes))
            )
            if other is not None:
                raise CommandError(f"staff {other} already has that Telegram id")
        staff = await repo.create_staff(
            session,
            vault=services.vault,
            name=name,
            role=role,
            telegram_id=telegram_id,
            phone=phone,
        )
        await repo.audit(session, actor_kind="cli", action="staff.add", detail=f"staff {staff.id}")
    print(f"registered {role}, staff id:")
    print(staff.id)
    return 0


# --------------------------------------------------------------------------- clients


async def cmd_client_add(args: argparse.Namespace, settings: Settings) -> int:
    """Registers a client reachable by SMS at that number; prints their client id."""
    phone = common.phone(args.phone)
    name = common.name(args.name)
    language = common.language(args.language or settings.default_language)
    timezone = common.timezone(args.timezone or settings.default_timezone)
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        existing = await common.find_by_phone(services, session, phone)
        if existing is not None:
            raise CommandError(f"client {existing.id} already has that phone number")
        client = await repo.create_client(
            session,
            vault=services.vault,
            channel=Channel.SMS,
            address=phone,
            name=name,
            language=language,
            timezone=timezone,
        )
        await repo.audit(session, actor_kind="cli", action="client.add", client_id=client.id)
    print(f"registered client ({language}, {timezone}), client id:")
    print(client.id)
    return 0


async def _confirm_erase(client_id: int) -> None:
    """Asks on a terminal; refuses when nobody can answer."""
    if not sys.stdin.isatty():
        raise CommandError("refusing to erase without --yes when standard input is not a terminal")
    prompt = (
        f"Erase client {client_id}? Everything they told us becomes unreadable, "
        "for good. Type 'erase' to confirm: "
    )
    answer = await asyncio.to_thread(input, prompt)
    if answer.strip().lower() != "erase":
        raise CommandError("not erased")


async def cmd_client_erase(args: argparse.Namespace, settings: Settings) -> int:
    """Destroys a client's data key: their name, messages and answers read as erased."""
    phone = common.phone(args.phone)
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        client = await common.client_by_phone(services, session, phone)
        assert client.id is not None
        if client.wrapped_key is not None and not args.yes:
            await _confirm_erase(client.id)
        with refusals():
            erased = await erase_client(session, services, actor=ACTOR, client=client)
    if erased.already:
        print(f"client {erased.client_id} was already erased")
    else:
        print(f"client {erased.client_id} erased")
    return 0


# --------------------------------------------------------------------------- cases


async def cmd_case_add(args: argparse.Namespace, settings: Settings) -> int:
    """Opens a case for the client with that phone number; prints its reference."""
    phone = common.phone(args.phone)
    category = common.category(args.category)
    status = common.status(args.status)
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        client = await common.client_by_phone(services, session, phone)
        if client.wrapped_key is None:
            raise CommandError(f"client {client.id} was erased")
        case = await repo.create_case(session, client=client, category=category, status=status)
        await repo.audit(
            session, actor_kind="cli", action="case.add", case_id=case.id, client_id=client.id
        )
    print(f"opened a {category} case for client {client.id} ({status}), reference:")
    print(case.reference)
    return 0


async def cmd_case_assign(args: argparse.Namespace, settings: Settings) -> int:
    """Assigns a case to the active attorney with that Telegram id."""
    telegram_id = common.telegram_id(args.telegram_id)
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        case = await common.case_by_reference(session, args.reference)
        staff = await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=telegram_id
        )
        if staff is None or staff.role != Role.ATTORNEY:
            raise CommandError(f"no active attorney with Telegram id {telegram_id}")
        # The coordinators' path: the attorney gets the recent thread, the client their name.
        with refusals():
            done = await assign_case(session, services, actor=ACTOR, case=case, attorney=staff)
    print(f"case {done.reference} assigned to staff {done.attorney_id}")
    return 0


async def cmd_case_status(args: argparse.Namespace, settings: Settings) -> int:
    """Records a case's new status and tells the client, in one transaction."""
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        case = await common.case_by_reference(session, args.reference)
        with refusals():
            done = await change_status(session, services, actor=ACTOR, case=case, text=args.text)
    print(f"case {done.reference}: {done.status}")
    return 0


# --------------------------------------------------------------------------- keys


async def cmd_keys_generate(args: argparse.Namespace, settings: Settings) -> int:
    """Prints a new master key; put it first in PROBONO_ENCRYPTION_KEYS."""
    print(generate_key())
    return 0


async def cmd_keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Re-encrypts everything under the newest key, so older keys can be removed."""
    configured = settings.probono_encryption_keys
    from_env = configured is not None and bool(configured.get_secret_value().strip())
    await common.migrated(settings)
    if not from_env and not settings.is_production:
        load_vault(settings)  # make sure the old key file exists before adding to it
        prepend_key_file(settings)
        print(f"added a new key to {settings.key_file()}")
    async with services_for(args, settings) as services:
        single = len(services.vault.keys) == 1
        try:
            async with transaction(services.sessions) as session:
                report = await rotate_keys(session, vault=services.vault, at=services.clock())
                await repo.audit(
                    session, actor_kind="cli", action="keys.rotate", detail=report.key_id
                )
        except (RotationError, CryptoError) as exc:
            raise CommandError(f"key rotation failed, nothing changed: {exc}") from None
    for line in report.lines():
        print(line)
    if single:
        print("only one key is configured: checked that everything is under it. To rotate,")
        print("put a new key first in PROBONO_ENCRYPTION_KEYS (`probono keys generate`).")
    elif from_env:
        print("the older keys in PROBONO_ENCRYPTION_KEYS can now be removed")
    else:
        print(f"the older keys (all but the first line of {settings.key_file()}) can be removed")
    return 0


# --------------------------------------------------------------------------- parser


# A string: argparse's class cannot be subscripted at run time.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(sub: Subparsers) -> None:
    _register_staff(sub)
    _register_client(sub)
    _register_case(sub)
    _register_keys(sub)


def _register_staff(sub: Subparsers) -> None:
    staff = sub.add_parser("staff", help="attorneys and coordinators")
    staff_sub = staff.add_subparsers(dest="staff_command", metavar="ACTION", required=True)
    p = staff_sub.add_parser(
        "add",
        help="register an attorney or coordinator",
        description="Register staff. Prints the new staff id as the last line.",
    )
    p.add_argument("--name", required=True, help="full name (stored encrypted)")
    p.add_argument("--role", required=True, metavar="attorney|coordinator", help="what they do")
    p.add_argument(
        "--telegram-id",
        metavar="ID",
        help="their numeric Telegram user id: how they use the staff channel",
    )
    p.add_argument("--phone", metavar="E164", help="their phone number, e.g. +15551234567")
    p.set_defaults(func=cmd_staff_add)


def _register_client(sub: Subparsers) -> None:
    client = sub.add_parser("client", help="clients")
    client_sub = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)
    p = client_sub.add_parser(
        "add",
        help="register a client",
        description="Register a client reachable by SMS. Prints the client id as the last line.",
    )
    p.add_argument(
        "--phone", required=True, metavar="E164", help="mobile number, e.g. +15551234567"
    )
    p.add_argument("--name", required=True, help="full name (stored encrypted)")
    p.add_argument(
        "--language",
        metavar="L",
        help=f"language the bot writes in: {', '.join(LANGUAGES)} (default DEFAULT_LANGUAGE)",
    )
    p.add_argument(
        "--timezone",
        metavar="TZ",
        help="IANA time zone, e.g. America/Chicago (default DEFAULT_TIMEZONE)",
    )
    p.set_defaults(func=cmd_client_add)
    p = client_sub.add_parser(
        "erase",
        help="destroy a client's key: their data becomes unreadable",
        description=(
            "Destroy the client's data key. In the live database their name, messages and "
            "answers read as [erased], and nothing pending is sent to them. A backup taken "
            "before the erase still holds them until the master key it was taken under is "
            "retired. Cannot be undone."
        ),
    )
    p.add_argument("--phone", required=True, metavar="E164", help="the client's number")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_client_erase)


def _register_case(sub: Subparsers) -> None:
    case = sub.add_parser("case", help="cases")
    case_sub = case.add_subparsers(dest="case_command", metavar="ACTION", required=True)
    p = case_sub.add_parser(
        "add",
        help="open a case for a client",
        description="Open a case for the client with that number. Prints its reference last.",
    )
    p.add_argument("--phone", required=True, metavar="E164", help="the client's number")
    p.add_argument("--category", required=True, metavar="C", help="e.g. housing, family, asylum")
    p.add_argument("--status", default="open", metavar="TEXT", help="first status (default open)")
    p.set_defaults(func=cmd_case_add)
    p = case_sub.add_parser(
        "assign",
        help="assign a case to an attorney",
        description="Assign the case to the active attorney with that Telegram id.",
    )
    p.add_argument("reference", metavar="REF", help="case reference, e.g. K7M-4PX")
    p.add_argument("--telegram-id", required=True, metavar="ID", help="the attorney's Telegram id")
    p.set_defaults(func=cmd_case_assign)
    p = case_sub.add_parser(
        "status",
        help="record a case's status and tell the client",
        description="Record a new status in the case's history and tell the client.",
    )
    p.add_argument("reference", metavar="REF", help="case reference, e.g. K7M-4PX")
    p.add_argument("text", metavar="TEXT", help="the new status, e.g. 'hearing scheduled'")
    p.set_defaults(func=cmd_case_status)


def _register_keys(sub: Subparsers) -> None:
    keys = sub.add_parser("keys", help="encryption keys")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    p = keys_sub.add_parser(
        "generate",
        help="print a new master key",
        description="Print a new master key. To rotate, put it first in PROBONO_ENCRYPTION_KEYS.",
    )
    p.set_defaults(func=cmd_keys_generate)
    p = keys_sub.add_parser(
        "rotate",
        help="re-encrypt everything under the newest key",
        description=(
            "Re-encrypt everything under the first key of PROBONO_ENCRYPTION_KEYS; afterwards "
            "the other keys can be removed. In development without PROBONO_ENCRYPTION_KEYS, "
            "a new key is added to the key file in the data dir first."
        ),
    )
    p.set_defaults(func=cmd_keys_rotate)

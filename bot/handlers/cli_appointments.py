"""CLI: appointments (add, move, cancel): the client is told and reminded."""

from __future__ import annotations

import argparse

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework import appointments
from bot.casework.base import CLI as ACTOR
from bot.config import Settings
from bot.handlers.cli_common import CommandError, case_by_reference, refusals, services_for
from bot.i18n import format_datetime
from storage.db import transaction
from storage.models import Appointment


async def _appointment(session: AsyncSession, raw_id: str) -> Appointment:
    if not raw_id.strip().isdigit():
        raise CommandError(f"an appointment id is a number, not {raw_id!r}")
    appt = await session.get(Appointment, int(raw_id))
    if appt is None:
        raise CommandError(f"no appointment {raw_id}")
    return appt


async def cmd_appointment_add(args: argparse.Namespace, settings: Settings) -> int:
    """Books an appointment, tells the client and plans reminders; prints its id last."""
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        case = await case_by_reference(session, args.reference)
        with refusals():
            booked = await appointments.book(
                session,
                services,
                case,
                args.at,
                args.place,
                kind=args.kind,
                timezone=args.timezone,
                bring=args.bring,
                actor=ACTOR,
            )
    appt = booked.appointment
    local = format_datetime(appt.starts_at, "en", appt.timezone)
    print(f"booked a {appt.kind} for case {booked.reference} on {local} ({appt.timezone});")
    print(f"the client is told, {len(booked.reminders)} reminder(s) planned. Appointment id:")
    print(appt.id)
    return 0


async def cmd_appointment_move(args: argparse.Namespace, settings: Settings) -> int:
    """Moves an appointment; the client is told and reminders follow the new time."""
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        appt = await _appointment(session, args.id)
        with refusals():
            moved = await appointments.move(
                session,
                services,
                appt,
                args.at,
                place=args.place,
                timezone=args.timezone,
                actor=ACTOR,
            )
    local = format_datetime(appt.starts_at, "en", appt.timezone)
    print(f"appointment {appt.id} moved to {local} ({appt.timezone}); the client is told,")
    print(f"{len(moved.reminders)} reminder(s) pending. Appointment id:")
    print(appt.id)
    return 0


async def cmd_appointment_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancels an appointment, withdraws its reminders and tells the client."""
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        appt = await _appointment(session, args.id)
        with refusals():
            done = await appointments.cancel(session, services, appt, actor=ACTOR)
    print(f"appointment {appt.id} is cancelled" + (" (already)" if done.already else ""))
    print(appt.id)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    appt = sub.add_parser("appointment", help="hearings, meetings and calls")
    appt_sub = appt.add_subparsers(dest="appointment_command", metavar="ACTION", required=True)
    p = appt_sub.add_parser(
        "add",
        help="book an appointment and schedule its reminders",
        description=(
            "Book a hearing, meeting or call for a case. The client is told at once and "
            "reminded at REMINDER_OFFSETS before it. Prints the appointment id last."
        ),
    )
    p.add_argument("reference", metavar="REF", help="case reference, e.g. K7M-4PX")
    p.add_argument(
        "--at",
        required=True,
        metavar="ISO8601",
        help="start, e.g. 2026-03-10T09:30 (local in --timezone or the client's zone) "
        "or 2026-03-10T09:30-05:00",
    )
    p.add_argument("--place", required=True, metavar="TEXT", help="where (stored encrypted)")
    p.add_argument("--timezone", metavar="TZ", help="IANA zone (default: the client's)")
    p.add_argument(
        "--kind",
        default=appointments.DEFAULT_KIND,
        metavar="|".join(appointments.KINDS),
        help=f"what it is (default {appointments.DEFAULT_KIND})",
    )
    p.add_argument("--bring", metavar="TEXT", help="what the client should bring")
    p.set_defaults(func=cmd_appointment_add)

    p = appt_sub.add_parser(
        "move",
        help="move an appointment; the client is told",
        description="Move an appointment. The client reads MOVED from the old to the new time.",
    )
    p.add_argument("id", metavar="ID", help="appointment id")
    p.add_argument("--at", required=True, metavar="ISO8601", help="the new start")
    p.add_argument("--place", metavar="TEXT", help="a new place (default: unchanged)")
    p.add_argument("--timezone", metavar="TZ", help="IANA zone (default: the appointment's)")
    p.set_defaults(func=cmd_appointment_move)

    p = appt_sub.add_parser(
        "cancel",
        help="cancel an appointment; reminders are withdrawn",
        description="Cancel an appointment: pending reminders are withdrawn, the client is told.",
    )
    p.add_argument("id", metavar="ID", help="appointment id")
    p.set_defaults(func=cmd_appointment_cancel)

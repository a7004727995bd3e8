"""CLI: `probono broadcast` - dry run, confirm, send or schedule, follow, cancel, report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TextIO
from zoneinfo import ZoneInfo

from bot.casework import broadcast
from bot.config import Settings
from bot.handlers.cli_common import CommandError, services_for
from bot.i18n import LANGUAGES
from bot.services import Services
from storage import repo
from storage.db import transaction

POLL_SECONDS = 0.5


class ProgressBar:
    """A one-line bar redrawn in place on a terminal; a line per quarter elsewhere (logs)."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = self.stream.isatty()
        self._last_quarter = -1
        self._drawn = False

    def update(self, done: int, total: int, note: str = "") -> None:
        share = done / total if total else 1.0
        if self.tty:
            filled = round(share * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {share:4.0%} {done}/{total} {note}\x1b[K")
            self._drawn = True
        else:
            quarter = int(share * 4)
            if quarter == self._last_quarter:
                return
            self._last_quarter = quarter
            self.stream.write(f"{self.label}: {share:.0%} ({done}/{total}) {note}".rstrip() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()


def _texts(args: argparse.Namespace) -> dict[str, str]:
    texts: dict[str, str] = {}
    for lang in broadcast.offered_languages():
        value = getattr(args, f"text_{lang}", None)
        if value is not None:
            texts[lang] = value
    return texts


def _at(raw: str | None, settings: Settings, now: datetime) -> datetime | None:
    """--at as aware UTC; a time without an offset is in DEFAULT_TIMEZONE."""
    if raw is None:
        return None
    try:
        when = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise CommandError(f"--at {raw!r} is not an ISO 8601 time like 2026-03-10T09:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(settings.default_timezone))
    when = when.astimezone(ZoneInfo("UTC"))
    if when <= now:
        raise CommandError(f"--at {raw} is in the past")
    return when


async def _confirm(plan: broadcast.Plan) -> None:
    """Asks on a terminal after the dry run was shown; refuses when nobody can answer."""
    if not sys.stdin.isatty():
        raise CommandError("refusing to send without --yes when standard input is not a terminal")
    answer = await asyncio.to_thread(
        input, f"Send to {len(plan.recipients)} clients? Type 'yes' to send: "
    )
    if answer.strip().lower() not in ("yes", "y"):
        raise CommandError("not sent")


def _refusal_hint(plan: broadcast.Plan) -> str:
    flags = " ".join(f"--text-{lang}" for lang in sorted(plan.missing_languages))
    langs = ", ".join(f"{k} ({n})" for k, n in sorted(plan.missing_languages.items()))
    return f"no text for {langs}: add {flags}, or send them another text with --fallback LANG"


async def _follow(services: Services, broadcast_id: int) -> broadcast.Report:
    """Waits for the dispatcher to settle every row of the broadcast, drawing a bar."""
    bar = ProgressBar("Sending")
    try:
        while True:
            async with transaction(services.sessions) as session:
                rep = await broadcast.report(session, services, broadcast_id)
            bar.update(rep.finished, rep.total, f"{rep.failed} failed")
            if rep.done:
                return rep
            await asyncio.sleep(POLL_SECONDS)
    finally:
        bar.close()


async def cmd_broadcast(args: argparse.Namespace, settings: Settings) -> int:
    """Shows the dry run; unless --dry-run, confirms, sends (or schedules) and reports."""
    if args.action is not None:
        return await _action(args, settings)
    if args.segment is None:
        raise CommandError("--segment is required (e.g. --segment all, or language=es)")
    texts = _texts(args)
    if not texts:
        raise CommandError("give at least one text, e.g. --text-en 'Our office is closed Monday.'")
    async with services_for(args, settings) as services:
        at = _at(args.at, settings, services.clock())
        async with services.sessions() as session:
            try:
                plan = await broadcast.plan(
                    session,
                    services,
                    args.segment,
                    texts,
                    fallback_language=args.fallback,
                    discreet_safe=args.discreet_safe,
                )
            except (broadcast.SegmentError, broadcast.BroadcastError) as exc:
                raise CommandError(str(exc)) from None
        if args.dry_run:
            for line in broadcast.describe(plan):
                print(line)
            if plan.refused:
                print(f"Refused as it stands: {_refusal_hint(plan)}")
            return 0
        if plan.refused:
            raise CommandError(_refusal_hint(plan))
        if not plan.recipients:
            raise CommandError("nobody to send to: the segment selects no reachable client")
        if not args.yes:
            for line in broadcast.describe(plan):
                print(line)
            await _confirm(plan)
        bar = ProgressBar("Queueing")
        try:
            row = await broadcast.send(
                services, plan, at=at, progress=lambda done, total: bar.update(done, total)
            )
        finally:
            bar.close()
        assert row.id is not None
        if at is not None:
            local = at.astimezone(ZoneInfo(settings.default_timezone))
            print(
                f"scheduled for {local.isoformat(timespec='minutes')} "
                f"({settings.default_timezone}) to {len(plan.recipients)} clients"
            )
        else:
            print(f"queued for {len(plan.recipients)} clients; the dispatcher sends them")
            if args.wait:
                rep = await _follow(services, row.id)
            else:
                async with transaction(services.sessions) as session:
                    rep = await broadcast.report(session, services, row.id)
            for line in rep.lines():
                print(line)
        print(f"broadcast id:\n{row.id}")
    return 0


async def cmd_broadcast_status(args: argparse.Namespace, settings: Settings) -> int:
    """Prints a broadcast's report: sent, delivered, failed, skipped and why, pending."""
    async with services_for(args, settings) as services:
        if args.wait:
            try:
                rep = await _follow(services, args.id)
            except broadcast.BroadcastError as exc:
                raise CommandError(str(exc)) from None
        else:
            async with transaction(services.sessions) as session:
                try:
                    rep = await broadcast.report(session, services, args.id)
                except broadcast.BroadcastError as exc:
                    raise CommandError(str(exc)) from None
    for line in rep.lines():
        print(line)
    return 0


async def cmd_broadcast_cancel(args: argparse.Namespace, settings: Settings) -> int:
    """Cancels what a broadcast has not sent yet; nothing sent is sent again."""
    async with services_for(args, settings) as services, transaction(services.sessions) as session:
        try:
            n = await broadcast.cancel(session, services, args.id)
        except broadcast.BroadcastError as exc:
            raise CommandError(str(exc)) from None
        await repo.audit(
            session,
            actor_kind="cli",
            action="broadcast.cancel",
            detail=f"broadcast {args.id}: {n} cancelled",
        )
        rep = await broadcast.report(session, services, args.id)
    print(f"cancelled {n} messages not yet sent")
    for line in rep.lines():
        print(line)
    return 0


async def cmd_broadcast_resume(args: argparse.Namespace, settings: Settings) -> int:
    """Queues what an interrupted broadcast still lacks; clients already queued get nothing new."""
    async with services_for(args, settings) as services:
        bar = ProgressBar("Queueing")
        try:
            async with services.sessions() as session:
                row = await broadcast.resume(
                    session,
                    services,
                    args.id,
                    commit_batches=True,
                    progress=lambda done, total: bar.update(done, total),
                )
                await repo.audit(
                    session,
                    actor_kind="cli",
                    action="broadcast.resume",
                    detail=f"broadcast {row.id}",
                )
                await session.commit()
        except (broadcast.BroadcastError, broadcast.SegmentError) as exc:
            raise CommandError(str(exc)) from None
        finally:
            bar.close()
        async with transaction(services.sessions) as session:
            rep = await broadcast.report(session, services, args.id)
    for line in rep.lines():
        print(line)
    return 0


async def _action(args: argparse.Namespace, settings: Settings) -> int:
    """`broadcast status|cancel|resume ID`."""
    actions: dict[str, Callable[[argparse.Namespace, Settings], Awaitable[int]]] = {
        "status": cmd_broadcast_status,
        "cancel": cmd_broadcast_cancel,
        "resume": cmd_broadcast_resume,
    }
    action = actions.get(args.action)
    if action is None:
        flags = ", ".join(f"--text-{lang}" for lang in broadcast.offered_languages())
        raise CommandError(
            f"unknown action {args.action!r}: use status, cancel or resume (texts go in {flags})"
        )
    raw = args.id or ""
    if not raw.isdigit() or int(raw) <= 0:
        raise CommandError(f"broadcast {args.action} needs a broadcast id (a positive number)")
    sending = [
        f"--{k.replace('_', '-')}" for k in ("segment", "at", "fallback") if getattr(args, k)
    ]
    sending += [f"--text-{lang}" for lang in _texts(args)]
    if sending:
        raise CommandError(f"broadcast {args.action} takes no {', '.join(sending)}")
    args.id = int(raw)
    return await action(args, settings)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    langs = broadcast.offered_languages()
    p = sub.add_parser(
        "broadcast",
        help="send one message to a segment of clients, each in their language",
        description=(
            "Send one message to every client of a segment, in each client's language, "
            "through the outbox (at the provider's rate, after replies, outside quiet hours). "
            "Without --yes it shows the dry run and asks. Prints the broadcast id last."
        ),
        epilog=(
            "segments: 'all', or key=value terms joined by commas, all of which must hold:\n"
            "  language=es                 the client's language\n"
            "  category=housing            an open case of that category\n"
            "  status=TEXT                 an open case with that status (any case)\n"
            "  attorney=TELEGRAM_ID        an open case assigned to that attorney\n"
            "  appointment-date=YYYY-MM-DD an appointment that day, in the client's time zone\n"
            "Case terms must hold on the same case. Opted-out and erased clients never get a\n"
            "broadcast; clients in discreet mode only with --discreet-safe.\n\n"
            "  probono broadcast status ID [--wait]  sent, delivered, failed, skipped, pending\n"
            "  probono broadcast cancel ID           stop what has not gone out yet\n"
            "  probono broadcast resume ID           finish queueing after an interruption"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--segment", metavar="EXPR", help="who gets it (see below)")
    for lang in langs:
        p.add_argument(
            f"--text-{lang}",
            dest=f"text_{lang}",
            metavar="TEXT",
            help=f"the text for clients who read {LANGUAGES.get(lang, lang)}",
        )
    p.add_argument("--at", metavar="ISO8601", help="send later (no offset: DEFAULT_TIMEZONE)")
    p.add_argument(
        "--dry-run", action="store_true", help="show counts, cost and texts; send nothing"
    )
    p.add_argument("--yes", action="store_true", help="send without asking")
    p.add_argument(
        "--fallback",
        metavar="LANG",
        choices=langs,
        help="clients whose language has no text get this language's text",
    )
    p.add_argument(
        "--discreet-safe",
        action="store_true",
        help="the text is safe for clients in discreet mode (shared or watched phones)",
    )
    p.add_argument(
        "--wait", action="store_true", help="follow the send with a progress bar until it is done"
    )
    p.add_argument(
        "action",
        nargs="?",
        metavar="status|cancel|resume",
        help="instead of sending: report on, cancel or resume broadcast ID",
    )
    p.add_argument("id", nargs="?", metavar="ID", help="the broadcast, for status/cancel/resume")
    p.set_defaults(func=cmd_broadcast)

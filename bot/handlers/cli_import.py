"""CLI: `probono import cases|appointments FILE.csv`: read a case management system's export,
import it row by row (bot/casework/imports.py checks and writes each row, and lists the
columns), report the rejected lines.

Any rejected row means nothing is imported, unless --skip-bad is given. --dry-run checks and
reports without changing anything.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from bot.casework.base import CaseworkError
from bot.casework.imports import (
    APPOINTMENT_COLUMNS,
    APPOINTMENT_REQUIRED,
    CASE_COLUMNS,
    CASE_REQUIRED,
    ImportRow,
    ImportRun,
    Row,
    header_key,
    import_appointment_row,
    import_case_row,
)
from bot.config import Settings
from bot.handlers.cli_broadcast import ProgressBar
from bot.handlers.cli_common import CommandError, services_for
from storage.db import transaction


def read_csv(
    path: Path, columns: dict[str, tuple[str, ...]], required: tuple[str, ...]
) -> list[tuple[int, Row]]:
    """Rows as (line number, {column: value}); a file that cannot be read is one error."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header:
                raise CommandError(f"{path}: empty file, no header line")
            index: dict[str, int] = {}
            for pos, name in enumerate(header):
                key = header_key(name)
                for column, names in columns.items():
                    if key in names and column not in index:
                        index[column] = pos
            missing = [c for c in required if c not in index]
            if missing:
                raise CommandError(f"{path}: missing column(s): {', '.join(missing)}")
            rows = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue  # blank lines are not rows
                row = {c: cells[p].strip() if p < len(cells) else "" for c, p in index.items()}
                rows.append((reader.line_num, row))
            return rows
    except FileNotFoundError:
        raise CommandError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: not UTF-8 text (save the export as CSV UTF-8)") from None
    except csv.Error as exc:
        raise CommandError(f"{path}: not a readable CSV file ({exc})") from None


class _RollBack(Exception):
    """Leaves the import's transaction without committing (dry run, or rows rejected)."""


async def _import(
    args: argparse.Namespace,
    settings: Settings,
    *,
    what: str,
    columns: dict[str, tuple[str, ...]],
    required: tuple[str, ...],
    import_row: ImportRow,
) -> int:
    rows = read_csv(Path(args.file), columns, required)
    rejected: list[tuple[int, str]] = []
    done = 0
    bar = ProgressBar(f"importing {what}") if sys.stderr.isatty() else None
    async with services_for(args, settings) as services:
        try:
            # One transaction: all rows or none (the rejected ones with --skip-bad).
            async with transaction(services.sessions) as session:
                run = ImportRun(services, session, services.clock())
                for count, (line, row) in enumerate(rows, start=1):
                    try:
                        await import_row(run, line, row)
                        done += 1
                    except CaseworkError as exc:
                        rejected.append((line, str(exc)))
                    if bar is not None:
                        bar.update(count, len(rows), f"{len(rejected)} rejected")
                if args.dry_run or (rejected and not args.skip_bad):
                    raise _RollBack
        except _RollBack:
            pass
        finally:
            if bar is not None:
                bar.close()
    for line, reason in rejected:
        print(f"line {line}: rejected: {reason}")
    if rejected and not args.skip_bad:
        raise CommandError(
            f"{len(rejected)} of {len(rows)} rows rejected; nothing imported "
            "(fix them, or use --skip-bad to import the others)"
        )
    skipped = f", {len(rejected)} rejected row(s) skipped" if rejected else ""
    if args.dry_run:
        print(f"dry run: {done} {what} would be imported{skipped}; nothing changed")
    else:
        print(f"imported {done} {what}{skipped}")
    return 0


async def cmd_import_cases(args: argparse.Namespace, settings: Settings) -> int:
    """Imports cases (and their clients) from a case management system's CSV export."""
    return await _import(
        args,
        settings,
        what="cases",
        columns=CASE_COLUMNS,
        required=CASE_REQUIRED,
        import_row=import_case_row,
    )


async def cmd_import_appointments(args: argparse.Namespace, settings: Settings) -> int:
    """Imports appointments from a CSV export; each client is told and reminded."""
    return await _import(
        args,
        settings,
        what="appointments",
        columns=APPOINTMENT_COLUMNS,
        required=APPOINTMENT_REQUIRED,
        import_row=import_appointment_row,
    )


# --------------------------------------------------------------------------- parser


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    imp = sub.add_parser("import", help="import from a case management system (CSV)")
    imp_sub = imp.add_subparsers(dest="import_command", metavar="WHAT", required=True)
    for name, func, text in (
        ("cases", cmd_import_cases, "cases and their clients"),
        ("appointments", cmd_import_appointments, "appointments of existing cases"),
    ):
        p = imp_sub.add_parser(
            name,
            help=f"import {text} from a CSV export",
            description=(
                f"Import {text} from a CSV export (LegalServer-style columns; see the "
                "README). Rejected rows are listed by line; any rejected row means nothing "
                "is imported unless --skip-bad is given."
            ),
        )
        p.add_argument("file", metavar="FILE.csv", help="the CSV export (UTF-8)")
        p.add_argument("--dry-run", action="store_true", help="check and report, change nothing")
        p.add_argument(
            "--skip-bad", action="store_true", help="import the good rows, skip rejected ones"
        )
        p.set_defaults(func=func)

"""Changing a case's status, and what a status means for the client.

What a client reads about each status lives in a data file (bot/data/statuses.toml, or the
program's STATUSES_FILE); discreet clients read neutral words, never the recorded status.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework.base import Actor, audit, authorize
from bot.casework.limits import check_status
from bot.config import ConfigError, Settings
from bot.core import Reply
from bot.discreet import is_discreet
from bot.i18n import N_, gettext
from bot.outgoing import queue_reply
from storage import repo
from storage.models import Case, Client, Priority

if TYPE_CHECKING:
    from bot.services import Services

DEFAULT_STATUSES = Path(__file__).resolve().parent.parent / "data" / "statuses.toml"

CHANGED = N_("{program}: news on your case {ref}: {label}.")
CHANGED_DISCREET = N_("News on your file: {label}.")


# --------------------------------------------------------------------------- the statuses file


@dataclass(frozen=True)
class StatusText:
    """What a client reads about one status, in English; the catalogs translate it."""

    client: str
    discreet: str
    closes: bool = False
    # A program's own statuses file may carry client_LANG/discreet_LANG for texts the
    # catalogs cannot know; the shipped file has none (`make translations` extracts it).
    inline: dict[str, str] = field(default_factory=dict)

    def label(self, lang: str, *, discreet: bool) -> str:
        which = "discreet" if discreet else "client"
        inline = self.inline.get(f"{which}_{lang}")
        if inline:
            return inline
        return gettext(lang, self.discreet if discreet else self.client)


@dataclass(frozen=True)
class StatusBook:
    """Every status a program defines, by matching key, and the fallback for the rest."""

    statuses: dict[str, StatusText]
    fallback: StatusText

    def find(self, status: str) -> StatusText:
        return self.statuses.get(status_key(status), self.fallback)


def status_key(status: str) -> str:
    """How a status is matched: case, spaces, dashes and underscores do not count."""
    return re.sub(r"[^0-9a-z]+", "", status.casefold())


def _entry(raw: Any, where: str) -> StatusText:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    client, discreet = raw.get("client"), raw.get("discreet")
    if not isinstance(client, str) or not isinstance(discreet, str):
        raise ConfigError(f"{where} needs client and discreet texts")
    inline = {
        k: v
        for k, v in raw.items()
        if isinstance(v, str) and (k.startswith("client_") or k.startswith("discreet_"))
    }
    return StatusText(client, discreet, bool(raw.get("closes", False)), inline)


@cache
def _load(path: str, _mtime_ns: int) -> StatusBook:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"statuses file {path}: {exc}") from exc
    fallback = _entry(data.get("fallback"), f"{path}: [fallback]")
    statuses: dict[str, StatusText] = {}
    for name, raw in (data.get("statuses") or {}).items():
        entry = _entry(raw, f"{path}: [statuses.{name}]")
        aliases = raw.get("aliases", [])
        for word in [name, *(aliases if isinstance(aliases, list) else [])]:
            statuses[status_key(str(word))] = entry
    return StatusBook(statuses, fallback)


def load_statuses(settings: Settings) -> StatusBook:
    """The program's statuses (STATUSES_FILE, else the shipped file), re-read when edited."""
    path = Path(settings.statuses_file) if settings.statuses_file else DEFAULT_STATUSES
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        raise ConfigError(f"STATUSES_FILE {path}: {exc.strerror}") from exc
    return _load(str(path), mtime)


def status_label(settings: Settings, status: str, lang: str, *, discreet: bool) -> str:
    """The client's words for a status; a discreet client never reads the status itself."""
    text = load_statuses(settings).find(status).label(lang, discreet=discreet)
    try:
        return text.format(status=status)
    except (KeyError, IndexError, ValueError):
        return text


def is_closing_status(settings: Settings, status: str) -> bool:
    """True when the program says this status ends the case (no more check-ins)."""
    return load_statuses(settings).find(status).closes


# --------------------------------------------------------------------------- changing it


@dataclass(frozen=True)
class StatusChanged:
    """A status recorded in the case's history (and the client told)."""

    reference: str
    status: str
    changed_at: datetime


async def change_status(
    session: AsyncSession, services: Services, *, actor: Actor, case: Case, text: str | None
) -> StatusChanged:
    """Records a case's new status and tells the client, in the caller's transaction."""
    status = check_status(text)
    await authorize(session, actor, case, action="case.status", reference=case.reference)
    change = await repo.record_status(
        session,
        case=case,
        status=status,
        source=actor.source,
        staff_id=actor.staff_id,
        at=services.clock(),
    )
    # The message to the client commits with the status, or neither does.
    await tell_status_change(session, services, case)
    await audit(session, actor, "case.status", case)
    return StatusChanged(case.reference, status, change.at)


async def tell_status_change(session: AsyncSession, services: Services, case: Case) -> None:
    """Tells the client, in their language, that their case's status changed."""
    client = await session.get(Client, case.client_id)
    if client is None or client.wrapped_key is None:
        return
    assert case.id is not None
    lang = client.language or services.settings.default_language
    discreet = is_discreet(client, case)
    label = status_label(services.settings, case.status, lang, discreet=discreet)
    if discreet:
        text = gettext(lang, CHANGED_DISCREET, label=label)
    else:
        text = gettext(
            lang, CHANGED, program=services.settings.program_name, ref=case.reference, label=label
        )
    history = await repo.status_history(session, case_id=case.id)
    # One message per recorded change (the newest row), however often the caller is retried.
    stamp = max((h.id or 0 for h in history), default=0)
    await queue_reply(
        session,
        services,
        client,
        Reply(text=text, urgent=False),
        kind="status",
        priority=Priority.REMINDER,
        dedupe_key=f"status:{case.id}:{stamp}",
        case_id=case.id,
    )

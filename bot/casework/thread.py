"""A case as its attorney reads it: the recent thread, who handles it, staff-facing labels."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlmodel.ext.asyncio.session import AsyncSession

from storage import repo
from storage.models import Case, Channel, Client, Direction

if TYPE_CHECKING:
    from bot.services import Services

ATTORNEY_KIND = "attorney"  # an attorney's message to a client
HANDOFF_KIND = "handoff"  # a case (and its recent thread) handed to an attorney
THREAD_LIMIT = 10
THREAD_CHARS = 3500  # one Telegram message holds 4096

CHANNEL_LABELS: dict[str, str] = {
    Channel.SMS: "SMS",
    Channel.TELEGRAM: "Telegram",
    Channel.CONSOLE: "console",
}


def channel_label(channel: str) -> str:
    return CHANNEL_LABELS.get(channel, channel)


def first_name(full_name: str) -> str:
    """What a client is told about their attorney: the first name only."""
    return full_name.split()[0] if full_name.split() else ""


def local_time(services: Services, when: datetime, fmt: str = "%H:%M") -> str:
    """A time as the program's staff read it (the program's time zone)."""
    return when.astimezone(ZoneInfo(services.settings.default_timezone)).strftime(fmt)


async def recent_thread_text(
    session: AsyncSession, services: Services, *, case: Case, client: Client
) -> str:
    """The client's recent words and the attorney replies, for the case's attorney only."""
    assert client.id is not None
    rows = await repo.client_thread(
        session, client_id=client.id, reply_kind=ATTORNEY_KIND, limit=THREAD_LIMIT
    )
    lines: list[str] = []
    for msg, _item in rows:
        who = "Client" if msg.direction == Direction.IN else "Reply"
        when = local_time(services, msg.created_at, "%m-%d %H:%M")
        body = repo.message_body(services.vault, client, msg).strip()
        if not body and not msg.media:
            continue  # a shared contact: nothing was written
        body = body or "[attachment]"
        lines.append(f"{who} · {channel_label(msg.channel)} · {when}\n{body}")
    text = "\n\n".join(lines) if lines else "(no messages yet)"
    if len(text) > THREAD_CHARS:
        text = "…" + text[-THREAD_CHARS:]
    return text

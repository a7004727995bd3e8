"""Rendering a Reply for the client's channel and putting it in the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.core import Reply
from bot.i18n import gettext
from storage import repo
from storage.models import Channel, Client, OutboxItem, Priority

if TYPE_CHECKING:
    from bot.services import Services


def render_text(reply: Reply, channel: str, lang: str) -> str:
    """SMS and console get numbered choices; Telegram gets buttons (sent from ``extra``)."""
    if not reply.choices or channel == Channel.TELEGRAM:
        return reply.text
    lines = [reply.text, ""]
    lines += [f"{i}. {c.label}" for i, c in enumerate(reply.choices, start=1)]
    return "\n".join(lines)


async def queue_reply(
    session: AsyncSession,
    services: Services,
    client: Client,
    reply: Reply,
    *,
    kind: str = "reply",
    priority: int = Priority.REPLY,
    channel: str | None = None,
    dedupe_key: str | None = None,
    due_at: datetime | None = None,
    case_id: int | None = None,
    broadcast_id: int | None = None,
) -> OutboxItem | None:
    """Render and enqueue one reply to a client through the outbox (the one road out)."""
    assert client.id is not None
    ident = await repo.reply_identity(session, client_id=client.id, channel=channel)
    if ident is None:
        return None
    lang = client.language or services.settings.default_language
    extra: dict[str, Any] | None = None
    if ident.channel == Channel.TELEGRAM:
        extra = _telegram_extra(reply)
    return await repo.enqueue(
        session,
        vault=services.vault,
        client=client,
        text=render_text(reply, ident.channel, lang),
        kind=kind,
        priority=priority,
        channel=ident.channel,
        dedupe_key=dedupe_key,
        due_at=due_at or services.clock(),
        urgent=reply.urgent,
        case_id=case_id,
        broadcast_id=broadcast_id,
        extra=extra,
    )


def _telegram_extra(reply: Reply) -> dict[str, Any] | None:
    """How the Telegram sender is asked for a reply's buttons (the outbox row's ``extra``)."""
    if reply.choices:
        return {"choices": [[c.value, c.label] for c in reply.choices]}
    if reply.ask_phone is not None:
        return {"request_contact": reply.ask_phone}
    if reply.clear_buttons:
        return {"remove_keyboard": True}
    return None


async def alert_coordinators(
    session: AsyncSession,
    services: Services,
    text: str,
    *,
    case_id: int | None = None,
    dedupe_key: str | None = None,
) -> OutboxItem | None:
    """Post to the coordinators' Telegram group. Never put a client's name or words in ``text``."""
    chat_id = services.settings.telegram_staff_chat_id
    if chat_id is None:
        return None
    return await repo.enqueue_staff(
        session,
        vault=services.vault,
        text=text,
        chat_id=chat_id,
        case_id=case_id,
        kind="alert",
        dedupe_key=dedupe_key,
        due_at=services.clock(),
        # A button that opens the attorney picker (bot/handlers/staff.py, "assign:CASE").
        extra={"choices": [[f"assign:{case_id}", "Assign"]]} if case_id is not None else None,
    )


__all__ = ["alert_coordinators", "gettext", "queue_reply", "render_text"]

"""Attorney relay: a client's words reach their assigned attorney, and only explicit replies
go back. Channel-neutral: staff messages are outbox rows; the transport renders them.

Privilege rules held here: a client's words go to the attorney assigned to their case and
to no one else; an attorney writes only to clients of cases assigned to them; every read
of client content and every reply is written to the audit log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from sqlalchemy.exc import IntegrityError
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework.thread import ATTORNEY_KIND, channel_label, first_name, local_time
from bot.discreet import is_discreet
from bot.i18n import gettext
from storage import repo
from storage.db import transaction
from storage.models import (
    Case,
    Channel,
    ChannelIdentity,
    Client,
    Direction,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    Priority,
    Role,
    Staff,
)

if TYPE_CHECKING:
    from bot.conversations.base import Turn
    from bot.services import Services

log = logging.getLogger(__name__)

CARD_KIND = "card"  # a client's message shown to their attorney
CONFIRM_KIND = "relay_confirm"  # "sent by SMS" to the attorney, later edited with the status
DELIVERY_WINDOW = timedelta(days=3)  # how long a reply's delivery is followed

# --------------------------------------------------------------------------- client -> attorney


async def forward_to_attorney(turn: Turn) -> bool:
    """Forwards the client's message to the attorney of their open case; True when it did.

    The card goes to the attorney's private chat only, encrypted under the client's key
    (erasing the client erases it), and the attorney's read is audited.
    """
    session, services, client = turn.session, turn.services, turn.client
    assert client.id is not None
    case = await session.get(Case, turn.stored.case_id) if turn.stored.case_id else None
    if case is None or case.closed or case.client_id != client.id:
        case = await repo.assigned_case_for_client(session, client_id=client.id)
    if case is None or case.assigned_staff_id is None:
        return False
    attorney = await session.get(Staff, case.assigned_staff_id)
    if attorney is None or not attorney.active or attorney.telegram_id_hash is None:
        return False
    text = turn.message.text.strip()
    attachments = len(turn.message.media)
    if not text and not attachments:
        return False
    lines = [
        f"Case {case.reference} · {channel_label(turn.message.channel)} · "
        f"{local_time(services, services.clock())}"
    ]
    if text:
        lines.append(text)
    if attachments:
        lines.append(f"[{attachments} attachment(s) added to the case]")
    await repo.enqueue_staff(
        session,
        vault=services.vault,
        due_at=services.clock(),
        text="\n".join(lines),
        staff=attorney,
        client=client,
        case_id=case.id,
        kind=CARD_KIND,
        dedupe_key=f"card:{turn.stored.id}",
    )
    await repo.audit(
        session,
        actor_kind="staff",
        actor_id=attorney.id,
        action="relay.card",
        case_id=case.id,
        client_id=client.id,
        detail=f"message {turn.stored.id} shown to the assigned attorney",
    )
    return True


# --------------------------------------------------------------------------- attorney -> client


@dataclass(frozen=True)
class RelayOutcome:
    """What happened to an attorney's reply, and what to tell them."""

    sent: bool
    notice: str
    item: OutboxItem | None = None


REFUSED = "You can only write to clients of cases assigned to you."


async def case_for_card(
    session: AsyncSession, *, staff: Staff, card_provider_id: str
) -> Case | None:
    """The case of a message the bot sent to this staff member (the card they replied to)."""
    msg = await repo.find_message(session, channel=Channel.TELEGRAM, provider_id=card_provider_id)
    if msg is None or msg.direction != Direction.OUT or msg.staff_id != staff.id:
        return None
    if msg.case_id is None:
        return None
    return await session.get(Case, msg.case_id)


def _reachable(idents: list[ChannelIdentity]) -> ChannelIdentity | None:
    """Where the client last wrote from, among the channels they have not stopped."""
    live = [i for i in idents if i.opted_out_at is None]
    if not live:
        return None
    epoch = datetime.min.replace(tzinfo=ZoneInfo("UTC"))
    live.sort(key=lambda i: (i.last_inbound_at or epoch, i.created_at), reverse=True)
    return live[0]


async def refuse(
    session: AsyncSession, *, staff: Staff, case: Case | None, action: str, reason: str
) -> RelayOutcome:
    """Audit a refused attempt and say no, the same way whether or not the case exists."""
    await repo.audit(
        session,
        actor_kind="staff",
        actor_id=staff.id,
        action=action,
        case_id=case.id if case else None,
        client_id=case.client_id if case else None,
        allowed=False,
        detail=reason,
    )
    return RelayOutcome(sent=False, notice=REFUSED)


async def reply_to_client(
    session: AsyncSession,
    services: Services,
    *,
    staff: Staff,
    case: Case | None,
    text: str,
    reply_to_message_id: int | None = None,
) -> RelayOutcome:
    """Queues an attorney's explicit reply to the client of a case assigned to them.

    The attorney gets a confirmation naming the channel, which is edited with the delivery
    status later (``report_deliveries``).
    """
    text = text.strip()
    if case is None or staff.role != Role.ATTORNEY or case.assigned_staff_id != staff.id:
        return await refuse(
            session, staff=staff, case=case, action="relay.reply", reason="not assigned"
        )
    if not text:
        return RelayOutcome(sent=False, notice="Nothing to send: write your answer after it.")
    client = await session.get(Client, case.client_id)
    assert case.id is not None and client is not None and client.id is not None
    ident = _reachable(list(await repo.identities(session, client_id=client.id)))
    if client.wrapped_key is None or ident is None:
        await _audit_reply(session, staff, case, "not sent: client unreachable or opted out")
        return RelayOutcome(
            sent=False,
            notice=f"Not sent: the client of {case.reference} cannot be reached "
            "(they opted out or were erased).",
        )
    item = await repo.enqueue(
        session,
        vault=services.vault,
        client=client,
        text=_signed(services, staff, client, case, text),
        kind=ATTORNEY_KIND,
        priority=Priority.REPLY,
        channel=ident.channel,
        due_at=services.clock(),
        case_id=case.id,
        extra={"staff_id": staff.id},
    )
    assert item is not None and item.id is not None
    label = channel_label(ident.channel)
    confirm = await repo.enqueue_staff(
        session,
        vault=services.vault,
        due_at=services.clock(),
        text=f"✓ Queued for {case.reference} by {label}.",
        staff=staff,
        case_id=case.id,
        kind=CONFIRM_KIND,
        extra={"relay_item_id": item.id}
        | ({"reply_to_message_id": reply_to_message_id} if reply_to_message_id else {}),
    )
    assert confirm is not None
    # Followed by report_deliveries: which confirmation to edit, and what it said last.
    item.extra = {**(item.extra or {}), "confirm_item_id": confirm.id, "reported": "queued"}
    session.add(item)
    case.updated_at = services.clock()
    session.add(case)
    await _audit_reply(session, staff, case, f"queued by {label}, outbox {item.id}")
    return RelayOutcome(sent=True, notice=confirm_text(case.reference, label, "queued"), item=item)


async def _audit_reply(session: AsyncSession, staff: Staff, case: Case, detail: str) -> None:
    """Every attorney reply is audited, sent or not (allowed: the case is theirs)."""
    await repo.audit(
        session,
        actor_kind="staff",
        actor_id=staff.id,
        action="relay.reply",
        case_id=case.id,
        client_id=case.client_id,
        detail=detail,
    )


def _signed(services: Services, staff: Staff, client: Client, case: Case, text: str) -> str:
    """The attorney's words as the client reads them: their first name, and the program's
    name unless the client's phone is not safe."""
    name = first_name(repo.staff_name(services.vault, staff))
    lang = client.language or services.settings.default_language
    if is_discreet(client, case):
        return gettext(lang, "{name}: {text}", name=name, text=text)
    return gettext(
        lang,
        "{name} ({program}): {text}",
        name=name,
        program=services.settings.program_name,
        text=text,
    )


def confirm_text(reference: str, label: str, status: str, at: str | None = None) -> str:
    when = f" at {at}" if at else ""
    words = {
        "queued": f"✓ Queued for {reference} by {label}.",
        MessageStatus.SENT: f"✓ Sent to {reference} by {label}{when}.",
        MessageStatus.DELIVERED: f"✓✓ Delivered to {reference} by {label}{when}.",
    }
    return words.get(status, f"⚠️ Not delivered to {reference} by {label}: {status}.")


def _delivery_state(item: OutboxItem, msg: Message) -> str:
    """The one word to report: queued, sent, delivered, or why it did not go."""
    if msg.status in (MessageStatus.DELIVERED, MessageStatus.UNDELIVERED, MessageStatus.FAILED):
        return str(msg.status)
    if item.status == OutboxStatus.SKIPPED:
        return "not sent (the client opted out)"
    if item.status in (OutboxStatus.FAILED, OutboxStatus.CANCELLED, OutboxStatus.REVIEW):
        return f"not sent ({item.status})"
    if item.status == OutboxStatus.SENT or msg.status == MessageStatus.SENT:
        return str(MessageStatus.SENT)
    return "queued"


async def report_deliveries(services: Services) -> int:
    """Tells attorneys what became of their replies: edits each confirmation as the status
    moves (queued → sent → delivered), and writes anew when a reply did not go.

    Run periodically; each (reply, status) is reported once, even with several processes.
    """
    reported = 0
    since = services.clock() - DELIVERY_WINDOW
    async with services.sessions() as session:
        rows = await repo.outbox_items_of_kind(session, kind=ATTORNEY_KIND, since=since)
        todo = [
            (item.id, _delivery_state(item, msg))
            for item, msg in rows
            if (item.extra or {}).get("reported") not in (None, _delivery_state(item, msg))
        ]
    for item_id, state in todo:
        assert item_id is not None
        try:
            async with transaction(services.sessions) as session:
                if await _report_one(session, services, item_id, state):
                    reported += 1
        except IntegrityError:
            continue  # another process reported this status first (dedupe key)
    return reported


async def _report_one(session: AsyncSession, services: Services, item_id: int, state: str) -> bool:
    item = await session.get(OutboxItem, item_id, with_for_update=True)
    if item is None or item.extra is None:
        return False
    confirm_id = item.extra.get("confirm_item_id")
    staff_id = item.extra.get("staff_id")
    confirm = await session.get(OutboxItem, confirm_id) if confirm_id else None
    staff = await session.get(Staff, staff_id) if staff_id else None
    msg = await session.get(Message, item.message_id)
    case = await session.get(Case, msg.case_id) if msg is not None and msg.case_id else None
    if confirm is None or staff is None or case is None:
        return False
    confirm_msg = await session.get(Message, confirm.message_id)
    if confirm_msg is None or confirm_msg.provider_id is None:
        return False  # the confirmation itself has not gone out yet: report next round
    target = confirm_msg.provider_id
    label = channel_label(item.channel)
    at = local_time(services, services.clock())
    text = confirm_text(case.reference, label, state, at)
    ok = state in ("queued", MessageStatus.SENT, MessageStatus.DELIVERED)
    extra = {"edit_message_id": target} if ok else {"reply_to_message_id": target}
    await repo.enqueue_staff(
        session,
        vault=services.vault,
        due_at=services.clock(),
        text=text,
        staff=staff,
        case_id=case.id,
        kind=CONFIRM_KIND,
        dedupe_key=f"relay-status:{item.id}:{state}"[:128],
        extra=extra,
    )
    item.extra = {**item.extra, "reported": state}
    session.add(item)
    await session.flush()
    return True

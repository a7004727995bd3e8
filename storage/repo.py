"""Database access: plain keyword-only functions that take the session first.

Everything that reads or writes a client's fields goes through here, so encryption,
blind indexes and erasure are handled in one place.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, or_, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import ERASED, DataKey, Vault
from storage.models import (
    AdverseParty,
    Appointment,
    AuditLog,
    Case,
    CaseStatusChange,
    Channel,
    ChannelIdentity,
    Client,
    ConsentEvent,
    ConversationState,
    Direction,
    Document,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    Priority,
    ScheduledItem,
    ScheduleStatus,
    Staff,
)
from storage.types import utcnow

# Case references are read over the phone: no 0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V.
REFERENCE_ALPHABET = "ACDEFGHJKMNPQRTWXY3467"
REFERENCE_LENGTH = 6


class NotFound(LookupError):
    """The thing asked for does not exist."""


# --------------------------------------------------------------------------- keys


async def preload(session: AsyncSession, statement: Any) -> None:
    """Load rows into the session so that its ``get`` finds them without a query.

    The session's identity map holds objects weakly: rows loaded and then dropped are
    forgotten, and the next ``get`` queries again. These stay for the session's life.
    """
    rows = (await session.exec(statement)).all()
    session.info.setdefault("preloaded", []).extend(rows)


def client_key(vault: Vault, client: Client) -> DataKey:
    """The client's data key (erased clients get a key that reads everything as erased)."""
    if client.wrapped_key is None:
        return DataKey(None)
    return DataKey(vault.unwrap(client.wrapped_key))


def address_index_kind(channel: str) -> str:
    return f"addr:{channel}"


def client_name(vault: Vault, client: Client) -> str | None:
    return client_key(vault, client).open_text(client.name_enc, "client.name")


def identity_address(vault: Vault, client: Client, identity: ChannelIdentity) -> str | None:
    """The phone number or chat id, decrypted; None for an erased client."""
    key = client_key(vault, client)
    if key.erased:
        return None
    return key.open_text(identity.address_enc, "identity.address")


# --------------------------------------------------------------------------- clients


async def find_identity(
    session: AsyncSession, *, vault: Vault, channel: str, address: str
) -> ChannelIdentity | None:
    """The identity for this address on this channel, found by its blind index."""
    hashes = vault.blind_indexes(address_index_kind(channel), address)
    row = await session.scalar(
        select(ChannelIdentity)
        .where(ChannelIdentity.channel == channel, col(ChannelIdentity.address_hash).in_(hashes))
        .limit(1)
    )
    return row


async def find_identities(
    session: AsyncSession, *, vault: Vault, addresses: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], ChannelIdentity]:
    """The identities of many (channel, address) pairs in one query per channel, by blind index."""
    found: dict[tuple[str, str], ChannelIdentity] = {}
    by_channel: dict[str, dict[str, str]] = {}
    for channel, address in addresses:
        for h in vault.blind_indexes(address_index_kind(channel), address):
            by_channel.setdefault(channel, {})[h] = address
    for channel, hashes in by_channel.items():
        rows = await session.exec(
            select(ChannelIdentity).where(
                ChannelIdentity.channel == channel,
                col(ChannelIdentity.address_hash).in_(list(hashes)),
            )
        )
        for ident in rows.all():
            found.setdefault((channel, hashes[ident.address_hash]), ident)
    return found


async def find_client_by_address(
    session: AsyncSession, *, vault: Vault, channel: str, address: str
) -> Client | None:
    ident = await find_identity(session, vault=vault, channel=channel, address=address)
    if ident is None:
        return None
    return await session.get(Client, ident.client_id)


async def add_identity(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    channel: str,
    address: str,
    verified: bool = True,
) -> ChannelIdentity:
    """Attach a channel address to a client (encrypted, with its blind index)."""
    assert client.id is not None
    key = client_key(vault, client)
    ident = ChannelIdentity(
        client_id=client.id,
        channel=channel,
        address_hash=vault.blind_index(address_index_kind(channel), address),
        address_enc=key.seal_text(address, "identity.address"),
        verified=verified,
    )
    session.add(ident)
    await session.flush()
    return ident


async def create_client(
    session: AsyncSession,
    *,
    vault: Vault,
    channel: str,
    address: str,
    name: str | None = None,
    language: str = "en",
    timezone: str = "America/New_York",
) -> Client:
    """A new client with a fresh data key and one channel identity."""
    client, _ident = await _create_client(
        session,
        vault=vault,
        channel=channel,
        address=address,
        name=name,
        language=language,
        timezone=timezone,
    )
    return client


async def _create_client(
    session: AsyncSession,
    *,
    vault: Vault,
    channel: str,
    address: str,
    name: str | None,
    language: str,
    timezone: str,
) -> tuple[Client, ChannelIdentity]:
    _dek, wrapped = vault.new_data_key()
    client = Client(wrapped_key=wrapped, language=language, timezone=timezone)
    key = client_key(vault, client)
    if name:
        client.name_enc = key.seal_text(name, "client.name")
        client.name_hash = client_name_hash(vault, name)
    session.add(client)
    await session.flush()
    ident = await add_identity(
        session, vault=vault, client=client, channel=channel, address=address
    )
    return client, ident


async def get_or_create_client(
    session: AsyncSession,
    *,
    vault: Vault,
    channel: str,
    address: str,
    language: str = "en",
    timezone: str = "America/New_York",
) -> tuple[Client, ChannelIdentity, bool]:
    """The client behind this address, creating one on first contact. Third item: created."""
    ident = await find_identity(session, vault=vault, channel=channel, address=address)
    if ident is not None:
        client = await session.get(Client, ident.client_id)
        assert client is not None
        return client, ident, False
    client, ident = await _create_client(
        session,
        vault=vault,
        channel=channel,
        address=address,
        name=None,
        language=language,
        timezone=timezone,
    )
    return client, ident, True


def set_client_name(vault: Vault, client: Client, name: str) -> None:
    client.name_enc = client_key(vault, client).seal_text(name, "client.name")
    client.name_hash = client_name_hash(vault, name)
    client.updated_at = utcnow()


def client_name_index_kind() -> str:
    return "client:name"


def client_name_hash(vault: Vault, name: str) -> str:
    """The blind index of a client's name, normalised like adverse parties' (conflict checks)."""
    return vault.blind_index(client_name_index_kind(), normalize_party_name(name))


async def clients_named(session: AsyncSession, *, vault: Vault, name: str) -> Sequence[Client]:
    """Clients with this name (case and spacing ignored), by blind index; erased ones too."""
    hashes = vault.blind_indexes(client_name_index_kind(), normalize_party_name(name))
    rows = await session.exec(
        select(Client).where(col(Client.name_hash).in_(hashes)).order_by(col(Client.id))
    )
    return rows.all()


async def identities(session: AsyncSession, *, client_id: int) -> Sequence[ChannelIdentity]:
    rows = await session.exec(select(ChannelIdentity).where(ChannelIdentity.client_id == client_id))
    return rows.all()


async def reply_identity(
    session: AsyncSession, *, client_id: int, channel: str | None = None
) -> ChannelIdentity | None:
    """Where to reach a client: the given channel, else where they last wrote from."""
    idents = list(await identities(session, client_id=client_id))
    if channel is not None:
        idents = [i for i in idents if i.channel == channel]
    if not idents:
        return None
    epoch = datetime.min.replace(tzinfo=utcnow().tzinfo)
    idents.sort(key=lambda i: (i.last_inbound_at or epoch, i.created_at), reverse=True)
    return idents[0]


async def record_consent(
    session: AsyncSession,
    *,
    identity: ChannelIdentity,
    kind: str,
    source: str,
    at: datetime | None = None,
) -> None:
    """Record an opt-out or opt-in on one channel, with its history."""
    now = at or utcnow()
    if kind in ("opt_out", "blocked"):
        identity.opted_out_at = identity.opted_out_at or now
    elif kind == "opt_in":
        identity.opted_out_at = None
    session.add(identity)
    session.add(
        ConsentEvent(
            client_id=identity.client_id, channel=identity.channel, kind=kind, source=source, at=now
        )
    )
    await session.flush()


async def erase_client(
    session: AsyncSession, *, client: Client, at: datetime | None = None
) -> None:
    """Destroy the client's data key: everything of theirs reads as erased, backups included."""
    client.wrapped_key = None
    client.erased_at = at or utcnow()
    session.add(client)
    # Pending messages can no longer be read or sent.
    rows = await session.exec(
        select(OutboxItem).where(
            OutboxItem.client_id == client.id, OutboxItem.status == OutboxStatus.PENDING
        )
    )
    for item in rows:
        item.status = OutboxStatus.SKIPPED
        item.last_error = "client erased"
    await session.flush()


# --------------------------------------------------------------------------- staff


def staff_index_kind(what: str) -> str:
    return f"staff:{what}"


async def create_staff(
    session: AsyncSession,
    *,
    vault: Vault,
    name: str,
    role: str,
    telegram_id: int | None = None,
    phone: str | None = None,
) -> Staff:
    staff = Staff(name_enc=vault.seal_text(name, "staff.name"), role=role)
    if telegram_id is not None:
        staff.telegram_id_hash = vault.blind_index(staff_index_kind("telegram"), str(telegram_id))
        staff.telegram_id_enc = vault.seal_text(str(telegram_id), "staff.telegram")
    if phone is not None:
        staff.phone_hash = vault.blind_index(staff_index_kind("phone"), phone)
        staff.phone_enc = vault.seal_text(phone, "staff.phone")
    session.add(staff)
    await session.flush()
    return staff


async def find_staff_by_telegram_id(
    session: AsyncSession, *, vault: Vault, telegram_id: int
) -> Staff | None:
    hashes = vault.blind_indexes(staff_index_kind("telegram"), str(telegram_id))
    return await session.scalar(
        select(Staff).where(col(Staff.telegram_id_hash).in_(hashes), col(Staff.active))
    )


def staff_name(vault: Vault, staff: Staff) -> str:
    return vault.open_text(staff.name_enc, "staff.name") or ""


def staff_telegram_id(vault: Vault, staff: Staff) -> int | None:
    raw = vault.open_text(staff.telegram_id_enc, "staff.telegram")
    return int(raw) if raw else None


# --------------------------------------------------------------------------- cases


def new_reference() -> str:
    body = "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))
    return f"{body[:3]}-{body[3:]}"


def normalize_reference(text: str) -> str:
    """Accept 'k7m4px', 'K7M 4PX' or 'K7M-4PX'; return the stored form."""
    raw = "".join(ch for ch in text.upper() if ch.isalnum())
    if len(raw) != REFERENCE_LENGTH:
        return text.strip().upper()
    return f"{raw[:3]}-{raw[3:]}"


async def create_case(
    session: AsyncSession,
    *,
    client: Client,
    category: str,
    status: str = "open",
    urgent: bool = False,
    discreet: bool = False,
    source: str = "cli",
    staff_id: int | None = None,
) -> Case:
    """Open a case with a fresh, unique, phone-friendly reference."""
    assert client.id is not None
    for _ in range(20):
        ref = new_reference()
        exists = await session.scalar(select(Case.id).where(Case.reference == ref))
        if exists is None:
            break
    else:  # pragma: no cover - 113 million references; twenty collisions means a bug
        raise RuntimeError("could not find a free case reference")
    case = Case(
        reference=ref,
        client_id=client.id,
        category=category,
        status=status,
        urgent=urgent,
        discreet=discreet or client.discreet,
    )
    session.add(case)
    await session.flush()
    assert case.id is not None
    session.add(
        CaseStatusChange(case_id=case.id, status=status, source=source, by_staff_id=staff_id)
    )
    await session.flush()
    return case


async def get_case(session: AsyncSession, *, reference: str) -> Case | None:
    return await session.scalar(
        select(Case).where(Case.reference == normalize_reference(reference))
    )


async def require_case(session: AsyncSession, *, reference: str) -> Case:
    case = await get_case(session, reference=reference)
    if case is None:
        raise NotFound(f"no case {normalize_reference(reference)}")
    return case


async def open_cases(session: AsyncSession, *, client_id: int) -> Sequence[Case]:
    rows = await session.exec(
        select(Case)
        .where(Case.client_id == client_id, col(Case.closed).is_(False))
        .order_by(col(Case.opened_at).desc())
    )
    return rows.all()


async def record_status(
    session: AsyncSession,
    *,
    case: Case,
    status: str,
    source: str = "cli",
    staff_id: int | None = None,
    at: datetime | None = None,
) -> CaseStatusChange:
    now = at or utcnow()
    case.status = status
    case.updated_at = now
    case.last_news_at = now
    session.add(case)
    assert case.id is not None
    change = CaseStatusChange(
        case_id=case.id, status=status, source=source, by_staff_id=staff_id, at=now
    )
    session.add(change)
    await session.flush()
    return change


async def status_history(session: AsyncSession, *, case_id: int) -> Sequence[CaseStatusChange]:
    rows = await session.exec(
        select(CaseStatusChange)
        .where(CaseStatusChange.case_id == case_id)
        .order_by(col(CaseStatusChange.at), col(CaseStatusChange.id))
    )
    return rows.all()


# --------------------------------------------------------------------------- audit


async def audit(
    session: AsyncSession,
    *,
    actor_kind: str,
    action: str,
    actor_id: int | None = None,
    case_id: int | None = None,
    client_id: int | None = None,
    allowed: bool = True,
    detail: str | None = None,
) -> None:
    """Write one audit row. ``detail`` must never hold client content."""
    session.add(
        AuditLog(
            actor_kind=actor_kind,
            actor_id=actor_id,
            action=action,
            case_id=case_id,
            client_id=client_id,
            allowed=allowed,
            detail=detail[:256] if detail else None,
        )
    )
    await session.flush()


# --------------------------------------------------------------------------- messages


async def store_inbound(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    channel: str,
    provider_id: str,
    body: str,
    media: list[dict[str, Any]] | None = None,
) -> Message:
    """Store an inbound message (body encrypted) as received, not yet processed."""
    key = client_key(vault, client)
    msg = Message(
        direction=Direction.IN,
        channel=channel,
        provider_id=provider_id,
        client_id=client.id,
        body_enc=key.seal_text(body, "message.body"),
        media=media,
        status=MessageStatus.RECEIVED,
    )
    session.add(msg)
    await session.flush()
    return msg


def message_body(vault: Vault, client: Client | None, msg: Message) -> str:
    """A message's text; '[erased]' for an erased client."""
    if msg.body_enc is None:
        return ""
    if client is None:
        return vault.open_text(msg.body_enc, "message.body") or ""
    return client_key(vault, client).open_text(msg.body_enc, "message.body") or ERASED


async def enqueue(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    text: str,
    kind: str = "reply",
    priority: int = Priority.REPLY,
    channel: str | None = None,
    dedupe_key: str | None = None,
    due_at: datetime | None = None,
    urgent: bool = False,
    case_id: int | None = None,
    broadcast_id: int | None = None,
    extra: dict[str, Any] | None = None,
) -> OutboxItem | None:
    """Queue one message to a client, in the caller's transaction. The one road out.

    Returns None when the client cannot be reached (erased, or no identity). A client who
    has opted out still gets a row, which the dispatcher skips: the decision is taken at
    send time, so an opt-out that arrives after queueing still holds.
    """
    assert client.id is not None
    if client.wrapped_key is None:
        return None
    if dedupe_key is not None:
        existing = (
            await session.exec(select(OutboxItem).where(OutboxItem.dedupe_key == dedupe_key))
        ).first()
        if existing is not None:
            return existing
    ident = await reply_identity(session, client_id=client.id, channel=channel)
    if ident is None:
        return None
    key = client_key(vault, client)
    msg = Message(
        direction=Direction.OUT,
        channel=ident.channel,
        client_id=client.id,
        case_id=case_id,
        body_enc=key.seal_text(text, "message.body"),
        status=MessageStatus.QUEUED,
    )
    session.add(msg)
    await session.flush()
    item = OutboxItem(
        message_id=msg.id,  # type: ignore[arg-type]
        dedupe_key=dedupe_key,
        channel=ident.channel,
        client_id=client.id,
        kind=kind,
        priority=priority,
        urgent=urgent,
        due_at=due_at or utcnow(),
        broadcast_id=broadcast_id,
        extra={"identity_id": ident.id, **(extra or {})},
    )
    session.add(item)
    await session.flush()
    return item


async def enqueue_staff(
    session: AsyncSession,
    *,
    vault: Vault,
    text: str,
    staff: Staff | None = None,
    chat_id: int | None = None,
    client: Client | None = None,
    case_id: int | None = None,
    kind: str = "staff",
    dedupe_key: str | None = None,
    extra: dict[str, Any] | None = None,
    due_at: datetime | None = None,
) -> OutboxItem | None:
    """Queue a Telegram message to a staff member or the staff group.

    When ``client`` is given the text is encrypted under that client's key (it may hold
    what they wrote), so erasing the client erases it here too.
    """
    if dedupe_key is not None:
        existing = (
            await session.exec(select(OutboxItem).where(OutboxItem.dedupe_key == dedupe_key))
        ).first()
        if existing is not None:
            return existing
    if staff is None and chat_id is None:
        raise ValueError("enqueue_staff needs staff or chat_id")
    if client is not None:
        if client.wrapped_key is None:
            return None
        body_enc = client_key(vault, client).seal_text(text, "message.body")
    else:
        body_enc = vault.seal_text(text, "message.body")
    msg = Message(
        direction=Direction.OUT,
        channel=Channel.TELEGRAM,
        client_id=client.id if client else None,
        staff_id=staff.id if staff else None,
        case_id=case_id,
        body_enc=body_enc,
        status=MessageStatus.QUEUED,
    )
    session.add(msg)
    await session.flush()
    item = OutboxItem(
        message_id=msg.id,  # type: ignore[arg-type]
        dedupe_key=dedupe_key,
        channel=Channel.TELEGRAM,
        staff_id=staff.id if staff else None,
        client_id=client.id if client else None,
        kind=kind,
        priority=Priority.STAFF,
        urgent=True,  # staff are not held by client quiet hours
        due_at=due_at or utcnow(),
        extra={"chat_id": chat_id, **(extra or {})} if chat_id is not None else (extra or None),
    )
    session.add(item)
    await session.flush()
    return item


# --------------------------------------------------------------------------- bulk sends


@dataclass(frozen=True)
class BulkMessage:
    """One message of a bulk send; ``text`` None records the client as skipped (``reason``)."""

    client: Client
    channel: str
    identity_id: int | None
    dedupe_key: str
    text: str | None
    reason: str | None = None


async def existing_dedupe_keys(session: AsyncSession, *, keys: Sequence[str]) -> set[str]:
    """Which of these outbox dedupe keys are already taken."""
    found: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        rows = await session.exec(
            select(OutboxItem.dedupe_key).where(col(OutboxItem.dedupe_key).in_(chunk))
        )
        found.update(k for k in rows.all() if k is not None)
    return found


async def enqueue_many(
    session: AsyncSession,
    *,
    vault: Vault,
    messages: Sequence[BulkMessage],
    kind: str,
    priority: int,
    due_at: datetime,
    broadcast_id: int | None = None,
) -> int:
    """Queue many client messages in a few statements (a broadcast); returns rows written.

    The bulk twin of ``enqueue``: same rows, same encryption, but one INSERT per table per
    call, because a row-at-a-time loop takes tens of seconds for ten thousand clients. A
    message whose dedupe key already exists is left alone, so re-running after a crash
    writes only what is missing. Erased clients and ``text=None`` become skipped rows with
    no body: the reason is kept, nothing is sent, and a re-run does not try them again.
    """
    taken = await existing_dedupe_keys(session, keys=[m.dedupe_key for m in messages])
    todo: list[BulkMessage] = []
    seen: set[str] = set()
    clients: set[int] = set()
    for m in messages:
        if m.dedupe_key in taken or m.dedupe_key in seen:
            continue
        if m.client.id in clients:
            raise ValueError("enqueue_many takes one message per client per call")
        seen.add(m.dedupe_key)
        clients.add(m.client.id)  # type: ignore[arg-type]
        todo.append(m)
    if not todo:
        return 0
    now = utcnow()
    message_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    for m in todo:
        assert m.client.id is not None
        reason = m.reason
        body_enc: bytes | None = None
        if m.text is not None and m.client.wrapped_key is None:
            reason = "client erased"
        elif m.text is not None:
            body_enc = client_key(vault, m.client).seal_text(m.text, "message.body")
        skipped = body_enc is None
        message_rows.append(
            {
                "direction": Direction.OUT,
                "channel": m.channel,
                "client_id": m.client.id,
                "body_enc": body_enc,
                "status": MessageStatus.CANCELLED if skipped else MessageStatus.QUEUED,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
            }
        )
        outbox_rows.append(
            {
                "dedupe_key": m.dedupe_key,
                "channel": m.channel,
                "client_id": m.client.id,
                "kind": kind,
                "priority": priority,
                "urgent": False,
                "due_at": due_at,
                "status": OutboxStatus.SKIPPED if skipped else OutboxStatus.PENDING,
                "attempts": 0,
                "last_error": (reason or "skipped")[:200] if skipped else None,
                "broadcast_id": broadcast_id,
                "extra": {"identity_id": m.identity_id} if m.identity_id is not None else None,
                "created_at": now,
            }
        )
    # Matched back by client (one message per client per call): asking the database to keep
    # the parameters' order makes SQLite insert row by row, ten times slower.
    inserted = await session.exec(
        insert(Message).returning(col(Message.id), col(Message.client_id)), params=message_rows
    )
    by_client = {client_id: message_id for message_id, client_id in inserted.all()}
    for row in outbox_rows:
        row["message_id"] = by_client[row["client_id"]]
    await session.exec(insert(OutboxItem), params=outbox_rows)
    return len(todo)


# --------------------------------------------------------------------------- adverse parties


def adverse_index_kind() -> str:
    return "adverse:name"


def normalize_party_name(name: str) -> str:
    """The form a party's name is hashed in: case and spacing do not matter."""
    return " ".join(name.casefold().split())


async def add_adverse_party(
    session: AsyncSession, *, vault: Vault, client: Client, case: Case, name: str
) -> AdverseParty:
    """Record the other side of a case: name under the client's key, hash for conflict checks."""
    assert case.id is not None
    party = AdverseParty(
        case_id=case.id,
        name_hash=vault.blind_index(adverse_index_kind(), normalize_party_name(name)),
        name_enc=client_key(vault, client).seal_text(name, "adverse.name"),
    )
    session.add(party)
    await session.flush()
    return party


def adverse_party_name(vault: Vault, client: Client, party: AdverseParty) -> str | None:
    return client_key(vault, client).open_text(party.name_enc, "adverse.name")


async def cases_with_adverse_party(
    session: AsyncSession, *, vault: Vault, name: str
) -> Sequence[Case]:
    """Cases where this name is the other side (conflict check), by blind index."""
    hashes = vault.blind_indexes(adverse_index_kind(), normalize_party_name(name))
    rows = await session.exec(
        select(Case)
        .join(AdverseParty, col(AdverseParty.case_id) == col(Case.id))
        .where(col(AdverseParty.name_hash).in_(hashes))
        .order_by(col(Case.id))
    )
    return rows.unique().all()


# --------------------------------------------------------------------------- inbound processing


async def find_message(session: AsyncSession, *, channel: str, provider_id: str) -> Message | None:
    """The message a provider knows by this id on this channel (webhook dedupe, callbacks)."""
    return await session.scalar(
        select(Message).where(Message.channel == channel, Message.provider_id == provider_id)
    )


async def find_messages(
    session: AsyncSession, *, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], Message]:
    """``find_message`` for many (channel, provider id) pairs, in one query per channel."""
    found: dict[tuple[str, str], Message] = {}
    by_channel: dict[str, set[str]] = {}
    for channel, provider_id in keys:
        by_channel.setdefault(channel, set()).add(provider_id)
    for channel, ids in by_channel.items():
        rows = await session.exec(
            select(Message).where(Message.channel == channel, col(Message.provider_id).in_(ids))
        )
        for msg in rows.all():
            assert msg.provider_id is not None
            found[(channel, msg.provider_id)] = msg
    return found


async def claim_inbound(session: AsyncSession, *, message_id: int, at: datetime) -> bool:
    """Mark a received inbound message processed; True only for the one caller that did.

    The guarded UPDATE is the claim: a second process finds the row no longer ``received``.
    Done inside the transaction that handles the message, so a rollback un-claims it.
    """
    result = await session.exec(
        update(Message)
        .where(
            col(Message.id) == message_id,
            col(Message.direction) == Direction.IN,
            col(Message.status) == MessageStatus.RECEIVED,
        )
        .values(status=MessageStatus.PROCESSED, processed_at=at, updated_at=at)
    )
    return bool(result.rowcount == 1)


async def lock_client(session: AsyncSession, *, client_id: int) -> Client | None:
    """Load a client holding its row lock (PostgreSQL), so one process handles them at a time.

    FOR NO KEY UPDATE: inserts that merely reference the client (a webhook storing their next
    message) are not blocked, which keeps the two from deadlocking.
    """
    return await session.scalar(
        select(Client).where(Client.id == client_id).with_for_update(key_share=True)
    )


async def next_unprocessed_inbound(session: AsyncSession, *, client_id: int) -> Message | None:
    """A client's oldest inbound message not yet processed (they are handled in order)."""
    return await session.scalar(
        select(Message)
        .where(
            Message.client_id == client_id,
            Message.direction == Direction.IN,
            Message.status == MessageStatus.RECEIVED,
        )
        .order_by(col(Message.id))
        .limit(1)
    )


async def clients_with_unprocessed_inbound(
    session: AsyncSession, *, before: datetime | None = None, limit: int = 500
) -> list[int]:
    """Clients with stored but unprocessed inbound messages (after a crash or restart)."""
    query = select(Message.client_id).where(
        Message.direction == Direction.IN,
        Message.status == MessageStatus.RECEIVED,
        col(Message.client_id).is_not(None),
    )
    if before is not None:
        query = query.where(col(Message.created_at) <= before)
    rows = await session.exec(query.distinct().limit(limit))
    return [cid for cid in rows.all() if cid is not None]


async def restart_erased_identity(
    session: AsyncSession,
    *,
    vault: Vault,
    identity: ChannelIdentity,
    address: str,
    language: str = "en",
    timezone: str = "America/New_York",
) -> Client:
    """An erased client's number writes again: a fresh client (new key) takes the address over.

    The erased client's rows stay unreadable; their opt-out, if any, stays with the number.
    """
    _dek, wrapped = vault.new_data_key()
    client = Client(wrapped_key=wrapped, language=language, timezone=timezone)
    session.add(client)
    await session.flush()
    assert client.id is not None
    identity.client_id = client.id
    identity.address_enc = client_key(vault, client).seal_text(address, "identity.address")
    identity.notice_sent_at = None
    session.add(identity)
    await session.flush()
    return client


async def add_document(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    content: bytes,
    content_type: str,
    message_id: int | None = None,
    case_id: int | None = None,
) -> Document:
    """Store a file the client sent, encrypted under their key (erasure covers it)."""
    assert client.id is not None
    doc = Document(
        client_id=client.id,
        case_id=case_id,
        message_id=message_id,
        content_type=content_type[:128],
        size=len(content),
        content_enc=client_key(vault, client).seal(content, b"document.content"),
    )
    session.add(doc)
    await session.flush()
    return doc


def document_content(vault: Vault, client: Client, doc: Document) -> bytes | None:
    """A document's bytes; None for an erased client."""
    key = client_key(vault, client)
    if key.erased or doc.content_enc is None:
        return None
    return key.open(doc.content_enc, b"document.content")


# --------------------------------------------------------------------------- the outbox


CLAIM_WINDOW = 200  # rows at the head of the outbox that a claim looks at first


async def claim_outbox(
    session: AsyncSession,
    *,
    channel: str,
    limit: int,
    now: datetime,
    claimer: str,
    lease_until: datetime,
) -> list[OutboxItem]:
    """Claim up to ``limit`` due rows of one channel: replies first, then oldest due.

    At most one row per client, and none while another of theirs is in flight: a client's
    messages go out one at a time, in order, whichever dispatcher sends them.
    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL lets several dispatchers claim side by side; on
    SQLite the UPDATE takes the database's single write lock, so one claimer runs at a time.
    ``claimer`` names the claim on the rows (for people reading the table).
    """
    other = aliased(OutboxItem)
    same_client = (
        col(other.client_id) == col(OutboxItem.client_id),
        col(other.channel) == col(OutboxItem.channel),
    )
    # Two checks, each an equality on (client_id, status) that ix_outbox_client_status
    # answers directly; as one OR, PostgreSQL without fresh statistics read every pending row.
    in_flight = select(other.id).where(*same_client, other.status == OutboxStatus.SENDING)
    earlier = select(other.id).where(
        *same_client,
        other.status == OutboxStatus.PENDING,
        col(other.due_at) <= now,
        tuple_(col(other.priority), col(other.due_at), col(other.id))
        < tuple_(col(OutboxItem.priority), col(OutboxItem.due_at), col(OutboxItem.id)),
    )
    ahead = or_(in_flight.exists(), earlier.exists())
    due_now = (
        OutboxItem.status == OutboxStatus.PENDING,
        OutboxItem.channel == channel,
        col(OutboxItem.due_at) <= now,
    )
    order = (col(OutboxItem.priority), col(OutboxItem.due_at), col(OutboxItem.id))
    # The "ahead" check runs only on the head of the queue, fetched first as plain ids: run on
    # every due row (10,000 after a broadcast) it made each claim take a second or more on
    # PostgreSQL, whatever the planner's statistics. Only if the head's rows are all held
    # back behind their clients' earlier ones, with more rows beyond it, is the whole queue
    # searched.
    window = max(4 * limit, CLAIM_WINDOW)
    head = list(
        await session.exec(select(OutboxItem.id).where(*due_now).order_by(*order).limit(window))
    )
    if not head:
        return []
    ids: list[int] = []
    scopes: list[Any] = [col(OutboxItem.id).in_(head)]
    if len(head) == window:
        scopes.append(None)
    for scope in scopes:
        due = (
            select(OutboxItem.id)
            .where(*due_now, ~ahead)
            .order_by(*order)
            .limit(limit - len(ids))
            .with_for_update(skip_locked=True)
        )
        if scope is not None:
            due = due.where(scope)
        result = await session.exec(
            update(OutboxItem)
            .where(col(OutboxItem.id).in_(due.scalar_subquery()))
            .values(status=OutboxStatus.SENDING, claimed_by=claimer, lease_until=lease_until)
            .returning(col(OutboxItem.id))
        )
        ids.extend(result.scalars().all())
        if len(ids) >= limit:
            break
    if not ids:
        return []
    rows = await session.exec(
        select(OutboxItem)
        .where(col(OutboxItem.id).in_(ids))
        .order_by(*order)
        .execution_options(populate_existing=True)
    )
    return list(rows.all())


async def outbox_item_for_message(session: AsyncSession, *, message_id: int) -> OutboxItem | None:
    """The outbox row that sent this message."""
    return await session.scalar(select(OutboxItem).where(OutboxItem.message_id == message_id))


async def expired_sending(
    session: AsyncSession, *, now: datetime, limit: int = 200
) -> Sequence[OutboxItem]:
    """Rows a dispatcher claimed and never settled (it died): locked, so one process decides."""
    rows = await session.exec(
        select(OutboxItem)
        .where(
            OutboxItem.status == OutboxStatus.SENDING,
            col(OutboxItem.lease_until) < now,
        )
        .order_by(col(OutboxItem.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return rows.all()


async def delay_later_rows(session: AsyncSession, *, item: OutboxItem, until: datetime) -> None:
    """Hold a client's later pending rows behind one being retried, so they arrive in order."""
    if item.client_id is None:
        return
    await session.exec(
        update(OutboxItem)
        .where(
            col(OutboxItem.client_id) == item.client_id,
            col(OutboxItem.channel) == item.channel,
            col(OutboxItem.status) == OutboxStatus.PENDING,
            col(OutboxItem.id) > item.id,
            col(OutboxItem.priority) >= item.priority,
            col(OutboxItem.due_at) < until,
        )
        .values(due_at=until)
    )


async def pending_due_count(
    session: AsyncSession, *, channels: Sequence[str], now: datetime
) -> int:
    """How many rows of these channels are due and waiting."""
    if not channels:
        return 0
    total = await session.scalar(
        select(func.count())
        .select_from(OutboxItem)
        .where(
            OutboxItem.status == OutboxStatus.PENDING,
            col(OutboxItem.channel).in_(list(channels)),
            col(OutboxItem.due_at) <= now,
        )
    )
    return int(total or 0)


# --------------------------------------------------------------------------- conversations


class StaleConversation(RuntimeError):
    """Another process moved this conversation on first; roll back and handle the turn again."""


async def load_conversation(
    session: AsyncSession, *, client_id: int, lock: bool = True
) -> ConversationState | None:
    """The client's dialogue state, locked for this transaction on PostgreSQL."""
    stmt = (
        select(ConversationState)
        .where(ConversationState.client_id == client_id)
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update()
    return (await session.exec(stmt)).first()


def conversation_data(vault: Vault, client: Client, conv: ConversationState) -> dict[str, Any]:
    """The answers so far, decrypted; empty for an erased client."""
    data = client_key(vault, client).open_json(conv.data_enc, "conversation.data")
    return data if isinstance(data, dict) else {}


async def save_conversation(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    flow: str,
    state: str,
    data: dict[str, Any],
    history: list[str],
    expected_version: int | None,
    nudged_at: datetime | None = None,
    at: datetime | None = None,
) -> int:
    """Write the dialogue state if nobody else did since it was read; returns the new version.

    ``expected_version`` is the version that was loaded (None: there was no row). Raises
    StaleConversation when another process got there first.
    """
    assert client.id is not None
    now = at or utcnow()
    data_enc = (
        client_key(vault, client).seal_json(data, "conversation.data")
        if data and client.wrapped_key is not None
        else None
    )
    if expected_version is None:
        conv = ConversationState(
            client_id=client.id,
            flow=flow,
            state=state,
            data_enc=data_enc,
            history=history,
            version=1,
            nudged_at=nudged_at,
            updated_at=now,
        )
        session.add(conv)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            raise StaleConversation("conversation was started by another process") from exc
        return 1
    result = await session.exec(
        update(ConversationState)
        .where(
            col(ConversationState.client_id) == client.id,
            col(ConversationState.version) == expected_version,
        )
        .values(
            flow=flow,
            state=state,
            data_enc=data_enc,
            history=history,
            version=expected_version + 1,
            nudged_at=nudged_at,
            updated_at=now,
        )
    )
    if result.rowcount != 1:
        raise StaleConversation("conversation was moved on by another process")
    return expected_version + 1


# --------------------------------------------------------------------------- timed work


async def schedule_item(
    session: AsyncSession,
    *,
    kind: str,
    unique_key: str,
    due_at: datetime,
    client_id: int | None = None,
    case_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> ScheduledItem:
    """Create the one row with this key, or move it back to pending at ``due_at``."""
    item = (
        await session.exec(select(ScheduledItem).where(ScheduledItem.unique_key == unique_key))
    ).first()
    if item is None:
        item = ScheduledItem(kind=kind, unique_key=unique_key, due_at=due_at)
    item.due_at = due_at
    item.status = ScheduleStatus.PENDING
    item.client_id = client_id
    item.case_id = case_id
    item.payload = payload
    item.lease_until = None
    item.done_at = None
    session.add(item)
    await session.flush()
    return item


async def cancel_scheduled_item(
    session: AsyncSession, *, unique_key: str, at: datetime | None = None
) -> bool:
    """Withdraw a pending row; True when there was one."""
    item = (
        await session.exec(
            select(ScheduledItem).where(
                ScheduledItem.unique_key == unique_key,
                ScheduledItem.status == ScheduleStatus.PENDING,
            )
        )
    ).first()
    if item is None:
        return False
    item.status = ScheduleStatus.CANCELLED
    item.done_at = at or utcnow()
    session.add(item)
    await session.flush()
    return True


async def next_appointment_for_client(
    session: AsyncSession, *, client_id: int, after: datetime
) -> tuple[Appointment, Case] | None:
    """The client's next scheduled appointment on an open case, with its case."""
    row = (
        await session.exec(
            select(Appointment, Case)
            .join(Case, col(Case.id) == col(Appointment.case_id))
            .where(
                Case.client_id == client_id,
                col(Case.closed).is_(False),
                Appointment.status == "scheduled",
                col(Appointment.starts_at) >= after,
            )
            .order_by(col(Appointment.starts_at))
            .limit(1)
        )
    ).first()
    if row is None:
        return None
    appointment, case = row
    return appointment, case


# --------------------------------------------------------------------------- staff channel


async def store_staff_inbound(
    session: AsyncSession,
    *,
    vault: Vault,
    staff: Staff,
    channel: str,
    provider_id: str,
    body: str,
) -> Message:
    """Store a staff member's message (sealed under the master key): staff are not clients."""
    msg = Message(
        direction=Direction.IN,
        channel=channel,
        provider_id=provider_id,
        staff_id=staff.id,
        client_id=None,
        body_enc=vault.seal_text(body, "message.body"),
        status=MessageStatus.RECEIVED,
    )
    session.add(msg)
    await session.flush()
    return msg


async def relink_identity(
    session: AsyncSession, *, vault: Vault, identity: ChannelIdentity, client: Client
) -> ChannelIdentity:
    """Move a channel identity to another client, its address re-encrypted under their key."""
    assert client.id is not None
    owner = await session.get(Client, identity.client_id)
    address = identity_address(vault, owner, identity) if owner is not None else None
    if address is None:
        raise ValueError("the identity's address cannot be read (erased client)")
    identity.client_id = client.id
    identity.address_enc = client_key(vault, client).seal_text(address, "identity.address")
    identity.verified = True
    session.add(identity)
    await session.flush()
    return identity


async def active_staff(session: AsyncSession, *, role: str | None = None) -> Sequence[Staff]:
    query = select(Staff).where(col(Staff.active))
    if role is not None:
        query = query.where(Staff.role == role)
    rows = await session.exec(query.order_by(col(Staff.id)))
    return rows.all()


async def cases_of_staff(session: AsyncSession, *, staff_id: int) -> Sequence[Case]:
    """An attorney's open cases, urgent first, then newest."""
    rows = await session.exec(
        select(Case)
        .where(Case.assigned_staff_id == staff_id, col(Case.closed).is_(False))
        .order_by(col(Case.urgent).desc(), col(Case.opened_at).desc())
    )
    return rows.all()


async def unassigned_cases(session: AsyncSession, *, limit: int = 30) -> Sequence[Case]:
    """Open cases nobody handles yet, urgent first, then oldest."""
    rows = await session.exec(
        select(Case)
        .where(col(Case.assigned_staff_id).is_(None), col(Case.closed).is_(False))
        .order_by(col(Case.urgent).desc(), col(Case.opened_at))
        .limit(limit)
    )
    return rows.all()


async def assigned_case_for_client(session: AsyncSession, *, client_id: int) -> Case | None:
    """The client's most recently active open case that has an attorney."""
    return await session.scalar(
        select(Case)
        .where(
            Case.client_id == client_id,
            col(Case.closed).is_(False),
            col(Case.assigned_staff_id).is_not(None),
        )
        .order_by(col(Case.updated_at).desc(), col(Case.id).desc())
        .limit(1)
    )


async def next_appointment_for_case(
    session: AsyncSession, *, case_id: int, after: datetime
) -> Appointment | None:
    return await session.scalar(
        select(Appointment)
        .where(
            Appointment.case_id == case_id,
            Appointment.status == "scheduled",
            col(Appointment.starts_at) >= after,
        )
        .order_by(col(Appointment.starts_at))
        .limit(1)
    )


async def client_thread(
    session: AsyncSession, *, client_id: int, reply_kind: str, limit: int = 10
) -> list[tuple[Message, OutboxItem | None]]:
    """The client's recent words and the attorney's replies (``reply_kind`` rows), oldest first.

    The bot's own automated replies are left out: the thread is the human conversation.
    """
    rows = await session.exec(
        select(Message, OutboxItem)
        .join(OutboxItem, col(OutboxItem.message_id) == col(Message.id), isouter=True)
        .where(
            Message.client_id == client_id,
            (col(Message.direction) == Direction.IN) | (col(OutboxItem.kind) == reply_kind),
        )
        .order_by(col(Message.id).desc())
        .limit(limit)
    )
    return list(reversed([(m, o) for m, o in rows.all()]))


async def outbox_items_of_kind(
    session: AsyncSession, *, kind: str, since: datetime, limit: int = 500
) -> Sequence[tuple[OutboxItem, Message]]:
    """Recent outbox rows of one kind, with their messages (to follow their delivery)."""
    rows = await session.exec(
        select(OutboxItem, Message)
        .join(Message, col(Message.id) == col(OutboxItem.message_id))
        .where(OutboxItem.kind == kind, col(OutboxItem.created_at) >= since)
        .order_by(col(OutboxItem.id))
        .limit(limit)
    )
    return rows.all()


# --------------------------------------------------------------------------- appointments


async def create_appointment(
    session: AsyncSession,
    *,
    vault: Vault,
    client: Client,
    case: Case,
    starts_at: datetime,
    timezone: str,
    kind: str,
    place: str,
    bring: str | None = None,
) -> Appointment:
    """Store an appointment; place and what to bring under the client's key."""
    assert case.id is not None
    key = client_key(vault, client)
    appt = Appointment(
        case_id=case.id,
        kind=kind,
        starts_at=starts_at,
        timezone=timezone,
        place_enc=key.seal_text(place, "appointment.place"),
        bring_enc=key.seal_text(bring, "appointment.bring") if bring else None,
    )
    session.add(appt)
    await session.flush()
    return appt


def appointment_place(vault: Vault, client: Client, appt: Appointment) -> str | None:
    return client_key(vault, client).open_text(appt.place_enc, "appointment.place")


def appointment_bring(vault: Vault, client: Client, appt: Appointment) -> str | None:
    return client_key(vault, client).open_text(appt.bring_enc, "appointment.bring")


def set_appointment_place(vault: Vault, client: Client, appt: Appointment, place: str) -> None:
    appt.place_enc = client_key(vault, client).seal_text(place, "appointment.place")


async def find_appointment(
    session: AsyncSession, *, case_id: int, starts_at: datetime
) -> Appointment | None:
    """The scheduled appointment of this case at exactly this time (a repeated import)."""
    return await session.scalar(
        select(Appointment).where(
            Appointment.case_id == case_id,
            Appointment.starts_at == starts_at,
            Appointment.status == "scheduled",
        )
    )


async def scheduled_for_appointment(
    session: AsyncSession, *, appointment_id: int, kind: str
) -> Sequence[ScheduledItem]:
    """An appointment's timed rows of one kind, earliest due first."""
    rows = await session.exec(
        select(ScheduledItem)
        .where(ScheduledItem.appointment_id == appointment_id, ScheduledItem.kind == kind)
        .order_by(col(ScheduledItem.due_at), col(ScheduledItem.id))
    )
    return rows.all()


# --------------------------------------------------------------------------- claiming timed work


def _claimable(now: datetime, kinds: Sequence[str]) -> Any:
    """Due pending rows, and claimed rows whose claimer let the lease run out (it died)."""
    return and_(
        col(ScheduledItem.kind).in_(list(kinds)),
        or_(
            and_(
                col(ScheduledItem.status) == ScheduleStatus.PENDING,
                col(ScheduledItem.due_at) <= now,
            ),
            and_(
                col(ScheduledItem.status) == ScheduleStatus.CLAIMED,
                col(ScheduledItem.lease_until) < now,
            ),
        ),
    )


async def claim_scheduled(
    session: AsyncSession,
    *,
    now: datetime,
    lease_until: datetime,
    kinds: Sequence[str],
    limit: int = 100,
) -> list[int]:
    """Claim up to ``limit`` due rows of these kinds, earliest first; returns their ids.

    One UPDATE whose subquery takes ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
    schedulers claim side by side without sharing a row; on SQLite the UPDATE holds the single
    write lock and its WHERE is re-checked, so a row already claimed is never claimed again.
    The lease is the claim's token: only its holder can settle the row (``take_claimed``).
    """
    if not kinds:
        return []
    due = (
        select(ScheduledItem.id)
        .where(_claimable(now, kinds))
        .order_by(col(ScheduledItem.due_at), col(ScheduledItem.id))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    result = await session.exec(
        update(ScheduledItem)
        .where(col(ScheduledItem.id).in_(due.scalar_subquery()), _claimable(now, kinds))
        .values(status=ScheduleStatus.CLAIMED, lease_until=lease_until)
        .returning(col(ScheduledItem.id), col(ScheduledItem.due_at))
    )
    return [row[0] for row in sorted(result.all(), key=lambda r: (r[1], r[0]))]


async def take_claimed(
    session: AsyncSession, *, item_id: int, lease_until: datetime, now: datetime
) -> ScheduledItem | None:
    """Settle a claimed row as done, if the claim is still ours; the row is then locked.

    Run first in the transaction that does the row's work: a row moved, cancelled or
    re-claimed since (its lease changed) is left alone and None comes back.
    """
    result = await session.exec(
        update(ScheduledItem)
        .where(
            col(ScheduledItem.id) == item_id,
            col(ScheduledItem.status) == ScheduleStatus.CLAIMED,
            col(ScheduledItem.lease_until) == lease_until,
        )
        .values(status=ScheduleStatus.DONE, done_at=now, lease_until=None)
    )
    if result.rowcount != 1:
        return None
    return await session.get(ScheduledItem, item_id, populate_existing=True)


async def retry_claimed_later(
    session: AsyncSession,
    *,
    item_id: int,
    lease_until: datetime,
    retry_at: datetime,
    max_attempts: int,
    now: datetime,
) -> bool:
    """After a failed attempt: keep the claim until ``retry_at``, or give up. True if given up."""
    item = await session.get(ScheduledItem, item_id, populate_existing=True)
    if item is None or item.status != ScheduleStatus.CLAIMED or item.lease_until != lease_until:
        return False
    attempts = int((item.payload or {}).get("attempts", 0)) + 1
    item.payload = {**(item.payload or {}), "attempts": attempts}
    gave_up = attempts >= max_attempts
    if gave_up:
        item.status, item.done_at, item.lease_until = ScheduleStatus.SKIPPED, now, None
    else:
        item.lease_until = retry_at  # an expired lease is how a row is picked up again
    session.add(item)
    await session.flush()
    return gave_up


async def schedule_once(
    session: AsyncSession,
    *,
    kind: str,
    unique_key: str,
    due_at: datetime,
    client_id: int | None = None,
    case_id: int | None = None,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Create the row with this key unless it exists (whatever its status); True if created.

    INSERT ... ON CONFLICT DO NOTHING, so two processes planning the same row make one.
    """
    values = {
        "kind": kind,
        "unique_key": unique_key,
        "due_at": due_at,
        "status": ScheduleStatus.PENDING,
        "client_id": client_id,
        "case_id": case_id,
        "payload": payload,
        "created_at": utcnow(),
    }
    stmt: Any
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(ScheduledItem).values(**values)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(ScheduledItem).values(**values)
    result = await session.exec(stmt.on_conflict_do_nothing(index_elements=["unique_key"]))
    return bool(result.rowcount)


# --------------------------------------------------------------------------- prompts and check-ins


async def latest_prompt(
    session: AsyncSession, *, client_id: int, kinds: Sequence[str], since: datetime
) -> ScheduledItem | None:
    """The client's most recently sent reminder or check-in (a row done since ``since``)."""
    return await session.scalar(
        select(ScheduledItem)
        .where(
            ScheduledItem.client_id == client_id,
            col(ScheduledItem.kind).in_(list(kinds)),
            ScheduledItem.status == ScheduleStatus.DONE,
            col(ScheduledItem.done_at) >= since,
        )
        .order_by(col(ScheduledItem.done_at).desc(), col(ScheduledItem.id).desc())
        .limit(1)
    )


async def wrote_since(session: AsyncSession, *, client_id: int, message_id: int) -> bool:
    """True when the client was sent anything after this message (the prompt is stale)."""
    found = await session.scalar(
        select(Message.id)
        .where(
            Message.client_id == client_id,
            Message.direction == Direction.OUT,
            col(Message.staff_id).is_(None),
            col(Message.id) > message_id,
        )
        .limit(1)
    )
    return found is not None


async def cases_without_news(
    session: AsyncSession, *, before: datetime, limit: int = 500
) -> Sequence[Case]:
    """Open cases of clients not erased whose last news is older than ``before``."""
    rows = await session.exec(
        select(Case)
        .join(Client, col(Client.id) == col(Case.client_id))
        .where(
            col(Case.closed).is_(False),
            col(Case.last_news_at) <= before,
            col(Client.wrapped_key).is_not(None),
        )
        .order_by(col(Case.last_news_at), col(Case.id))
        .limit(limit)
    )
    return rows.all()


# --------------------------------------------------------------------------- PINs

# A PIN is a few digits: the stretching slows an offline guess a little; the real protection
# is the limit on tries (see ``failed_attempts``).
_PIN_ITERATIONS = 100_000


def hash_pin(pin: str) -> str:
    """Stored form of a client's PIN: pbkdf2_sha256$iterations$salt$hash (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, _PIN_ITERATIONS)
    return f"pbkdf2_sha256${_PIN_ITERATIONS}${salt.hex()}${digest.hex()}"


def set_pin(client: Client, pin: str) -> None:
    client.pin_hash = hash_pin(pin)
    client.updated_at = utcnow()


def pin_matches(client: Client, pin: str) -> bool:
    """Constant-time check of a PIN against the stored hash; False when none is set."""
    try:
        scheme, iterations, salt, digest = (client.pin_hash or "").split("$")
        if scheme != "pbkdf2_sha256":
            return False
        got = hashlib.pbkdf2_hmac("sha256", pin.encode(), bytes.fromhex(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


async def failed_attempts(
    session: AsyncSession, *, client_id: int, action: str, since: datetime
) -> int:
    """How many refused ``action`` audit rows this client has since ``since``."""
    total = await session.scalar(
        select(func.count())
        .select_from(AuditLog)
        .where(
            AuditLog.client_id == client_id,
            AuditLog.action == action,
            col(AuditLog.allowed).is_(False),
            col(AuditLog.at) >= since,
        )
    )
    return int(total or 0)

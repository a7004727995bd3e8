"""Database access: plain keyword-only functions that take the session first.

Everything that reads or writes a client's fields goes through here, so encryption,
blind indexes and erasure are handled in one place.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import ERASED, DataKey, Vault
from storage.models import (
    AuditLog,
    Case,
    CaseStatusChange,
    Channel,
    ChannelIdentity,
    Client,
    ConsentEvent,
    Direction,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    Priority,
    Staff,
)
from storage.types import utcnow

# Case references are read over the phone: no 0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V.
REFERENCE_ALPHABET = "ACDEFGHJKMNPQRTWXY3467"
REFERENCE_LENGTH = 6


class NotFound(LookupError):
    """The thing asked for does not exist."""


# --------------------------------------------------------------------------- keys


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
    _dek, wrapped = vault.new_data_key()
    client = Client(wrapped_key=wrapped, language=language, timezone=timezone)
    key = client_key(vault, client)
    if name:
        client.name_enc = key.seal_text(name, "client.name")
    session.add(client)
    await session.flush()
    await add_identity(session, vault=vault, client=client, channel=channel, address=address)
    return client


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
    client = await create_client(
        session, vault=vault, channel=channel, address=address, language=language, timezone=timezone
    )
    ident2 = await find_identity(session, vault=vault, channel=channel, address=address)
    assert ident2 is not None
    return client, ident2, True


def set_client_name(vault: Vault, client: Client, name: str) -> None:
    client.name_enc = client_key(vault, client).seal_text(name, "client.name")
    client.updated_at = utcnow()


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
        extra={"chat_id": chat_id, **(extra or {})} if chat_id is not None else (extra or None),
    )
    session.add(item)
    await session.flush()
    return item

"""Clients: their data keys, channel identities, names, consent, erasure and PINs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import DataKey, Vault
from storage.models import (
    ChannelIdentity,
    Client,
    ConsentEvent,
    OutboxItem,
    OutboxStatus,
)
from storage.repo.common import chunked
from storage.types import utcnow


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


def set_client_name(vault: Vault, client: Client, name: str, *, at: datetime | None = None) -> None:
    client.name_enc = client_key(vault, client).seal_text(name, "client.name")
    client.name_hash = client_name_hash(vault, name)
    client.updated_at = at or utcnow()


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


def normalize_party_name(name: str) -> str:
    """The form a party's name is hashed in: case and spacing do not matter."""
    return " ".join(name.casefold().split())


async def lock_client(session: AsyncSession, *, client_id: int) -> Client | None:
    """Load a client holding its row lock (PostgreSQL), so one process handles them at a time.

    FOR NO KEY UPDATE: inserts that merely reference the client (a webhook storing their next
    message) are not blocked, which keeps the two from deadlocking.
    """
    return await session.scalar(
        select(Client).where(Client.id == client_id).with_for_update(key_share=True)
    )


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


async def client_for_address(
    session: AsyncSession,
    *,
    vault: Vault,
    channel: str,
    address: str,
    language: str,
    timezone: str,
    identity: ChannelIdentity | None = None,
) -> tuple[Client, ChannelIdentity]:
    """The living client writing from this address: found (``identity`` when the caller
    looked it up already), created on first contact, or begun anew after an erase."""
    if identity is not None:
        found = await session.get(Client, identity.client_id)
        assert found is not None
        client = found
    else:
        client, identity, _created = await get_or_create_client(
            session,
            vault=vault,
            channel=channel,
            address=address,
            language=language,
            timezone=timezone,
        )
    if client.wrapped_key is None:
        client = await restart_erased_identity(
            session,
            vault=vault,
            identity=identity,
            address=address,
            language=language,
            timezone=timezone,
        )
    return client, identity


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


# A PIN is a few digits: the stretching slows an offline guess a little; the real protection
# is the limit on tries (see ``repo.failed_attempts``).
_PIN_ITERATIONS = 100_000


def hash_pin(pin: str) -> str:
    """Stored form of a client's PIN: pbkdf2_sha256$iterations$salt$hash (hex)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, _PIN_ITERATIONS)
    return f"pbkdf2_sha256${_PIN_ITERATIONS}${salt.hex()}${digest.hex()}"


def set_pin(client: Client, pin: str, *, at: datetime | None = None) -> None:
    client.pin_hash = hash_pin(pin)
    client.updated_at = at or utcnow()


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


async def clients_by_id(session: AsyncSession, *, ids: Iterable[int]) -> dict[int, Client]:
    """These clients, by id (ids that match no client are left out)."""
    out: dict[int, Client] = {}
    for chunk in chunked(ids):
        rows = await session.exec(select(Client).where(col(Client.id).in_(chunk)))
        out.update({c.id: c for c in rows.all() if c.id is not None})
    return out


async def identities_of_clients(
    session: AsyncSession, *, client_ids: Iterable[int]
) -> list[ChannelIdentity]:
    """Every channel identity of these clients."""
    out: list[ChannelIdentity] = []
    for chunk in chunked(client_ids):
        rows = await session.exec(
            select(ChannelIdentity).where(col(ChannelIdentity.client_id).in_(chunk))
        )
        out.extend(rows.all())
    return out

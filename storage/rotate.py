"""Key rotation: re-encrypt and re-index everything under the newest master key.

PROBONO_ENCRYPTION_KEYS lists keys newest first. Client fields are sealed under each
client's data key, which does not change: only its wrapping does. What is sealed directly
under a master key (staff details, staff-group messages) is re-sealed, and every blind
index is recomputed from the decrypted value. After a rotation the older keys can be
removed from the setting and everything still reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import LargeBinary, func, literal
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage import repo
from storage.crypto import Vault
from storage.models import AdverseParty, Case, ChannelIdentity, Client, KeyState, Message, Staff
from storage.types import utcnow

_MASTER_VERSION = b"\x01"  # see storage.crypto: version byte + key id + nonce + ciphertext
_KID_LEN = 8

# Every column sealed directly under a master key, with the associated data it was sealed
# with. A new master-sealed column must be added here, or rotation refuses to finish.
MASTER_SEALED: dict[str, str] = {
    "client.wrapped_key": "probono/dek",
    "staff.name_enc": "staff.name",
    "staff.telegram_id_enc": "staff.telegram",
    "staff.phone_enc": "staff.phone",
    "message.body_enc": "message.body",
}


# Every column sealed under a client's data key: rotation leaves these alone (the data key
# itself does not change), and erasing the client makes them unreadable.
CLIENT_SEALED = frozenset(
    {
        "client.name_enc",
        "client.safe_time_enc",
        "channel_identity.address_enc",
        "case.intake_enc",
        "adverse_party.name_enc",
        "document.content_enc",
        "appointment.place_enc",
        "appointment.bring_enc",
        "message.body_enc",  # client messages; staff-group ones are master-sealed
        "conversation_state.data_enc",
    }
)

# Every blind index, recomputed from the decrypted value under the newest key.
BLIND_INDEXES = frozenset(
    {
        "client.name_hash",
        "channel_identity.address_hash",
        "staff.telegram_id_hash",
        "staff.phone_hash",
        "adverse_party.name_hash",
    }
)


class RotationError(Exception):
    """Rotation could not finish; nothing was changed. The message is safe to show."""


@dataclass
class RotationReport:
    """What one rotation changed."""

    key_id: str
    data_keys: int = 0  # client data keys re-wrapped
    sealed: int = 0  # master-sealed fields re-encrypted
    indexes: int = 0  # blind indexes recomputed to a new value
    erased: int = 0  # erased clients, left as they are

    def lines(self) -> list[str]:
        return [
            f"client data keys re-wrapped: {self.data_keys}",
            f"fields re-encrypted: {self.sealed}",
            f"lookup hashes recomputed: {self.indexes}",
            f"erased clients left as they are: {self.erased}",
            f"everything is now under key {self.key_id}",
        ]


def _stale_master(column: Any, prefix: bytes) -> Any:
    """SQL: the column holds a master-key ciphertext under another key than ``prefix``'s."""
    return (
        column.is_not(None)
        & (func.substr(column, 1, 1) == literal(_MASTER_VERSION, LargeBinary))
        & (func.substr(column, 1, 1 + _KID_LEN) != literal(prefix, LargeBinary))
    )


def _reseal(vault: Vault, blob: bytes | None, aad: str, report: RotationReport) -> bytes | None:
    """The blob under the newest key (unchanged when it already is, or not master-sealed)."""
    if blob is None or blob[:1] != _MASTER_VERSION:
        return blob
    if blob[1 : 1 + _KID_LEN] == vault.newest.kid:
        vault.open(blob, aad.encode())  # still proves it reads
        return blob
    report.sealed += 1
    return vault.seal(vault.open(blob, aad.encode()), aad.encode())


def _reindex(old: str | None, new: str, report: RotationReport) -> str:
    if new != old:
        report.indexes += 1
    return new


async def _clients(
    session: AsyncSession, vault: Vault, batch_size: int, report: RotationReport
) -> None:
    """Re-wrap data keys; recompute name, identity and adverse-party hashes from the values."""
    last = 0
    while True:
        batch = (
            await session.exec(
                select(Client)
                .where(col(Client.id) > last)
                .order_by(col(Client.id))
                .limit(batch_size)
            )
        ).all()
        if not batch:
            return
        last = batch[-1].id or last
        by_id: dict[int, Client] = {}
        for client in batch:
            assert client.id is not None
            if client.wrapped_key is None:
                report.erased += 1
                continue
            # Unwrap before rewrapping so a bad key fails here, before anything is written.
            dek = vault.unwrap(client.wrapped_key)
            if client.wrapped_key[1 : 1 + _KID_LEN] != vault.newest.kid:
                client.wrapped_key = vault.wrap(dek)
                report.data_keys += 1
            name = repo.client_name(vault, client)
            if name is not None:
                client.name_hash = _reindex(
                    client.name_hash, repo.client_name_hash(vault, name), report
                )
            session.add(client)
            by_id[client.id] = client
        ids = list(by_id)
        if ids:
            idents = await session.exec(
                select(ChannelIdentity).where(col(ChannelIdentity.client_id).in_(ids))
            )
            for ident in idents:
                address = repo.identity_address(vault, by_id[ident.client_id], ident)
                if address is None:
                    continue
                kind = repo.address_index_kind(ident.channel)
                new_hash = vault.blind_index(kind, address)
                ident.address_hash = _reindex(ident.address_hash, new_hash, report)
                session.add(ident)
            parties = await session.exec(
                select(AdverseParty, Case.client_id)
                .join(Case, col(Case.id) == col(AdverseParty.case_id))
                .where(col(Case.client_id).in_(ids))
            )
            for party, client_id in parties:
                name = repo.adverse_party_name(vault, by_id[client_id], party)
                if name is None:
                    continue
                new_hash = vault.blind_index(
                    repo.adverse_index_kind(), repo.normalize_party_name(name)
                )
                party.name_hash = _reindex(party.name_hash, new_hash, report)
                session.add(party)
        await session.flush()
        # Forget the batch: a large program must not hold every client in memory.
        session.expunge_all()


async def _staff(
    session: AsyncSession, vault: Vault, batch_size: int, report: RotationReport
) -> None:
    """Re-seal staff details and recompute their lookup hashes."""
    last = 0
    while True:
        batch = (
            await session.exec(
                select(Staff).where(col(Staff.id) > last).order_by(col(Staff.id)).limit(batch_size)
            )
        ).all()
        if not batch:
            return
        last = batch[-1].id or last
        for staff in batch:
            telegram = vault.open_text(
                staff.telegram_id_enc, MASTER_SEALED["staff.telegram_id_enc"]
            )
            phone = vault.open_text(staff.phone_enc, MASTER_SEALED["staff.phone_enc"])
            staff.name_enc = _reseal(vault, staff.name_enc, MASTER_SEALED["staff.name_enc"], report)
            staff.telegram_id_enc = _reseal(
                vault, staff.telegram_id_enc, MASTER_SEALED["staff.telegram_id_enc"], report
            )
            staff.phone_enc = _reseal(
                vault, staff.phone_enc, MASTER_SEALED["staff.phone_enc"], report
            )
            if telegram is not None:
                staff.telegram_id_hash = _reindex(
                    staff.telegram_id_hash,
                    vault.blind_index(repo.staff_index_kind("telegram"), telegram),
                    report,
                )
            if phone is not None:
                staff.phone_hash = _reindex(
                    staff.phone_hash,
                    vault.blind_index(repo.staff_index_kind("phone"), phone),
                    report,
                )
            session.add(staff)
        await session.flush()
        session.expunge_all()


async def _messages(
    session: AsyncSession, vault: Vault, batch_size: int, report: RotationReport
) -> None:
    """Re-seal message bodies kept under a master key (staff-group alerts and the like)."""
    prefix = _MASTER_VERSION + vault.newest.kid
    aad = MASTER_SEALED["message.body_enc"]
    last = 0
    while True:
        # Only stale rows are read: client messages are under their data keys and stay put.
        batch = (
            await session.exec(
                select(Message)
                .where(col(Message.id) > last, _stale_master(col(Message.body_enc), prefix))
                .order_by(col(Message.id))
                .limit(batch_size)
            )
        ).all()
        if not batch:
            return
        last = batch[-1].id or last
        for msg in batch:
            msg.body_enc = _reseal(vault, msg.body_enc, aad, report)
            session.add(msg)
        await session.flush()
        session.expunge_all()


async def _leftovers(session: AsyncSession, vault: Vault) -> list[str]:
    """Every binary column still holding master-key ciphertext under an older key."""
    prefix = _MASTER_VERSION + vault.newest.kid
    found = []
    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            if not isinstance(column.type, LargeBinary):
                continue
            count = await session.scalar(
                select(func.count()).select_from(table).where(_stale_master(column, prefix))
            )
            if count:
                found.append(f"{table.name}.{column.name} ({count} rows)")
    return found


async def rotate_keys(
    session: AsyncSession, *, vault: Vault, batch_size: int = 500, at: datetime | None = None
) -> RotationReport:
    """Re-encrypt everything under ``vault.newest``, in the caller's transaction.

    Raises RotationError (and the caller rolls back) when something would still need an
    older key afterwards; CryptoError when existing data cannot be read with these keys.
    """
    report = RotationReport(key_id=vault.newest.kid_hex)
    await _clients(session, vault, batch_size, report)
    await _staff(session, vault, batch_size, report)
    await _messages(session, vault, batch_size, report)
    left = await _leftovers(session, vault)
    if left:
        raise RotationError(
            "data under an older key that rotation does not know how to re-encrypt: "
            + ", ".join(left)
            + " (was it written by a process without the new key? restart every process "
            "with the new key listed first, then rotate again)"
        )
    state = (await session.exec(select(KeyState).order_by(col(KeyState.id)).limit(1))).first()
    if state is None:
        state = KeyState(current_kid=report.key_id)
    state.current_kid = report.key_id
    state.rotated_at = at or utcnow()
    session.add(state)
    await session.flush()
    return report

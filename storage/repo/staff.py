"""Staff members: who they are, found by their blind-indexed Telegram id."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import Vault
from storage.models import (
    Staff,
)


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


async def active_staff(session: AsyncSession, *, role: str | None = None) -> Sequence[Staff]:
    query = select(Staff).where(col(Staff.active))
    if role is not None:
        query = query.where(Staff.role == role)
    rows = await session.exec(query.order_by(col(Staff.id)))
    return rows.all()

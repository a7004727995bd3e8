"""Cases, their status history, adverse parties and appointments."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.crypto import Vault
from storage.models import (
    AdverseParty,
    Appointment,
    Case,
    CaseStatusChange,
    Client,
)
from storage.repo.clients import (
    client_key,
    normalize_party_name,
)
from storage.repo.common import NotFound
from storage.types import utcnow

# Case references are read over the phone: no 0/O, 1/I/L, 2/Z, 5/S, 8/B, U/V.
REFERENCE_ALPHABET = "ACDEFGHJKMNPQRTWXY3467"
REFERENCE_LENGTH = 6


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
    """Open a case with a fresh, unique, phone-friendly reference.

    A discreet case puts its client in discreet mode too: every text to that phone, about
    this case or any other, is then in neutral words.
    """
    assert client.id is not None
    if discreet and not client.discreet:
        client.discreet = True
        session.add(client)
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


def adverse_index_kind() -> str:
    return "adverse:name"


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


APPOINTMENT_CANCELLED = "cancelled"


def move_appointment(appt: Appointment, *, starts_at: datetime, at: datetime) -> None:
    """A new start; the client's earlier confirmation or refusal was about the old one."""
    appt.starts_at = starts_at
    appt.confirmed_at = None
    appt.declined_at = None
    appt.updated_at = at


def cancel_appointment(appt: Appointment, *, at: datetime) -> None:
    """Marks the appointment cancelled (its reminders are withdrawn by the caller)."""
    appt.status = APPOINTMENT_CANCELLED
    appt.updated_at = at

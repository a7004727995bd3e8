"""Assigning a case to an attorney: the attorney gets the case and its recent thread, the
previous one is told it moved, the client learns who handles it (first name only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.casework.base import Actor, CaseworkError, audit, authorize
from bot.casework.thread import HANDOFF_KIND, first_name, recent_thread_text
from bot.core import Reply
from bot.discreet import is_discreet
from bot.i18n import gettext
from bot.outgoing import queue_reply
from storage import repo
from storage.models import Case, Client, Role, Staff

if TYPE_CHECKING:
    from bot.services import Services

NOT_AN_ATTORNEY = "cases are assigned to active attorneys"


@dataclass(frozen=True)
class Assigned:
    """Who handles the case now; ``changed`` is False when they already did."""

    reference: str
    attorney_id: int
    attorney_name: str
    changed: bool


async def assign_case(
    session: AsyncSession,
    services: Services,
    *,
    actor: Actor,
    case: Case,
    attorney: Staff | None,
) -> Assigned:
    """Assigns the case to an active attorney (coordinators and the program only)."""
    if attorney is None or attorney.role != Role.ATTORNEY or not attorney.active:
        raise CaseworkError(NOT_AN_ATTORNEY)
    await authorize(
        session,
        actor,
        case,
        action="case.assign",
        reference=case.reference,
        coordinators_only=True,
    )
    assert case.id is not None and attorney.id is not None
    name = repo.staff_name(services.vault, attorney)
    previous_id = case.assigned_staff_id
    if previous_id == attorney.id:
        return Assigned(case.reference, attorney.id, name, changed=False)
    case.assigned_staff_id = attorney.id
    case.updated_at = services.clock()
    session.add(case)
    await audit(
        session,
        actor,
        "case.assign",
        case,
        detail=f"staff {attorney.id}" + (f" (was {previous_id})" if previous_id else ""),
    )
    client = await session.get(Client, case.client_id)
    assert client is not None
    if client.wrapped_key is not None:
        await _hand_over(session, services, case=case, client=client, attorney=attorney)
    if previous_id is not None:
        previous = await session.get(Staff, previous_id)
        if previous is not None and previous.active:
            await repo.enqueue_staff(
                session,
                vault=services.vault,
                due_at=services.clock(),
                text=f"Case {case.reference} was reassigned to {first_name(name)}. "
                "You can no longer write to this client.",
                staff=previous,
                case_id=case.id,
                kind="staff",
            )
    if client.wrapped_key is not None:
        await _tell_client(session, services, client=client, case=case, attorney=attorney)
    return Assigned(case.reference, attorney.id, name, changed=True)


async def _hand_over(
    session: AsyncSession, services: Services, *, case: Case, client: Client, attorney: Staff
) -> None:
    """The case card with its recent thread, to the new attorney only (an audited read)."""
    thread = await recent_thread_text(session, services, case=case, client=client)
    name = repo.client_name(services.vault, client) or "(no name given)"
    urgent = " · URGENT" if case.urgent else ""
    await repo.enqueue_staff(
        session,
        vault=services.vault,
        due_at=services.clock(),
        text=(
            f"Case {case.reference} is now yours{urgent}\n"
            f"{name} · {case.category} · {case.status}\n"
            f"Reply to any message about this case to answer the client.\n\n{thread}"
        ),
        staff=attorney,
        client=client,
        case_id=case.id,
        kind=HANDOFF_KIND,
    )
    await repo.audit(
        session,
        actor_kind="staff",
        actor_id=attorney.id,
        action="staff.read",
        case_id=case.id,
        client_id=client.id,
        detail="recent thread on assignment",
    )


async def _tell_client(
    session: AsyncSession, services: Services, *, client: Client, case: Case, attorney: Staff
) -> None:
    lang = client.language or services.settings.default_language
    name = first_name(repo.staff_name(services.vault, attorney))
    if is_discreet(client, case):
        text = gettext(lang, "{name} will be in touch with you.", name=name)
    else:
        text = gettext(
            lang,
            "{name} is now handling your case {reference}. You can write here to reach them.",
            name=name,
            reference=case.reference,
        )
    await queue_reply(session, services, client, Reply(text=text), case_id=case.id)

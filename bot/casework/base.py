"""Who acts on a case, whether they may, the one refusal type and the one audit row."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel.ext.asyncio.session import AsyncSession

from storage import repo
from storage.models import Case, Role, Staff

NOT_YOURS = "No case {ref} among yours."
COORDINATORS_ONLY = "That command is for coordinators."


class CaseworkError(ValueError):
    """A refused use case: nothing changed, and the message is safe to show as it is."""


@dataclass(frozen=True)
class Actor:
    """Who acts: the program itself (a CLI command, the API, an import) or a staff member."""

    kind: str  # cli | api | staff: the audit row's actor_kind
    staff: Staff | None = None

    @classmethod
    def member(cls, staff: Staff) -> Actor:
        return cls("staff", staff)

    @property
    def staff_id(self) -> int | None:
        return self.staff.id if self.staff is not None else None

    @property
    def source(self) -> str:
        """Where a status change came from, as the case's history records it."""
        return "telegram" if self.staff is not None else self.kind

    @property
    def is_coordinator(self) -> bool:
        return self.staff is None or self.staff.role == Role.COORDINATOR


CLI = Actor("cli")
API = Actor("api")


async def audit(
    session: AsyncSession,
    actor: Actor,
    action: str,
    case: Case | None,
    *,
    client_id: int | None = None,
    allowed: bool = True,
    detail: str | None = None,
) -> None:
    """One audit row for what the actor did (or was refused) on a case."""
    await repo.audit(
        session,
        actor_kind=actor.kind,
        actor_id=actor.staff_id,
        action=action,
        case_id=case.id if case else None,
        client_id=client_id if client_id is not None else (case.client_id if case else None),
        allowed=allowed,
        detail=detail,
    )


async def authorize(
    session: AsyncSession,
    actor: Actor,
    case: Case | None,
    *,
    action: str,
    reference: str,
    coordinators_only: bool = False,
) -> Case:
    """The case, if the actor may act on it: coordinators and the program on every case, an
    attorney on their own only. A refusal is audited, and reads the same whether or not the
    case exists, so references cannot be probed."""
    if coordinators_only:
        await require_coordinator(session, actor, action=action)
    own = case is not None and actor.staff is not None and case.assigned_staff_id == actor.staff.id
    if not actor.is_coordinator and not own:
        await audit(session, actor, action, case, allowed=False, detail="case not assigned to them")
        raise CaseworkError(NOT_YOURS.format(ref=reference))
    if case is None:
        raise CaseworkError(f"no case {reference}")
    return case


async def require_coordinator(session: AsyncSession, actor: Actor, *, action: str) -> None:
    """Refuses (audited) a staff member who is not a coordinator; the program may."""
    if not actor.is_coordinator:
        await audit(session, actor, action, None, allowed=False, detail="not a coordinator")
        raise CaseworkError(COORDINATORS_ONLY)

"""What every part of the repository shares: preloading rows, the not-found error."""

from __future__ import annotations

from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession


class NotFound(LookupError):
    """The thing asked for does not exist."""


async def preload(session: AsyncSession, statement: Any) -> None:
    """Load rows into the session so that its ``get`` finds them without a query.

    The session's identity map holds objects weakly: rows loaded and then dropped are
    forgotten, and the next ``get`` queries again. These stay for the session's life.
    """
    rows = (await session.exec(statement)).all()
    session.info.setdefault("preloaded", []).extend(rows)

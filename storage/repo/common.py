"""What every part of the repository shares: preloading rows, the not-found error."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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


CHUNK = 500  # ids per IN (...) list: well inside SQLite's and asyncpg's parameter limits


def chunked(ids: Iterable[int], size: int = CHUNK) -> Iterator[list[int]]:
    """The ids, sorted and deduplicated, in lists short enough for one IN (...) each."""
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]

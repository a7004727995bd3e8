"""Every row of every table: to prove a refused operation changed nothing."""

from __future__ import annotations

from typing import Any

from sqlmodel import SQLModel, select

from bot.services import Services


async def snapshot(services: Services) -> dict[str, list[Any]]:
    """All rows, table by table, in primary-key order."""
    out: dict[str, list[Any]] = {}
    async with services.engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = await conn.execute(select(table).order_by(*table.primary_key.columns))
            out[table.name] = [tuple(r) for r in rows]
    return out

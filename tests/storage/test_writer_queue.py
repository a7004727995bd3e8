"""SQLite writers queue in the process: the lock passes at once, acknowledged work goes first."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bot.services import Services
from storage import db
from storage.db import transaction
from tests.conftest import BACKEND

pytestmark = pytest.mark.skipif(BACKEND != "sqlite", reason="the writer queue is SQLite's")


async def _write(services: Services, name: str, order: list[str], *, first: bool = False) -> None:
    async with transaction(services.sessions, first=first) as session:
        order.append(name)
        await session.exec(text("CREATE TABLE IF NOT EXISTS t_order (name TEXT)"))  # type: ignore[call-overload]
        await session.exec(text("INSERT INTO t_order VALUES (:n)").bindparams(n=name))  # type: ignore[call-overload]


async def test_a_waiting_acknowledgement_goes_before_queued_background_writes(
    services: Services,
) -> None:
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with transaction(services.sessions):
            order.append("holder")
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    later = [asyncio.create_task(_write(services, f"bg{i}", order)) for i in range(3)]
    await asyncio.sleep(0.01)
    ack = asyncio.create_task(_write(services, "ack", order, first=True))
    await asyncio.sleep(0.01)
    assert order == ["holder"]  # everyone waits in the queue, none in SQLite's busy loop
    release.set()
    await asyncio.gather(held, ack, *later)
    assert order == ["holder", "ack", "bg0", "bg1", "bg2"]
    async with services.sessions() as session:
        rows = (await session.exec(text("SELECT name FROM t_order"))).all()  # type: ignore[call-overload]
    assert [r[0] for r in rows] == ["ack", "bg0", "bg1", "bg2"]


async def test_a_transaction_inside_another_of_the_same_task_does_not_deadlock(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "WRITER_WAIT", 2.0)  # a deadlock would fail in 2 s, not hang
    order: list[str] = []
    async with transaction(services.sessions):
        await _write(services, "inner", order)
    assert order == ["inner"]


async def test_a_writer_that_waits_too_long_fails_like_a_locked_database(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "WRITER_WAIT", 0.05)
    release = asyncio.Event()

    async def holder() -> None:
        async with transaction(services.sessions):
            await release.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0.01)
    with pytest.raises(OperationalError, match="locked"):
        await _write(services, "late", [])
    release.set()
    await held
    # The queue is not left wedged by the writer that gave up.
    order: list[str] = []
    await asyncio.wait_for(_write(services, "after", order), 5)
    assert order == ["after"]

"""Group commit of inbound messages: a burst is stored in few commits, and nothing is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import col, func, select

from bot.core import InboundMessage
from bot.handlers import inbound
from bot.handlers.inbound import store
from bot.services import Services
from storage import repo
from storage.models import Client, Direction, Message


def _sms(i: int, sid: str | None = None) -> InboundMessage:
    return InboundMessage(
        channel="sms",
        address=f"+1555020{i % 10:04d}",
        provider_id=sid or f"SM{i:032d}",
        text=f"burst message {i} ✓",
    )


def _count_commits(services: Services) -> list[int]:
    commits = [0]

    @event.listens_for(services.engine.sync_engine, "commit")
    def _on_commit(_conn: Any) -> None:
        commits[0] += 1

    return commits


async def _inbound_rows(services: Services) -> list[Message]:
    async with services.sessions() as session:
        rows = await session.exec(
            select(Message).where(Message.direction == Direction.IN).order_by(col(Message.id))
        )
        return list(rows.all())


async def test_a_burst_is_stored_in_a_few_commits_with_repeats_recognised(
    services: Services,
) -> None:
    commits = _count_commits(services)
    burst = [_sms(i) for i in range(40)]
    # Twilio retried five of them while the first tries were still being stored.
    burst += [_sms(i) for i in range(0, 25, 5)]
    results = await asyncio.gather(*(store(services, m) for m in burst))

    rows = await _inbound_rows(services)
    assert len(rows) == 40
    assert sum(r.duplicate for r in results) == 5
    assert all(r.duplicate for r in results[40:])
    # Each retry points at the row its first try made.
    assert [r.message_id for r in results[40:]] == [results[i].message_id for i in range(0, 25, 5)]
    async with services.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Client)) == 10
    # Ten numbers wrote in; each message is readable with its own client's key.
    async with services.sessions() as session:
        for result, msg in zip(results[:40], burst[:40], strict=True):
            row = await session.get(Message, result.message_id)
            client = await session.get(Client, result.client_id)
            assert row is not None and repo.message_body(services.vault, client, row) == msg.text
    assert commits[0] <= 5, f"{commits[0]} commits for a burst of 45"


async def test_one_bad_message_does_not_lose_the_others_in_its_batch(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = repo.store_inbound
    poison = "SM" + "9" * 32

    async def store_inbound(session: Any, **kw: Any) -> Message:
        if kw["provider_id"] == poison:
            raise ValueError("cannot store this one")
        return await real(session, **kw)

    monkeypatch.setattr(repo, "store_inbound", store_inbound)
    burst = [_sms(i) for i in range(12)] + [_sms(99, poison)]
    results = await asyncio.gather(*(store(services, m) for m in burst), return_exceptions=True)

    assert isinstance(results[-1], ValueError)
    assert all(isinstance(r, inbound.Stored) and not r.duplicate for r in results[:-1])
    rows = await _inbound_rows(services)
    assert sorted(r.provider_id for r in rows) == sorted(m.provider_id for m in burst[:-1])


async def test_a_stored_message_survives_its_webhook_hanging_up(services: Services) -> None:
    # The provider's connection drops while the commit runs: the message is stored anyway,
    # so the provider's retry is recognised as a repeat rather than lost.
    task = asyncio.create_task(store(services, _sms(1)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    again = await store(services, _sms(1))
    assert again.duplicate
    assert len(await _inbound_rows(services)) == 1


async def test_repeats_of_earlier_messages_in_a_later_burst_are_recognised(
    services: Services,
) -> None:
    first = [await store(services, _sms(i)) for i in range(3)]
    burst = [_sms(i) for i in range(3)] + [_sms(i) for i in range(3, 8)]
    results = await asyncio.gather(*(store(services, m) for m in burst))
    assert [r.duplicate for r in results] == [True] * 3 + [False] * 5
    assert [r.message_id for r in results[:3]] == [r.message_id for r in first]
    # A number seen before keeps its client (10 numbers: message 3 is from number 3, new).
    later = await store(services, _sms(10))  # number 0 again
    assert later.client_id == first[0].client_id and not later.duplicate
    assert len(await _inbound_rows(services)) == 9

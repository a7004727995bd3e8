"""Processing stored messages: once, in order, after a restart, and never lost to a failure."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import col, select

from bot.conversations import client as client_conversation
from bot.conversations.base import Turn
from bot.core import InboundMessage
from bot.handlers import inbound
from bot.handlers.inbound import MAX_ATTEMPTS, process_next, store
from bot.services import Services
from storage import repo
from storage.models import Client, Direction, Message, OutboxItem
from tests.handlers.twilio_harness import sms_app

PHONE = "+15550107777"


def _inbound(text: str, sid: str, phone: str = PHONE) -> InboundMessage:
    return InboundMessage(channel="sms", address=phone, provider_id=sid, text=text)


async def _outbox(services: Services) -> list[OutboxItem]:
    async with services.sessions() as session:
        return list((await session.exec(select(OutboxItem).order_by(col(OutboxItem.id)))).all())


async def _inbound_rows(services: Services) -> list[Message]:
    async with services.sessions() as session:
        rows = await session.exec(
            select(Message).where(Message.direction == Direction.IN).order_by(col(Message.id))
        )
        return list(rows.all())


async def test_a_message_stored_before_a_crash_is_answered_on_start(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as first:
        # Stored and acknowledged, then the process "died" before processing it.
        stored = await store(first.services, _inbound("hello", "SM" + "a" * 32))
        assert not stored.duplicate
    async with sms_app(database_url, tmp_path) as second:
        await second.wait_for(lambda: len(second.fake.sent_to(PHONE)) == 1)
        (row,) = await second.inbound()
        assert row.status == "processed"


async def test_two_workers_never_process_one_message_twice(services: Services) -> None:
    stored = await store(services, _inbound("hello", "SM" + "b" * 32))
    outcomes = await asyncio.gather(
        *(process_next(services, stored.client_id) for _ in range(4)), return_exceptions=True
    )
    assert all(o in (True, None) for o in outcomes), outcomes
    assert len(await _outbox(services)) == 1
    (row,) = await _inbound_rows(services)
    assert row.status == "processed"


async def test_messages_are_processed_in_arrival_order(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    async def respond(turn: Turn) -> None:
        seen.append(turn.text)
        turn.say(f"got {turn.text}")

    monkeypatch.setattr(client_conversation, "respond", respond)
    for i in range(5):
        await store(services, _inbound(f"m{i}", f"SM{i:032d}"))
    processor = inbound.InboundProcessor(services)
    client_id = (await _inbound_rows(services))[0].client_id
    assert client_id is not None
    processor.submit(client_id)
    processor.submit(client_id)
    await processor.drain()
    assert seen == [f"m{i}" for i in range(5)]


async def test_a_failing_message_is_retried_then_left_for_review(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    async def broken(turn: Turn) -> None:
        nonlocal calls
        calls += 1
        turn.say("half-done work that must not be sent")
        raise RuntimeError("boom")

    monkeypatch.setattr(client_conversation, "respond", broken)
    stored = await store(services, _inbound("hello", "SM" + "c" * 32))
    for _ in range(MAX_ATTEMPTS + 2):
        await process_next(services, stored.client_id)
    assert calls == MAX_ATTEMPTS
    (row,) = await _inbound_rows(services)
    assert row.status == "failed" and row.attempts == MAX_ATTEMPTS
    assert await _outbox(services) == []  # the failed transaction queued nothing


async def test_a_reply_too_long_for_one_sms_is_split_in_order(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    long_text = " ".join(f"word{i}" for i in range(500))  # about 3,900 characters

    async def respond(turn: Turn) -> None:
        turn.say(long_text)

    monkeypatch.setattr(client_conversation, "respond", respond)
    stored = await store(services, _inbound("hello", "SM" + "d" * 32))
    assert await process_next(services, stored.client_id) is True
    rows = await _outbox(services)
    assert len(rows) == 3
    async with services.sessions() as session:
        client = await session.get(Client, stored.client_id)
        assert client is not None
        texts = []
        for row in rows:
            msg = await session.get(Message, row.message_id)
            assert msg is not None
            texts.append(repo.message_body(services.vault, client, msg))
    assert all(len(t) <= 1600 for t in texts)
    assert " ".join(texts).split() == long_text.split()


async def test_the_turn_sees_the_message_and_the_staff_hook_passes_it_on(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns: list[Turn] = []

    async def respond(turn: Turn) -> None:
        turns.append(turn)

    monkeypatch.setattr(client_conversation, "respond", respond)
    stored = await store(services, _inbound("  necesito ayuda  ", "SM" + "e" * 32))
    await process_next(services, stored.client_id)
    (turn,) = turns
    assert turn.text == "  necesito ayuda  " and turn.message.address == PHONE
    assert turn.first_contact is True and turn.stored.id == stored.message_id
    assert await _outbox(services) == []  # the conversation said nothing, so nothing is sent


async def test_an_erased_client_who_writes_again_starts_fresh(services: Services) -> None:
    first = await store(services, _inbound("hello", "SM" + "f" * 32))
    await process_next(services, first.client_id)
    async with services.sessions() as session, session.begin():
        old = await session.get(Client, first.client_id)
        assert old is not None
        await repo.erase_client(session, client=old)
    again = await store(services, _inbound("hello again", "SM" + "9" * 32))
    assert again.client_id != first.client_id
    assert await process_next(services, again.client_id) is True
    async with services.sessions() as session:
        fresh = await session.get(Client, again.client_id)
        msg = await session.get(Message, again.message_id)
        assert fresh is not None and msg is not None
        assert repo.message_body(services.vault, fresh, msg) == "hello again"

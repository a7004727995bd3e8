"""One Telegram poller among processes sharing a database: the lease holder polls, another
takes over when it stops or its lease runs out, and no update is handled twice."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.app import create_app
from bot.clock import FakeClock
from bot.handlers.telegram_routes import POLLER, TELEGRAM
from bot.services import Services
from storage.models import Message
from tests.conftest import make_settings
from tests.fakes.fake_telegram import TOKEN, FakeTelegram
from tests.fakes.telegram_updates import Updates, User

ANA = User(8101, "Ana")


@dataclass
class Process:
    """One app process: its own connection to Telegram (a fake each, to tell them apart)."""

    fake: FakeTelegram
    services: Services
    app: web.Application
    http: TestClient[web.Request, web.Application]

    @property
    def polling(self) -> bool:
        return self.app[TELEGRAM].polling


async def _start(stack: AsyncExitStack, database_url: str, data: Path, clock: FakeClock) -> Process:
    fake = FakeTelegram()
    await fake.start()
    stack.push_async_callback(fake.close)
    fake.add_chat(ANA.id)
    settings = make_settings(
        database_url, data, TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=fake.url
    )
    services = Services.build(settings, clock=clock)
    stack.push_async_callback(services.close)
    app = create_app(settings, services=services)
    # The test says when each process renews or tries for the lease (step()).
    app[POLLER].renew_every = 3600.0
    http: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await http.start_server()
    return Process(fake, services, app, http)


@pytest.fixture
async def two(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[Process, Process]]:
    async with AsyncExitStack() as stack:
        first = await _start(stack, database_url, tmp_path / "data", clock)
        second = await _start(stack, database_url, tmp_path / "data", clock)
        try:
            yield first, second
        finally:
            for proc in (second, first):
                await proc.http.close()
    for proc in (first, second):
        proc.fake.check()


async def _until(predicate: Callable[[], object], what: str) -> None:
    for _ in range(500):
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def _inbound(services: Services) -> list[str | None]:
    async with services.sessions() as session:
        rows = await session.exec(
            select(Message).where(col(Message.direction) == "in").order_by(col(Message.id))
        )
        return [m.provider_id for m in rows.all()]


async def _stored_are(services: Services, expected: list[str]) -> bool:
    return await _inbound(services) == expected


def _answers(first: Process, second: Process) -> int:
    return len(first.fake.sent(ANA.id)) + len(second.fake.sent(ANA.id))


async def test_only_the_lease_holder_polls_and_another_takes_over_when_it_stops(
    two: tuple[Process, Process],
) -> None:
    first, second = two
    await _until(lambda: bool(first.fake.of("getUpdates")), "the first process to poll")
    assert first.polling and not second.polling
    assert not await second.app[POLLER].step()  # the lease is held: still not polling
    assert second.fake.of("getUpdates") == []

    updates = Updates()
    hello = updates.text(ANA, "hello")
    # Telegram hands an update out until a later poll confirms it: both queues hold it.
    for proc in (first, second):
        proc.fake.push_update(hello)
    await _until(lambda: _answers(first, second) >= 2, "the answer to the first text")

    await first.http.close()  # a clean stop gives the lease up
    assert not first.polling
    assert await second.app[POLLER].step()
    assert second.polling
    then = updates.text(ANA, "Ana")
    second.fake.push_update(then)
    expected = [str(hello["update_id"]), str(then["update_id"])]
    await _until(lambda: _stored_are(second.services, expected), "the second update stored")
    assert second.fake.of("getUpdates")
    # The first update came again from the new poller's queue and was stored once.
    assert await _inbound(second.services) == [str(hello["update_id"]), str(then["update_id"])]


async def test_a_holder_whose_lease_expired_stops_and_another_polls(
    two: tuple[Process, Process], clock: FakeClock
) -> None:
    first, second = two
    await _until(lambda: first.polling, "the first process to poll")
    first_poller, second_poller = first.app[POLLER], second.app[POLLER]
    # The first process stops renewing (it hangs, or died): its lease runs out.
    clock.advance(seconds=first_poller.ttl.total_seconds() + 1)
    assert await second_poller.step()
    assert second.polling
    assert not await first_poller.step()  # it wakes up and finds the lease taken
    assert not first.polling
    await _until(lambda: second.fake.of("getUpdates"), "the second process to poll")

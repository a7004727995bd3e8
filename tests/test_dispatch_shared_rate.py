"""Two dispatchers (two processes' Services on one database) share one send rate: together
they send at the rate and no faster, each message once, each client's in order."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.channels.base import ChannelSender, OutboundMessage, SendResult
from bot.channels.twilio import TwilioSender
from bot.clock import FakeClock
from bot.core import Reply
from bot.dispatch import Dispatcher, SharedRate
from bot.outgoing import queue_reply
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Client
from tests.conftest import make_settings
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    running_fake_twilio,
)

RATE = 20.0


class SharedWall:
    """Seconds on a clock both dispatchers read; a sleep only moves it forward."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


@dataclass
class Sent:
    at: float
    process: int
    to: str
    text: str


@dataclass
class Two:
    services: list[Services]
    fake: FakeTwilio
    wall: SharedWall
    sent: list[Sent]


class Recording(ChannelSender):
    """The process's real Twilio sender, noting when (on the shared clock) each send left."""

    name = "sms"

    def __init__(self, inner: ChannelSender, process: int, two: Two) -> None:
        self.inner, self.process, self.two = inner, process, two

    async def send(self, message: OutboundMessage) -> SendResult:
        # The first line: a client's first message also carries the opt-out notice.
        text = message.text.split("\n")[0]
        self.two.sent.append(Sent(self.two.wall(), self.process, message.address, text))
        return await self.inner.send(message)


@pytest.fixture
async def two(database_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Two]:
    async with running_fake_twilio() as fake:
        settings = make_settings(
            database_url,
            tmp_path / "data",
            SMS_SEND_RATE=RATE,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM_NUMBER=FROM_NUMBER,
            TWILIO_API_BASE_URL=fake.base_url,
            PUBLIC_BASE_URL="https://bot.example.org",
        )
        services = [Services.build(settings, clock=clock) for _ in range(2)]
        env = Two(services, fake, SharedWall(), [])
        for i, svc in enumerate(services):
            sender = TwilioSender.from_settings(settings)
            assert sender is not None
            svc.senders["sms"] = Recording(sender, i, env)
        try:
            yield env
        finally:
            for svc in services:
                await svc.close()


async def _queue(services: Services, phone: str, texts: list[str]) -> None:
    async with transaction(services.sessions) as session:
        client = await repo.create_client(
            session, vault=services.vault, channel="sms", address=phone
        )
        for text in texts:
            fresh = await session.get(Client, client.id)
            assert fresh is not None
            await queue_reply(session, services, fresh, Reply(text, urgent=True), kind="reply")


async def test_two_dispatchers_together_send_at_the_shared_rate(
    two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    phones = [f"+1555020{i:04d}" for i in range(30)]
    for i, phone in enumerate(phones):
        await _queue(two.services[0], phone, [f"c{i} m{k}" for k in range(3)])
    slots: list[float] = []
    claim = SharedRate.claim

    async def noting(self: SharedRate, session: AsyncSession, count: int) -> list[float]:
        got = await claim(self, session, count)
        slots.extend(got)
        return got

    monkeypatch.setattr(SharedRate, "claim", noting)
    dispatchers = [Dispatcher(svc, wall=two.wall, sleep=two.wall.sleep) for svc in two.services]
    for _ in range(10):  # each drain stops when it finds nothing it may send now
        await asyncio.gather(*(d.drain() for d in dispatchers))
        if len(two.sent) == 90:
            break

    # Every message once, and each client's in the order queued.
    assert sorted((s.to, s.text) for s in two.sent) == sorted(
        (phone, f"c{i} m{k}") for i, phone in enumerate(phones) for k in range(3)
    )
    assert [(m.to, m.body.split("\n")[0]) for m in two.fake.messages] == [
        (s.to, s.text) for s in two.sent
    ]
    for i, phone in enumerate(phones):
        assert [s.text for s in two.sent if s.to == phone] == [f"c{i} m{k}" for k in range(3)]
    assert {s.process for s in two.sent} == {0, 1}, "both dispatchers sent"

    # The slots handed out are one schedule at the rate: never closer than 1/RATE (so no
    # second holds more than RATE sends), and without gaps (so the rate is reached).
    assert len(slots) == 90
    ordered = sorted(slots)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    assert min(gaps) >= 1 / RATE - 1e-6
    assert ordered[-1] - ordered[0] == pytest.approx((90 - 1) / RATE)
    # No send left before its slot: the k-th send is no earlier than the k-th slot.
    times = sorted(s.at for s in two.sent)
    assert all(t >= slot - 1e-6 for t, slot in zip(times, ordered, strict=True))

"""Two dispatchers (two engines, as two processes would have) never send one row twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from sqlmodel import select

from bot.channels.twilio import TwilioSender
from bot.clock import FakeClock
from bot.core import Reply
from bot.dispatch import Dispatcher
from bot.outgoing import queue_reply
from bot.services import Services
from storage import repo
from storage.models import OutboxItem, OutboxStatus
from tests.conftest import BACKEND, make_settings
from tests.fakes.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, running_fake_twilio

CLIENTS = 40
PER_CLIENT = 3


async def test_two_dispatchers_share_the_outbox_without_duplicates(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    async with running_fake_twilio() as fake:
        fake.fail_randomly(0.1, kinds=("429", "500"))
        fake.retry_after = "0"
        settings = make_settings(
            database_url,
            tmp_path / "data",
            SMS_SEND_RATE=10_000,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM_NUMBER=FROM_NUMBER,
            TWILIO_API_BASE_URL=fake.base_url,
        )
        one = Services.build(settings, clock=clock)
        two = Services.build(settings, clock=clock)
        try:
            for svc in (one, two):
                sender = TwilioSender.from_settings(settings, timeout=2.0)
                assert sender is not None
                svc.senders["sms"] = sender
            async with one.sessions() as session, session.begin():
                for i in range(CLIENTS):
                    client = await repo.create_client(
                        session, vault=one.vault, channel="sms", address=f"+1555020{i:04d}"
                    )
                    for n in range(PER_CLIENT):
                        await queue_reply(session, one, client, Reply(f"part {n}"))
            dispatchers = [
                Dispatcher(one, name="one", batch_size=7, backoff_base=0.0),
                Dispatcher(two, name="two", batch_size=7, backoff_base=0.0),
            ]
            for _ in range(50):
                await asyncio.gather(*(d.drain() for d in dispatchers for _ in range(3)))
                async with one.sessions() as session:
                    rows = (await session.exec(select(OutboxItem))).all()
                if all(r.status == OutboxStatus.SENT for r in rows):
                    break
                clock.advance(seconds=5)
            else:
                raise AssertionError("outbox did not settle")
        finally:
            await one.close()
            await two.close()
        counts = Counter(m.to for m in fake.messages)
        assert len(counts) == CLIENTS
        assert set(counts.values()) == {PER_CLIENT}
        bodies = Counter((m.to, m.body.split("\n")[0]) for m in fake.messages)
        assert set(bodies.values()) == {1}, "a row was sent twice"
        for i in range(CLIENTS):
            order = [m.body.split("\n")[0] for m in fake.sent_to(f"+1555020{i:04d}")]
            assert order == [f"part {n}" for n in range(PER_CLIENT)], "a client's order broke"
        if BACKEND == "postgresql":
            claimers = {str(r.claimed_by).split("/")[0] for r in rows}
            assert claimers == {"one", "two"}, "both dispatchers should have sent on PostgreSQL"

"""Provider faults: Twilio and Telegram fail 30% of sends; every message still arrives once."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sqlmodel import select

from bot.channels.twilio import TwilioSender
from bot.clock import FakeClock
from bot.core import Reply
from bot.outgoing import queue_reply
from storage.db import transaction
from storage.models import Channel, Client, OutboxItem, OutboxStatus
from tests.fakes.telegram_harness import Harness, User, tg
from tests.reliability.conftest import say

pytestmark = pytest.mark.reliability

__all__ = ["tg"]

PER_CHANNEL = 40


async def test_faults_on_both_providers_deliver_every_message_once(
    tg: Harness, clock: FakeClock
) -> None:
    rng = random.Random(8)
    # A client-side timeout for real: the fake stalls 1.5 s, the sender gives up after 0.5 s
    # (an ordinary answer that took longer would be sent twice: Twilio has no idempotency key).
    # The app's dispatcher already holds this sender: a replacement would not reach it, and
    # the one closed here would open a new HTTP session on its next send, never closed.
    sender = tg.services.senders[Channel.SMS]
    assert isinstance(sender, TwilioSender)
    sender.timeout = 0.5
    await sender.close()  # its HTTP client is rebuilt on the next send, with this timeout
    tg.twilio.fail_randomly(0.3, kinds=("429", "500", "timeout"))
    tg.twilio.retry_after = "3"
    tg.twilio.slow_seconds = 1.5
    phones = [f"+1555088{i:04d}" for i in range(PER_CHANNEL)]
    users = [User(880_000 + i) for i in range(PER_CHANNEL)]
    clients: list[Client] = [await tg.add_sms_client(p) for p in phones]
    clients += [await tg.add_telegram_client(u) for u in users]
    scripted: Counter[int] = Counter()
    for u in users:
        while rng.random() < 0.3:  # 30% of attempts fail, some more than once
            if rng.random() < 0.5:
                tg.fake.fail_next(
                    "sendMessage",
                    status=429,
                    description="Too Many Requests: retry after 2",
                    chat_id=u.id,
                    retry_after=2,
                )
            else:
                tg.fake.fail_next(
                    "sendMessage", status=500, description="Internal Server Error", chat_id=u.id
                )
            scripted[u.id] += 1
    async with transaction(tg.services.sessions) as session:
        for client in clients:
            await queue_reply(session, tg.services, client, Reply("Your hearing moved to 9:30."))
    for _ in range(200):
        await tg.settle()
        async with tg.services.sessions() as session:
            rows = (await session.exec(select(OutboxItem))).all()
        if all(r.status not in (OutboxStatus.PENDING, OutboxStatus.SENDING) for r in rows):
            break
        clock.advance(seconds=30)  # past any Retry-After or backoff
    else:
        raise AssertionError("the outbox did not settle")
    assert all(r.status == OutboxStatus.SENT for r in rows), Counter(r.status for r in rows)
    per_phone = Counter(m.to for m in tg.twilio.messages)
    assert all(per_phone[p] == 1 for p in phones), per_phone
    assert len(tg.twilio.messages) == PER_CHANNEL
    for u in users:
        assert len(tg.fake.sent(u.id)) - scripted[u.id] == 1, u.id
    faults = Counter(tg.twilio.faults_served)
    say(
        f"provider faults: {PER_CHANNEL} SMS + {PER_CHANNEL} Telegram messages; Twilio served "
        f"{sum(faults.values())} faults ({dict(faults)}) in {tg.twilio.attempts} attempts, "
        f"Telegram {sum(scripted.values())} (429 retry_after / 500); every message delivered "
        "exactly once"
    )

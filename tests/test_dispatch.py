"""The dispatcher against the fake Twilio: exactly once, in order, in the rate, never to STOP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlmodel import col, select

from bot.channels.base import ChannelSender, OutboundMessage, SendResult
from bot.channels.twilio import TwilioSender
from bot.clock import FakeClock
from bot.core import OPTOUT_CONFIRM, Reply
from bot.dispatch import Dispatcher
from bot.metrics import Metrics
from bot.outgoing import queue_reply
from bot.services import Services
from storage import repo
from storage.models import (
    ChannelIdentity,
    Client,
    ConsentEvent,
    Message,
    MessageStatus,
    OutboxItem,
    OutboxStatus,
    Priority,
)
from tests.conftest import make_settings
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    running_fake_twilio,
)


class FakeMonotonic:
    """A clock in seconds and a sleep that only moves it: send slots without real waiting."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Env:
    services: Services
    fake: FakeTwilio
    clock: FakeClock
    mono: FakeMonotonic
    metrics: Metrics = field(default_factory=Metrics)

    def dispatcher(self, **kw: Any) -> Dispatcher:
        kw.setdefault("metrics", self.metrics)
        return Dispatcher(self.services, wall=self.mono, sleep=self.mono.sleep, **kw)

    async def client(self, phone: str, **kw: Any) -> Client:
        async with self.services.sessions() as session, session.begin():
            return await repo.create_client(
                session, vault=self.services.vault, channel="sms", address=phone, **kw
            )

    async def queue(
        self,
        client: Client,
        text: str,
        *,
        kind: str = "reply",
        priority: int = Priority.REPLY,
        urgent: bool = True,
    ) -> int:
        async with self.services.sessions() as session, session.begin():
            fresh = await session.get(Client, client.id)
            assert fresh is not None
            item = await queue_reply(
                session,
                self.services,
                fresh,
                Reply(text, urgent=urgent),
                kind=kind,
                priority=priority,
            )
            assert item is not None and item.id is not None
            return item.id

    async def outbox(self) -> list[OutboxItem]:
        async with self.services.sessions() as session:
            return list((await session.exec(select(OutboxItem).order_by(col(OutboxItem.id)))).all())

    async def message(self, message_id: int) -> Message:
        async with self.services.sessions() as session:
            msg = await session.get(Message, message_id)
            assert msg is not None
            return msg

    async def settle(self, dispatcher: Dispatcher, rounds: int = 100) -> None:
        """Send everything, moving the clock past every backoff."""
        for _ in range(rounds):
            await dispatcher.drain()
            rows = await self.outbox()
            if not any(r.status in (OutboxStatus.PENDING, OutboxStatus.SENDING) for r in rows):
                return
            self.clock.advance(seconds=1000)
        raise AssertionError("the outbox did not settle")


@pytest.fixture
async def env(database_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Env]:
    async with running_fake_twilio() as fake:
        settings = make_settings(
            database_url,
            tmp_path / "data",
            SMS_SEND_RATE=1000,
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=AUTH_TOKEN,
            TWILIO_FROM_NUMBER=FROM_NUMBER,
            TWILIO_API_BASE_URL=fake.base_url,
            PUBLIC_BASE_URL="https://bot.example.org",
        )
        services = Services.build(settings, clock=clock)
        sender = TwilioSender.from_settings(settings, timeout=0.1)
        assert sender is not None
        services.senders["sms"] = sender
        fake.slow_seconds = 1.0
        try:
            yield Env(services=services, fake=fake, clock=clock, mono=FakeMonotonic())
        finally:
            await services.close()


def _phone(i: int) -> str:
    return f"+1555010{i:04d}"


async def test_sends_once_and_records_the_provider_id(env: Env) -> None:
    client = await env.client(_phone(1))
    first = await env.queue(client, "Your hearing is Monday.")
    second = await env.queue(client, "Bring your lease.")
    d = env.dispatcher()
    await d.drain()
    assert [m.body.split("\n")[0] for m in env.fake.messages] == [
        "Your hearing is Monday.",
        "Bring your lease.",
    ]
    # The first message to a number carries the opt-out notice; the next does not.
    assert env.fake.messages[0].body.endswith("Reply STOP to opt out, HELP for help.")
    assert "STOP" not in env.fake.messages[1].body
    rows = await env.outbox()
    assert [r.id for r in rows] == [first, second]
    assert all(r.status == OutboxStatus.SENT and r.sent_at is not None for r in rows)
    for row, sent in zip(rows, env.fake.messages, strict=True):
        msg = await env.message(row.message_id)
        assert msg.provider_id == sent.sid and msg.status == MessageStatus.SENT
    # What is stored is what was sent, notice included.
    async with env.services.sessions() as session:
        fresh = await session.get(Client, client.id)
        msg = await session.get(Message, rows[0].message_id)
        assert fresh is not None and msg is not None
        assert repo.message_body(env.services.vault, fresh, msg) == env.fake.messages[0].body
    assert env.metrics.outbound.labels(channel="sms", outcome="sent")._value.get() == 2
    await d.drain()
    assert len(env.fake.messages) == 2


async def test_replies_go_ahead_of_broadcasts(env: Env) -> None:
    clients = [await env.client(_phone(i)) for i in range(6)]
    for c in clients[:3]:
        await env.queue(c, "broadcast", kind="broadcast", priority=Priority.BROADCAST)
    for c in clients[3:]:
        await env.queue(c, "reply")
    # One send a second: each claim takes the most urgent row.
    env.services.settings = env.services.settings.model_copy(update={"sms_send_rate": 1.0})
    await env.dispatcher().drain()
    bodies = [m.body.split("\n")[0] for m in env.fake.messages]
    assert bodies == ["reply"] * 3 + ["broadcast"] * 3


async def test_the_send_rate_holds(env: Env) -> None:
    env.services.settings = env.services.settings.model_copy(update={"sms_send_rate": 5.0})
    times: list[float] = []
    inner = env.services.senders["sms"]

    class Timed(ChannelSender):
        name = "sms"

        async def send(self, message: OutboundMessage) -> SendResult:
            times.append(env.mono())
            return await inner.send(message)

    env.services.senders["sms"] = Timed()
    for i in range(20):
        await env.queue(await env.client(_phone(i)), f"n{i}")
    try:
        await env.dispatcher().drain()
    finally:
        env.services.senders["sms"] = inner
    assert len(env.fake.messages) == 20
    # 5 per second with a burst of one: never more than 6 in any one-second window.
    for t in times:
        assert sum(1 for u in times if t <= u < t + 1.0) <= 6
    assert times[-1] - times[0] >= (20 - 1) / 5 - 0.01


async def test_provider_faults_still_deliver_every_message_exactly_once(env: Env) -> None:
    # Twilio has no idempotency key, so a send that went through but answered after the
    # client's timeout is sent again. The fake runs in this test's own event loop, beside 40
    # concurrent sends and their database work: the fixture's 0.1 s (or half a second) can
    # pass before a success is answered. Two seconds cannot, and the fake's timeout fault
    # stalls longer still, so it stays a timeout.
    quick = env.services.senders["sms"]
    patient = TwilioSender.from_settings(env.services.settings, timeout=2.0)
    assert patient is not None
    env.services.senders["sms"] = patient
    await quick.close()
    env.fake.slow_seconds = 2.5
    env.fake.fail_randomly(0.3, kinds=("429", "500", "timeout"))
    env.fake.retry_after = "3"
    clients = [await env.client(_phone(i)) for i in range(40)]
    for c in clients:
        await env.queue(c, "hello")
    await env.settle(env.dispatcher())
    assert env.fake.faults_served, "the fake should have served some faults"
    for i in range(40):
        assert len(env.fake.sent_to(_phone(i))) == 1, i
    rows = await env.outbox()
    assert all(r.status == OutboxStatus.SENT for r in rows)


async def test_a_retry_keeps_a_clients_messages_in_order(env: Env) -> None:
    client = await env.client(_phone(1))
    for text in ("one", "two", "three"):
        await env.queue(client, text)
    env.fake.fail_next("429")
    env.fake.retry_after = "120"
    d = env.dispatcher()
    await d.drain()
    assert env.fake.messages == []  # "one" waits out Retry-After; the others wait behind it
    rows = await env.outbox()
    assert rows[0].due_at >= env.clock() + timedelta(seconds=120)
    await env.settle(d)
    assert [m.body.split("\n")[0] for m in env.fake.messages] == ["one", "two", "three"]


async def test_21610_marks_the_client_opted_out_and_nothing_more_is_sent(env: Env) -> None:
    client = await env.client(_phone(1))
    await env.queue(client, "first")
    env.fake.fail_next("21610")
    d = env.dispatcher()
    await d.drain()
    (row,) = await env.outbox()
    assert row.status == OutboxStatus.FAILED
    assert (await env.message(row.message_id)).status == MessageStatus.FAILED
    async with env.services.sessions() as session:
        ident = (await session.exec(select(ChannelIdentity))).one()
        assert ident.opted_out_at is not None
        event = (await session.exec(select(ConsentEvent))).one()
        assert (event.kind, event.source) == ("opt_out", "provider_error")
    env.fake.expect_no_more()
    await env.queue(client, "reminder", kind="reminder", priority=Priority.REMINDER)
    await d.drain()
    rows = await env.outbox()
    assert rows[1].status == OutboxStatus.SKIPPED
    assert env.fake.attempts == 1


async def test_permanent_errors_are_not_retried(env: Env) -> None:
    await env.queue(await env.client(_phone(1)), "hi")
    env.fake.fail_next("21211")
    await env.settle(env.dispatcher())
    (row,) = await env.outbox()
    assert row.status == OutboxStatus.FAILED and row.attempts == 1
    assert env.fake.attempts == 1


async def test_retries_give_up_after_max_attempts(env: Env) -> None:
    await env.queue(await env.client(_phone(1)), "hi")
    env.fake.fail_next("500", 3)
    await env.settle(env.dispatcher(max_attempts=3))
    (row,) = await env.outbox()
    assert row.status == OutboxStatus.FAILED and env.fake.attempts == 3


async def test_stop_silences_rows_queued_before_it(env: Env) -> None:
    client = await env.client(_phone(1))
    await env.queue(client, "reminder", kind="reminder", priority=Priority.REMINDER)
    await env.queue(client, "broadcast", kind="broadcast", priority=Priority.BROADCAST)
    await env.queue(client, "attorney says", kind="staff_reply")
    async with env.services.sessions() as session, session.begin():
        ident = (await session.exec(select(ChannelIdentity))).one()
        await repo.record_consent(session, identity=ident, kind="opt_out", source="keyword")
    await env.queue(client, "You are unsubscribed.", kind=OPTOUT_CONFIRM)
    await env.dispatcher().drain()
    assert [m.body for m in env.fake.messages] == ["You are unsubscribed."]
    statuses = [r.status for r in await env.outbox()]
    assert statuses == [OutboxStatus.SKIPPED] * 3 + [OutboxStatus.SENT]


async def test_erased_clients_are_skipped(env: Env) -> None:
    client = await env.client(_phone(1))
    await env.queue(client, "hi")
    async with env.services.sessions() as session, session.begin():
        fresh = await session.get(Client, client.id)
        assert fresh is not None
        fresh.wrapped_key = None  # erased after the row was queued
        session.add(fresh)
    env.fake.expect_no_more()
    await env.dispatcher().drain()
    (row,) = await env.outbox()
    assert row.status == OutboxStatus.SKIPPED


async def test_quiet_hours_hold_non_urgent_rows(env: Env) -> None:
    env.services.settings = env.services.settings.model_copy(
        update={"quiet_hours": (time(21), time(8))}
    )
    env.clock.set(datetime(2026, 3, 2, 7, 0, tzinfo=UTC))  # 02:00 in New York
    client = await env.client(_phone(1))
    await env.queue(client, "reminder", kind="reminder", priority=Priority.REMINDER, urgent=False)
    await env.queue(await env.client(_phone(2)), "answer", urgent=True)
    d = env.dispatcher()
    await d.drain()
    assert [m.to for m in env.fake.messages] == [_phone(2)]
    held = (await env.outbox())[0]
    assert held.status == OutboxStatus.PENDING
    assert held.due_at == datetime(2026, 3, 2, 13, 0, tzinfo=UTC)  # 08:00 in New York
    env.clock.set(datetime(2026, 3, 2, 13, 0, tzinfo=UTC))
    await d.drain()
    assert [m.to for m in env.fake.messages] == [_phone(2), _phone(1)]


async def test_a_dispatcher_killed_after_claiming_is_not_blindly_resent(env: Env) -> None:
    client = await env.client(_phone(1))
    await env.queue(client, "claimed, then the process died")
    await env.queue(await env.client(_phone(2)), "sent, then the process died")
    dead = env.dispatcher(name="dead")
    claimed, _touched, _slots = await dead._claim("sms", 10)
    assert len(claimed) == 2
    # One reached Twilio before the crash, the other never left; neither was recorded.
    await env.services.senders["sms"].send(claimed[1].outbound)
    assert len(env.fake.messages) == 1
    survivor = env.dispatcher(name="survivor")
    await survivor.drain()
    assert len(env.fake.messages) == 1  # the lease has not expired: hands off
    env.clock.advance(minutes=6)
    env.fake.expect_no_more()
    await survivor.drain()
    rows = await env.outbox()
    assert [r.status for r in rows] == [OutboxStatus.REVIEW, OutboxStatus.REVIEW]
    assert [(await env.message(r.message_id)).status for r in rows] == ["review", "review"]
    assert survivor.review_count == 2
    assert env.metrics.outbound.labels(channel="sms", outcome="review")._value.get() == 2


async def test_a_sender_that_crashes_sends_the_row_to_review(env: Env) -> None:
    class Broken(ChannelSender):
        name = "sms"

        async def send(self, message: OutboundMessage) -> SendResult:
            raise RuntimeError("bug")

    inner = env.services.senders["sms"]
    env.services.senders["sms"] = Broken()
    try:
        await env.queue(await env.client(_phone(1)), "hi")
        await env.dispatcher().drain()
    finally:
        env.services.senders["sms"] = inner
    (row,) = await env.outbox()
    assert row.status == OutboxStatus.REVIEW


class RecordingTelegram(ChannelSender):
    """A stand-in Telegram sender that records what it is asked to send."""

    name = "telegram"

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        self.sent.append(message)
        return SendResult(provider_id=f"tg-{len(self.sent)}")


async def test_staff_rows_wait_for_a_telegram_sender(env: Env) -> None:
    async with env.services.sessions() as session, session.begin():
        await repo.enqueue_staff(
            session,
            vault=env.services.vault,
            text="New urgent intake: K7M-4PX",
            chat_id=-100123,
            due_at=env.clock(),
        )
    d = env.dispatcher()
    await d.drain()
    (row,) = await env.outbox()
    assert row.status == OutboxStatus.PENDING and env.fake.messages == []
    telegram = RecordingTelegram()
    env.services.senders["telegram"] = telegram
    await d.drain()
    assert [(m.address, m.text) for m in telegram.sent] == [
        ("-100123", "New urgent intake: K7M-4PX")
    ]
    (row,) = await env.outbox()
    assert row.status == OutboxStatus.SENT


async def test_background_loop_wakes_when_poked(env: Env) -> None:
    d = Dispatcher(env.services, poll_interval=30.0)
    await d.start()
    try:
        await asyncio.sleep(0.05)
        await env.queue(await env.client(_phone(1)), "hi")
        d.poke()
        for _ in range(200):
            if env.fake.messages:
                break
            await asyncio.sleep(0.01)
        assert len(env.fake.messages) == 1
    finally:
        await d.stop()


async def test_one_unreadable_row_does_not_block_the_others(env: Env) -> None:
    env.services.settings = env.services.settings.model_copy(
        update={"quiet_hours": (time(21), time(8))}
    )
    broken = await env.client(_phone(1), timezone="Nowhere/Atlantis")
    await env.queue(broken, "held?", kind="reminder", priority=Priority.REMINDER, urgent=False)
    await env.queue(await env.client(_phone(2)), "fine")
    await env.dispatcher().drain()
    assert [m.to for m in env.fake.messages] == [_phone(2)]
    rows = await env.outbox()
    assert [r.status for r in rows] == [OutboxStatus.FAILED, OutboxStatus.SENT]


class SameId(ChannelSender):
    """A provider that hands out one id twice (it happens): both sends still count as sent."""

    name = "sms"

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        self.sent.append(message)
        return SendResult(provider_id="SM-reused")


async def test_a_reused_provider_id_still_leaves_every_row_sent(env: Env) -> None:
    inner = env.services.senders["sms"]
    same = SameId()
    env.services.senders["sms"] = same
    try:
        for i in range(4):
            await env.queue(await env.client(_phone(i)), f"n{i}")
        await env.dispatcher().drain()
    finally:
        env.services.senders["sms"] = inner
    assert sorted(m.text.split("\n")[0] for m in same.sent) == ["n0", "n1", "n2", "n3"]
    rows = await env.outbox()
    assert [r.status for r in rows] == [OutboxStatus.SENT] * 4
    ids = [(await env.message(r.message_id)).provider_id for r in rows]
    assert sorted(ids, key=str) == sorted(["SM-reused", None, None, None], key=str)


async def test_the_background_loop_sends_a_burst_once_each_recording_in_few_commits(
    env: Env,
) -> None:
    commits = [0]

    @event.listens_for(env.services.engine.sync_engine, "commit")
    def _on_commit(_conn: Any) -> None:
        commits[0] += 1

    for i in range(60):
        await env.queue(await env.client(_phone(i)), f"burst {i}")
    # The fixture's sender gives up after 0.1 s (for timeout tests), and this test's clock
    # never moves past a retry's backoff: a slow first connection on a busy machine would
    # leave that row pending. A sender with the usual timeout sends each once.
    quick = env.services.senders["sms"]
    patient = TwilioSender.from_settings(env.services.settings)
    assert patient is not None
    env.services.senders["sms"] = patient
    commits[0] = 0
    d = Dispatcher(env.services, metrics=env.metrics, poll_interval=0.05)
    await d.start()
    try:
        for _ in range(1000):
            rows = await env.outbox()
            if all(r.status == OutboxStatus.SENT for r in rows):
                break
            await asyncio.sleep(0.01)
    finally:
        await d.stop()
        env.services.senders["sms"] = quick
        await patient.close()
    assert sorted(m.to for m in env.fake.messages) == sorted(_phone(i) for i in range(60))
    assert all(r.status == OutboxStatus.SENT for r in await env.outbox())
    # 60 outcomes recorded together, not one commit each (plus the claims).
    assert commits[0] < 60, commits[0]


async def test_a_claim_finds_rows_behind_one_clients_long_queue(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ten messages of one client fill the head of the queue; another client's message waits
    # behind them. The claim must not stop at the head just because the first ten are one
    # client's (they go one at a time).
    monkeypatch.setattr(repo.outbox, "CLAIM_WINDOW", 1)
    busy = await env.client(_phone(1))
    first = [await env.queue(busy, f"part {i}") for i in range(10)]
    other = await env.queue(await env.client(_phone(2)), "your hearing moved")
    now = env.clock()
    async with env.services.sessions() as session, session.begin():
        claimed = await repo.claim_outbox(
            session,
            channel="sms",
            limit=2,
            now=now,
            claimer="t/1",
            lease_until=now + timedelta(minutes=5),
        )
    assert [i.id for i in claimed] == [first[0], other]
    async with env.services.sessions() as session, session.begin():
        again = await repo.claim_outbox(
            session,
            channel="sms",
            limit=2,
            now=now,
            claimer="t/2",
            lease_until=now + timedelta(minutes=5),
        )
    assert again == []  # the busy client's next part waits for the one in flight

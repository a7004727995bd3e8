"""The dispatcher: claims due outbox rows and sends each through its channel, exactly once.

How a row travels: ``pending`` -> claimed as ``sending`` (with a lease, committed *before*
the provider is called) -> ``sent`` with the provider's id, or back to ``pending`` with a
later ``due_at`` (retry), or ``failed`` / ``skipped``.

A row found in ``sending`` after its lease expired belongs to a dispatcher that died
between calling the provider and recording the outcome. Twilio's Messages API has no
idempotency key and nothing of ours travels with the message that could find it again
reliably, so we cannot tell "sent" from "not sent": the row goes to ``review`` (counted
in the metrics and logged) and a person decides. Sending it again blindly could text a
client twice, which on a shared phone can be worse than a delayed message.

A client has at most one row in flight at a time, across all dispatchers: their messages
arrive in order, and a row is claimed only when it is about to be sent, so a crash leaves
at most that one message in doubt.

Every process together keeps to a provider sender's rate: each claim also takes its rows'
send slots from one shared row (``SharedRate``), and each row is sent at its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import socket
import time as systime
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import keywords
from bot.appkeys import DISPATCHER, METRICS, SERVICES
from bot.channels.base import ChannelSender, OutboundMessage, SendError, SendErrorKind, SendResult
from bot.config import Settings
from bot.core import BYPASS_OPT_OUT, CARRIES_NOTICE, NOTICE_CHANNELS, OPTOUT_CONFIRM, Choice
from bot.metrics import Metrics
from bot.quiet_hours import hold_until
from bot.services import Services
from storage import repo
from storage.crypto import CryptoError
from storage.db import GroupCommit, transaction
from storage.models import (
    Channel,
    ChannelIdentity,
    Client,
    Message,
    OutboxItem,
    OutboxStatus,
    Staff,
)

log = logging.getLogger(__name__)


Sleep = Callable[[float], Awaitable[None]]


class SharedRate:
    """A provider sender's send rate, shared by every process through the ``send_rate`` row.

    Each claim takes the next ``count`` send slots, ``1 / rate`` seconds apart, in one atomic
    statement: however many dispatchers send through one Twilio number or Telegram bot,
    together they stay at ``rate``, and while any has rows to send the slots are used.
    Slot times are seconds since the epoch (``wall``), the one clock processes on several
    machines share.
    """

    # Slots claimed at a time: a tenth of a second's worth, so one round trip serves many
    # sends, and a dispatcher that dies leaves few slots unused.
    CHUNK_SECONDS = 0.1

    def __init__(
        self, *, channel: str, sender: str, rate: float, wall: Callable[[], float]
    ) -> None:
        self.channel = channel
        self.sender = sender[:64]
        self.rate = rate
        self.chunk = max(1, int(rate * self.CHUNK_SECONDS))
        self._wall = wall
        self.last_slot = 0.0

    async def claim(self, session: AsyncSession, count: int) -> list[float]:
        """The times of the next ``count`` send slots (seconds since the epoch), claimed in
        ``session``: with the rows they are for, or not at all."""
        first = await repo.claim_send_slots(
            session,
            channel=self.channel,
            sender=self.sender,
            count=count,
            rate=self.rate,
            now=self._wall(),
        )
        slots = [first + i / self.rate for i in range(count)]
        self.last_slot = slots[-1]
        return slots


def rate_sender(settings: Settings, channel: str) -> str | None:
    """Whom a channel's send rate belongs to (the Twilio sender, the Telegram bot); None if
    the channel has no rate."""
    if channel == Channel.SMS:
        return settings.twilio_messaging_service_sid or settings.twilio_from_number or "sms"
    if channel == Channel.TELEGRAM and settings.telegram_bot_token is not None:
        # The bot's id, the token's public half: the secret half is never stored.
        return "bot" + settings.telegram_bot_token.get_secret_value().split(":", 1)[0]
    return None


_Outcome = tuple["_Claimed", "SendResult | SendError | str"]


@dataclass(frozen=True)
class _Claimed:
    """A row claimed for sending, with everything needed to send and record it."""

    item_id: int
    message_id: int
    channel: str
    kind: str
    identity_id: int | None
    outbound: OutboundMessage


def process_name() -> str:
    """This process, as named in claims and leases: host, pid and a random tag."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Dispatcher:
    """Sends due outbox rows through ``services.senders``, obeying rates, quiet hours, opt-outs."""

    # Sends in flight at once per channel: 200/s at Twilio's ~0.3 s answers is 60. It bounds
    # what a crash can leave in doubt.
    MAX_IN_FLIGHT = 100
    # Seconds before its last claimed slot that a busy loop claims the next chunk.
    CLAIM_LEAD = 0.1

    def __init__(
        self,
        services: Services,
        *,
        metrics: Metrics | None = None,
        name: str | None = None,
        batch_size: int = 50,
        lease: timedelta = timedelta(minutes=5),
        poll_interval: float = 1.0,
        reconcile_every: float = 10.0,
        max_attempts: int = 10,
        backoff_base: float = 2.0,
        backoff_cap: float = 900.0,
        max_in_flight: int | None = None,
        rng: random.Random | None = None,
        wall: Callable[[], float] = systime.time,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.services = services
        self.metrics = metrics
        self.name = (name or process_name())[:48]
        self.batch_size = batch_size
        self.lease = lease
        self.poll_interval = poll_interval
        self.reconcile_every = reconcile_every
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rng = rng or random.Random()
        self._wall = wall
        self._sleep = sleep
        self._rates: dict[str, SharedRate | None] = {}
        self._claims = itertools.count(1)
        self._events: dict[str, asyncio.Event] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.review_count = 0
        self.max_in_flight = max_in_flight or self.MAX_IN_FLIGHT
        self._in_flight: dict[str, set[asyncio.Task[None]]] = {}
        self._claiming: dict[str, asyncio.Lock] = {}
        self._outcomes: GroupCommit[_Outcome, str] = GroupCommit(
            services.sessions, self._record, alone=self._record_alone, prefetch=self._load_sent
        )

    # ------------------------------------------------------------------ public

    def poke(self) -> None:
        """Wake the send loops now: rows were just queued."""
        for event in self._events.values():
            event.set()

    async def run_once(self) -> int:
        """Settle expired leases, then one claim-and-send round per channel; rows touched."""
        await self.reconcile()
        total = 0
        for channel, sender in list(self.services.senders.items()):
            total += await self._round(channel, sender)
        return total

    async def drain(self, *, max_rounds: int = 100_000) -> int:
        """Send everything due now (waiting out rate limits); for tests and `probono chat`."""
        total = 0
        for _ in range(max_rounds):
            n = await self.run_once()
            total += n
            if n:
                continue
            # Sends the background loop has in flight count too: wait for their outcomes,
            # then look again (a retry may be due, or a client's next message).
            flying = [t for tasks in self._in_flight.values() for t in tasks]
            if flying:
                await asyncio.gather(*flying, return_exceptions=True)
                continue
            return total
        raise RuntimeError("dispatcher drain did not settle")

    async def start(self) -> None:
        """Run in the background until stop()."""
        self._stopping = False
        self._stop_event.clear()
        self._supervisor = asyncio.create_task(self._supervise(), name="dispatcher")

    async def stop(self, grace: float = 15.0) -> None:
        """Let sends in flight finish (up to ``grace`` seconds), then stop."""
        self._stopping = True
        self._stop_event.set()
        self.poke()
        flying = [t for tasks in self._in_flight.values() for t in tasks]
        tasks = [t for t in [self._supervisor, *self._tasks.values(), *flying] if t is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        # Outcomes of the sends that finished are committed before we go.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._outcomes.idle(), grace)
        self._tasks.clear()
        self._in_flight.clear()
        self._supervisor = None

    async def reconcile(self) -> int:
        """Rows left in ``sending`` past their lease go to ``review``: never a blind resend."""
        now = self.services.clock()
        async with transaction(self.services.sessions) as session:
            stuck = await repo.expired_sending(session, now=now)
            for item in stuck:
                repo.hold_outbox_for_review(
                    session,
                    item=item,
                    msg=await session.get(Message, item.message_id),
                    reason="lease expired while sending: outcome unknown",
                    now=now,
                )
        for item in stuck:
            log.warning("outbox row %s needs review: a dispatcher died while sending it", item.id)
            self._count(item.channel, "review")
        self.review_count += len(stuck)
        return len(stuck)

    # ------------------------------------------------------------------ rounds

    def _rate(self, channel: str) -> SharedRate | None:
        """The channel's shared send rate; None when it has none."""
        if channel not in self._rates:
            settings = self.services.settings
            rate: float | None = None
            if channel == Channel.SMS:
                rate = settings.sms_send_rate
            elif channel == Channel.TELEGRAM:
                rate = settings.telegram_send_rate
            sender = rate_sender(settings, channel)
            shared: SharedRate | None = None
            if rate is not None and sender is not None:
                shared = SharedRate(channel=channel, sender=sender, rate=rate, wall=self._wall)
            self._rates[channel] = shared
        return self._rates[channel]

    async def _round(self, channel: str, sender: ChannelSender, *, wait: bool = True) -> int:
        """Claim a chunk of due rows and their send slots, and start sending; rows touched.

        ``wait=False`` (the background loop) returns once the sends are under way, each
        waiting for its slot, so the next claim overlaps them: a round's database work does
        not eat into the send rate. Only rows about to be sent are claimed, so a crash leaves
        few in doubt.
        """
        rate = self._rate(channel)
        flying = self._in_flight.setdefault(channel, set())
        # One claim at a time per channel in this process, and its sends are in `flying`
        # before the next looks: drain() never mistakes a claim in progress for an empty queue.
        async with self._claiming.setdefault(channel, asyncio.Lock()):
            n = min(self.batch_size, self.max_in_flight - len(flying))
            if rate is not None:
                n = min(n, rate.chunk)
            if n < 1:
                return 0
            claimed, touched, slots = await self._claim(channel, n, rate)
            tasks: list[asyncio.Task[None]] = []
            for one, slot in zip(claimed, slots, strict=True):
                if wait and slot is not None:
                    # In turn, so that a test's sleep that only moves a fake clock still works.
                    await self._wait_for(slot)
                    slot = None
                task = asyncio.create_task(self._deliver(sender, one, slot))
                tasks.append(task)
                flying.add(task)
                task.add_done_callback(flying.discard)
        if wait and tasks:
            await asyncio.gather(*tasks)
        return touched

    async def _wait_for(self, slot: float) -> None:
        delay = slot - self._wall()
        if delay > 0:
            await self._sleep(delay)

    async def _claim(
        self, channel: str, limit: int, rate: SharedRate | None = None
    ) -> tuple[list[_Claimed], int, list[float | None]]:
        """Claim due rows and decide each: send, skip, or hold for quiet hours; the rows to
        send, the rows touched, and each send's slot (None: no rate, send at once)."""
        services = self.services
        now = services.clock()
        window = services.settings.quiet_hours
        claimer = f"{self.name}/{next(self._claims)}"
        out: list[_Claimed] = []
        async with transaction(services.sessions) as session:
            items = await repo.claim_outbox(
                session,
                channel=channel,
                limit=limit,
                now=now,
                claimer=claimer,
                lease_until=now + self.lease,
            )
            await self._prefetch(session, items)
            for item in items:
                try:
                    claimed = await self._prepare(session, item, now, window)
                except (CryptoError, ValueError, LookupError) as exc:
                    # One unreadable row (bad key, bad time zone) must not block the rest.
                    log.error("outbox row %s cannot be prepared: %s", item.id, type(exc).__name__)
                    repo.fail_outbox_unprepared(
                        session, item=item, reason=f"cannot prepare: {type(exc).__name__}"
                    )
                    continue
                if claimed is not None:
                    out.append(claimed)
            # In the claim's transaction: rows claimed always have their slots.
            slots: list[float | None] = [None] * len(out)
            if rate is not None and out:
                slots = list(await rate.claim(session, len(out)))
        for item in items:
            if item.status == OutboxStatus.SKIPPED:
                self._count(channel, "skipped")
        return out, len(items), slots

    async def _prefetch(self, session: AsyncSession, items: list[OutboxItem]) -> None:
        """Load the claimed rows' messages, clients and identities in three queries.

        They land in the session's identity map, so ``_prepare``'s lookups cost no round trip:
        a claim of 40 rows was 120 queries, the bulk of a busy dispatcher's time.
        """
        if not items:
            return
        message_ids = [i.message_id for i in items]
        client_ids = list({i.client_id for i in items if i.client_id is not None})
        await repo.preload(session, select(Message).where(col(Message.id).in_(message_ids)))
        if client_ids:
            await repo.preload(session, select(Client).where(col(Client.id).in_(client_ids)))
            await repo.preload(
                session,
                select(ChannelIdentity).where(col(ChannelIdentity.client_id).in_(client_ids)),
            )

    async def _prepare(
        self, session: Any, item: OutboxItem, now: datetime, window: tuple[time, time] | None
    ) -> _Claimed | None:
        """Decide one claimed row: None when skipped or held, else what to send."""
        services = self.services
        vault = services.vault
        channel = item.channel
        assert item.id is not None
        msg = await session.get(Message, item.message_id)
        extra: dict[str, Any] = dict(item.extra or {})
        if msg is None:
            repo.skip_outbox(session, item=item, msg=None, reason="message row missing", now=now)
            return None
        client = await session.get(Client, item.client_id) if item.client_id else None
        identity: ChannelIdentity | None = None
        if item.staff_id is not None or extra.get("chat_id") is not None:
            address = await self._staff_address(session, item, extra)
            if address is None:
                repo.skip_outbox(session, item=item, msg=msg, reason="no staff address", now=now)
                return None
            if client is not None and client.wrapped_key is None:
                repo.skip_outbox(session, item=item, msg=msg, reason="client erased", now=now)
                return None
            text = repo.message_body(vault, client, msg)
        else:
            if client is None or client.wrapped_key is None:
                repo.skip_outbox(session, item=item, msg=msg, reason="client erased", now=now)
                return None
            identity = await self._identity(session, item, extra, client)
            if identity is None:
                repo.skip_outbox(session, item=item, msg=msg, reason="no address", now=now)
                return None
            if identity.opted_out_at is not None and item.kind not in BYPASS_OPT_OUT:
                repo.skip_outbox(session, item=item, msg=msg, reason="opted out", now=now)
                return None
            if not item.urgent:
                held = hold_until(now, client.timezone, window)
                if held is not None:
                    repo.hold_outbox_until(session, item=item, until=held)
                    return None
            address = repo.identity_address(vault, client, identity) or ""
            text = repo.message_body(vault, client, msg)
            if channel in NOTICE_CHANNELS and identity.notice_sent_at is None:
                if item.kind not in CARRIES_NOTICE and item.kind != OPTOUT_CONFIRM:
                    lang = client.language or services.settings.default_language
                    text = f"{text}\n\n{keywords.text(lang, 'notice')}"
                    # What is stored is what was sent.
                    msg.body_enc = repo.client_key(vault, client).seal_text(text, "message.body")
                if item.kind != OPTOUT_CONFIRM:
                    identity.notice_sent_at = now
                    session.add(identity)
        repo.mark_outbox_sending(session, item=item, msg=msg, now=now)
        choices = tuple(
            Choice(value=str(c[0]), label=str(c[1])) for c in extra.get("choices") or []
        )
        return _Claimed(
            item_id=item.id,
            message_id=msg.id,  # type: ignore[arg-type]
            channel=channel,
            kind=item.kind,
            identity_id=identity.id if identity is not None else None,
            outbound=OutboundMessage(
                address=address,
                text=text,
                choices=choices,
                extra={"kind": item.kind, **extra},
            ),
        )

    async def _identity(
        self, session: Any, item: OutboxItem, extra: dict[str, Any], client: Client
    ) -> ChannelIdentity | None:
        ident_id = extra.get("identity_id")
        if ident_id is not None:
            ident = await session.get(ChannelIdentity, int(ident_id))
            if ident is not None and ident.client_id == client.id:
                return ident  # type: ignore[no-any-return]
        assert client.id is not None
        return await repo.reply_identity(session, client_id=client.id, channel=item.channel)

    async def _staff_address(
        self, session: Any, item: OutboxItem, extra: dict[str, Any]
    ) -> str | None:
        if extra.get("chat_id") is not None:
            return str(extra["chat_id"])
        staff = await session.get(Staff, item.staff_id)
        if staff is None or not staff.active:
            return None
        tid = repo.staff_telegram_id(self.services.vault, staff)
        return str(tid) if tid is not None else None

    # ------------------------------------------------------------------ outcomes

    async def _deliver(
        self, sender: ChannelSender, claimed: _Claimed, slot: float | None = None
    ) -> None:
        if slot is not None:
            await self._wait_for(slot)
        outcome: SendResult | SendError | str
        try:
            outcome = await sender.send(claimed.outbound)
        except SendError as exc:
            outcome = exc
        except Exception as exc:
            # We do not know whether it went out: review, never a blind resend.
            log.error(
                "sender %s raised %s for outbox row %s",
                sender.name,
                type(exc).__name__,
                claimed.item_id,
            )
            outcome = type(exc).__name__
        try:
            # Outcomes finishing together are recorded in one commit (storage.db.GroupCommit).
            counted = await self._outcomes.submit((claimed, outcome))
        except Exception as exc:
            # The row stays `sending`; its lease will expire and it goes to review.
            log.error(
                "could not record the outcome of outbox row %s: %s",
                claimed.item_id,
                type(exc).__name__,
            )
            return
        if counted == "review":
            self.review_count += 1
        self._count(claimed.channel, counted)
        log.info(
            "outbox row %s %s",
            claimed.item_id,
            counted,
            extra={
                "outbox_id": claimed.item_id,
                "message_id": claimed.message_id,
                "channel": claimed.channel,
                "kind": claimed.kind,
                "outcome": counted,
            },
        )

    async def _load_sent(self, session: AsyncSession, batch: list[_Outcome]) -> None:
        """Load a batch's outbox rows and messages in two queries (the identity map keeps them)."""
        item_ids = [claimed.item_id for claimed, _ in batch]
        message_ids = [claimed.message_id for claimed, _ in batch]
        await repo.preload(session, select(OutboxItem).where(col(OutboxItem.id).in_(item_ids)))
        await repo.preload(session, select(Message).where(col(Message.id).in_(message_ids)))

    async def _record(self, session: AsyncSession, done: _Outcome) -> str:
        """Record one send's outcome in ``session``; the outcome to count."""
        claimed, outcome = done
        if isinstance(outcome, SendResult):
            await self._record_sent(session, claimed, outcome.provider_id or None)
            return "sent"
        if isinstance(outcome, SendError):
            return await self._record_failure(session, claimed, outcome)
        await self._record_review(session, claimed, outcome)
        return "review"

    async def _record_alone(self, done: _Outcome) -> str:
        """Record one outcome in its own transaction (its batch failed)."""
        claimed, outcome = done
        if isinstance(outcome, SendResult) and outcome.provider_id:
            try:
                async with transaction(self.services.sessions) as session:
                    return await self._record(session, done)
            except IntegrityError:
                # A provider reusing an id must not leave a sent message looking unsent.
                log.warning("provider id of outbox row %s already known", claimed.item_id)
                async with transaction(self.services.sessions) as session:
                    await self._record_sent(session, claimed, None)
                return "sent"
        async with transaction(self.services.sessions) as session:
            return await self._record(session, done)

    async def _record_sent(
        self, session: AsyncSession, claimed: _Claimed, provider_id: str | None
    ) -> None:
        now = self.services.clock()
        item = await session.get(OutboxItem, claimed.item_id)
        msg = await session.get(Message, claimed.message_id)
        assert item is not None and msg is not None
        repo.mark_outbox_sent(session, item=item, msg=msg, provider_id=provider_id, now=now)

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before the next try: exponential with jitter, at least Retry-After."""
        ceiling = min(self.backoff_cap, self.backoff_base * 2.0 ** max(0, attempts - 1))
        delay: float = ceiling * self.rng.uniform(0.5, 1.0)
        return max(delay, retry_after or 0.0)

    async def _record_failure(
        self, session: AsyncSession, claimed: _Claimed, exc: SendError
    ) -> str:
        now = self.services.clock()
        outcome = str(exc.kind)
        item = await session.get(OutboxItem, claimed.item_id)
        msg = await session.get(Message, claimed.message_id)
        assert item is not None and msg is not None
        error, error_code = f"{exc.kind}: {exc.code}", str(exc.code)
        if exc.kind == SendErrorKind.RETRY and item.attempts < self.max_attempts:
            due = now + timedelta(seconds=self.backoff(item.attempts, exc.retry_after))
            await repo.retry_outbox_at(
                session, item=item, msg=msg, due_at=due, error=error, error_code=error_code, now=now
            )
        else:
            if exc.kind == SendErrorKind.RETRY:
                outcome = "gave_up"
            repo.mark_outbox_failed(
                session, item=item, msg=msg, error=error, error_code=error_code, now=now
            )
            if exc.kind == SendErrorKind.STOPPED and claimed.identity_id is not None:
                ident = await session.get(ChannelIdentity, claimed.identity_id)
                if ident is not None:
                    await repo.record_consent(
                        session, identity=ident, kind="opt_out", source="provider_error", at=now
                    )
        return outcome

    async def _record_review(self, session: AsyncSession, claimed: _Claimed, reason: str) -> None:
        now = self.services.clock()
        item = await session.get(OutboxItem, claimed.item_id)
        msg = await session.get(Message, claimed.message_id)
        assert item is not None and msg is not None
        repo.hold_outbox_for_review(
            session, item=item, msg=msg, reason=f"sender raised {reason}", now=now
        )

    def _count(self, channel: str, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.outbound.labels(channel=channel, outcome=outcome).inc()

    # ------------------------------------------------------------------ background

    async def _supervise(self) -> None:
        last_reconcile = -1e9
        while not self._stopping:
            for channel in list(self.services.senders):
                task = self._tasks.get(channel)
                if task is None or task.done():
                    self._events.setdefault(channel, asyncio.Event())
                    self._tasks[channel] = asyncio.create_task(
                        self._channel_loop(channel), name=f"dispatch-{channel}"
                    )
            if systime.monotonic() - last_reconcile >= self.reconcile_every:
                last_reconcile = systime.monotonic()
                try:
                    await self.reconcile()
                except Exception as exc:
                    log.error("dispatcher reconcile failed: %s", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), self.poll_interval)

    async def _channel_loop(self, channel: str) -> None:
        event = self._events.setdefault(channel, asyncio.Event())
        while not self._stopping:
            event.clear()
            # Looked up each round: a sender replaced while running (tests, a reconfigured
            # channel) is the one used, and a removed channel's loop ends.
            sender = self.services.senders.get(channel)
            if sender is None:
                return
            try:
                n = await self._round(channel, sender, wait=False)
            except Exception as exc:
                log.error("dispatch round on %s failed: %s", channel, type(exc).__name__)
                n = 0
            if self._stopping:
                break
            flying = self._in_flight.get(channel, set())
            if len(flying) >= self.max_in_flight:
                await asyncio.wait(list(flying), return_when=asyncio.FIRST_COMPLETED)
                continue
            rate = self._rate(channel)
            if n:
                if rate is not None:
                    # The next chunk is claimed shortly before this one's last slot: early
                    # enough that no slot passes unused, late enough not to hold rows long.
                    ahead = rate.last_slot - self._wall() - self.CLAIM_LEAD
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.poll_interval)


async def dispatcher_ctx(app: web.Application) -> AsyncIterator[None]:
    """Runs a Dispatcher in the background for the application's lifetime (cleanup_ctx)."""
    dispatcher = Dispatcher(app[SERVICES], metrics=app[METRICS])
    app[DISPATCHER] = dispatcher
    await dispatcher.start()
    yield
    await dispatcher.stop()

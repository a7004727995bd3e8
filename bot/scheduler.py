"""The scheduler: turns due ScheduledItem rows into outbox messages, once each, and runs
the periodic passes (delivery reports to staff).

APScheduler only ticks (an in-memory interval job; no job store of its own: APScheduler 3
runs a shared store's jobs twice when several processes share it). The database is the
schedule. Each tick claims due rows with a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL,
a guarded UPDATE on SQLite), then settles each row in the transaction that writes its
outbox rows: a crash before that commit leaves the row claimed until its lease runs out and
another tick takes it; a crash after it leaves nothing to do again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.appkeys import DISPATCHER, METRICS, SERVICES
from bot.casework import broadcast
from bot.conversations import broadcast_wizard, intake, relay, reminders
from bot.metrics import Metrics
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import ScheduledItem, ScheduleKind, ScheduleStatus

log = logging.getLogger(__name__)

# A handler does one row's work in the given session and returns the row's final status
# (None means done). It must not commit: the scheduler commits the work and the status
# together.
Handler = Callable[[AsyncSession, Services, ScheduledItem], Awaitable[str | None]]

LEASE = timedelta(minutes=5)
BATCH = 100
MAX_ATTEMPTS = 5
RETRY_AFTER = timedelta(minutes=2)
CHECKIN_PASS_EVERY = timedelta(hours=1)
# How often staff see their messages' delivery move on (an attorney waits for "delivered").
REPORT_EVERY = timedelta(seconds=5)

# A pass is work done every so often rather than per row; it commits its own transactions
# and returns how many messages it queued.
PassRun = Callable[[Services], Awaitable[int]]


@dataclass(frozen=True)
class Pass:
    """Periodic work: its name (for the log), how often it runs, and what it runs."""

    name: str
    every: timedelta
    run: PassRun


def default_handlers() -> dict[str, Handler | None]:
    """The registry: one handler per kind (None leaves that kind's rows waiting)."""
    return {
        ScheduleKind.REMINDER: reminders.send_reminder,
        ScheduleKind.CHECKIN: reminders.send_checkin,
        ScheduleKind.INTAKE_NUDGE: intake.nudge,
        ScheduleKind.BROADCAST: broadcast.run_scheduled,
    }


def default_passes() -> tuple[Pass, ...]:
    """Delivery reports (attorney replies' status and broadcasts' progress, edited in place),
    and confirmed Telegram broadcasts whose process died before queueing them."""
    return (
        Pass("relay delivery reports", REPORT_EVERY, relay.report_deliveries),
        Pass("broadcast progress", REPORT_EVERY, broadcast_wizard.report_broadcasts),
        Pass("stranded broadcasts", REPORT_EVERY, broadcast_wizard.send_stranded),
    )


@dataclass
class TickReport:
    """What one tick did (for tests and the debug log; never any content)."""

    planned_checkins: int = 0
    claimed: int = 0
    done: int = 0
    skipped: int = 0
    failed: int = 0
    lost: int = 0  # claimed, then moved, cancelled or re-claimed before the work ran


class Scheduler:
    """Claims and runs due timed work; ``tick()`` is one pass, ``start()`` ticks on a timer."""

    def __init__(
        self,
        services: Services,
        *,
        handlers: dict[str, Handler | None] | None = None,
        passes: tuple[Pass, ...] | None = None,
        lease: timedelta = LEASE,
        batch: int = BATCH,
        on_queued: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.services = services
        self.metrics = metrics
        self.on_queued = on_queued  # wakes the dispatcher when a tick queued messages
        self.handlers = default_handlers() if handlers is None else dict(handlers)
        self.passes = default_passes() if passes is None else passes
        self._last_pass: dict[str, datetime] = {}
        self._pass_lock = asyncio.Lock()
        self.lease = lease
        self.batch = batch
        self._last_checkin_pass: datetime | None = None
        self._aps: Any = None
        self._lock = asyncio.Lock()
        self._stopped = False

    def _resolve(self) -> dict[str, Handler]:
        return {kind: h for kind, h in self.handlers.items() if h is not None}

    async def tick(self, *, checkins: bool | None = None) -> TickReport:
        """Plans check-ins (hourly, or when asked), claims and runs every due row, then runs
        the passes that are due."""
        async with self._lock:
            report = await self._tick(checkins)
        await self.run_passes()
        return report

    async def run_passes(self) -> int:
        """Runs each pass whose time has come (by the injected clock); messages queued."""
        queued = 0
        async with self._pass_lock:
            for work in self.passes:
                now = self.services.clock()
                last = self._last_pass.get(work.name)
                if last is not None and now - last < work.every:
                    continue
                self._last_pass[work.name] = now
                try:
                    queued += await work.run(self.services)
                except Exception as exc:  # one failed pass must not stop the others
                    log.error("%s failed: %s", work.name, type(exc).__name__)
        if queued and self.on_queued is not None:
            self.on_queued()
        return queued

    async def _tick(self, checkins: bool | None) -> TickReport:
        report = TickReport()
        now = self.services.clock()
        if self.metrics is not None:
            self.metrics.scheduler_ticks.inc()
        handlers = self._resolve()
        due_pass = self._last_checkin_pass is None or (
            now - self._last_checkin_pass >= CHECKIN_PASS_EVERY
        )
        if ScheduleKind.CHECKIN in handlers and (checkins if checkins is not None else due_pass):
            async with transaction(self.services.sessions) as session:
                report.planned_checkins = await reminders.plan_checkins(
                    session, self.services, now=now
                )
            self._last_checkin_pass = now
        while True:
            now = self.services.clock()
            lease_until = now + self.lease
            async with transaction(self.services.sessions) as session:
                ids = await repo.claim_scheduled(
                    session,
                    now=now,
                    lease_until=lease_until,
                    kinds=list(handlers),
                    limit=self.batch,
                )
            report.claimed += len(ids)
            for item_id in ids:
                await self._run_one(item_id, lease_until, handlers, report)
            if len(ids) < self.batch:
                break
        if report.done and self.on_queued is not None:
            self.on_queued()
        if report.claimed:
            log.info(
                "scheduler: %d claimed, %d done, %d skipped, %d failed",
                report.claimed,
                report.done,
                report.skipped,
                report.failed,
            )
        return report

    async def _run_one(
        self,
        item_id: int,
        lease_until: datetime,
        handlers: dict[str, Handler],
        report: TickReport,
    ) -> None:
        services = self.services
        try:
            async with transaction(services.sessions) as session:
                now = services.clock()
                item = await repo.take_claimed(
                    session, item_id=item_id, lease_until=lease_until, now=now
                )
                if item is None:
                    report.lost += 1
                    return
                if self.metrics is not None:
                    self.metrics.scheduler_lag.observe(
                        max(0.0, (now - item.due_at).total_seconds())
                    )
                status = await handlers[item.kind](session, services, item) or ScheduleStatus.DONE
                repo.settle_scheduled_item(session, item=item, status=status, now=now)
            if status == ScheduleStatus.DONE:
                report.done += 1
            else:
                report.skipped += 1
        except Exception as exc:
            report.failed += 1
            # The class only: messages of database errors can carry parameters.
            log.error("scheduled item %s failed: %s", item_id, type(exc).__name__)
            log.debug("scheduled item %s traceback", item_id, exc_info=True)
            async with transaction(services.sessions) as session:
                now = services.clock()
                gave_up = await repo.retry_claimed_later(
                    session,
                    item_id=item_id,
                    lease_until=lease_until,
                    retry_at=now + RETRY_AFTER,
                    max_attempts=MAX_ATTEMPTS,
                    now=now,
                )
            if gave_up:
                log.error("scheduled item %s given up after %d attempts", item_id, MAX_ATTEMPTS)

    async def _timer_tick(self) -> None:
        if self._stopped:
            return
        try:
            await self.tick()
        except Exception as exc:  # a bad tick must not stop the timer
            log.error("scheduler tick failed: %s", type(exc).__name__)
            log.debug("scheduler tick traceback", exc_info=True)

    async def _timer_passes(self) -> None:
        if not self._stopped:
            await self.run_passes()

    def start(self, interval_seconds: float) -> None:
        """Ticks every ``interval_seconds`` on the running event loop."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self._aps = AsyncIOScheduler(timezone=UTC)
        self._aps.add_job(
            self._timer_tick,
            "interval",
            seconds=interval_seconds,
            id="probono-tick",
            max_instances=1,  # a slow tick is not overlapped by the next
            coalesce=True,  # ticks missed while the loop was busy become one
        )
        if self.passes:
            # The passes come round more often than the rows: on their own, shorter timer.
            self._aps.add_job(
                self._timer_passes,
                "interval",
                seconds=min(p.every for p in self.passes).total_seconds(),
                id="probono-passes",
                max_instances=1,
                coalesce=True,
            )
        self._aps.start()

    async def stop(self) -> None:
        """Stops the timer and waits for a tick in progress to finish."""
        self._stopped = True
        if self._aps is not None:
            self._aps.shutdown(wait=False)
            self._aps = None
        async with self._lock, self._pass_lock:
            pass


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    """aiohttp cleanup_ctx (after the dispatcher): one ticking scheduler per process."""
    services = app[SERVICES]
    scheduler: Scheduler | None = None
    if services.settings.scheduler_enabled:
        dispatcher = app.get(DISPATCHER)
        scheduler = Scheduler(
            services,
            on_queued=dispatcher.poke if dispatcher is not None else None,
            metrics=app[METRICS],
        )
        scheduler.start(services.settings.scheduler_interval_seconds)
    yield
    if scheduler is not None:
        await scheduler.stop()

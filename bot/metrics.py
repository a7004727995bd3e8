"""Prometheus metrics, one registry per app (so tests never share counters).

Two kinds of numbers live here. Counters and histograms are this process's own (its
requests, its sends, its scheduler ticks): Prometheus sums them across processes. The
``scope="database"`` gauges (the outbox backlog and the review backlog) are read from the
database at scrape time, so every process reports the same value: aggregate them with
``max``, never ``sum``, or N processes show N times the backlog. We chose this over having
only one process export them because nothing here elects one: the scheduler and the
dispatcher share their work row by row, and a gauge that only one process exports
disappears with that process, just when the backlog matters.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from storage import repo

# The label on every database-wide gauge: "the same in every process, aggregate with max".
DATABASE_SCOPE = "database"


class Metrics:
    """The counters the operators watch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Memory, CPU, open files, start time; and the Python version and implementation.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.inbound = Counter(
            "probono_inbound_messages",
            "Inbound messages stored",
            ["channel"],
            registry=self.registry,
        )
        self.inbound_duplicates = Counter(
            "probono_inbound_duplicates",
            "Repeated webhooks recognised",
            ["channel"],
            registry=self.registry,
        )
        self.webhook_rejected = Counter(
            "probono_webhook_rejected",
            "Webhooks refused (bad signature or secret)",
            ["channel"],
            registry=self.registry,
        )
        # Counted once, by the dispatcher that sent (or failed to send) the row; the
        # provider's later reports are counted apart, so "sent" is never counted twice.
        self.outbound = Counter(
            "probono_outbound_messages",
            "Outbound send outcomes, counted by the dispatcher",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.delivery_reports = Counter(
            "probono_delivery_reports",
            "Delivery status callbacks received from the provider",
            ["channel", "status"],
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "probono_outbox_pending",
            "Outbox rows due and waiting, whole database (aggregate with max)",
            ["scope"],
            registry=self.registry,
        )
        self.outbox_review = Gauge(
            "probono_outbox_review",
            "Outbox rows held for a person to review, whole database (aggregate with max)",
            ["scope"],
            registry=self.registry,
        )
        self.handle_seconds = Histogram(
            "probono_inbound_handle_seconds",
            "Time to process one inbound message",
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "probono_http_request_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.scheduler_ticks = Counter(
            "probono_scheduler_ticks",
            "Scheduler ticks run by this process",
            registry=self.registry,
        )
        self.scheduler_lag = Histogram(
            "probono_scheduler_lag_seconds",
            "How long after it was due a scheduled item ran",
            buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600, float("inf")),
            registry=self.registry,
        )

    async def refresh_database_gauges(
        self, sessions: async_sessionmaker[AsyncSession], *, now: datetime
    ) -> None:
        """Reads the database-wide gauges (called at scrape time)."""
        async with sessions() as session:
            pending = await repo.pending_due_count(session, channels=None, now=now)
            review = await repo.review_count(session)
        self.outbox_pending.labels(scope=DATABASE_SCOPE).set(pending)
        self.outbox_review.labels(scope=DATABASE_SCOPE).set(review)

    def render(self) -> bytes:
        return generate_latest(self.registry)

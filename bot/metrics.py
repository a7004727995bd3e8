"""Prometheus metrics, one registry per app (so tests never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest


class Metrics:
    """The counters the operators watch."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
        self.outbound = Counter(
            "probono_outbound_messages",
            "Outbound send outcomes",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "probono_outbox_pending", "Outbox rows waiting", registry=self.registry
        )
        self.handle_seconds = Histogram(
            "probono_inbound_handle_seconds",
            "Time to process one inbound message",
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

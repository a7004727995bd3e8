"""GET /metrics read as Prometheus reads it: process collectors, request latency by route, the
scheduler's ticks and lag, and database-wide backlogs that every process reports alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from bot.app import create_app
from bot.appkeys import METRICS
from bot.clock import FakeClock
from bot.config import Settings
from bot.metrics import DATABASE_SCOPE
from bot.scheduler import Scheduler
from bot.services import Services
from storage import repo
from storage.models import Channel, Message, OutboxItem, ScheduledItem
from tests.metrics_text import scrape

PHONE = "+15550107788"


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[Services]:
    svc = Services.build(settings.model_copy(update={"scheduler_enabled": False}), clock=clock)
    yield svc
    await svc.close()


@pytest.fixture
async def http(services: Services) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(services.settings, services=services))) as c:
        yield c


async def test_the_standard_process_and_platform_collectors_are_served(
    http: TestClient[Any, Any],
) -> None:
    page = await scrape(http)
    assert page.value("process_resident_memory_bytes") > 0
    assert page.value("process_start_time_seconds") > 0
    assert "process_cpu_seconds_total" in page.names()
    assert any(v == 1 for v in page.with_name("python_info").values())


async def test_request_latency_is_counted_by_route_template_not_path(
    http: TestClient[Any, Any],
) -> None:
    for ref in ("AAA-CCC", "DDD-EEE"):
        resp = await http.post(f"/api/cases/{ref}/status", json={"status": "x"})
        assert resp.status == 404  # no PROBONO_API_TOKEN: the API is off, the route still matched
    await http.get("/healthz")
    await http.get("/no/such/page/12345")
    await http.request("PROPFIND", "/healthz")  # a WebDAV method: labelled "other"
    page = await scrape(http)
    name = "probono_http_request_seconds_count"
    route = "/api/cases/{ref}/status"
    assert page.value(name, method="POST", route=route, status="404") == 2
    assert page.value(name, method="GET", route="/healthz", status="200") == 1
    assert page.value(name, method="GET", route="unmatched", status="404") == 1
    assert page.value(name, method="other", route="unmatched", status="405") == 1
    assert "AAA-CCC" not in page.text and "12345" not in page.text


async def test_scheduler_ticks_and_lag(
    services: Services, clock: FakeClock, http: TestClient[Any, Any]
) -> None:
    late = timedelta(seconds=90)
    async with services.sessions() as session, session.begin():
        await repo.upsert_scheduled(
            session, kind="metrics-test", unique_key="m1", due_at=clock() - late, now=clock()
        )

    async def handler(*_: Any) -> None:
        return None

    metrics = http.server.app[METRICS]
    scheduler = Scheduler(services, handlers={"metrics-test": handler}, passes=(), metrics=metrics)
    assert (await scheduler.tick()).done == 1
    await scheduler.tick()
    page = await scrape(http)
    assert page.value("probono_scheduler_ticks_total") == 2
    assert page.value("probono_scheduler_lag_seconds_count") == 1
    assert page.value("probono_scheduler_lag_seconds_sum") == late.total_seconds()
    async with services.sessions() as session:
        assert (await session.exec(select(ScheduledItem))).one().status == "done"


async def _queue(services: Services, *, pending: int, review: int) -> None:
    async with services.sessions() as session, session.begin():
        client = await repo.create_client(
            session, vault=services.vault, channel=Channel.SMS, address=PHONE
        )
        for i in range(pending + review):
            item = await repo.enqueue(
                session,
                vault=services.vault,
                client=client,
                text=f"message {i}",
                channel=Channel.SMS,
                due_at=services.clock(),
            )
            assert item is not None
            if i >= pending:
                msg = await session.get(Message, item.message_id)
                repo.hold_outbox_for_review(
                    session, item=item, msg=msg, reason="test", now=services.clock()
                )


async def test_the_backlogs_are_database_wide_and_alike_in_every_process(
    services: Services, settings: Settings, clock: FakeClock, http: TestClient[Any, Any]
) -> None:
    await _queue(services, pending=3, review=2)
    # A second process on the same database: a web-only replica, say.
    other = Services.build(settings.model_copy(update={"scheduler_enabled": False}), clock=clock)
    try:
        app = create_app(other.settings, services=other)
        async with TestClient(TestServer(app)) as second:
            pages = [await scrape(http), await scrape(second)]
    finally:
        await other.close()
    # Both report the same rows (so the README says: aggregate with max, a sum doubles them).
    for page in pages:
        assert page.value("probono_outbox_pending", scope=DATABASE_SCOPE) == 3
        assert page.value("probono_outbox_review", scope=DATABASE_SCOPE) == 2
    async with services.sessions() as session:
        statuses = sorted(o.status for o in (await session.exec(select(OutboxItem))).all())
    assert statuses == ["pending"] * 3 + ["review"] * 2

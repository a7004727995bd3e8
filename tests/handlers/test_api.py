"""The integration API: bearer-token auth, JSON validation with nothing changed on a 400, and
status changes and appointments that reach the client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.app import create_app
from bot.clock import FakeClock
from bot.config import Settings
from bot.services import Services
from storage import repo
from storage.models import Appointment, AuditLog, CaseStatusChange
from tests.casework import (
    LONG_STATUS,
    LONG_STATUS_REFUSAL,
    World,
    client_texts,
    open_case,
    reminder_rows,
)
from tests.conftest import make_settings

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _settings(database_url: str, tmp_path: Path, **extra: object) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        SCHEDULER_ENABLED="false",
        PROGRAM_NAME="Legal Aid Line",
        **extra,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return _settings(database_url, tmp_path, PROBONO_API_TOKEN=TOKEN)


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[Services]:
    svc = Services.build(settings, clock=clock)
    yield svc
    await svc.close()


@pytest.fixture
async def api(services: Services) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(services.settings, services=services))) as c:
        yield c


@pytest.fixture
async def world(services: Services) -> World:
    return await open_case(services)


async def history(services: Services, world: World) -> list[CaseStatusChange]:
    async with services.sessions() as session:
        return list(await repo.status_history(session, case_id=world.case_id))


async def appointments_of(services: Services, world: World) -> list[Appointment]:
    async with services.sessions() as session:
        rows = await session.exec(select(Appointment).where(Appointment.case_id == world.case_id))
        return list(rows.all())


# --------------------------------------------------------------------------- auth


async def test_without_a_configured_token_the_api_does_not_exist(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    services = Services.build(_settings(database_url, tmp_path), clock=clock)
    try:
        world = await open_case(services)
        async with TestClient(TestServer(create_app(services.settings, services=services))) as c:
            for path in ("status", "appointments"):
                resp = await c.post(
                    f"/api/cases/{world.reference}/{path}", json={"status": "x"}, headers=AUTH
                )
                assert resp.status == 404
            assert (await c.get("/api/openapi.json")).status == 404
        assert len(await history(services, world)) == 1
    finally:
        await services.close()


BAD_AUTH: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
]


async def test_a_missing_or_wrong_token_is_refused(
    api: TestClient[Any, Any], services: Services, world: World
) -> None:
    for headers in BAD_AUTH:
        for path in ("status", "appointments"):
            resp = await api.post(
                f"/api/cases/{world.reference}/{path}",
                json={"status": "closed"},
                headers=headers,
            )
            assert resp.status == 401, headers
            assert resp.headers["WWW-Authenticate"] == "Bearer"
            assert (await resp.json()) == {"error": "a valid bearer token is required"}
    assert len(await history(services, world)) == 1
    assert await client_texts(services) == []


# --------------------------------------------------------------------------- status


async def test_a_status_change_is_recorded_and_told(
    api: TestClient[Any, Any], services: Services, world: World, clock: FakeClock
) -> None:
    resp = await api.post(
        f"/api/cases/{world.reference.lower()}/status",
        json={"status": "  Hearing   scheduled "},
        headers=AUTH,
    )
    assert resp.status == 200
    assert await resp.json() == {
        "reference": world.reference,
        "status": "Hearing scheduled",
        "changed_at": clock().isoformat(),
    }
    rows = await history(services, world)
    assert [(r.status, r.source) for r in rows if r.source == "api"] == [
        ("Hearing scheduled", "api")
    ]
    assert await client_texts(services, kind="status") == [
        f"Legal Aid Line: news on your case {world.reference}: a court date has been set."
    ]
    async with services.sessions() as session:
        audit = (await session.exec(select(AuditLog).where(AuditLog.actor_kind == "api"))).one()
    assert (audit.action, audit.case_id) == ("case.status", world.case_id)


STATUS_ERRORS: list[tuple[bytes, str]] = [
    (b"not json", "the body must be JSON"),
    (b"", "the body must be a JSON object"),
    (b"[1, 2]", "the body must be a JSON object"),
    (b"{}", "status is required"),
    (b'{"status": 5}', "status must be a string"),
    (b'{"status": "   "}', "status must not be empty"),
    (b'{"status": "' + b"x" * 65 + b'"}', "status is longer than 64 characters"),
    (b'{"status": "closed", "notify": false}', "unknown field: notify"),
]


async def test_status_validation(
    api: TestClient[Any, Any], services: Services, world: World
) -> None:
    for body, error in STATUS_ERRORS:
        resp = await api.post(
            f"/api/cases/{world.reference}/status",
            data=body,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert resp.status == 400, body
        assert await resp.json() == {"error": error}
    assert len(await history(services, world)) == 1
    assert await client_texts(services) == []


async def test_a_too_long_status_is_refused_in_the_words_of_the_cli_and_telegram(
    api: TestClient[Any, Any], services: Services, world: World
) -> None:
    resp = await api.post(
        f"/api/cases/{world.reference}/status", json={"status": LONG_STATUS}, headers=AUTH
    )
    assert resp.status == 400
    assert await resp.json() == {"error": LONG_STATUS_REFUSAL}
    assert len(await history(services, world)) == 1
    assert await client_texts(services) == []


async def test_an_unknown_case_is_404(api: TestClient[Any, Any]) -> None:
    resp = await api.post("/api/cases/ZZZ-ZZZ/status", json={"status": "closed"}, headers=AUTH)
    assert resp.status == 404
    assert await resp.json() == {"error": "no case ZZZ-ZZZ"}
    resp = await api.post(
        "/api/cases/ZZZ-ZZZ/appointments",
        json={"starts_at": "2026-03-10T09:30", "place": "Room 4"},
        headers=AUTH,
    )
    assert resp.status == 404


# --------------------------------------------------------------------------- appointments


async def test_an_appointment_is_booked_told_and_reminded(
    api: TestClient[Any, Any], services: Services, world: World
) -> None:
    resp = await api.post(
        f"/api/cases/{world.reference}/appointments",
        json={
            "starts_at": "2026-03-12T09:30",
            "timezone": "America/Chicago",
            "place": "Cook County Courthouse, Room 1402",
            "kind": "hearing",
            "bring": "the eviction notice",
        },
        headers=AUTH,
    )
    assert resp.status == 201
    body = await resp.json()
    assert body == {
        "id": body["id"],
        "reference": world.reference,
        "starts_at": "2026-03-12T14:30:00+00:00",  # 09:30 in Chicago, UTC-5 before DST
        "timezone": "America/Chicago",
        "kind": "hearing",
        "reminders": [
            "2026-03-05T14:30:00+00:00",
            "2026-03-11T14:30:00+00:00",
            "2026-03-12T12:30:00+00:00",
        ],
    }
    assert len(await reminder_rows(services, body["id"])) == 3
    [told] = await client_texts(services, kind="appointment")
    # Shown in the client's own zone (New York): 10:30.
    assert told == (
        "Legal Aid Line: your court hearing is booked for Thu, Mar 12, 2026, 10:30 AM at "
        "Cook County Courthouse, Room 1402. Please bring: the eviction notice. "
        "We will remind you before it."
    )


async def test_an_appointment_with_an_offset_needs_no_timezone(
    api: TestClient[Any, Any], services: Services, world: World
) -> None:
    resp = await api.post(
        f"/api/cases/{world.reference}/appointments",
        json={"starts_at": "2026-03-12T09:30:00-05:00", "place": "Clinic"},
        headers=AUTH,
    )
    assert resp.status == 201
    body = await resp.json()
    assert (body["starts_at"], body["kind"], body["timezone"]) == (
        "2026-03-12T14:30:00+00:00",
        "meeting",
        "America/New_York",  # the client's
    )


APPOINTMENT_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({"place": "Room 4"}, "starts_at is required"),
    ({"starts_at": "2026-03-12T09:30"}, "place is required"),
    ({"starts_at": "2026-03-12T09:30", "place": "  "}, "place must not be empty"),
    ({"starts_at": "next tuesday", "place": "Room 4"}, "is not an ISO 8601 date and time"),
    ({"starts_at": "2026-03-12", "place": "Room 4"}, "has no time of day"),
    ({"starts_at": "2026-03-01T09:30", "place": "Room 4"}, "already passed"),
    ({"starts_at": "2026-03-08T02:30", "place": "Room 4"}, "does not exist in"),
    (
        {"starts_at": "2026-03-12T09:30", "place": "Room 4", "timezone": "Mars/Olympus"},
        "unknown time zone",
    ),
    (
        {"starts_at": "2026-03-12T09:30", "place": "Room 4", "kind": "party"},
        "kind must be one of hearing, meeting, call",
    ),
    ({"starts_at": 20260312, "place": "Room 4"}, "starts_at must be a string"),
    ({"starts_at": "2026-03-12T09:30", "place": "x" * 301}, "place is longer than 300"),
    ({"starts_at": "2026-03-12T09:30", "place": "Room 4", "room": 4}, "unknown field: room"),
]


async def test_appointment_validation(
    api: TestClient[Any, Any], services: Services, world: World
) -> None:
    for body, error in APPOINTMENT_ERRORS:
        resp = await api.post(f"/api/cases/{world.reference}/appointments", json=body, headers=AUTH)
        assert resp.status == 400, body
        assert error in (await resp.json())["error"], (body, error)
    assert await appointments_of(services, world) == []
    assert await client_texts(services) == []
    async with services.sessions() as session:
        assert (
            await session.exec(select(AuditLog).where(col(AuditLog.actor_kind) == "api"))
        ).all() == []


# --------------------------------------------------------------------------- OpenAPI


async def _document(api: TestClient[Any, Any]) -> dict[str, Any]:
    resp = await api.get("/api/openapi.json")  # no token: integrators read it before they have one
    assert resp.status == 200
    doc: dict[str, Any] = await resp.json()
    return doc


def _resolve(doc: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
    prefix = "#/components/schemas/"
    assert ref["$ref"].startswith(prefix)
    schema: dict[str, Any] = doc["components"]["schemas"][ref["$ref"].removeprefix(prefix)]
    return schema


async def test_the_openapi_document_lists_each_route_with_its_request_schema(
    api: TestClient[Any, Any],
) -> None:
    doc = await _document(api)
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    served = {
        resource.canonical
        for resource in api.server.app.router.resources()
        if resource.canonical.startswith("/api/") and resource.canonical != "/api/openapi.json"
    }
    assert (
        set(doc["paths"])
        == served
        == {
            "/api/cases/{ref}/status",
            "/api/cases/{ref}/appointments",
        }
    )
    bodies = {
        path: _resolve(doc, op["post"]["requestBody"]["content"]["application/json"]["schema"])
        for path, op in doc["paths"].items()
    }
    status = bodies["/api/cases/{ref}/status"]
    assert status["required"] == ["status"] and status["additionalProperties"] is False
    assert status["properties"]["status"]["type"] == "string"
    booking = bodies["/api/cases/{ref}/appointments"]
    assert sorted(booking["required"]) == ["place", "starts_at"]
    assert set(booking["properties"]) == {"starts_at", "place", "timezone", "kind", "bring"}
    assert booking["additionalProperties"] is False
    for op in doc["paths"].values():
        assert {"400", "401", "404"} <= set(op["post"]["responses"])
        assert op["post"]["parameters"][0]["name"] == "ref"
    booked = _resolve(
        doc,
        doc["paths"]["/api/cases/{ref}/appointments"]["post"]["responses"]["201"]["content"][
            "application/json"
        ]["schema"],
    )
    assert {"id", "reference", "starts_at", "reminders"} <= set(booked["properties"])


async def test_each_described_field_is_the_one_a_400_names(
    api: TestClient[Any, Any], services: Services, world: World
) -> None:
    doc = await _document(api)
    for path, op in doc["paths"].items():
        body = _resolve(doc, op["post"]["requestBody"]["content"]["application/json"]["schema"])
        url = path.replace("{ref}", world.reference)
        good = {name: "x" for name in body["required"]}
        for name in body["properties"]:
            # A number where the document says string: the 400 names that field.
            resp = await api.post(url, json={**good, name: 7}, headers=AUTH)
            assert resp.status == 400
            assert await resp.json() == {"error": f"{name} must be a string"}
        for name in body["required"]:
            missing = {k: v for k, v in good.items() if k != name}
            resp = await api.post(url, json=missing, headers=AUTH)
            assert await resp.json() == {"error": f"{name} is required"}
        resp = await api.post(url, json={**good, "colour": "red"}, headers=AUTH)
        assert await resp.json() == {"error": "unknown field: colour"}
    assert len(await history(services, world)) == 1  # nothing changed
    assert await appointments_of(services, world) == []

"""Integration API: a case management system pushes status changes and appointments.

Every route needs ``Authorization: Bearer <PROBONO_API_TOKEN>``. Without the setting the
API does not exist (404); a missing or wrong token is 401. Bodies are JSON objects, answers
are JSON, and a bad field is a 400 naming it, with nothing changed.

    POST /api/cases/{ref}/status        {"status": "hearing scheduled"}
    POST /api/cases/{ref}/appointments  {"starts_at": "2026-03-10T09:30", "place": "...",
                                         "timezone": "America/New_York", "kind": "hearing",
                                         "bring": "your lease"}
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from aiohttp import web

from bot.appkeys import SERVICES
from bot.casework import appointments
from bot.casework.base import API as ACTOR
from bot.casework.base import CaseworkError
from bot.casework.status import change_status
from storage import repo
from storage.db import transaction
from storage.models import Case

STATUS_FIELDS = frozenset({"status"})
APPOINTMENT_FIELDS = frozenset({"starts_at", "place", "timezone", "kind", "bring"})


class BadRequest(Exception):
    """A 400 with this message."""


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def _authorized(request: web.Request) -> web.Response | None:
    """None when the bearer token matches; else the answer to give."""
    configured = request.app[SERVICES].settings.probono_api_token
    expected = configured.get_secret_value() if configured is not None else ""
    if not expected:
        return _json_error(404, "not found")  # no token set: the API is off
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    # Compared in constant time: how long a wrong token takes must not tell how close it was.
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.encode()
    ):
        return _json_error(
            401, "a valid bearer token is required", **{"WWW-Authenticate": "Bearer"}
        )
    return None


async def _body(request: web.Request, allowed: frozenset[str]) -> dict[str, Any]:
    try:
        data = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequest(f"unknown field: {', '.join(unknown)}")
    return data


def _text(data: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


async def _case(request: web.Request, session: Any) -> Case:
    ref = request.match_info["ref"]
    case = await repo.get_case(session, reference=ref)
    if case is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"no case {repo.normalize_reference(ref)}"}),
            content_type="application/json",
        )
    return case


async def post_status(request: web.Request) -> web.Response:
    """Records a case's new status and tells the client."""
    if (denied := _authorized(request)) is not None:
        return denied
    services = request.app[SERVICES]
    try:
        data = await _body(request, STATUS_FIELDS)
        text = _text(data, "status", required=True)
        # A refusal rolls the transaction back: nothing recorded, nothing queued.
        async with transaction(services.sessions) as session:
            case = await _case(request, session)
            done = await change_status(session, services, actor=ACTOR, case=case, text=text)
    except (BadRequest, CaseworkError) as exc:
        return _json_error(400, str(exc))
    return web.json_response(
        {
            "reference": done.reference,
            "status": done.status,
            "changed_at": done.changed_at.isoformat(),
        }
    )


async def post_appointment(request: web.Request) -> web.Response:
    """Books an appointment, tells the client and plans the reminders."""
    if (denied := _authorized(request)) is not None:
        return denied
    services = request.app[SERVICES]
    try:
        data = await _body(request, APPOINTMENT_FIELDS)
        raw_at = _text(data, "starts_at", required=True) or ""
        place = _text(data, "place", required=True)
        timezone = _text(data, "timezone", required=False)
        kind = _text(data, "kind", required=False)
        bring = _text(data, "bring", required=False)
        # An error rolls the whole booking back: nothing stored, nothing queued.
        async with transaction(services.sessions) as session:
            case = await _case(request, session)
            booked = await appointments.book(
                session,
                services,
                case,
                raw_at,
                place,
                kind=kind,
                timezone=timezone,
                bring=bring,
                actor=ACTOR,
            )
    except (BadRequest, CaseworkError) as exc:
        return _json_error(400, str(exc))
    appt = booked.appointment
    return web.json_response(
        {
            "id": appt.id,
            "reference": booked.reference,
            "starts_at": appt.starts_at.isoformat(),
            "timezone": appt.timezone,
            "kind": appt.kind,
            "reminders": [due.isoformat() for due in booked.reminders],
        },
        status=201,
    )


def setup(app: web.Application) -> None:
    """Adds the integration routes."""
    app.router.add_post("/api/cases/{ref}/status", post_status)
    app.router.add_post("/api/cases/{ref}/appointments", post_appointment)

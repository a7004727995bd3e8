"""Integration API: a case management system pushes status changes and appointments.

Every route needs ``Authorization: Bearer <PROBONO_API_TOKEN>``. Without the setting the
API does not exist (404); a missing or wrong token is 401. Bodies are JSON objects, answers
are JSON, and a bad field is a 400 naming it, with nothing changed.

    POST /api/cases/{ref}/status        {"status": "hearing scheduled"}
    POST /api/cases/{ref}/appointments  {"starts_at": "2026-03-10T09:30", "place": "...",
                                         "timezone": "America/New_York", "kind": "hearing",
                                         "bring": "your lease"}
    GET  /api/openapi.json              this API described (OpenAPI 3.1), no token needed

The pydantic models below are the one description of each body: they check its shape and
types, and the OpenAPI document is built from their JSON schemas. Whether a status or a date
is acceptable is the casework use cases' to say (bot/casework/), as for the CLI and Telegram.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, ValidationError
from pydantic.json_schema import JsonSchemaMode

from bot.appkeys import SERVICES
from bot.casework import appointments
from bot.casework.base import API as ACTOR
from bot.casework.base import CaseworkError
from bot.casework.status import change_status
from storage import repo
from storage.db import transaction
from storage.models import Case

OPENAPI_PATH = "/api/openapi.json"
_SCHEMAS = "#/components/schemas/{model}"


class _Body(BaseModel):
    """A request body: exactly these fields, each of its JSON type (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class StatusChange(_Body):
    """A case's new status, as the program's staff would write it."""

    status: str = Field(description="The new status (a program status or free text).")


class AppointmentBooking(_Body):
    """An appointment to book on the case; the client is told and reminded."""

    starts_at: str = Field(
        description="ISO 8601 date and time, e.g. 2026-03-10T09:30 (local to `timezone`) "
        "or with an offset.",
    )
    place: str = Field(description="Where, as the client should read it.")
    timezone: str | None = Field(
        None, description="IANA time zone of `starts_at`; the client's when left out."
    )
    kind: str | None = Field(None, description="hearing, meeting or call.")
    bring: str | None = Field(None, description="What the client should bring.")


# Answers keep Python's ISO 8601 form ("+00:00", as the API always wrote), not pydantic's "Z".
IsoDateTime = Annotated[
    datetime, PlainSerializer(datetime.isoformat, return_type=str, when_used="json")
]


class StatusChanged(BaseModel):
    """The status as recorded."""

    reference: str
    status: str
    changed_at: IsoDateTime


class AppointmentBooked(BaseModel):
    """The appointment as booked, and when its reminders go."""

    id: int
    reference: str
    starts_at: IsoDateTime
    timezone: str
    kind: str
    reminders: list[IsoDateTime]


class ApiError(BaseModel):
    """Every refusal: one line saying what is wrong."""

    error: str


class BadRequest(Exception):
    """A 400 with this message."""


Model = TypeVar("Model", bound=_Body)


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


def _first_problem(exc: ValidationError) -> str:
    """One line naming the field, from the model's own errors; unknown fields first."""
    errors = exc.errors()
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return f"unknown field: {', '.join(unknown)}"
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"])
    if not field:
        return "the body must be a JSON object"
    if first["type"] == "missing":
        return f"{field} is required"
    if first["type"] == "string_type":
        return f"{field} must be a string"
    return f"{field}: {first['msg']}"


async def _body(request: web.Request, model: type[Model]) -> Model:
    try:
        data = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(_first_problem(exc)) from None


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
        body = await _body(request, StatusChange)
        # A refusal rolls the transaction back: nothing recorded, nothing queued.
        async with transaction(services.sessions) as session:
            case = await _case(request, session)
            done = await change_status(session, services, actor=ACTOR, case=case, text=body.status)
    except (BadRequest, CaseworkError) as exc:
        return _json_error(400, str(exc))
    answer = StatusChanged(reference=done.reference, status=done.status, changed_at=done.changed_at)
    return web.json_response(answer.model_dump(mode="json"))


async def post_appointment(request: web.Request) -> web.Response:
    """Books an appointment, tells the client and plans the reminders."""
    if (denied := _authorized(request)) is not None:
        return denied
    services = request.app[SERVICES]
    try:
        body = await _body(request, AppointmentBooking)
        # An error rolls the whole booking back: nothing stored, nothing queued.
        async with transaction(services.sessions) as session:
            case = await _case(request, session)
            booked = await appointments.book(
                session,
                services,
                case,
                body.starts_at,
                body.place,
                kind=body.kind,
                timezone=body.timezone,
                bring=body.bring,
                actor=ACTOR,
            )
    except (BadRequest, CaseworkError) as exc:
        return _json_error(400, str(exc))
    appt = booked.appointment
    assert appt.id is not None
    answer = AppointmentBooked(
        id=appt.id,
        reference=booked.reference,
        starts_at=appt.starts_at,
        timezone=appt.timezone,
        kind=appt.kind,
        reminders=list(booked.reminders),
    )
    return web.json_response(answer.model_dump(mode="json"), status=201)


# --------------------------------------------------------------------------- OpenAPI


@dataclass(frozen=True)
class Route:
    """One API route: what it takes, what it answers, and the handler (routes and document)."""

    path: str
    handler: Callable[[web.Request], Awaitable[web.Response]]
    body: type[_Body]
    answer: type[BaseModel]
    status: int
    summary: str


ROUTES = (
    Route(
        "/api/cases/{ref}/status",
        post_status,
        StatusChange,
        StatusChanged,
        200,
        "Record a case's new status and tell the client",
    ),
    Route(
        "/api/cases/{ref}/appointments",
        post_appointment,
        AppointmentBooking,
        AppointmentBooked,
        201,
        "Book an appointment, tell the client and plan the reminders",
    ),
)


def _schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    """Adds the model's JSON schema to the components; returns a reference to it."""
    # A body is described as it is read; an answer as it is written.
    mode: JsonSchemaMode = "validation" if issubclass(model, _Body) else "serialization"
    schema = model.model_json_schema(ref_template=_SCHEMAS, mode=mode)
    for name, nested in schema.pop("$defs", {}).items():
        schemas[name] = nested
    schemas[model.__name__] = schema
    return {"$ref": _SCHEMAS.format(model=model.__name__)}


def _json(description: str, ref: dict[str, str]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref}}}


def openapi_document() -> dict[str, Any]:
    """The API as an OpenAPI 3.1 document, built from the models' JSON schemas."""
    schemas: dict[str, Any] = {}
    error = _schema(ApiError, schemas)
    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths[route.path] = {
            "post": {
                "operationId": route.handler.__name__,
                "summary": route.summary,
                "parameters": [
                    {
                        "name": "ref",
                        "in": "path",
                        "required": True,
                        "description": "The case reference, e.g. K7M-4PX",
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _schema(route.body, schemas)}},
                },
                "responses": {
                    str(route.status): _json("Done", _schema(route.answer, schemas)),
                    "400": _json("A bad field, named; nothing changed", error),
                    "401": _json("Missing or wrong bearer token", error),
                    "404": _json("No such case, or the API is off", error),
                },
            }
        }
    try:
        version = package_version("probono-bot")
    except PackageNotFoundError:  # running from a checkout that was never installed
        version = "0"
    return {
        "openapi": "3.1.0",
        "info": {"title": "probono-bot integration API", "version": version},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def get_openapi(request: web.Request) -> web.Response:
    """Serves the API's OpenAPI document (no token needed; 404 when the API is off)."""
    token = request.app[SERVICES].settings.probono_api_token
    if token is None or not token.get_secret_value():
        return _json_error(404, "not found")
    return web.json_response(openapi_document())


def setup(app: web.Application) -> None:
    """Adds the integration routes and their description."""
    for route in ROUTES:
        app.router.add_post(route.path, route.handler)
    app.router.add_get(OPENAPI_PATH, get_openapi)

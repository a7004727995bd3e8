"""The real application with Twilio pointed at the fake server, and signed webhook helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.app import create_app
from bot.appkeys import DISPATCHER
from bot.handlers.inbound import PROCESSOR
from bot.services import Services
from storage import repo
from storage.models import Client, Direction, Message, OutboxItem
from tests.conftest import make_settings
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PUBLIC_BASE_URL,
    FakeTwilio,
    form_body,
    inbound_params,
    running_fake_twilio,
    sign,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class SmsApp:
    """A running app, its services, the fake Twilio behind it and an HTTP client to it."""

    app: web.Application
    services: Services
    fake: FakeTwilio
    http: TestClient[Any, Any]

    async def post(
        self,
        params: Mapping[str, str] | None,
        *,
        path: str = "/twilio/sms",
        signature: str | None = "sign",
        signed_params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ClientResponse:
        """POST a webhook; by default signed as Twilio would sign exactly these parameters."""
        params = params or {}
        all_headers = dict(FORM)
        if signature == "sign":
            signature = sign(PUBLIC_BASE_URL + path, signed_params or params)
        if signature is not None:
            all_headers["X-Twilio-Signature"] = signature
        all_headers.update(headers or {})
        data = body if body is not None else form_body(params)
        return await self.http.post(path, data=data, headers=all_headers)

    async def text(self, phone: str, body: str = "", **kw: Any) -> tuple[int, dict[str, str]]:
        params = inbound_params(from_=phone, body=body, **kw)
        resp = await self.post(params)
        await resp.read()
        return resp.status, params

    async def settle(self) -> None:
        """Process everything stored and send everything due."""
        for _ in range(3):
            await self.app[PROCESSOR].drain()
            await self.app[DISPATCHER].drain()

    async def inbound(self) -> list[Message]:
        async with self.services.sessions() as session:
            rows = await session.exec(
                select(Message).where(Message.direction == Direction.IN).order_by(col(Message.id))
            )
            return list(rows.all())

    async def outbox(self) -> list[OutboxItem]:
        async with self.services.sessions() as session:
            return list((await session.exec(select(OutboxItem).order_by(col(OutboxItem.id)))).all())

    async def client_for(self, phone: str) -> Client | None:
        async with self.services.sessions() as session:
            return await repo.find_client_by_address(
                session, vault=self.services.vault, channel="sms", address=phone
            )

    async def wait_for(self, condition: Callable[[], bool], within: float = 3.0) -> None:
        """Poll (tiny sleeps) until the condition holds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not condition():
            if loop.time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.005)


@asynccontextmanager
async def sms_app(database_url: str, tmp_path: Path, **overrides: object) -> AsyncIterator[SmsApp]:
    """The application as `probono serve` builds it, Twilio configured against the fake."""
    async with running_fake_twilio() as fake:
        values: dict[str, object] = {
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": fake.base_url,
            "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "SMS_SEND_RATE": 1000,
            "PROGRAM_NAME": "Legal Aid Line",
            "PROGRAM_CONTACT": "Call 555-0100 weekdays.",
        }
        values.update(overrides)
        settings = make_settings(database_url, tmp_path / "data", **values)
        services = Services.build(settings)
        app = create_app(settings, services=services)
        http: TestClient[Any, Any] = TestClient(TestServer(app))
        await http.start_server()
        try:
            yield SmsApp(app=app, services=services, fake=fake, http=http)
        finally:
            await http.close()
            await services.close()

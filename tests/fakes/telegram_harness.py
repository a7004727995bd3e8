"""The whole app on loopback with the fake Telegram Bot API and the fake Twilio.

``tg`` is a fixture: the real create_app (webhook routes, inbound processor, dispatcher,
python-telegram-bot) talking to fakes on port 0, with an injected clock. ``settle()``
waits until every stored message is processed and every due outbox row is sent, so a test
can assert on what the fakes received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.app import create_app
from bot.channels.telegram import ChatPacer, TelegramSender
from bot.clock import FakeClock
from bot.conversations import relay
from bot.dispatch import Dispatcher
from bot.handlers.inbound import PROCESSOR
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import (
    AuditLog,
    Case,
    Channel,
    Client,
    Message,
    OutboxItem,
    OutboxStatus,
    Role,
    Staff,
)
from tests.conftest import make_settings
from tests.fakes import fake_twilio
from tests.fakes.fake_telegram import TOKEN, FakeTelegram
from tests.fakes.telegram_updates import Updates, User, group_chat

SECRET = "webhook-Secret_0123456789"
GROUP_ID = -1001234567890
PUBLIC_URL = fake_twilio.PUBLIC_BASE_URL


@dataclass
class Harness:
    """Everything a Telegram test drives and looks at."""

    fake: FakeTelegram
    twilio: fake_twilio.FakeTwilio
    services: Services
    app: web.Application
    http: TestClient[Any, Any]
    clock: FakeClock
    updates: Updates

    # ----------------------------------------------------------------- inbound

    async def post(self, update: dict[str, Any], *, secret: str | None = SECRET) -> int:
        """POST an update to the webhook as Telegram would; returns the HTTP status."""
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        resp = await self.http.post("/telegram/webhook", json=update, headers=headers)
        await resp.read()
        return resp.status

    async def send(self, update: dict[str, Any]) -> None:
        """Deliver an update and wait until everything it caused has gone out."""
        assert await self.post(update) == 200
        await self.settle()

    async def sms(self, phone: str, body: str) -> None:
        """A signed incoming SMS at /twilio/sms, then settle."""
        params = fake_twilio.inbound_params(from_=phone, body=body)
        url = f"{PUBLIC_URL}/twilio/sms"
        resp = await self.http.post(
            "/twilio/sms",
            data=fake_twilio.form_body(params),
            headers={
                "X-Twilio-Signature": fake_twilio.sign(url, params),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert resp.status == 200, await resp.text()
        await self.settle()

    async def sms_status(self, sid: str, status: str) -> None:
        params = fake_twilio.status_params(message_sid=sid, status=status)
        url = f"{PUBLIC_URL}/twilio/status"
        resp = await self.http.post(
            "/twilio/status",
            data=fake_twilio.form_body(params),
            headers={
                "X-Twilio-Signature": fake_twilio.sign(url, params),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert resp.status in (200, 204), await resp.text()

    # ----------------------------------------------------------------- settling

    async def settle(self, *, rounds: int = 50) -> None:
        """Process every stored message and send every due row (background loops included)."""
        processor = self.app[PROCESSOR]
        dispatcher = Dispatcher(self.services)
        for _ in range(rounds):
            await processor.drain()
            await processor.sweep()
            await processor.drain()
            await dispatcher.drain()
            if await self._busy():  # the app's own background loops are mid-way
                await asyncio.sleep(0.01)
                continue
            # Quiet now: what the attorneys should hear about their replies is final.
            if not await relay.report_deliveries(self.services):
                return
        raise AssertionError("the app did not settle")

    async def _busy(self) -> bool:
        now = self.clock()
        async with self.services.sessions() as session:
            rows = await session.exec(
                select(OutboxItem).where(
                    (col(OutboxItem.status) == OutboxStatus.SENDING)
                    | (
                        (col(OutboxItem.status) == OutboxStatus.PENDING)
                        & (col(OutboxItem.due_at) <= now)
                    )
                )
            )
            busy = [r for r in rows.all() if r.channel in self.services.senders]
            unprocessed = await repo.clients_with_unprocessed_inbound(session)
        return bool(busy or unprocessed)

    # ----------------------------------------------------------------- people and cases

    async def add_staff(self, name: str, role: str, telegram_id: int) -> Staff:
        async with transaction(self.services.sessions) as session:
            staff = await repo.create_staff(
                session, vault=self.services.vault, name=name, role=role, telegram_id=telegram_id
            )
        self.fake.add_chat(telegram_id)
        return staff

    async def add_sms_client(
        self, phone: str, *, name: str = "Rosa Diaz", language: str = "en"
    ) -> Client:
        async with transaction(self.services.sessions) as session:
            client = await repo.create_client(
                session,
                vault=self.services.vault,
                channel=Channel.SMS,
                address=phone,
                name=name,
                language=language,
            )
        return client

    async def add_telegram_client(self, user: User, *, name: str = "Ana Ruiz") -> Client:
        async with transaction(self.services.sessions) as session:
            client = await repo.create_client(
                session,
                vault=self.services.vault,
                channel=Channel.TELEGRAM,
                address=str(user.id),
                name=name,
            )
        self.fake.add_chat(user.id)
        return client

    async def open_case(
        self, client: Client, *, category: str = "housing", attorney: Staff | None = None
    ) -> Case:
        async with transaction(self.services.sessions) as session:
            case = await repo.create_case(session, client=client, category=category)
            if attorney is not None:
                case.assigned_staff_id = attorney.id
                session.add(case)
        return case

    async def assign(self, case: Case, attorney: Staff) -> None:
        async with transaction(self.services.sessions) as session:
            fresh = await session.get(Case, case.id)
            assert fresh is not None
            fresh.assigned_staff_id = attorney.id
            session.add(fresh)

    # ----------------------------------------------------------------- looking

    async def outbox(self, *, kind: str | None = None) -> list[OutboxItem]:
        async with self.services.sessions() as session:
            query = select(OutboxItem).order_by(col(OutboxItem.id))
            if kind is not None:
                query = query.where(OutboxItem.kind == kind)
            return list((await session.exec(query)).all())

    async def audits(self, action: str | None = None) -> list[AuditLog]:
        async with self.services.sessions() as session:
            query = select(AuditLog).order_by(col(AuditLog.id))
            if action is not None:
                query = query.where(AuditLog.action == action)
            return list((await session.exec(query)).all())

    async def body(self, item: OutboxItem) -> str:
        """The text of an outbox row, decrypted as the dispatcher would."""
        async with self.services.sessions() as session:
            msg = await session.get(Message, item.message_id)
            client = await session.get(Client, item.client_id) if item.client_id else None
            assert msg is not None
            return repo.message_body(self.services.vault, client, msg)

    async def reload(self, obj: Any) -> Any:
        async with self.services.sessions() as session:
            return await session.get(type(obj), obj.id)

    def card_of(self, chat_id: int, reference: str) -> dict[str, Any]:
        """The bot message (as reply_to_message) of the last card about ``reference``."""
        for call in reversed(self.fake.sent(chat_id)):
            if call.text.startswith(f"Case {reference} ·") and call.result is not None:
                return self.updates.bot_message(chat_id, call.message_id, call.text)
        raise AssertionError(f"no card about {reference} in chat {chat_id}")


@pytest.fixture
async def tg(database_url: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Harness]:
    """The app with Telegram and SMS, both against local fakes that fail on surprises."""
    fake = FakeTelegram()
    await fake.start()
    async with fake_twilio.running_fake_twilio() as twilio:
        settings = make_settings(
            database_url,
            tmp_path / "data",
            TELEGRAM_BOT_TOKEN=TOKEN,
            TELEGRAM_API_BASE_URL=fake.url,
            TELEGRAM_WEBHOOK_SECRET=SECRET,
            TELEGRAM_STAFF_CHAT_ID=GROUP_ID,
            PUBLIC_BASE_URL=PUBLIC_URL,
            TWILIO_ACCOUNT_SID=fake_twilio.ACCOUNT_SID,
            TWILIO_AUTH_TOKEN=fake_twilio.AUTH_TOKEN,
            TWILIO_FROM_NUMBER=fake_twilio.FROM_NUMBER,
            TWILIO_API_BASE_URL=twilio.base_url,
            # The send rate is shared by every dispatcher on the database (the app's own and
            # settle()'s), in real seconds: at the default 1 SMS/s a scenario of a dozen
            # answers would wait that long. What the rate does is tested in test_dispatch*.
            SMS_SEND_RATE=1000,
            TELEGRAM_SEND_RATE=1000,
        )
        services = Services.build(settings, clock=clock)
        app = create_app(settings, services=services)
        fake.add_chat(GROUP_ID, "supergroup")
        try:
            async with TestClient(TestServer(app)) as http:
                sender = services.senders[Channel.TELEGRAM]
                assert isinstance(sender, TelegramSender)
                # The per-chat pace is tested on its own; here real time hardly moves.
                sender.pacer = ChatPacer(burst=1000)
                yield Harness(fake, twilio, services, app, http, clock, Updates())
        finally:
            await services.close()
            await fake.close()
    fake.check()


__all__ = ["GROUP_ID", "SECRET", "Harness", "Role", "User", "group_chat", "tg"]

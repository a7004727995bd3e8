"""One road in: a Telegram message and an SMS are stored by the same function and routed by
the same router, so a STOP is an opt-out on either channel."""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select

from bot.handlers import inbound, router
from storage.models import ChannelIdentity, ConsentEvent
from tests.fakes.telegram_harness import Harness, User, tg

__all__ = ["tg"]

PHONE = "+12025550143"
ANA = User(8001, "Ana")


async def test_stop_on_telegram_and_on_sms_take_the_one_road(
    tg: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    roads: list[tuple[str, router.Road]] = []
    stored: list[str] = []
    routed: list[str] = []
    real_receive, real_store, real_route = router.receive, inbound.store, inbound.route

    async def receive(services: Any, message: Any, **kw: Any) -> router.Road:
        road = await real_receive(services, message, **kw)
        roads.append((message.channel, road))
        return road

    async def store(services: Any, message: Any) -> Any:
        stored.append(message.channel)
        return await real_store(services, message)

    async def route(session: Any, services: Any, client: Any, row: Any, fetched: Any) -> None:
        routed.append(row.channel)
        await real_route(session, services, client, row, fetched)

    monkeypatch.setattr(router, "receive", receive)
    monkeypatch.setattr(inbound, "store", store)
    monkeypatch.setattr(inbound, "route", route)
    await tg.add_sms_client(PHONE)
    await tg.add_telegram_client(ANA)

    await tg.sms(PHONE, "STOP")
    await tg.send(tg.updates.text(ANA, "STOP"))

    assert roads == [("sms", router.Road.CLIENT), ("telegram", router.Road.CLIENT)]
    assert stored == ["sms", "telegram"] and routed == ["sms", "telegram"]
    async with tg.services.sessions() as session:
        events = (await session.exec(select(ConsentEvent).order_by(col(ConsentEvent.id)))).all()
        idents = (await session.exec(select(ChannelIdentity))).all()
    assert [(e.channel, e.kind, e.source) for e in events] == [
        ("sms", "opt_out", "keyword"),
        ("telegram", "opt_out", "keyword"),
    ]
    assert all(i.opted_out_at is not None for i in idents) and len(idents) == 2
    # Each channel is told once, in the same words.
    (by_sms,) = tg.twilio.sent_to(PHONE)
    (by_telegram,) = tg.fake.sent(ANA.id)
    assert by_sms.body == by_telegram.text and "unsubscribed" in by_sms.body.lower()


async def test_linking_is_a_road_of_chat_apps_only(
    tg: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    roads: list[tuple[str, router.Road]] = []
    real_receive = router.receive

    async def receive(services: Any, message: Any, **kw: Any) -> router.Road:
        road = await real_receive(services, message, **kw)
        roads.append((message.channel, road))
        return road

    monkeypatch.setattr(router, "receive", receive)
    await tg.add_sms_client(PHONE)
    await tg.add_telegram_client(ANA)

    await tg.sms(PHONE, "/link")
    await tg.send(tg.updates.text(ANA, "/link"))

    assert roads == [("sms", router.Road.CLIENT), ("telegram", router.Road.LINK)]
    (asked,) = tg.fake.sent(ANA.id)
    assert asked.text == "Tap “Share my phone number” below to connect this chat to your case."

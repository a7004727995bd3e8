"""Telegram as a client channel, through the real app: the webhook's secret, store-once,
intake with buttons and typed answers, linking an SMS client, media, blocking, flood limits,
and long polling when there is no public URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, func, select

from bot.app import create_app
from bot.clock import FakeClock
from bot.core import Reply
from bot.i18n import gettext
from bot.outgoing import queue_reply
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import (
    Channel,
    ChannelIdentity,
    Client,
    ConsentEvent,
    Document,
    Message,
    OutboxStatus,
)
from tests.conftest import make_settings
from tests.fakes.fake_telegram import TOKEN, FakeTelegram
from tests.fakes.telegram_harness import Harness, User, tg
from tests.fakes.telegram_updates import Updates

__all__ = ["tg"]

ANA = User(8001, "Ana")
SAM = User(8002, "Sam")
PHONE = "+12025550143"


async def _count(tg: Harness, model: type) -> int:
    async with tg.services.sessions() as session:
        return int((await session.exec(select(func.count()).select_from(model))).one())


async def test_missing_or_wrong_secret_is_refused_with_no_effect(tg: Harness) -> None:
    tg.fake.add_chat(ANA.id)
    update = tg.updates.text(ANA, "hello")
    for secret in (None, "", "wrong", "webhook-Secret_012345678", "webhook-Secret_0123456789x"):
        assert await tg.post(update, secret=secret) == 403
    await tg.settle()
    assert await _count(tg, Message) == 0 and await _count(tg, Client) == 0
    assert tg.fake.sent() == []
    metrics = await (await tg.http.get("/metrics")).text()
    assert 'probono_webhook_rejected_total{channel="telegram"} 5.0' in metrics


async def test_same_update_id_is_handled_once(tg: Harness) -> None:
    tg.fake.add_chat(ANA.id)
    update = tg.updates.text(ANA, "hello")
    await tg.send(update)
    first = len(tg.fake.sent(ANA.id))
    assert first >= 2  # the link offer and the first intake question
    await tg.send(update)
    await tg.send(update)
    assert len(tg.fake.sent(ANA.id)) == first
    assert await _count(tg, Message) == first + 1  # one inbound, the replies


async def test_unparseable_update_is_acknowledged_and_dropped(tg: Harness) -> None:
    resp = await tg.http.post(
        "/telegram/webhook",
        data=b"not json",
        headers={"X-Telegram-Bot-Api-Secret-Token": "webhook-Secret_0123456789"},
    )
    assert resp.status == 200
    assert await tg.post({"update_id": "x"}) == 200
    assert await _count(tg, Message) == 0


async def test_intake_with_buttons(tg: Harness) -> None:
    tg.fake.add_chat(ANA.id)
    await tg.send(tg.updates.text(ANA, "/start"))
    offer, language = tg.fake.sent(ANA.id)
    assert offer.reply_markup is not None and offer.reply_markup["keyboard"] == [
        [{"text": "Share my phone number", "request_contact": True}]
    ]
    assert ("English", "en") in language.inline_buttons
    assert "1." not in language.text  # buttons, not SMS's numbered lines

    await tg.send(tg.updates.callback(ANA, "en"))
    welcome = tg.fake.sent(ANA.id)[-1]
    assert welcome.inline_buttons == [("Yes", "yes"), ("No", "no")]
    await tg.send(tg.updates.callback(ANA, "yes"))
    assert tg.fake.sent(ANA.id)[-1].text == "Is it safe for us to text you at this number?"
    await tg.send(tg.updates.callback(ANA, "yes"))
    assert tg.fake.sent(ANA.id)[-1].text == "What is your full name?"
    await tg.send(tg.updates.text(ANA, "Ana Ruiz"))
    await tg.send(tg.updates.text(ANA, "10001"))
    category = tg.fake.sent(ANA.id)[-1]
    assert ("Housing or eviction", "housing") in category.inline_buttons
    await tg.send(tg.updates.callback(ANA, "housing"))
    assert tg.fake.sent(ANA.id)[-1].text == "In a few words, what is happening?"
    assert len(tg.fake.of("answerCallbackQuery")) == 4


async def test_intake_with_typed_answers(tg: Harness) -> None:
    tg.fake.add_chat(SAM.id)
    await tg.send(tg.updates.text(SAM, "hi"))
    await tg.send(tg.updates.text(SAM, "2"))  # the number of a button, as on SMS: Español
    assert tg.fake.sent(SAM.id)[-1].inline_buttons == [("Sí", "yes"), ("No", "no")]
    await tg.send(tg.updates.text(SAM, "si"))
    await tg.send(tg.updates.text(SAM, "si"))  # safe to text
    await tg.send(tg.updates.text(SAM, "Sam Lee"))
    await tg.send(tg.updates.text(SAM, "10001"))
    await tg.send(tg.updates.text(SAM, "vivienda"))  # part of a label, typed
    assert tg.fake.of("answerCallbackQuery") == []
    # Each typed answer was taken: the description question comes next, in Spanish.
    assert tg.fake.sent(SAM.id)[-1].text == gettext("es", "In a few words, what is happening?")
    assert tg.fake.sent(SAM.id)[-1].text != "In a few words, what is happening?"


async def test_own_contact_links_to_the_sms_client_and_their_case(tg: Harness) -> None:
    rosa = await tg.add_sms_client(PHONE)
    case = await tg.open_case(rosa)
    tg.fake.add_chat(ANA.id)
    tg.fake.add_chat(SAM.id)

    # Before linking, this Telegram account is a stranger: no case data.
    await tg.send(tg.updates.text(ANA, "status"))
    assert all(case.reference not in c.text for c in tg.fake.sent(ANA.id))

    await tg.send(tg.updates.contact(ANA, PHONE.lstrip("+"), contact_user_id=ANA.id))
    done = tg.fake.sent(ANA.id)[-1]
    assert done.text.startswith("Done: this chat is now connected to your case.")
    assert done.reply_markup == {"remove_keyboard": True}
    async with tg.services.sessions() as session:
        linked = await repo.find_client_by_address(
            session, vault=tg.services.vault, channel=Channel.TELEGRAM, address=str(ANA.id)
        )
    assert linked is not None and linked.id == rosa.id

    # Either channel now reaches the same client and case.
    await tg.send(tg.updates.text(ANA, "menu"))
    assert case.reference in tg.fake.sent(ANA.id)[-1].text
    links = await tg.audits("identity.link")
    assert [(a.client_id, a.allowed) for a in links] == [(rosa.id, True)]

    # Another account sending Rosa's number as a contact links nothing.
    await tg.send(tg.updates.contact(SAM, PHONE.lstrip("+"), contact_user_id=ANA.id))
    assert tg.fake.sent(SAM.id)[-1].text.startswith("I can only connect your own phone number")
    await tg.send(tg.updates.text(SAM, "menu"))
    assert all(case.reference not in c.text for c in tg.fake.sent(SAM.id))
    refused = [a for a in await tg.audits("identity.link") if not a.allowed]
    assert [a.detail for a in refused] == ["contact of someone else"]


async def test_contact_without_user_id_and_unknown_number_link_nothing(tg: Harness) -> None:
    rosa = await tg.add_sms_client(PHONE)
    tg.fake.add_chat(ANA.id)
    await tg.send(tg.updates.contact(ANA, PHONE, contact_user_id=None))
    assert tg.fake.sent(ANA.id)[-1].text.startswith("I can only connect your own phone number")
    await tg.send(tg.updates.contact(ANA, "12025550100", contact_user_id=ANA.id))
    assert tg.fake.sent(ANA.id)[-1].text.startswith("We have no case for this phone number.")
    async with tg.services.sessions() as session:
        idents = (
            await session.exec(
                select(ChannelIdentity).where(ChannelIdentity.channel == Channel.TELEGRAM)
            )
        ).all()
    assert len(idents) == 1 and idents[0].client_id != rosa.id

    await tg.send(tg.updates.text(ANA, "/link"))
    assert tg.fake.sent(ANA.id)[-1].reply_markup == {
        "keyboard": [[{"text": "Share my phone number", "request_contact": True}]],
        "one_time_keyboard": True,
        "resize_keyboard": True,
    }


async def test_photo_becomes_a_case_document(tg: Harness) -> None:
    client = await tg.add_telegram_client(ANA)
    case = await tg.open_case(client)
    tg.fake.add_file("PHOTO1", b"\xff\xd8 the eviction notice", "photos/file_1.jpg")

    await tg.send(tg.updates.photo(ANA, "PHOTO1", caption="the notice on my door"))

    async with tg.services.sessions() as session:
        [doc] = (await session.exec(select(Document))).all()
        fresh = await session.get(Client, client.id)
        assert fresh is not None
        content = repo.document_content(tg.services.vault, fresh, doc)
    assert (doc.case_id, doc.content_type, content) == (
        case.id,
        "image/jpeg",
        b"\xff\xd8 the eviction notice",
    )
    assert [c.method for c in tg.fake.calls].count("getFile") == 1


async def _queue_to(tg: Harness, client: Client, text: str) -> None:
    async with transaction(tg.services.sessions) as session:
        fresh = await session.get(Client, client.id)
        assert fresh is not None
        await queue_reply(session, tg.services, fresh, Reply(text=text))


async def test_blocked_bot_marks_the_client_opted_out_of_telegram(tg: Harness) -> None:
    client = await tg.add_telegram_client(ANA)
    tg.fake.block(ANA.id)

    await _queue_to(tg, client, "Your hearing is on Monday.")
    await tg.settle()
    await _queue_to(tg, client, "Reminder: your hearing is tomorrow.")
    await tg.settle()

    assert [c.result for c in tg.fake.sent(ANA.id)] == [None]  # refused, and never again
    async with tg.services.sessions() as session:
        ident = (await session.exec(select(ChannelIdentity))).one()
        events = (await session.exec(select(ConsentEvent))).all()
    assert ident.opted_out_at is not None
    assert [(e.channel, e.kind, e.source) for e in events] == [
        ("telegram", "opt_out", "provider_error")
    ]
    statuses = [i.status for i in await tg.outbox()]
    assert statuses == [OutboxStatus.FAILED, OutboxStatus.SKIPPED]


async def test_blocking_update_is_an_opt_out_event(tg: Harness) -> None:
    client = await tg.add_telegram_client(ANA)
    await tg.send(tg.updates.blocked(ANA))
    await _queue_to(tg, client, "Anything")
    await tg.settle()
    async with tg.services.sessions() as session:
        ident = (await session.exec(select(ChannelIdentity))).one()
    assert ident.opted_out_at is not None
    assert tg.fake.sent(ANA.id) == []


async def test_flood_limit_retry_after_is_honoured(tg: Harness) -> None:
    client = await tg.add_telegram_client(ANA)
    tg.fake.fail_next(
        "sendMessage",
        chat_id=ANA.id,
        status=429,
        description="Too Many Requests: retry after 7",
        retry_after=7,
    )
    await _queue_to(tg, client, "Your case was updated.")
    await tg.settle()
    [item] = await tg.outbox()
    assert item.status == OutboxStatus.PENDING
    assert (item.due_at - tg.clock()).total_seconds() >= 7
    assert len(tg.fake.sent(ANA.id)) == 1  # the refused try

    tg.clock.advance(seconds=6)
    await tg.settle()
    assert len(tg.fake.sent(ANA.id)) == 1  # still waiting out retry_after
    tg.clock.advance(seconds=60)
    await tg.settle()
    assert [c.text for c in tg.fake.sent(ANA.id)][-1] == "Your case was updated."
    assert (await tg.outbox())[0].status == OutboxStatus.SENT


# --------------------------------------------------------------------------- long polling


@pytest.fixture
async def polling(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[tuple[FakeTelegram, Services]]:
    """The app with a bot token and no PUBLIC_BASE_URL: it long-polls getUpdates."""
    fake = FakeTelegram()
    await fake.start()
    settings = make_settings(
        database_url, tmp_path / "data", TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE_URL=fake.url
    )
    services = Services.build(settings, clock=clock)
    try:
        async with TestClient(TestServer(create_app(settings, services=services))):
            yield fake, services
    finally:
        await services.close()
        await fake.close()
    fake.check()


async def test_without_public_url_the_bot_long_polls(
    polling: tuple[FakeTelegram, Services],
) -> None:
    fake, services = polling
    fake.add_chat(ANA.id)
    assert [c.method for c in fake.calls][:2] == ["getMe", "deleteWebhook"]
    assert fake.of("setWebhook") == []

    update = Updates().text(ANA, "hello")
    fake.push_update(update)
    fake.push_update(update)  # Telegram may hand one update out twice: stored once
    for _ in range(500):
        if len(fake.sent(ANA.id)) >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(fake.sent(ANA.id)) == 2  # the link offer and the first question, once
    async with services.sessions() as session:
        inbound = (await session.exec(select(Message).where(col(Message.direction) == "in"))).all()
    assert [m.provider_id for m in inbound] == [str(update["update_id"])]
    offsets = [c.params.get("offset") for c in fake.of("getUpdates")]
    assert update["update_id"] + 1 in offsets  # acknowledged only after it was stored

"""A coordinator's /broadcast in Telegram: segment, texts, confirmation, progress edited in
place; one SMS per client in their language. Real app, fake Bot API and Twilio."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import select

from bot.app import create_app
from bot.channels.telegram import ChatPacer, TelegramSender
from bot.conversations import broadcast_wizard
from bot.handlers import staff as staff_handlers
from bot.scheduler import Scheduler
from bot.services import Services
from storage.models import Broadcast, Channel, StaffDialogue
from tests.fakes.telegram_harness import SECRET, Harness, Role, User, tg

__all__ = ["tg"]

CARLA = User(7100, "Carla")
MARIA = User(7001, "Maria")
EN_PHONE = "+12025550143"
ES_PHONE = "+12025550177"
TEXTS = {
    "en": "The office is closed Monday. Call us Tuesday.",
    "es": "La oficina cierra el lunes. Llámenos el martes.",
}


async def _say(tg: Harness, user: User, text: str) -> str:
    """Sends a private message as ``user``; returns the bot's last answer to them."""
    await tg.send(tg.updates.text(user, text))
    return str(tg.fake.sent(user.id)[-1].text)


async def test_coordinator_broadcasts_one_sms_each_in_their_language(tg: Harness) -> None:
    carla = await tg.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    for phone, lang in ((EN_PHONE, "en"), (ES_PHONE, "es")):
        client = await tg.add_sms_client(phone, name="Client", language=lang)
        await tg.open_case(client)

    assert "Who should get it?" in await _say(tg, CARLA, "/broadcast")
    shown = await _say(tg, CARLA, "all")
    assert "2 clients match all" in shown
    for _ in TEXTS:
        lang = "es" if "(es)" in shown.splitlines()[-1] else "en"
        shown = await _say(tg, CARLA, TEXTS[lang])
    assert "Recipients: 2" in shown and "yes / no" in shown
    assert tg.twilio.sent_to(EN_PHONE) == [] and tg.twilio.sent_to(ES_PHONE) == []

    await tg.send(tg.updates.text(CARLA, "yes"))
    await broadcast_wizard.wait_broadcast_sends(tg.services)
    await tg.settle()
    for _ in range(20):
        if not await broadcast_wizard.report_broadcasts(tg.services):
            break
        await tg.settle()

    (en,) = [m.body for m in tg.twilio.sent_to(EN_PHONE)]
    (es,) = [m.body for m in tg.twilio.sent_to(ES_PHONE)]
    assert en.startswith(TEXTS["en"]) and es.startswith(TEXTS["es"])
    # The opt-out footer too is in each client's own language.
    assert "Reply STOP" in en and "Reply STOP" not in es

    # One progress message, edited in place until it carries the report.
    answers = [c.text for c in tg.fake.sent(CARLA.id)]
    assert "Sending..." in answers
    progress = [c for c in tg.fake.sent(CARLA.id) if c.text.startswith("Broadcast ")]
    assert len(progress) == 1
    edits = [c for c in tg.fake.of("editMessageText") if c.chat_id == CARLA.id]
    assert edits, "the progress message was never updated"
    assert all(c.params["message_id"] == progress[0].message_id for c in edits)
    final = str(edits[-1].params["text"])
    assert "2 sent" in final and "100%" in final
    sends = [a for a in await tg.audits("broadcast.send") if a.actor_id == carla.id]
    assert len(sends) == 1

    # The wizard is over: plain text is no longer taken as a broadcast text.
    assert "Who should get it?" not in await _say(tg, CARLA, "hello")


async def test_cancel_stops_the_wizard_and_nothing_is_sent(tg: Harness) -> None:
    await tg.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    await tg.open_case(await tg.add_sms_client(EN_PHONE, language="en"))
    await _say(tg, CARLA, "/broadcast")
    await _say(tg, CARLA, "all")
    assert await _say(tg, CARLA, "/cancel") == "Broadcast cancelled. Nothing was sent."
    await tg.settle()
    assert tg.twilio.sent_to(EN_PHONE) == []


async def test_attorney_broadcast_is_refused_and_audited(tg: Harness) -> None:
    maria = await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    await tg.open_case(await tg.add_sms_client(EN_PHONE, language="en"))
    assert await _say(tg, MARIA, "/broadcast") == "That command is for coordinators."
    refused = await tg.audits("staff.broadcast")
    assert [(a.actor_id, a.allowed) for a in refused] == [(maria.id, False)]
    # Her next message is not taken as a segment.
    assert "Who should get it?" not in await _say(tg, MARIA, "all")
    await tg.settle()
    assert tg.twilio.sent_to(EN_PHONE) == []


# --------------------------------------------------------------------------- two processes


@dataclass
class Process:
    """One `probono serve` behind the load balancer: its own app, Services and engine."""

    services: Services
    http: TestClient[Any, Any]


@asynccontextmanager
async def _another_process(tg: Harness) -> AsyncIterator[Process]:
    """A second app on the harness's database, fakes and clock."""
    services = Services.build(tg.services.settings, clock=tg.clock)
    app = create_app(tg.services.settings, services=services)
    try:
        async with TestClient(TestServer(app)) as http:
            sender = services.senders[Channel.TELEGRAM]
            assert isinstance(sender, TelegramSender)
            sender.pacer = ChatPacer(burst=1000)
            yield Process(services, http)
    finally:
        await services.close()


async def _post(tg: Harness, to: Process, update: dict[str, Any]) -> str:
    """Delivers an update to one process; returns the bot's last answer in that chat."""
    resp = await to.http.post(
        "/telegram/webhook", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert resp.status == 200, await resp.text()
    await tg.settle()
    chat_id = int((update.get("message") or update["callback_query"])["from"]["id"])
    return str(tg.fake.sent(chat_id)[-1].text)


async def _dialogue(tg: Harness, staff_id: int | None) -> StaffDialogue | None:
    async with tg.services.sessions() as session:
        return await session.get(StaffDialogue, staff_id)


async def test_wizard_steps_alternate_between_two_processes_and_send_once(tg: Harness) -> None:
    carla = await tg.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    for phone, lang in ((EN_PHONE, "en"), (ES_PHONE, "es")):
        await tg.open_case(await tg.add_sms_client(phone, name="Client", language=lang))
    async with _another_process(tg) as other:
        one = Process(tg.services, tg.http)
        assert "Who should get it?" in await _post(tg, one, tg.updates.text(CARLA, "/broadcast"))
        shown = await _post(tg, other, tg.updates.text(CARLA, "all"))
        assert "2 clients match all" in shown
        row = await _dialogue(tg, carla.id)
        assert row is not None and row.data["segment"] == "all"
        for process in (one, other):
            lang = "es" if "(es)" in shown.splitlines()[-1] else "en"
            shown = await _post(tg, process, tg.updates.text(CARLA, TEXTS[lang]))
        assert "Recipients: 2" in shown and "yes / no" in shown

        # Confirmed with the button through one process; Telegram resends the same update
        # and the other process gets it too.
        yes = tg.updates.callback(CARLA, f"{staff_handlers.BROADCAST_BUTTON}:yes")
        await _post(tg, one, yes)
        await _post(tg, other, yes)
        for process in (one, other):
            await broadcast_wizard.wait_broadcast_sends(process.services)
        await tg.settle()
        for _ in range(20):
            if not await broadcast_wizard.report_broadcasts(other.services):
                break
            await tg.settle()

        # The wizard is over in both processes.
        assert "Who should get it?" not in await _post(tg, other, tg.updates.text(CARLA, "all"))
        assert "Who should get it?" not in await _post(tg, one, tg.updates.text(CARLA, "all"))

    assert await _dialogue(tg, carla.id) is None
    async with tg.services.sessions() as session:
        broadcasts = (await session.exec(select(Broadcast))).all()
    assert [(b.segment, b.texts, b.created_by_staff_id) for b in broadcasts] == [
        ("all", TEXTS, carla.id)
    ]
    (en,) = [m.body for m in tg.twilio.sent_to(EN_PHONE)]
    (es,) = [m.body for m in tg.twilio.sent_to(ES_PHONE)]
    assert en.startswith(TEXTS["en"]) and es.startswith(TEXTS["es"])
    assert [c.text for c in tg.fake.sent(CARLA.id)].count("Sending...") == 1
    progress = [c for c in tg.fake.sent(CARLA.id) if c.text.startswith("Broadcast ")]
    assert len(progress) == 1
    sends = [a for a in await tg.audits("broadcast.send") if a.actor_id == carla.id]
    assert len(sends) == 1


async def test_a_wizard_abandoned_for_a_day_is_forgotten(tg: Harness) -> None:
    carla = await tg.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    await tg.open_case(await tg.add_sms_client(EN_PHONE, language="en"))
    await _say(tg, CARLA, "/broadcast")
    assert "1 clients match all" in await _say(tg, CARLA, "all")
    tg.clock.advance(hours=23)
    assert "Send the text in" in await _say(tg, CARLA, "skip")  # still there after 23 hours

    tg.clock.advance(hours=24, minutes=1)
    answer = await _say(tg, CARLA, "The office is closed Monday.")
    assert answer == staff_handlers.COORDINATOR_HELP
    assert await _dialogue(tg, carla.id) is None
    await tg.settle()
    assert tg.twilio.sent_to(EN_PHONE) == []


async def test_a_confirmation_rolled_back_sends_nothing(
    tg: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tg.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    await tg.open_case(await tg.add_sms_client(EN_PHONE, language="en"))
    await _say(tg, CARLA, "/broadcast")
    await _say(tg, CARLA, "all")
    assert "yes / no" in await _say(tg, CARLA, TEXTS["en"])

    handle = staff_handlers.handle_staff_message

    async def handle_then_fail(*args: Any, **kw: Any) -> None:
        await handle(*args, **kw)  # the send is started here...
        raise RuntimeError("the message's transaction fails")  # ...and its step rolled back

    monkeypatch.setattr(staff_handlers, "handle_staff_message", handle_then_fail)
    assert "did not work" in await _say(tg, CARLA, "yes")
    await broadcast_wizard.wait_broadcast_sends(tg.services)
    await tg.settle()
    assert tg.twilio.sent_to(EN_PHONE) == []
    async with tg.services.sessions() as session:
        assert (await session.exec(select(Broadcast))).all() == []

    # The wizard still waits for the confirmation, and a confirmation that is stored sends.
    monkeypatch.undo()
    await _say(tg, CARLA, "yes")
    await broadcast_wizard.wait_broadcast_sends(tg.services)
    await tg.settle()
    (en,) = [m.body for m in tg.twilio.sent_to(EN_PHONE)]
    assert en.startswith(TEXTS["en"])


async def test_a_confirmation_whose_process_died_is_sent_once_by_the_scheduler(
    tg: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    await tg.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    await tg.open_case(await tg.add_sms_client(EN_PHONE, language="en"))
    await _say(tg, CARLA, "/broadcast")
    await _say(tg, CARLA, "all")
    assert "yes / no" in await _say(tg, CARLA, TEXTS["en"])

    async def process_dies_first(*args: Any, **kw: Any) -> bool:
        return False  # the confirmation is stored; the process dies before its send starts

    monkeypatch.setattr(broadcast_wizard, "send_confirmed", process_dies_first)
    assert "Sending..." in await _say(tg, CARLA, "yes")
    await broadcast_wizard.wait_broadcast_sends(tg.services)
    monkeypatch.undo()
    await tg.settle()
    assert tg.twilio.sent_to(EN_PHONE) == []

    scheduler = Scheduler(tg.services, handlers={})
    await scheduler.run_passes()  # too soon: the confirming process may still be sending
    await tg.settle()
    assert tg.twilio.sent_to(EN_PHONE) == []

    for _ in range(3):  # any process's pass takes it after STRANDED_AFTER, and only once
        tg.clock.advance(seconds=broadcast_wizard.STRANDED_AFTER.total_seconds() + 1)
        await scheduler.run_passes()
        await tg.settle()
    (en,) = [m.body for m in tg.twilio.sent_to(EN_PHONE)]
    assert en.startswith(TEXTS["en"])
    async with tg.services.sessions() as session:
        assert len((await session.exec(select(Broadcast))).all()) == 1

"""A coordinator's /broadcast in Telegram: segment, texts, confirmation, progress edited in
place; one SMS per client in their language. Real app, fake Bot API and Twilio."""

from __future__ import annotations

from bot.handlers import staff as staff_handlers
from tests.fakes.telegram_harness import Harness, Role, User, tg

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
    await staff_handlers.wait_broadcast_sends(tg.services)
    await tg.settle()
    for _ in range(20):
        if not await staff_handlers.report_broadcasts(tg.services):
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

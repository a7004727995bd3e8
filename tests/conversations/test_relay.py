"""The attorney relay end to end: a client's SMS becomes a card for their attorney on
Telegram, the attorney's reply to the card reaches the client by SMS, with its status.

Real create_app, real python-telegram-bot and twilio SDKs, fake Bot API and Twilio servers
on loopback that fail the test on any message they did not expect.
"""

from __future__ import annotations

import pytest
from sqlmodel import select

from bot.dispatch import Dispatcher
from bot.scheduler import REPORT_EVERY, Scheduler
from storage import repo
from storage.db import transaction
from storage.models import Channel, ChannelIdentity, Client, Message, OutboxStatus, Staff
from tests.fakes.telegram_harness import GROUP_ID, Harness, Role, User, group_chat, tg

__all__ = ["tg"]

CLIENT_PHONE = "+12025550143"
MARIA = User(7001, "Maria")
BEN = User(7002, "Ben")
ANA = User(8001, "Ana")
LOCKS = "The landlord changed the locks today"


async def _setup(tg: Harness) -> tuple[Staff, Staff, Client]:
    maria = await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    ben = await tg.add_staff("Ben Okafor", Role.ATTORNEY, BEN.id)
    client = await tg.add_sms_client(CLIENT_PHONE)
    return maria, ben, client


async def test_client_sms_to_attorney_card_to_reply_to_client_sms_with_status(
    tg: Harness,
) -> None:
    maria, _ben, client = await _setup(tg)
    case = await tg.open_case(client, attorney=maria)

    await tg.sms(CLIENT_PHONE, LOCKS)

    # Only Maria, in her private chat, with reference, channel and local time.
    assert [c.text for c in tg.fake.sent(MARIA.id)] == [
        f"Case {case.reference} · SMS · 10:00\n{LOCKS}"
    ]
    assert tg.fake.sent(BEN.id) == [] and tg.fake.sent(GROUP_ID) == []
    before = len(tg.twilio.sent_to(CLIENT_PHONE))

    card = tg.card_of(MARIA.id, case.reference)
    await tg.send(tg.updates.text(MARIA, "We will file an answer tomorrow.", reply_to=card))

    sms = tg.twilio.sent_to(CLIENT_PHONE)[before:]
    assert [m.body for m in sms] == ["Maria (Legal Aid Line): We will file an answer tomorrow."]
    confirm = [c for c in tg.fake.sent(MARIA.id) if "by SMS" in c.text]
    assert confirm[0].text == f"✓ Queued for {case.reference} by SMS."
    assert confirm[0].reply_to is not None  # it answers the attorney's own message
    edits = tg.fake.of("editMessageText")
    assert [e.text for e in edits] == [f"✓ Sent to {case.reference} by SMS at 10:00."]
    assert edits[0].params["message_id"] == confirm[0].message_id

    tg.clock.advance(minutes=2)
    await tg.sms_status(sms[0].sid, "delivered")
    await tg.settle()
    edits = tg.fake.of("editMessageText")
    assert edits[-1].text == f"✓✓ Delivered to {case.reference} by SMS at 10:02."

    audit = [(a.action, a.actor_id, a.allowed) for a in await tg.audits()]
    assert ("relay.card", maria.id, True) in audit
    assert ("relay.reply", maria.id, True) in audit
    # The card is stored under the client's key: erasing the client erases it too.
    cards = await tg.outbox(kind="card")
    async with tg.services.sessions() as session:
        msg = await session.get(Message, cards[0].message_id)
        assert msg is not None and msg.client_id == client.id
        assert LOCKS.encode() not in (msg.body_enc or b"")


async def test_unassigned_attorney_cannot_reply_by_forged_card_or_command(tg: Harness) -> None:
    maria, ben, client = await _setup(tg)
    case = await tg.open_case(client, attorney=ben)
    await tg.sms(CLIENT_PHONE, LOCKS)
    ben_card = tg.card_of(BEN.id, case.reference)
    await tg.assign(case, maria)
    before = len(tg.twilio.sent_to(CLIENT_PHONE))

    # Ben answers the card he got before the case moved to Maria: refused.
    await tg.send(tg.updates.text(BEN, "Please call me", reply_to=ben_card))
    # Maria "replies" to a message id that only exists in Ben's chat: nothing of hers.
    forged = tg.updates.bot_message(MARIA.id, ben_card["message_id"] + 50, "Case x")
    await tg.send(tg.updates.text(MARIA, "Forged", reply_to=forged))
    # Ben names the case explicitly: refused, the same words as for a case that is not there.
    await tg.send(tg.updates.text(BEN, f"/reply {case.reference} Please call me"))
    await tg.send(tg.updates.text(BEN, "/reply QQQ-QQQ Please call me"))

    assert tg.twilio.sent_to(CLIENT_PHONE)[before:] == []
    assert await tg.outbox(kind="attorney") == []
    refusals = [c.text for c in tg.fake.sent(BEN.id)[1:]]
    assert refusals == ["You can only write to clients of cases assigned to you."] * 3
    assert "Not sent" in tg.fake.sent(MARIA.id)[-1].text
    denied = [a for a in await tg.audits("relay.reply") if not a.allowed]
    assert [(a.actor_id, a.case_id) for a in denied] == [
        (ben.id, case.id),
        (ben.id, case.id),
        (ben.id, None),
    ]


async def test_reply_command_works_for_the_assigned_attorney_and_plain_text_is_never_sent(
    tg: Harness,
) -> None:
    maria, _ben, client = await _setup(tg)
    case = await tg.open_case(client, attorney=maria)

    await tg.send(tg.updates.text(MARIA, "note to self: call the court clerk"))
    assert tg.twilio.sent_to(CLIENT_PHONE) == []
    assert tg.fake.sent(MARIA.id)[-1].text.startswith("Not sent.")

    await tg.send(tg.updates.text(MARIA, f"/reply {case.reference.lower()} See you at 3pm"))
    # The first text to this number also carries the STOP/HELP notice.
    assert [m.body for m in tg.twilio.sent_to(CLIENT_PHONE)] == [
        "Maria (Legal Aid Line): See you at 3pm\n\nReply STOP to opt out, HELP for help."
    ]

    # In the coordinators' group an attorney's /reply is refused: clients stay private.
    tg.fake.add_chat(GROUP_ID, "supergroup")
    await tg.send(tg.updates.text(MARIA, f"/reply {case.reference} hi", chat=group_chat(GROUP_ID)))
    assert "private chat" in tg.fake.sent(GROUP_ID)[-1].text
    assert len(await tg.outbox(kind="attorney")) == 1


async def test_telegram_client_gets_the_reply_on_telegram(tg: Harness) -> None:
    maria = await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    client = await tg.add_telegram_client(ANA)
    case = await tg.open_case(client, attorney=maria)

    await tg.send(tg.updates.text(ANA, "I have the court papers now, what next?"))
    assert tg.fake.sent(MARIA.id)[0].text.startswith(f"Case {case.reference} · Telegram · ")

    card = tg.card_of(MARIA.id, case.reference)
    await tg.send(tg.updates.text(MARIA, "Bring them on Monday.", reply_to=card))
    assert tg.fake.sent(ANA.id)[-1].text == "Maria (Legal Aid Line): Bring them on Monday."
    assert any(c.text == f"✓ Queued for {case.reference} by Telegram." for c in tg.fake.sent())


async def test_opted_out_client_is_not_written_to_and_the_attorney_is_told(tg: Harness) -> None:
    maria, _ben, client = await _setup(tg)
    case = await tg.open_case(client, attorney=maria)
    async with transaction(tg.services.sessions) as session:
        ident = (await session.exec(select(ChannelIdentity))).one()
        await repo.record_consent(session, identity=ident, kind="opt_out", source="keyword")

    await tg.send(tg.updates.text(MARIA, f"/reply {case.reference} Are you there?"))

    assert tg.twilio.sent_to(CLIENT_PHONE) == []
    assert "cannot be reached" in tg.fake.sent(MARIA.id)[-1].text
    assert await tg.outbox(kind="attorney") == []


async def test_failed_sms_is_reported_to_the_attorney(tg: Harness) -> None:
    maria, _ben, client = await _setup(tg)
    case = await tg.open_case(client, attorney=maria)
    tg.twilio.fail_next("21211")  # invalid number: permanent

    await tg.send(tg.updates.text(MARIA, f"/reply {case.reference} Call me"))

    [item] = await tg.outbox(kind="attorney")
    assert item.status == OutboxStatus.FAILED
    last = tg.fake.sent(MARIA.id)[-1]
    assert last.text.startswith(f"⚠️ Not delivered to {case.reference} by SMS")
    assert last.reply_to is not None  # a new message answering the confirmation


async def test_case_without_attorney_sends_no_card(tg: Harness) -> None:
    await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    client = await tg.add_sms_client(CLIENT_PHONE)
    case = await tg.open_case(client)

    await tg.sms(CLIENT_PHONE, LOCKS)

    assert tg.fake.sent(MARIA.id) == []
    # The coordinators hear that a message waits, never what it says.
    group = [c.text for c in tg.fake.sent(GROUP_ID)]
    assert group and all(LOCKS not in t for t in group)
    assert any(case.reference in t for t in group)
    alert = next(c for c in tg.fake.sent(GROUP_ID) if case.reference in c.text)
    assert alert.inline_buttons == [("Assign", f"assign:{case.id}")]
    assert await tg.outbox(kind="card") == []
    assert Channel.SMS in tg.services.senders


@pytest.fixture
def app_timers_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's own scheduler never starts its timers: only the test's scheduler runs."""
    monkeypatch.setattr(Scheduler, "start", lambda self, interval_seconds: None)


async def test_delivery_report_is_scheduled_work(app_timers_off: None, tg: Harness) -> None:
    maria, _ben, client = await _setup(tg)
    case = await tg.open_case(client, attorney=maria)
    await tg.sms(CLIENT_PHONE, LOCKS)
    card = tg.card_of(MARIA.id, case.reference)
    await tg.send(tg.updates.text(MARIA, "We will file an answer tomorrow.", reply_to=card))
    sms = tg.twilio.sent_to(CLIENT_PHONE)[-1]
    scheduler = Scheduler(tg.services, handlers={})
    dispatcher = Dispatcher(tg.services)
    await scheduler.tick()  # the reports run at once the first time: nothing new to say yet
    await dispatcher.drain()
    shown = [e.text for e in tg.fake.of("editMessageText")]
    assert shown == [f"✓ Sent to {case.reference} by SMS at 10:00."]

    await tg.sms_status(sms.sid, "delivered")
    await scheduler.tick()  # not due: the last report was less than REPORT_EVERY ago
    await dispatcher.drain()
    assert [e.text for e in tg.fake.of("editMessageText")] == shown

    tg.clock.advance(seconds=REPORT_EVERY.total_seconds())
    await scheduler.tick()
    await dispatcher.drain()
    edits = tg.fake.of("editMessageText")
    assert [e.text for e in edits] == [*shown, f"✓✓ Delivered to {case.reference} by SMS at 10:00."]
    confirm = [c for c in tg.fake.sent(MARIA.id) if "by SMS" in c.text]
    assert edits[-1].params["message_id"] == confirm[0].message_id  # the card's confirmation

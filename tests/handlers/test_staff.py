"""Staff commands on Telegram: what attorneys and coordinators see, what strangers don't,
and the audit trail. Real app, real python-telegram-bot, fake Bot API and Twilio."""

from __future__ import annotations

from sqlmodel import col, select

from bot.handlers.telegram_routes import sync_commands
from storage.models import Appointment, CaseStatusChange, Client, Staff
from tests.casework import LONG_STATUS, LONG_STATUS_REFUSAL
from tests.fakes.telegram_harness import GROUP_ID, Harness, Role, User, group_chat, tg

__all__ = ["tg"]

CLIENT_PHONE = "+12025550143"
OTHER_PHONE = "+12025550177"
MARIA = User(7001, "Maria")
BEN = User(7002, "Ben")
CARLA = User(7100, "Carla")
STRANGER = User(9999, "Mallory")
LOCKS = "The landlord changed the locks today"


async def _people(tg: Harness) -> tuple[Staff, Staff, Staff, Client]:
    maria = await tg.add_staff("Maria Lopez", Role.ATTORNEY, MARIA.id)
    ben = await tg.add_staff("Ben Okafor", Role.ATTORNEY, BEN.id)
    carla = await tg.add_staff("Carla Reyes", Role.COORDINATOR, CARLA.id)
    client = await tg.add_sms_client(CLIENT_PHONE, name="Rosa Diaz")
    return maria, ben, carla, client


async def test_attorney_sees_own_cases_only_and_reads_are_audited(tg: Harness) -> None:
    maria, ben, _carla, client = await _people(tg)
    mine = await tg.open_case(client, attorney=maria)
    other = await tg.open_case(
        await tg.add_sms_client(OTHER_PHONE, name="Sam Lee"), category="family", attorney=ben
    )
    await tg.sms(CLIENT_PHONE, LOCKS)

    await tg.send(tg.updates.text(MARIA, "/cases"))
    listing = tg.fake.sent(MARIA.id)[-1].text
    assert mine.reference in listing and other.reference not in listing

    await tg.send(tg.updates.text(MARIA, f"/case {mine.reference}"))
    shown = tg.fake.sent(MARIA.id)[-1].text
    assert "Client: Rosa Diaz" in shown and LOCKS in shown and "Status: open" in shown

    await tg.send(tg.updates.text(MARIA, f"/case {other.reference}"))
    await tg.send(tg.updates.text(MARIA, "/case QQQ-QQQ"))
    refused = [c.text for c in tg.fake.sent(MARIA.id)[-2:]]
    assert refused == [f"No case {other.reference} among yours.", "No case QQQ-QQQ among yours."]
    assert "Sam Lee" not in "".join(c.text for c in tg.fake.sent(MARIA.id))

    reads = [(a.actor_id, a.case_id, a.allowed) for a in await tg.audits("staff.read")]
    assert (maria.id, mine.id, True) in reads
    assert (maria.id, other.id, False) in reads
    assert (maria.id, None, False) in reads  # a reference that does not exist


async def test_coordinator_assigns_by_buttons_and_reassignment_hands_off(tg: Harness) -> None:
    maria, ben, carla, client = await _people(tg)
    case = await tg.open_case(client)
    await tg.sms(CLIENT_PHONE, LOCKS)
    sms_before = len(tg.twilio.sent_to(CLIENT_PHONE))

    await tg.send(tg.updates.text(CARLA, f"/assign {case.reference}"))
    picker = tg.fake.sent(CARLA.id)[-1]
    assert picker.text == f"Who should handle {case.reference}?"
    assert picker.inline_buttons == [
        ("Maria Lopez (0)", f"assignto:{case.id}:{maria.id}"),
        ("Ben Okafor (0)", f"assignto:{case.id}:{ben.id}"),
    ]
    message = tg.updates.bot_message(CARLA.id, picker.message_id, picker.text)
    await tg.send(tg.updates.callback(CARLA, f"assignto:{case.id}:{maria.id}", message=message))

    assert tg.fake.sent(CARLA.id)[-1].text == f"{case.reference} assigned to Maria Lopez."
    handoff = tg.fake.sent(MARIA.id)[-1].text
    assert handoff.startswith(f"Case {case.reference} is now yours")
    assert LOCKS in handoff  # the recent thread goes to the new attorney
    told = [m.body for m in tg.twilio.sent_to(CLIENT_PHONE)[sms_before:]]
    assert told == [
        f"Maria is now handling your case {case.reference}. You can write here to reach them."
    ]
    assert tg.fake.of("answerCallbackQuery")  # the button stops spinning

    await tg.send(tg.updates.callback(CARLA, f"assignto:{case.id}:{ben.id}", message=message))
    assert LOCKS in tg.fake.sent(BEN.id)[-1].text
    moved = tg.fake.sent(MARIA.id)[-1].text
    assert moved.startswith(f"Case {case.reference} was reassigned to Ben.")
    assert LOCKS not in moved
    assert tg.twilio.sent_to(CLIENT_PHONE)[-1].body.startswith("Ben is now handling your case")
    assigned = [(a.actor_id, a.detail) for a in await tg.audits("case.assign")]
    assert assigned == [
        (carla.id, f"staff {maria.id}"),
        (carla.id, f"staff {ben.id} (was {maria.id})"),
    ]
    assert {a.actor_id for a in await tg.audits("staff.read")} == {maria.id, ben.id}


async def test_group_alert_assign_button_and_the_group_never_sees_client_words(
    tg: Harness,
) -> None:
    maria, _ben, _carla, client = await _people(tg)
    case = await tg.open_case(client)
    await tg.sms(CLIENT_PHONE, LOCKS)  # no attorney yet: the group is alerted
    alert = tg.fake.sent(GROUP_ID)[-1]
    assert alert.inline_buttons == [("Assign", f"assign:{case.id}")]

    in_group = tg.updates.bot_message(GROUP_ID, alert.message_id, alert.text)
    in_group["chat"] = group_chat(GROUP_ID)
    await tg.send(tg.updates.callback(CARLA, f"assign:{case.id}", message=in_group))
    picker = tg.fake.sent(GROUP_ID)[-1]
    assert picker.text == f"Who should handle {case.reference}?"
    await tg.send(tg.updates.callback(CARLA, f"assignto:{case.id}:{maria.id}", message=in_group))
    await tg.send(tg.updates.text(CARLA, f"/find {case.reference}", chat=group_chat(GROUP_ID)))
    found = tg.fake.sent(GROUP_ID)[-1].text
    assert "Attorney: Maria" in found and "Status: open" in found

    group_text = "\n".join(c.text for c in tg.fake.sent(GROUP_ID))
    assert LOCKS not in group_text and "Rosa" not in group_text
    assert LOCKS in tg.fake.sent(MARIA.id)[-1].text


async def test_status_and_appointment_commands(tg: Harness) -> None:
    maria, _ben, _carla, client = await _people(tg)
    case = await tg.open_case(client, attorney=maria)

    await tg.send(tg.updates.text(CARLA, f"/status {case.reference} Hearing scheduled"))
    assert tg.fake.sent(CARLA.id)[-1].text == (
        f"{case.reference}: status is now “Hearing scheduled”. The client is told."
    )
    await tg.send(
        tg.updates.text(CARLA, f"/appt {case.reference} 2026-03-10 09:30 hearing Courtroom 5")
    )
    assert tg.fake.sent(CARLA.id)[-1].text.startswith(f"{case.reference}: hearing booked for ")
    await tg.send(tg.updates.text(CARLA, f"/appt {case.reference} 2020-01-01 09:30 Room 1"))
    assert tg.fake.sent(CARLA.id)[-1].text.startswith("Not booked: ")

    # An attorney may set the status of their own case, not book or assign.
    await tg.send(tg.updates.text(MARIA, f"/status {case.reference} Answer filed"))
    await tg.send(tg.updates.text(MARIA, f"/appt {case.reference} 2026-03-11 09:30 Room 2"))
    await tg.send(tg.updates.text(MARIA, f"/assign {case.reference}"))
    assert [c.text for c in tg.fake.sent(MARIA.id)[-2:]] == [
        "That command is for coordinators."
    ] * 2

    async with tg.services.sessions() as session:
        statuses = (
            await session.exec(
                select(CaseStatusChange)
                .where(CaseStatusChange.case_id == case.id)
                .order_by(col(CaseStatusChange.id))
            )
        ).all()
        appts = (await session.exec(select(Appointment))).all()
    assert [(s.status, s.source) for s in statuses][1:] == [
        ("Hearing scheduled", "telegram"),
        ("Answer filed", "telegram"),
    ]
    assert [(a.kind, a.starts_at.isoformat()) for a in appts] == [
        ("hearing", "2026-03-10T13:30:00+00:00")  # 09:30 in New York
    ]
    assert len(tg.twilio.sent_to(CLIENT_PHONE)) >= 1  # the client heard about it
    denied = [a.action for a in await tg.audits() if not a.allowed]
    assert denied == ["staff.appt", "staff.assign"]


async def test_strangers_get_nothing_from_staff_commands(tg: Harness) -> None:
    maria, _ben, _carla, client = await _people(tg)
    case = await tg.open_case(client, attorney=maria)
    await tg.sms(CLIENT_PHONE, LOCKS)
    tg.fake.add_chat(STRANGER.id)
    staff_rows = len(await tg.outbox(kind="staff"))

    for text in ("/cases", f"/case {case.reference}", f"/reply {case.reference} hi"):
        await tg.send(tg.updates.text(STRANGER, text))
    # In the coordinators' group a stranger's commands and button presses do nothing at all.
    await tg.send(tg.updates.text(STRANGER, f"/assign {case.reference}", chat=group_chat(GROUP_ID)))
    alert_like = tg.updates.bot_message(GROUP_ID, 1, "x")
    alert_like["chat"] = group_chat(GROUP_ID)
    await tg.send(
        tg.updates.callback(STRANGER, f"assignto:{case.id}:{maria.id}", message=alert_like)
    )

    seen = "\n".join(c.text for c in tg.fake.sent(STRANGER.id))
    assert case.reference not in seen and "Rosa" not in seen and LOCKS not in seen
    assert tg.fake.sent(GROUP_ID) == []
    assert len(await tg.outbox(kind="staff")) == staff_rows
    assert len(await tg.outbox(kind="attorney")) == 0
    fresh = await tg.reload(case)
    assert fresh.assigned_staff_id == maria.id
    attempts = [(a.actor_kind, a.allowed) for a in await tg.audits("staff.command")]
    assert attempts == [("client", False)] * 3 + [("stranger", False)] * 2


async def test_plain_text_in_the_group_is_ignored_and_menus_are_set_per_role(tg: Harness) -> None:
    maria, _ben, carla, _client = await _people(tg)
    await tg.send(tg.updates.text(CARLA, "lunch at noon?", chat=group_chat(GROUP_ID)))
    assert tg.fake.sent(GROUP_ID) == []

    await sync_commands(tg.app)
    scopes = {
        (c.params["scope"].get("chat_id"), c.params["scope"]["type"]): [
            x["command"] for x in c.params["commands"]
        ]
        for c in tg.fake.of("setMyCommands")
    }
    assert scopes[(MARIA.id, "chat")] == ["cases", "case", "reply", "status", "help"]
    assert scopes[(CARLA.id, "chat")] == [
        "cases",
        "find",
        "assign",
        "status",
        "appt",
        "broadcast",
        "help",
    ]
    assert scopes[(GROUP_ID, "chat")] == scopes[(CARLA.id, "chat")]
    assert scopes[(None, "default")] == ["start", "link", "help"]
    assert maria.id != carla.id


async def test_staff_commands_in_another_group_show_nothing(tg: Harness) -> None:
    maria, _ben, carla, client = await _people(tg)
    case = await tg.open_case(client, attorney=maria)
    family_group = group_chat(-100777)  # not TELEGRAM_STAFF_CHAT_ID; the fake fails any send

    await tg.send(tg.updates.text(CARLA, f"/find {case.reference}", chat=family_group))
    await tg.send(tg.updates.text(MARIA, f"/case {case.reference}", chat=family_group))

    assert tg.fake.sent() == []
    attempts = [(a.actor_id, a.allowed) for a in await tg.audits("staff.command")]
    assert attempts == [(carla.id, False), (maria.id, False)]


async def test_a_too_long_status_is_refused_in_the_words_of_the_cli_and_the_api(
    tg: Harness,
) -> None:
    maria, _ben, _carla, client = await _people(tg)
    case = await tg.open_case(client, attorney=maria)
    for who in (CARLA, MARIA):
        await tg.send(tg.updates.text(who, f"/status {case.reference} {LONG_STATUS}"))
        assert tg.fake.sent(who.id)[-1].text == LONG_STATUS_REFUSAL
    async with tg.services.sessions() as session:
        statuses = (
            await session.exec(select(CaseStatusChange).where(CaseStatusChange.case_id == case.id))
        ).all()
    assert [s.status for s in statuses] == ["open"]  # not cut short and recorded
    assert tg.twilio.sent_to(CLIENT_PHONE) == []
    assert await tg.audits("case.status") == []

"""Words that work everywhere, pauses, restarts of the server, the reminder, the case menu."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from bot.clock import FakeClock
from bot.conversations import intake
from bot.i18n import format_datetime
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Appointment, AuditLog, Client, Message, ScheduledItem
from tests.conversations.chat import Chat, alert_texts, outbox
from tests.conversations.test_intake_flows import (
    EN_AFTER_SAFETY,
    EN_CONFIRM,
    EN_MONEY,
    EN_NO_DEADLINE,
    EN_OTHER_SIDE,
    EN_START,
    EN_UNSAFE,
    EN_WHOLE,
    ES_WHOLE,
    assert_private,
    run,
)


async def test_back_goes_to_the_previous_question(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:5])
    await run(chat, [("back", "What is your full name?"), ("Maria L. Lopez", "ZIP")])
    await run(chat, [("BACK", "full name"), ("Back", "safe for us"), ("back", "Can we ask")])
    await run(chat, [("yes", "safe for us"), ("yes", "full name"), ("Maria Lopez", "ZIP")])
    await run(chat, EN_START[5:] + EN_NO_DEADLINE + EN_MONEY + EN_OTHER_SIDE)
    summary = chat.log[-1][1][0]
    assert "Name: Maria Lopez" in summary


async def test_back_at_the_first_question_asks_it_again(services: Services) -> None:
    chat = Chat(services)
    await run(chat, [("Hi", "your language"), ("back", "your language")])


async def test_spanish_words_work_too(services: Services) -> None:
    chat = Chat(services)
    await run(chat, ES_WHOLE[:6])
    await run(chat, [("atrás", "código postal"), ("Atras", "¿Cuál es su nombre completo?")])
    await run(chat, [("menú", "Responda ATRÁS para volver")])
    reply = await chat.text("reiniciar")
    assert "Bien, empecemos de nuevo." in reply and "Responda con el número" in reply


async def test_restart_forgets_the_answers(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:6])
    reply = await chat.text("restart")
    assert reply.startswith("OK, let's start again.") and "your language" in reply
    state = await chat.state()
    assert state is not None and state.state == "language" and state.data_enc is None
    assert state.history == []


@pytest.mark.parametrize("word", ["menu", "?", "MENU", "options"])
async def test_menu_word_explains_and_asks_again(services: Services, word: str) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:6])
    replies = await chat.send(word)
    assert replies[0].startswith("Reply BACK to go back, RESTART to start over, or AGENT")
    assert "What is your legal problem about?" in replies[1]


async def test_agent_during_intake_alerts_without_content(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:6])
    replies = await chat.send("human")
    assert replies[0] == "Thank you. A person from our team will contact you soon."
    assert "legal problem" in replies[1]
    (alert,) = await alert_texts(services)
    assert "asked to talk to a person" in alert and "No case yet" in alert
    await run(chat, EN_START[6:] + EN_NO_DEADLINE + EN_MONEY + EN_OTHER_SIDE + EN_CONFIRM)
    texts = await alert_texts(services)
    assert "Asked to talk to a person during intake." in texts[-1]
    assert_private(texts)


async def test_resume_after_a_server_restart(services: Services, clock: FakeClock) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:7])
    # A new process: new engine, new sessions, new vault object, same database and keys.
    fresh = Services.build(services.settings, clock=clock)
    try:
        chat.services = fresh
        await run(chat, EN_START[7:] + EN_NO_DEADLINE + EN_MONEY + EN_OTHER_SIDE + EN_CONFIRM)
        (case,) = await chat.cases()
        assert case.category == "housing"
    finally:
        await fresh.close()


async def test_resume_after_a_pause_welcomes_back(services: Services, clock: FakeClock) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:6])
    clock.advance(days=2)
    replies = await chat.send("hello?")
    assert replies[0] == "Welcome back! Let's continue where we left off."
    assert "What is your legal problem about?" in replies[1]
    # A right answer after a pause just carries on.
    clock.advance(days=2)
    assert "what is happening" in await chat.text("1")


async def test_a_wrong_answer_soon_after_gets_a_re_ask(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:6])
    reply = await chat.text("hello?")
    assert reply.startswith("Sorry, I did not understand. Please reply with the number")
    assert "1. Housing or eviction" in reply


# --------------------------------------------------------------------------- the reminder


async def _nudge_item(services: Services) -> ScheduledItem | None:
    async with services.sessions() as session:
        return (await session.exec(select(ScheduledItem))).first()


async def _run_nudge(services: Services, item: ScheduledItem) -> None:
    async with transaction(services.sessions) as session:
        await intake.nudge(session, services, item)


async def _reminders(services: Services) -> list[str]:
    out = []
    async with services.sessions() as session:
        for item in await outbox(services, kind="reminder"):
            msg = await session.get(Message, item.message_id)
            client = await session.get(Client, item.client_id)
            assert msg is not None
            out.append(repo.message_body(services.vault, client, msg))
    return out


async def test_one_reminder_a_day_after_the_last_answer(
    services: Services, clock: FakeClock
) -> None:
    chat = Chat(services, language="es")
    await run(chat, ES_WHOLE[:2])
    assert await _nudge_item(services) is None  # no consent yet: no reminder
    await run(chat, ES_WHOLE[2:5])
    clock.advance(hours=3)
    await run(chat, ES_WHOLE[5:6])
    item = await _nudge_item(services)
    assert item is not None and item.kind == "intake_nudge"
    assert item.unique_key == f"intake_nudge:{chat.client_id}" and item.status == "pending"
    assert item.due_at == clock() + timedelta(hours=24)

    clock.advance(hours=25)
    await _run_nudge(services, item)
    (text,) = await _reminders(services)
    assert "Responda cuando quiera para continuar" in text
    (row,) = await outbox(services, kind="reminder")
    assert row.urgent is False  # waits for the end of quiet hours
    state = await chat.state()
    assert state is not None and state.nudged_at == clock() and state.data_enc is not None

    await _run_nudge(services, item)  # run twice (a crash and retry): still one
    assert len(await _reminders(services)) == 1

    # They come back: the answers were kept, and there is no second reminder.
    assert "¿qué está pasando?" in await chat.text("1")
    item = await _nudge_item(services)
    assert item is not None and item.status == "cancelled"
    await run(chat, ES_WHOLE[7:])
    assert len(await _reminders(services)) == 1


async def test_no_reminder_when_they_answered_after_it_was_planned(
    services: Services, clock: FakeClock
) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:5])
    planned = await _nudge_item(services)
    assert planned is not None
    clock.advance(hours=20)
    await run(chat, EN_START[5:6])
    clock.advance(hours=5)
    await _run_nudge(services, planned)  # the stale copy, as a slow scheduler might hold it
    assert await _reminders(services) == []


async def test_reminder_for_a_discreet_client_is_neutral(
    services: Services, clock: FakeClock
) -> None:
    chat = Chat(services)
    await run(chat, EN_UNSAFE)
    item = await _nudge_item(services)
    assert item is not None
    clock.advance(hours=25)
    await _run_nudge(services, item)
    (text,) = await _reminders(services)
    assert text == "You can reply any time to continue where you left off."


async def test_finishing_withdraws_the_reminder(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_WHOLE)
    item = await _nudge_item(services)
    assert item is not None and item.status == "cancelled"
    await _run_nudge(services, item)
    assert await _reminders(services) == []


# --------------------------------------------------------------------------- the case menu


async def _with_case(services: Services, **kw: str) -> tuple[Chat, str]:
    chat = Chat(services, **kw)  # type: ignore[arg-type]
    last = await run(chat, EN_WHOLE)
    (case,) = await chat.cases()
    assert case.reference in last
    return chat, case.reference


async def test_a_client_with_a_case_gets_the_menu_not_the_intake(services: Services) -> None:
    chat, ref = await _with_case(services)
    reply = await chat.text("hello")
    assert f"Your case {ref}. What would you like to do?" in reply
    assert "1. My case status" in reply and "2. Write to my attorney" in reply
    assert "3. My next appointment" in reply
    for text in ("restart", "back", "?", "1200", "yes"):
        await chat.text(text)
    assert len(await chat.cases()) == 1


async def test_menu_status(services: Services) -> None:
    chat, ref = await _with_case(services)
    reply = await chat.text("1")
    assert ref in reply


async def test_menu_write_to_attorney_keeps_a_note(services: Services) -> None:
    chat, ref = await _with_case(services)
    reply = await chat.text("2")
    assert "Please write your message in one text" in reply
    words = "They changed the locks today, please call me"
    assert await chat.text(words) == "Thank you. We passed your message on."
    (case,) = await chat.cases()
    async with services.sessions() as session:
        notes = (await session.exec(select(Message).where(Message.case_id == case.id))).all()
        inbound = [m for m in notes if m.direction == "in"]
        assert len(inbound) == 1
        client = await chat.client()
        assert repo.message_body(services.vault, client, inbound[0]) == words
        audit = (await session.exec(select(AuditLog).where(AuditLog.action == "client.note"))).one()
        assert audit.case_id == case.id
    alert = (await alert_texts(services))[-1]
    assert ref in alert and "no attorney is assigned" in alert and "locks" not in alert
    # Back at the menu: "1" is the status again, not a message.
    assert ref in await chat.text("1")


async def test_free_text_from_a_client_with_a_case_is_passed_on(services: Services) -> None:
    chat, _ref = await _with_case(services)
    reply = await chat.text("I got a new letter from the court about my hearing")
    assert reply == "Thank you. We passed your message on. Reply MENU to see your options."


async def test_menu_next_appointment(services: Services, clock: FakeClock) -> None:
    chat, _ref = await _with_case(services)
    assert "You have no appointment scheduled yet." in await chat.text("3")
    (case,) = await chat.cases()
    when = datetime(2026, 3, 9, 14, 30, tzinfo=UTC)
    async with transaction(services.sessions) as session:
        assert case.id is not None
        session.add(Appointment(case_id=case.id, starts_at=when, timezone="America/New_York"))
    reply = await chat.text("my next appointment")
    expected = format_datetime(when, "en", "America/New_York")
    assert reply == f"Your next appointment: {expected}."


async def test_agent_with_a_case_flags_it(services: Services) -> None:
    chat, ref = await _with_case(services)
    assert await chat.text("agent") == "Thank you. A person from our team will contact you soon."
    (case,) = await chat.cases()
    assert case.needs_review
    alert = (await alert_texts(services))[-1]
    assert alert == f"The client of case {ref} asked to talk to a person."


async def test_menu_in_spanish_and_discreet_wording(services: Services) -> None:
    chat = Chat(services)
    await run(chat, [*EN_UNSAFE, ("3", "full name"), *EN_AFTER_SAFETY, ("1", "Your number is")])
    reply = await chat.text("hi")
    assert reply.startswith("What would you like to do?")
    for word in ("case", "attorney", "legal"):
        assert word not in reply.lower()
    spanish = Chat(services, address="+15555550111")
    await run(spanish, ES_WHOLE)
    reply = await spanish.text("hola")
    assert "¿Qué desea hacer?" in reply and "1. El estado de mi caso" in reply


async def test_menu_message_goes_to_the_assigned_attorney(services: Services) -> None:
    chat, ref = await _with_case(services)
    async with transaction(services.sessions) as session:
        staff = await repo.create_staff(
            session, vault=services.vault, name="Ana Ortiz", role="attorney", telegram_id=777
        )
        case = await repo.require_case(session, reference=ref)
        case.assigned_staff_id = staff.id
        session.add(case)
    await run(chat, [("2", "Please write your message")])
    assert await chat.text("Please call me after 5 pm") == "Thank you. We passed your message on."
    (card,) = await outbox(services, kind="card")
    assert card.staff_id == staff.id
    assert not any("no attorney" in t for t in await alert_texts(services))

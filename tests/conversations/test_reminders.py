"""Answers to reminders (1 / 2 and their words, in English and Spanish) and to check-ins,
through the client conversation as the router runs it; what the attorney and the group get."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from bot.casework.status import tell_status_change
from bot.clock import FakeClock
from bot.conversations.reminders import CHECKIN_WORDS, REMINDER_WORDS, parse_answer
from bot.scheduler import Scheduler
from bot.services import Services
from bot.sms_text import encoding, is_gsm7
from storage import repo
from storage.db import transaction
from storage.models import AuditLog, Message
from tests.casework import PHONE, World, appointment, book, case_row, open_case, sent
from tests.conversations.chat import Chat
from tests.conversations.conftest import STAFF_CHAT

HEARING = datetime(2026, 3, 12, 14, 30, tzinfo=UTC)  # 10:30 in New York


async def reminded(services: Services, clock: FakeClock, **kw: object) -> tuple[World, int, Chat]:
    """A client with a hearing, sent its one-day reminder."""
    world = await open_case(services, **kw)  # type: ignore[arg-type]
    appt_id = await book(services, world, HEARING)
    clock.set(HEARING - timedelta(days=1))
    assert (await Scheduler(services).tick()).done == 1
    chat = Chat(services, address=PHONE, client_id=world.client_id)
    return world, appt_id, chat


async def staff_messages(services: Services) -> list[str]:
    return [s.text for s in await sent(services, kind="staff")]


@pytest.mark.parametrize("answer", ["1", "Yes!"])
async def test_confirm_in_english(services: Services, clock: FakeClock, answer: str) -> None:
    _world, appt_id, chat = await reminded(services, clock)
    assert await chat.text(answer) == "Thank you. See you on Thu, Mar 12, 2026, 10:30 AM."
    appt = await appointment(services, appt_id)
    assert appt.confirmed_at == clock() and appt.declined_at is None
    assert await staff_messages(services) == []


@pytest.mark.parametrize("answer", ["sí", "¡Confirmo!"])
async def test_confirm_in_spanish(services: Services, clock: FakeClock, answer: str) -> None:
    _world, appt_id, chat = await reminded(services, clock, language="es")
    reply = await chat.text(answer)
    assert reply.startswith("Gracias. Nos vemos el jue, 12 mar 2026")
    assert (await appointment(services, appt_id)).confirmed_at == clock()


async def test_the_reminder_itself_in_spanish(services: Services, clock: FakeClock) -> None:
    await reminded(services, clock, language="es")
    [reminder] = [s.text for s in await sent(services, kind="reminder")]
    assert reminder.startswith(
        "Recordatorio de Legal Aid Line: su audiencia en la corte es el jue, 12 mar 2026"
    )
    assert reminder.endswith("\n\n1. Confirmo\n2. No puedo ir")


async def test_a_button_press_confirms(services: Services, clock: FakeClock) -> None:
    _world, appt_id, chat = await reminded(services, clock)
    await chat.send("", choice="1")
    assert (await appointment(services, appt_id)).confirmed_at == clock()


@pytest.mark.parametrize(
    ("answer", "lang"), [("2", "en"), ("I can't come", "en"), ("No puedo ir.", "es")]
)
async def test_cannot_come_alerts_the_assigned_attorney(
    services: Services, clock: FakeClock, answer: str, lang: str
) -> None:
    world, appt_id, chat = await reminded(services, clock, language=lang)
    reply = await chat.text(answer)
    if lang == "en":
        assert reply == (
            "Thank you for telling us. Your attorney will contact you about what to do next."
        )
    else:
        assert reply == "Gracias por avisarnos. Su abogado le contactará para ver qué hacer."
    appt = await appointment(services, appt_id)
    assert appt.declined_at == clock() and appt.confirmed_at is None
    [alert] = await sent(services, kind="staff")
    assert alert.staff_id == world.attorney_id and alert.chat_id is None
    assert alert.text == (
        f"Case {world.reference}: the client cannot come to the hearing on "
        "Thu, Mar 12, 2026, 10:30 AM. Please contact them to arrange what happens next."
    )
    assert "car" not in alert.text  # the ref and the fact, never what they wrote
    assert await sent(services, kind="alert") == []


async def test_cannot_come_without_an_attorney_flags_the_case(
    services: Services, clock: FakeClock
) -> None:
    world, _appt_id, chat = await reminded(services, clock, attorney=False)
    await chat.text("2 I am in hospital")
    [alert] = await sent(services, kind="alert")
    assert alert.chat_id == STAFF_CHAT
    assert alert.text.startswith(f"Case {world.reference}: the client cannot come")
    assert alert.text.endswith("No attorney is assigned.")
    assert "hospital" not in alert.text
    assert (await case_row(services, world)).needs_review


async def test_discreet_client_gets_neutral_words(services: Services, clock: FakeClock) -> None:
    world, _appt_id, chat = await reminded(services, clock, discreet=True)
    [booked] = [s.text for s in await sent(services, kind="appointment")]
    assert booked == (
        "Your appointment is booked for Thu, Mar 12, 2026, 10:30 AM. We will remind you before it."
    )
    [reminder] = [s.text for s in await sent(services, kind="reminder")]
    assert reminder == (
        "Reminder: your appointment is on Thu, Mar 12, 2026, 10:30 AM."
        "\n\n1. Confirm\n2. I cannot come"
    )
    assert "Court" not in booked + reminder
    assert "hearing" not in reminder and "lease" not in reminder
    assert await chat.text("2") == "Thank you for telling us. We will contact you."
    assert world.reference  # the attorney is still told which case
    assert len(await sent(services, kind="staff")) == 1


async def test_an_english_reminder_with_a_date_stays_gsm7(
    services: Services, clock: FakeClock
) -> None:
    """CLDR's narrow no-break space before AM would make it UCS-2, costing up to 3x the segments."""
    await reminded(services, clock)
    [reminder] = [s.text for s in await sent(services, kind="reminder")]
    assert "Thu, Mar 12, 2026, 10:30 AM" in reminder
    assert encoding(reminder) == "GSM-7", [hex(ord(c)) for c in reminder if not is_gsm7(c)]


async def test_an_answer_is_audited(services: Services, clock: FakeClock) -> None:
    world, _appt_id, chat = await reminded(services, clock)
    await chat.text("1")
    async with services.sessions() as session:
        rows = (
            await session.exec(select(AuditLog).where(AuditLog.action == "appointment.confirm"))
        ).all()
    assert [(r.case_id, r.client_id) for r in rows] == [(world.case_id, world.client_id)]


async def test_without_a_reminder_1_is_not_a_confirmation(
    services: Services, clock: FakeClock
) -> None:
    world = await open_case(services)
    appt_id = await book(services, world, HEARING)
    chat = Chat(services, address=PHONE, client_id=world.client_id)
    await chat.text("1")
    assert (await appointment(services, appt_id)).confirmed_at is None


async def test_a_newer_message_makes_the_reminder_stale(
    services: Services, clock: FakeClock
) -> None:
    world, appt_id, chat = await reminded(services, clock)
    async with transaction(services.sessions) as session:
        case = await repo.require_case(session, reference=world.reference)
        await repo.record_status(session, case=case, status="in progress", at=clock())
        await tell_status_change(session, services, case)
    await chat.text("1")  # answers whatever was said last, not the reminder
    assert (await appointment(services, appt_id)).confirmed_at is None


async def test_other_words_after_a_reminder_go_to_the_conversation(
    services: Services, clock: FakeClock
) -> None:
    _world, appt_id, chat = await reminded(services, clock)
    await chat.text("what should I wear")
    appt = await appointment(services, appt_id)
    assert appt.confirmed_at is None and appt.declined_at is None


async def test_a_cancelled_appointment_takes_no_answer(
    services: Services, clock: FakeClock
) -> None:
    from bot.casework import appointments
    from storage.models import Appointment

    _world, appt_id, chat = await reminded(services, clock)
    async with transaction(services.sessions) as session:
        appt = await session.get(Appointment, appt_id)
        assert appt is not None
        appt.status = "cancelled"  # cancelled elsewhere without a message, say by an import
        assert appt.status == appointments.CANCELLED
    await chat.text("1")
    assert (await appointment(services, appt_id)).confirmed_at is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", "1"),
        ("yes", "1"),
        ("OK", "1"),
        ("confirm", "1"),
        ("I'll be there", "1"),
        ("1 thanks", "1"),
        ("1.", "1"),
        ("Sí", "1"),
        ("si", "1"),
        ("confirmo", "1"),
        ("2", "2"),
        ("No", "2"),
        ("can't", "2"),
        ("CANT", "2"),
        ("cannot", "2"),
        ("I can't make it", "2"),
        ("2 my car broke down", "2"),
        ("no puedo", "2"),
        ("no podré", "2"),
        ("No voy", "2"),
    ],
)
def test_reminder_answer_words(text: str, value: str) -> None:
    found = parse_answer(text, None, REMINDER_WORDS)
    assert found is not None and found.value == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("all fine", "1"),
        ("todo bien", "1"),
        ("something changed", "2"),
        ("Algo cambió", "2"),
        ("talk to my attorney", "3"),
        ("Hablar con mi abogada", "3"),
    ],
)
def test_check_in_answer_words(text: str, value: str) -> None:
    found = parse_answer(text, None, CHECKIN_WORDS)
    assert found is not None and found.value == value


def test_answer_words_are_whole_messages() -> None:
    assert parse_answer("no problem, see you", None, REMINDER_WORDS) is None
    assert parse_answer("yesterday", None, REMINDER_WORDS) is None
    assert parse_answer("12", None, REMINDER_WORDS) is None
    assert parse_answer("2", "9", REMINDER_WORDS) is not None  # text wins over a stray button
    found = parse_answer("3 please call me", None, CHECKIN_WORDS)
    assert found is not None and (found.value, found.rest) == ("3", "please call me")


# --------------------------------------------------------------------------- check-ins


async def checked_in(services: Services, clock: FakeClock, **kw: object) -> tuple[World, Chat]:
    world = await open_case(services, **kw)  # type: ignore[arg-type]
    clock.advance(days=31)
    assert (await Scheduler(services).tick()).done == 1
    return world, Chat(services, address=PHONE, client_id=world.client_id)


async def body_readable_without_client_key(services: Services, world: World) -> bool:
    """True when the newest staff message can be read with the master key alone."""
    async with services.sessions() as session:
        msg = (
            await session.exec(
                select(Message)
                .where(Message.staff_id == world.attorney_id)
                .order_by(col(Message.id).desc())
            )
        ).first()
        assert msg is not None
    try:
        return services.vault.open_text(msg.body_enc, "message.body") is not None
    except Exception:
        return False


@pytest.mark.parametrize("answer", ["1", "Todo bien"])
async def test_check_in_all_fine(services: Services, clock: FakeClock, answer: str) -> None:
    _world, chat = await checked_in(services, clock)
    assert await chat.text(answer) == "Thank you. We will keep you posted."
    assert await sent(services, kind="staff") == []


async def test_check_in_change_with_words_goes_to_the_attorney_only(
    services: Services, clock: FakeClock
) -> None:
    world, chat = await checked_in(services, clock)
    reply = await chat.text("2 I lost my job and the landlord called")
    assert reply == "Thank you. We passed this on; you will hear from us soon."
    [note] = await sent(services, kind="staff")
    assert note.staff_id == world.attorney_id
    assert note.text == (
        f"Check-in, case {world.reference}: the client says something changed.\n"
        "They wrote: I lost my job and the landlord called"
    )
    assert note.client_id == world.client_id  # encrypted under the client's key
    assert not await body_readable_without_client_key(services, world)
    assert await sent(services, kind="alert") == []


async def test_check_in_change_asks_what_changed(services: Services, clock: FakeClock) -> None:
    world, chat = await checked_in(services, clock, language="es")
    await chat.text("algo cambió")
    # Queued with the message id remembered, so the next message is known to answer it.
    question = (await sent(services, kind="reply"))[-1]
    assert question.text == "¿Qué cambió? Escríbalo en un mensaje y lo pasaremos."
    assert question.urgent  # a client waiting for an answer is not held by quiet hours
    assert await chat.text("Me llegó una carta del juzgado") == (
        "Gracias. Lo pasamos; pronto tendrá noticias nuestras."
    )
    notes = await staff_messages(services)
    assert notes == [
        f"Check-in, case {world.reference}: the client says something changed.",
        f"Check-in, case {world.reference}: the client says something changed.\n"
        "They wrote: Me llegó una carta del juzgado",
    ]
    # The detail was taken once; the next message is the conversation's again.
    await chat.text("gracias")
    assert len(await staff_messages(services)) == 2


@pytest.mark.parametrize("answer", ["3", "abogado"])
async def test_check_in_talk_to_my_attorney(
    services: Services, clock: FakeClock, answer: str
) -> None:
    world, chat = await checked_in(services, clock)
    assert await chat.text(answer) == "Thank you. We passed this on; you will hear from us soon."
    assert await staff_messages(services) == [
        f"Check-in, case {world.reference}: the client says they want to talk to you."
    ]


async def test_check_in_without_an_attorney_tells_the_group_the_flag_only(
    services: Services, clock: FakeClock
) -> None:
    world, chat = await checked_in(services, clock, attorney=False)
    await chat.text("2 my ex is threatening me again")
    [alert] = await sent(services, kind="alert")
    assert alert.text == (
        f"Check-in, case {world.reference}: the client reports a change. No attorney is assigned."
    )
    assert "threat" not in alert.text
    assert (await case_row(services, world)).needs_review
    assert await sent(services, kind="staff") == []

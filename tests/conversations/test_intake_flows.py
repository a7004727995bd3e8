"""Whole intakes, message by message, as the router runs them: every branch to its end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlmodel import select

from bot.clock import FakeClock
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import AdverseParty, ConsentEvent, ScheduledItem
from tests.conftest import make_settings
from tests.conversations.chat import Chat, alert_texts, english_leaks

Step = tuple[str, str]

EN_START: list[Step] = [
    ("Hi", "Reply with the number of your language"),
    ("1", "offers free legal help"),
    ("yes", "safe for us to text you"),
    ("yes", "What is your full name?"),
    ("Maria Lopez", "ZIP code"),
    ("10001", "What is your legal problem about?"),
    ("1", "what is happening"),
    ("My landlord says I must leave", "court date, hearing or deadline"),
]
EN_NO_DEADLINE: list[Step] = [("no", "Has any of this happened?"), ("3", "How many people")]
EN_MONEY: list[Step] = [("3", "how much money"), ("$1,200 a month", "name of the other side")]
EN_OTHER_SIDE: list[Step] = [("Acme Properties", "Please check your answers")]
EN_CONFIRM: list[Step] = [("1", "Your case number is")]
EN_WHOLE = EN_START + EN_NO_DEADLINE + EN_MONEY + EN_OTHER_SIDE + EN_CONFIRM

ES_WHOLE: list[Step] = [
    ("Hola", "Responda con el número de su idioma"),
    ("2", "ofrece ayuda legal gratis"),
    ("sí", "¿Es seguro enviarle mensajes"),
    ("sí", "¿Cuál es su nombre completo?"),
    ("María López", "código postal"),
    ("10001", "problema legal"),
    ("vivienda", "¿qué está pasando?"),
    ("Mi casero quiere sacarme del apartamento", "fecha de corte"),
    ("no", "¿Le ha pasado algo de esto?"),
    ("nada de esto", "¿Cuántas personas"),
    ("tres", "¿Cuánto dinero"),
    ("1.200 al mes", "otra parte"),
    ("saltar", "Revise sus respuestas"),
    ("sí", "Su número de caso es"),
]

# The same client, who says at once that texting this phone is not safe.
EN_UNSAFE: list[Step] = [*EN_START[:3], ("no", "How can we reach you safely?")]
EN_AFTER_SAFETY: list[Step] = [
    ("Maria Lopez", "ZIP code"),
    ("10001", "What is your question about?"),
    ("1", "how can we help"),
    ("My landlord says I must leave", "date or deadline coming up"),
    ("no", "Is it urgent?"),
    ("3", "How many people"),
    *EN_MONEY[:1],
    ("$1,200 a month", "person or company involved"),
    ("Acme Properties", "Please check your answers"),
]

PRIVATE = ("Maria", "Lopez", "María", "López", "landlord", "leave", "Acme", "casero", "sacarme")


async def run(chat: Chat, steps: list[Step]) -> str:
    """Send each answer and check the reply asks what comes next; returns the last reply."""
    reply = ""
    for answer, expected in steps:
        reply = await chat.text(answer)
        assert expected in reply, f"after {answer!r}:\n{chat.transcript()}"
    return reply


@asynccontextmanager
async def other_services(
    database_url: str, tmp_path: Path, clock: FakeClock, **overrides: Any
) -> AsyncIterator[Services]:
    settings = make_settings(
        database_url,
        tmp_path / "data",
        TELEGRAM_STAFF_CHAT_ID="-100999",
        PROGRAM_NAME="Legal Aid Line",
        **overrides,
    )
    services = Services.build(settings, clock=clock)
    try:
        yield services
    finally:
        await services.close()


def assert_private(texts: list[str]) -> None:
    for text in texts:
        for word in PRIVATE:
            assert word not in text, f"{word!r} leaked into a staff alert: {text!r}"


async def test_english_intake_creates_the_case(services: Services) -> None:
    chat = Chat(services)
    last = await run(chat, EN_WHOLE)

    (case,) = await chat.cases()
    assert case.reference in last
    assert "What happens next" in last and "2 business days" in last
    assert case.category == "housing"
    assert not case.urgent and not case.discreet and not case.conflict_flag
    assert case.eligibility is not None
    assert case.eligibility["year"] == 2025
    assert case.eligibility["within_percent"] == 125
    assert case.eligibility["household_size"] == 3
    assert case.eligibility["guideline_annual"] == 15650 + 2 * 5500

    client = await chat.client()
    vault = services.vault
    assert repo.client_name(vault, client) == "Maria Lopez"
    assert client.name_hash == repo.client_name_hash(vault, "maria  LOPEZ")
    intake = repo.client_key(vault, client).open_json(case.intake_enc, "case.intake")
    assert intake["answers"]["description"] == "My landlord says I must leave"
    assert intake["answers"]["income"] == "1200.00"
    assert b"landlord" not in (case.intake_enc or b"")

    async with services.sessions() as session:
        (party,) = (await session.exec(select(AdverseParty))).all()
        assert repo.adverse_party_name(vault, client, party) == "Acme Properties"
        consent = (await session.exec(select(ConsentEvent))).all()
        assert [(c.kind, c.source) for c in consent] == [("consent", "intake")]
        nudge = (await session.exec(select(ScheduledItem))).one()
        assert nudge.status == "cancelled"

    state = await chat.state()
    assert state is not None and state.state == "done" and state.data_enc is None

    (alert,) = await alert_texts(services)
    assert case.reference in alert and "housing" in alert and "125%" in alert
    assert "URGENT" not in alert and "CONFLICT" not in alert
    assert_private([alert])


async def test_spanish_newcomer_who_says_hola_finishes_in_spanish(services: Services) -> None:
    chat = Chat(services)
    last = await run(chat, ES_WHOLE)

    (case,) = await chat.cases()
    assert f"Su número de caso es {case.reference}" in last
    assert "días hábiles" in last
    client = await chat.client()
    assert client.language == "es"
    for sent, replies in chat.log[1:]:
        for reply in replies:
            assert not english_leaks(reply), f"after {sent!r}: {reply!r}"
    summary = chat.log[-2][1][0]
    assert "Vivienda o desalojo" in summary and "$1,200" in summary
    assert "Otra parte: Ninguno" in summary
    async with services.sessions() as session:
        assert not (await session.exec(select(AdverseParty))).all()
    assert case.category == "housing" and case.eligibility is not None
    assert_private(await alert_texts(services))


async def test_outside_the_service_area_gets_a_referral_and_no_case(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    async with other_services(
        database_url, tmp_path, clock, SERVICE_AREA_ZIPS="10001, 10002"
    ) as services:
        chat = Chat(services)
        await run(chat, EN_START[:5])
        reply = await chat.text("90210")
        assert "only help people who live in our service area" in reply
        assert "lawhelp.org" in reply
        assert await chat.cases() == []
        assert await alert_texts(services) == []
        # Writing again starts over; an address inside the area carries on.
        await run(chat, EN_START[:5])
        assert "legal problem" in await chat.text("10002")


async def test_a_hearing_within_seven_days_is_urgent_and_alerts_at_once(
    services: Services,
) -> None:
    chat = Chat(services)
    await run(chat, EN_START)
    await run(chat, [("yes", "When is it?")])
    assert await alert_texts(services) == []
    await run(chat, [("3/5", "Has any of this happened?")])  # Thursday; today is Monday
    (early,) = await alert_texts(services)
    assert "URGENT" in early and "within 7 days" in early and "housing" in early
    last = await run(
        chat, [("3", "How many people"), *EN_MONEY, *EN_OTHER_SIDE, ("1", "Your matter is urgent")]
    )
    (case,) = await chat.cases()
    assert case.urgent and case.reference in last
    texts = await alert_texts(services)
    assert len(texts) == 2 and case.reference in texts[1] and "URGENT" in texts[1]
    assert_private(texts)


async def test_lockout_and_violence_are_urgent(services: Services) -> None:
    chat = Chat(services)
    await run(chat, [*EN_START, ("no", "Has any of this happened?")])
    reply = await chat.text("2")
    assert "If you are in danger right now, call 911." in reply
    await run(chat, [("back", "Has any of this happened?")])
    await run(chat, [("locked out", "How many people"), *EN_MONEY, *EN_OTHER_SIDE])
    await run(chat, EN_CONFIRM)
    (case,) = await chat.cases()
    assert case.urgent
    texts = await alert_texts(services)
    assert "violence or threats" in texts[0]
    assert "locked out" in texts[-1] and "violence" not in texts[-1]
    assert_private(texts)


async def test_a_date_the_client_does_not_know_is_flagged_for_review(services: Services) -> None:
    chat = Chat(services)
    await run(chat, [*EN_START, ("yes", "When is it?"), ("not sure", "Has any of this")])
    await run(chat, [("3", "How many people"), *EN_MONEY, *EN_OTHER_SIDE])
    summary = chat.log[-1][1][0]
    assert "Date: Not sure" in summary
    await run(chat, EN_CONFIRM)
    (case,) = await chat.cases()
    assert case.needs_review and not case.urgent
    assert "does not know when" in (await alert_texts(services))[-1]


async def test_income_over_200_percent_is_recorded_and_said_gently(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_START + EN_NO_DEADLINE)
    await run(chat, [("1", "how much money"), ("5,000", "other side"), ("skip", "Please check")])
    last = await run(chat, [("1", "Your income may be above our limit")])
    (case,) = await chat.cases()
    assert case.reference in last
    assert case.eligibility is not None
    assert case.eligibility["eligible"] is False and case.eligibility["within_percent"] is None
    assert case.eligibility["percent_of_guideline"] == 383
    assert "above every limit" in (await alert_texts(services))[-1]


async def test_income_between_125_and_200_percent(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_START + EN_NO_DEADLINE)
    await run(chat, [("1", "how much money"), ("1800", "other side"), ("skip", "Please check")])
    last = await run(chat, EN_CONFIRM)
    assert "What happens next" in last
    (case,) = await chat.cases()
    assert case.eligibility is not None and case.eligibility["within_percent"] == 200


async def _existing_case(
    services: Services, *, client_name: str, adverse: str | None, phone: str = "+15555550999"
) -> str:
    async with transaction(services.sessions) as session:
        other = await repo.create_client(
            session, vault=services.vault, channel="sms", address=phone, name=client_name
        )
        case = await repo.create_case(session, client=other, category="housing")
        if adverse:
            await repo.add_adverse_party(
                session, vault=services.vault, client=other, case=case, name=adverse
            )
        return case.reference


async def _conflict_intake(services: Services, other_side: str) -> tuple[Chat, str]:
    chat = Chat(services)
    await run(chat, EN_START + EN_NO_DEADLINE)
    await run(chat, [("3", "how much money"), ("1200", "other side"), (other_side, "Please check")])
    last = await run(chat, EN_CONFIRM)
    return chat, last


async def test_other_side_who_is_our_client_is_a_possible_conflict(services: Services) -> None:
    await _existing_case(services, client_name="John Smith", adverse=None)
    chat, last = await _conflict_intake(services, "JOHN   smith")
    (case,) = await chat.cases()
    assert case.conflict_flag and case.needs_review
    assert "conflict" not in last.lower() and "What happens next" in last
    alert = (await alert_texts(services))[-1]
    assert "POSSIBLE CONFLICT" in alert and "the other side has the name of client" in alert
    assert "John" not in alert and "Smith" not in alert
    assert_private([alert])


async def test_client_who_is_the_other_side_of_a_case_is_a_possible_conflict(
    services: Services,
) -> None:
    ref = await _existing_case(services, client_name="Ann Lee", adverse="maria lopez")
    chat, _last = await _conflict_intake(services, "skip")
    (case,) = await chat.cases()
    assert case.conflict_flag
    alert = (await alert_texts(services))[-1]
    assert f"the client's name is the other side in case {ref}" in alert


async def test_shared_other_side_is_shown_to_coordinators(services: Services) -> None:
    ref = await _existing_case(services, client_name="Ann Lee", adverse="Acme Properties")
    chat, _last = await _conflict_intake(services, "acme properties")
    (case,) = await chat.cases()
    assert case.conflict_flag
    assert f"also the other side in case {ref}" in (await alert_texts(services))[-1]


async def test_no_conflict_with_unrelated_names(services: Services) -> None:
    await _existing_case(services, client_name="Ann Lee", adverse="Bob Stone")
    chat, _last = await _conflict_intake(services, "Acme Properties")
    (case,) = await chat.cases()
    assert not case.conflict_flag and not case.needs_review


async def test_unsafe_to_text_means_discreet_with_a_safer_time(services: Services) -> None:
    chat = Chat(services)
    await run(chat, [*EN_UNSAFE, ("1", "What days and times")])
    await run(chat, [("weekdays 9 to 12", "What is your full name?"), *EN_AFTER_SAFETY])
    last = await run(chat, [("1", "Your number is")])
    assert "case" not in last.lower() and "legal" not in last.lower()
    (case,) = await chat.cases()
    client = await chat.client()
    assert client.discreet and case.discreet
    safe = repo.client_key(services.vault, client).open_json(
        client.safe_time_enc, "client.safe_time"
    )
    assert safe == {"option": "time", "time": "weekdays 9 to 12"}
    alert = (await alert_texts(services))[-1]
    assert "Discreet" in alert and "weekdays" not in alert


async def test_unsafe_to_text_with_another_number(services: Services) -> None:
    chat = Chat(services)
    await run(chat, [*EN_UNSAFE, ("2", "What number is safe?")])
    await run(chat, [("my cousin", "phone number, for example")])
    await run(chat, [("(212) 555-0147", "What is your full name?"), *EN_AFTER_SAFETY])
    await run(chat, [("1", "Your number is")])
    client = await chat.client()
    safe = repo.client_key(services.vault, client).open_json(
        client.safe_time_enc, "client.safe_time"
    )
    assert safe == {"option": "phone", "phone": "+12125550147"}


async def test_fixing_answers_from_the_summary(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_WHOLE[:-1])
    await run(chat, [("2", "What do you want to fix?"), ("zip", "ZIP code")])
    summary = await run(chat, [("10002", "Please check your answers")])
    assert "ZIP: 10002" in summary
    # A changed yes/no takes its branch, then comes back to the summary.
    await run(chat, [("fix something", "What do you want to fix?")])
    await run(chat, [("Court date or deadline", "court date"), ("yes", "When is it?")])
    summary = await run(chat, [("4/20", "Please check your answers")])
    assert "Date: Apr 20, 2026" in summary and "People at home: 3" in summary
    # Back to "no": the date is dropped, not kept from the branch no longer taken.
    await run(chat, [("2", "fix"), ("6", "court date"), ("no", "Please check")])
    assert "Date:" not in chat.log[-1][1][0]
    await run(chat, EN_CONFIRM)
    (case,) = await chat.cases()
    client = await chat.client()
    intake = repo.client_key(services.vault, client).open_json(case.intake_enc, "case.intake")
    assert intake["answers"]["zip"] == "10002"
    assert intake["answers"]["has_deadline"] is False and "deadline" not in intake["answers"]


async def test_telegram_buttons_answer_the_same_questions(services: Services) -> None:
    chat = Chat(services, channel="telegram", address="424242")
    shown = await chat.send("/start")
    assert chat.last[0].choices[0].value == "en" and "1. English" not in shown[0]
    assert "ofrece ayuda legal" in await chat.text("", choice="es")
    assert [c.value for c in chat.last[0].choices] == ["yes", "no"]
    assert "Es seguro enviarle mensajes" in await chat.text("", choice="yes")
    assert "nombre completo" in await chat.text("", choice="yes")
    await run(chat, [("Ana Ruiz", "código postal"), ("10001", "problema legal")])
    assert [c.value for c in chat.last[0].choices][:2] == ["housing", "family"]
    assert "¿qué está pasando?" in await chat.text("", choice="immigration")
    assert (await chat.client()).language == "es"


async def test_answers_can_be_numbers_labels_or_words(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_START[:6])
    assert "what is happening" in await chat.text("Housing or eviction")
    await run(chat, [("back", "legal problem")])
    assert "what is happening" in await chat.text("my landlord wants more rent")
    await run(chat, [("back", "legal problem")])
    assert "what is happening" in await chat.text("6.")


async def test_alerts_hold_no_client_words_or_number(services: Services) -> None:
    """An urgent, discreet case: both alerts are built from fixed words, reference and flags."""
    chat = Chat(services)
    await run(chat, [*EN_UNSAFE, ("3", "full name"), *EN_AFTER_SAFETY[:4]])
    await run(chat, [("yes", "When is it?"), ("tomorrow", "Is it urgent?")])
    await run(chat, [("2", "How many"), *EN_AFTER_SAFETY[6:], ("1", "Your number is")])
    texts = await alert_texts(services)
    assert len(texts) == 2
    assert_private(texts)
    assert all("+1555" not in t for t in texts)

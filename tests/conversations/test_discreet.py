"""A client whose phone is not safe: from that answer on, nothing sent names the problem.

A client reports violence and says texting this number is not safe, in English and in
Spanish, through the whole intake as the router runs it. Every text queued to that phone
after the safety answer, and the booking, reminder, status notice, check-in and broadcast
that follow, is checked against the client's own words and the words that name the
problem, taken from the intake file and the catalogs of that language.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import timedelta

import pytest

from bot.casework import broadcast
from bot.casework.appointments import KIND_LABELS
from bot.clock import FakeClock
from bot.conversations.engine import render
from bot.conversations.intake import DANGER_NOW, load_intake
from bot.i18n import gettext
from bot.scheduler import Scheduler
from bot.services import Services
from storage import repo
from storage.db import transaction
from tests.casework import World, book, sent
from tests.conversations.chat import Chat, english_leaks
from tests.conversations.test_intake_flows import Step, run
from tests.conversations.test_status import change_status

# Words that name violence, abuse or a court, typed for each language; the labels and
# questions that name the problem come from the intake file and the catalogs.
NAMING_WORDS = {
    "en": ("violence", "abuse", "court", "domestic", "hearing", "threat"),
    "es": ("violencia", "abuso", "maltrato", "corte", "tribunal", "audiencia", "amenaza"),
}


@dataclass(frozen=True)
class Intake:
    """One client's intake: the answers up to "not safe", then the rest, and their words."""

    lang: str
    address: str
    to_safety: list[Step]
    unsafe: Step
    rest: list[Step]
    description: str
    other_side: str
    channel: str = "sms"


EN = Intake(
    lang="en",
    address="+15555550171",
    to_safety=[
        ("Hi", "Reply with the number of your language"),
        ("1", "offers free legal help"),
        ("yes", "safe for us to text you"),
    ],
    unsafe=("no", "How can we reach you safely?"),
    rest=[
        ("3", "What is your full name?"),
        ("Rosa Diaz", "ZIP code"),
        ("10001", "What is your question about?"),
        ("2", "how can we help"),
        ("My partner hit me and took my keys", "date or deadline coming up"),
        ("yes", "When is it?"),
        ("tomorrow", "Is it urgent?"),
        ("2", "How many people"),
        ("2", "how much money"),
        ("900", "person or company involved"),
        ("Victor Stone", "Please check your answers"),
        ("1", "Your number is"),
    ],
    description="My partner hit me and took my keys",
    other_side="Victor Stone",
)

ES = Intake(
    lang="es",
    address="+15555550172",
    to_safety=[
        ("Hola", "Responda con el número de su idioma"),
        ("2", "ofrece ayuda legal gratis"),
        ("sí", "¿Es seguro enviarle mensajes"),
    ],
    unsafe=("no", "¿Cómo podemos contactarle de forma segura?"),
    rest=[
        ("3", "¿Cuál es su nombre completo?"),
        ("Rosa Díaz", "código postal"),
        ("10001", "¿Sobre qué es su consulta?"),
        ("2", "¿cómo podemos ayudarle?"),
        ("Mi pareja me golpeó y me quitó las llaves", "fecha o plazo"),
        ("sí", "¿Cuándo es?"),
        ("mañana", "¿Es urgente?"),
        ("2", "¿Cuántas personas"),
        ("2", "¿Cuánto dinero"),
        ("900", "otra persona o compañía"),
        ("Víctor Piedra", "Revise sus respuestas"),
        ("1", "Su número es"),
    ],
    description="Mi pareja me golpeó y me quitó las llaves",
    other_side="Víctor Piedra",
)


TELEGRAM = dataclasses.replace(EN, address="777001", channel="telegram")


def naming(services: Services, lang: str, *own: str) -> list[str]:
    """What must never reach a discreet client, in ``lang``: their words and the problem's."""
    dialogue = load_intake(services.settings).dialogue
    words = [*own]
    for text in own:  # and each telling word of what they wrote
        words += [w for w in text.split() if len(w) >= 5]
    for spec in dialogue.states.values():
        if spec.discreet_prompt:  # the question that has a neutral twin names the problem
            words += [gettext(lang, prompt) for prompt in spec.prompt]
        if spec.sensitive and spec.label:  # an answer never read back: its summary line
            words.append(gettext(lang, spec.label) + ":")
        # The labels that have a neutral twin name a problem or a danger.
        words += [gettext(lang, c.label) for c in spec.choices if c.discreet_label]
    words.append(gettext(lang, KIND_LABELS["hearing"]))
    words += NAMING_WORDS[lang]
    assert gettext(lang, "Family or domestic violence") in words
    assert gettext(lang, "Violence or threats") in words
    return words


def leaks(texts: list[str], words: list[str]) -> list[tuple[str, str]]:
    return [(w, t) for t in texts for w in words if w.casefold() in t.casefold()]


async def texts_to(services: Services, client_id: int) -> list[str]:
    """Every text queued for this client, with its buttons' labels and data, oldest first."""
    return [
        f"{s.text}\n{s.extra}" if s.extra else s.text
        for s in await sent(services)
        if s.client_id == client_id and not s.staff_id
    ]


async def discreet_intake(services: Services, intake: Intake) -> tuple[Chat, int]:
    """The whole intake; returns the chat and how many texts the phone had before "not safe"."""
    chat = Chat(services, address=intake.address, language=intake.lang, channel=intake.channel)
    await run(chat, intake.to_safety)
    before = len(await texts_to(services, await chat.ensure_client()))
    await run(chat, [intake.unsafe, *intake.rest])
    return chat, before


@pytest.mark.parametrize("intake", [EN, ES, TELEGRAM], ids=["en", "es", "telegram"])
async def test_violence_on_an_unsafe_phone_is_never_named_again(
    services: Services, intake: Intake
) -> None:
    chat, before = await discreet_intake(services, intake)
    lang = intake.lang
    (case,) = await chat.cases()
    client = await chat.client()
    assert client.discreet and case.discreet and case.urgent and case.category == "family"
    # The answers were kept for the team: only the texts are neutral.
    answers = repo.client_key(services.vault, client).open_json(case.intake_enc, "case.intake")
    assert answers["answers"]["danger"] == "violence"
    assert answers["answers"]["description"] == intake.description

    assert client.id is not None
    after = (await texts_to(services, client.id))[before:]
    assert len(after) >= len(intake.rest) + 1  # each answer's reply, and the 911 line
    shown = [text for _sent, texts in chat.log[len(intake.to_safety) :] for text in texts]
    words = naming(services, lang, intake.description, intake.other_side)
    assert leaks(after + shown, words) == []
    # The options were shown, in their neutral words (numbered on SMS, buttons on Telegram).
    assert any(gettext(lang, "Yes, I do not feel safe") in text for text in after)
    if lang != "en":
        assert [english_leaks(t) for t in after if english_leaks(t)] == []

    # Urgent, in neutral words, with what to do in danger now; never the 2-day promise.
    ending = "\n".join(after[-3:])
    assert case.reference in ending
    urgent = "We will try to contact you today or the next business day, in the way you chose."
    assert gettext(lang, urgent) in ending
    assert gettext(lang, DANGER_NOW) in ending
    usual = "We will contact you within {response_days} business days, in the way you chose."
    assert render(gettext(lang, usual), {"response_days": 2}) not in ending


@pytest.mark.parametrize("intake", [EN, ES], ids=["en", "es"])
async def test_what_follows_the_intake_is_neutral_too(
    services: Services, clock: FakeClock, intake: Intake
) -> None:
    """The booking, its reminder, a status notice, a check-in and a broadcast."""
    chat, _before = await discreet_intake(services, intake)
    (case,) = await chat.cases()
    client = await chat.client()
    assert case.id is not None and client.id is not None
    world = World(client.id, case.id, case.reference, None)
    start = len(await texts_to(services, client.id))

    hearing = clock() + timedelta(days=10)
    await book(services, world, hearing, place="Family Court, Part 7", bring="the police report")
    clock.set(hearing - timedelta(days=1))
    await Scheduler(services).tick()
    await change_status(services, world, "Protective order hearing scheduled")
    await change_status(services, world, "accepted")
    async with transaction(services.sessions) as session:
        row = await repo.require_case(session, reference=case.reference)
        row.last_news_at = clock()
        session.add(row)
    clock.set(hearing + timedelta(days=services.settings.checkin_after_days + 1))
    await Scheduler(services).tick()

    texts = (await texts_to(services, client.id))[start:]
    kinds = {s.kind for s in await sent(services) if s.client_id == client.id}
    assert {"appointment", "reminder", "status", "checkin"} <= kinds, kinds
    words = naming(services, intake.lang, intake.description, intake.other_side)
    words += ["Family Court", "Part 7", "police", "Protective", case.reference]
    assert leaks(texts, words) == []

    # A broadcast reaches this phone only when the coordinator marked it safe for it.
    async with services.sessions() as session:
        plain = await broadcast.plan(session, services, "all", {"en": "x", "es": "x"})
        safe = await broadcast.plan(
            session, services, "all", {"en": "x", "es": "x"}, discreet_safe=True
        )
    assert client.id not in {r.client_id for r in plain.recipients}
    assert (client.id, broadcast.SKIP_DISCREET) in {(s.client_id, s.reason) for s in plain.skipped}
    assert client.id in {r.client_id for r in safe.recipients}


async def test_a_case_marked_discreet_makes_its_client_discreet(services: Services) -> None:
    """Staff (or an import) marking one case discreet covers every text to that client."""
    async with transaction(services.sessions) as session:
        client = await repo.create_client(
            session, vault=services.vault, channel="sms", address="+15555550173"
        )
        await repo.create_case(session, client=client, category="family", discreet=True)
        other = await repo.create_case(session, client=client, category="housing")
        assert client.discreet and other.discreet

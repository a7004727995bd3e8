"""A program's own intake file drives the same engine; a broken one stops the bot at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.app import create_app
from bot.clock import FakeClock
from bot.config import ConfigError
from bot.services import Services
from storage import repo
from storage.db import transaction
from tests.conftest import make_settings
from tests.conversations.chat import Chat, alert_texts

SHORT_INTAKE = """
[dialogue]
name = "clinic"
start = "language"

[states.language]
type = "choice"
choices_from = "languages"
multilingual = true
prompt = "Reply with the number of your language:"
action = "set_language"
next = "welcome"

[states.welcome]
type = "yesno"
field = "consent"
prompt = "Can we ask you some questions?"
action = "record_consent"
branches = { no = "bye" }
next = "category"

[states.bye]
type = "end"
prompt = "OK."

[states.category]
type = "choice"
prompt = "What is your legal problem about?"
label = "Problem"
next = "summary"
choices = [
    { value = "immigration", label = "Immigration" },
    { value = "other", label = "Something else" },
]

[states.summary]
type = "summary"
prompt = "Please check your answers:"
fields = ["category"]
branches = { confirm = "create" }

[states.create]
type = "action"
action = "create_case"
next = "done"

[states.done]
type = "end"
prompt = "Thank you. Your case number is {reference} ({reference_spoken}). Please keep it."
"""


async def test_a_programs_own_intake_file(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "clinic.toml"
    path.write_text(SHORT_INTAKE)
    settings = make_settings(
        database_url, tmp_path / "data", INTAKE_FILE=str(path), TELEGRAM_STAFF_CHAT_ID="-100"
    )
    services = Services.build(settings, clock=clock)
    try:
        chat = Chat(services)
        for answer in ("hi", "2", "sí", "inmigración"):
            await chat.send(answer)
        assert "Problema: Inmigración" in chat.log[-1][1][0]
        reply = await chat.text("1")
        (case,) = await chat.cases()
        assert f"Su número de caso es {case.reference}" in reply
        assert case.category == "immigration"
        # Without household and income questions nobody assessed eligibility: a person will.
        assert case.eligibility is None and case.needs_review
        assert "Eligibility: not assessed" in (await alert_texts(services))[-1]
    finally:
        await services.close()


def test_a_broken_intake_file_stops_the_app(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "intake.toml"
    path.write_text(SHORT_INTAKE.replace('type = "yesno"', 'type = "maybe"'))
    settings = make_settings(database_url, tmp_path / "data", INTAKE_FILE=str(path))
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    assert str(info.value).startswith("intake file: intake.toml: state 'welcome': unknown type")


async def test_a_stale_write_is_refused(services: Services) -> None:
    chat = Chat(services)
    await chat.send("hi")
    async with transaction(services.sessions) as session:
        client = await chat.client()
        conv = await repo.load_conversation(session, client_id=client.id or 0)
        assert conv is not None and conv.version == 1
        with pytest.raises(repo.StaleConversation):
            await repo.save_conversation(
                session,
                vault=services.vault,
                client=client,
                flow="intake",
                state="name",
                data={},
                history=[],
                expected_version=0,
            )
    async with transaction(services.sessions) as session:
        with pytest.raises(repo.StaleConversation):
            await repo.save_conversation(
                session,
                vault=services.vault,
                client=client,
                flow="intake",
                state="name",
                data={},
                history=[],
                expected_version=None,  # "there was none": but there is
            )

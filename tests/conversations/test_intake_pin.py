"""A program that requires a PIN: the intake asks for one, keeps only its hash, never repeats it;
STATUS then answers only with it. Without the setting there is no PIN question."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.config import Settings
from bot.services import Services
from storage import repo
from tests.conftest import make_settings
from tests.conversations.chat import Chat
from tests.conversations.test_intake_flows import (
    EN_MONEY,
    EN_NO_DEADLINE,
    EN_START,
    EN_WHOLE,
    run,
)

PIN = "4321"
ASK = "Choose a PIN of 4 to 6 digits"


@pytest.fixture
def pin_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        PROBONO_REQUIRE_PIN="true",
        PROGRAM_NAME="Legal Aid Line",
    )


async def test_intake_asks_for_a_pin_and_keeps_only_its_hash(
    pin_settings: Settings, clock: FakeClock
) -> None:
    services = Services.build(pin_settings, clock=clock)
    try:
        chat = Chat(services)
        await run(chat, EN_START + EN_NO_DEADLINE + EN_MONEY)
        assert ASK in await chat.text("Acme Properties")
        reask = await chat.text("12ab")
        assert "4 to 6 digits, for example: 4821" in reask
        assert await chat.text("123") == reask  # too short: the same friendly re-ask
        summary = await chat.text(PIN)
        assert "Please check your answers" in summary

        client = await chat.client()
        assert client.pin_hash and PIN not in client.pin_hash
        assert repo.pin_matches(client, PIN) and not repo.pin_matches(client, "1234")
        state = await chat.state()
        assert state is not None and state.state == "summary"
        data = repo.conversation_data(services.vault, client, state)
        assert PIN not in json.dumps(data)
        assert "pin" not in data.get("answers", {})

        done = await chat.text("1")
        assert "Your case number is" in done
        (case,) = await chat.cases()
        intake = repo.client_key(services.vault, client).open_json(case.intake_enc, "case.intake")
        assert PIN not in json.dumps(intake)
        # The PIN was never said back, in any reply of the whole intake.
        replies = [text for _sent, texts in chat.log for text in texts]
        assert not any(PIN in text for text in replies)

        assert await chat.text("STATUS") == (
            "Please reply STATUS and your PIN, for example: STATUS 1234"
        )
        assert await chat.text("STATUS 9999") == (
            "That PIN is not right. Reply STATUS and your PIN to try again."
        )
        assert (await chat.text(f"STATUS {PIN}")).startswith(f"Your case {case.reference}:")
    finally:
        await services.close()


async def test_pin_reask_is_in_the_clients_language(
    pin_settings: Settings, clock: FakeClock
) -> None:
    services = Services.build(pin_settings, clock=clock)
    try:
        chat = Chat(services)
        await run(
            chat,
            [
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
            ],
        )
        ask = await chat.text("saltar")
        assert "PIN" in ask and ASK not in ask
        reask = await chat.text("abcd")
        assert "4821" in reask and "digits" not in reask
        assert "Revise sus respuestas" in await chat.text("٤٣٢١")  # Arabic-Indic digits
        assert repo.pin_matches(await chat.client(), PIN)
    finally:
        await services.close()


async def test_without_the_setting_there_is_no_pin_step(services: Services) -> None:
    chat = Chat(services)
    await run(chat, EN_WHOLE)
    assert not any(ASK in text for _sent, texts in chat.log for text in texts)
    assert (await chat.client()).pin_hash is None

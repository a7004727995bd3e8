"""Case status: the client is told of each change in plain words; STATUS answers the owner
only; discreet clients read neutral words; a stranger learns nothing and is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import col, select

from bot.casework.status import is_closing_status, load_statuses, tell_status_change
from bot.clock import FakeClock
from bot.config import ConfigError, Settings
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import AuditLog, Client
from tests.casework import PHONE, World, book, client_texts, open_case
from tests.conftest import make_settings
from tests.conversations.chat import Chat

HEARING = datetime(2026, 3, 12, 14, 30, tzinfo=UTC)
STRANGER = "+12025550999"
NO_CASE = "We have no open case to show for this number."


async def change_status(services: Services, world: World, new: str) -> None:
    async with transaction(services.sessions) as session:
        case = await repo.require_case(session, reference=world.reference)
        await repo.record_status(session, case=case, status=new, at=services.clock())
        await tell_status_change(session, services, case)


async def audits(services: Services, action: str = "status.ask") -> list[AuditLog]:
    async with services.sessions() as session:
        rows = await session.exec(
            select(AuditLog).where(AuditLog.action == action).order_by(col(AuditLog.id))
        )
        return list(rows.all())


def owner(services: Services, world: World) -> Chat:
    return Chat(services, address=PHONE, client_id=world.client_id)


# --------------------------------------------------------------------------- telling the client


async def test_a_status_change_is_told_in_plain_words(services: Services) -> None:
    world = await open_case(services)
    await change_status(services, world, "Hearing scheduled")
    assert await client_texts(services, kind="status") == [
        f"Legal Aid Line: news on your case {world.reference}: a court date has been set."
    ]
    async with services.sessions() as session:
        history = await repo.status_history(session, case_id=world.case_id)
    assert [h.status for h in sorted(history, key=lambda h: h.id or 0)] == [
        "open",
        "Hearing scheduled",
    ]


async def test_a_status_change_in_spanish(services: Services) -> None:
    world = await open_case(services, language="es")
    await change_status(services, world, "closed")
    assert await client_texts(services, kind="status") == [
        f"Legal Aid Line: novedades en su caso {world.reference}: su caso está cerrado."
    ]


async def test_an_unknown_status_is_shown_as_recorded(services: Services) -> None:
    world = await open_case(services)
    await change_status(services, world, "Waiting for the landlord's answer")
    assert await client_texts(services, kind="status") == [
        f"Legal Aid Line: news on your case {world.reference}: the status is now: "
        "Waiting for the landlord's answer."
    ]


async def test_discreet_wording_has_no_category_reference_or_details(
    services: Services,
) -> None:
    world = await open_case(services, discreet=True, category="family")
    await change_status(services, world, "Protective order hearing scheduled")
    await change_status(services, world, "hearing scheduled")
    texts = await client_texts(services, kind="status")
    assert texts == [
        "News on your file: there is an update on your file.",
        "News on your file: a date has been set.",
    ]
    for text in texts:
        for word in (world.reference, "family", "order", "court", "hearing", "Legal Aid"):
            assert word.lower() not in text.lower()


async def test_telling_twice_sends_once(services: Services) -> None:
    world = await open_case(services)
    await change_status(services, world, "in progress")
    async with transaction(services.sessions) as session:
        case = await repo.require_case(session, reference=world.reference)
        await tell_status_change(session, services, case)  # a retried caller
    assert len(await client_texts(services, kind="status")) == 1


async def test_a_status_change_waits_for_quiet_hours(services: Services) -> None:
    world = await open_case(services)
    await change_status(services, world, "in progress")
    from tests.casework import sent

    [row] = await sent(services, kind="status")
    assert not row.urgent


# --------------------------------------------------------------------------- answering STATUS


async def test_the_owner_gets_status_and_next_appointment(services: Services) -> None:
    world = await open_case(services, status="in progress")
    await book(services, world, HEARING)
    answer = await owner(services, world).text("STATUS")
    assert answer == (
        f"Your case {world.reference}: your attorney is working on your case. "
        "Next court hearing: Thu, Mar 12, 2026, 10:30 AM, Housing Court, 111 Centre St, Room 4."
    )
    [row] = await audits(services)
    assert (row.allowed, row.case_id, row.actor_kind) == (True, world.case_id, "client")


async def test_a_vietnamese_client_reads_the_status_change_in_vietnamese(
    services: Services,
) -> None:
    vi = await open_case(services, language="vi")
    ar = await open_case(services, phone="+12025550188", language="ar", discreet=True)
    await change_status(services, vi, "Hearing scheduled")
    await change_status(services, ar, "closed")
    assert await client_texts(services, kind="status") == [
        f"Legal Aid Line: tin mới về hồ sơ {vi.reference}: ngày ra tòa đã được ấn định.",
        "جديد في ملفك: تم إغلاق ملفك.",
    ]


@pytest.mark.parametrize("word", ["status?", "Status please", "my case", "estado", "¿Estado?"])
async def test_status_words(services: Services, word: str) -> None:
    world = await open_case(services)
    answer = await owner(services, world).text(word)
    assert answer.startswith(f"Your case {world.reference}:")


async def test_status_in_spanish_and_the_client_time_zone(services: Services) -> None:
    world = await open_case(services, language="es", timezone="America/Los_Angeles")
    await book(services, world, HEARING)
    answer = await owner(services, world).text("estado")
    assert answer == (
        f"Su caso {world.reference}: recibimos su solicitud y la estamos revisando. "
        "Próxima audiencia en la corte: jue, 12 mar 2026, 7:30, Housing Court, 111 Centre St, "
        "Room 4."
    )


async def test_a_discreet_owner_gets_neutral_status(services: Services) -> None:
    world = await open_case(services, discreet=True, category="family", status="in progress")
    await book(services, world, HEARING)
    answer = await owner(services, world).text("STATUS")
    assert (
        answer == "Your file: we are working on it. Next appointment: Thu, Mar 12, 2026, 10:30 AM."
    )
    assert world.reference not in answer and "hearing" not in answer and "lease" not in answer
    assert "Court" not in answer  # the place names the problem: staff give it the safe way


async def test_a_stranger_learns_nothing(services: Services) -> None:
    await open_case(services)
    assert await Chat(services, address=STRANGER).text("STATUS") == NO_CASE
    [row] = await audits(services)
    assert (row.allowed, row.actor_kind, row.case_id) == (False, "stranger", None)


async def test_a_stranger_quoting_a_reference_learns_nothing(services: Services) -> None:
    world = await open_case(services)
    answer = await Chat(services, address=STRANGER).text(f"STATUS {world.reference}")
    assert answer == NO_CASE
    assert "open" not in answer.replace("no open case", "")
    [row] = await audits(services)
    assert (row.allowed, row.case_id) == (False, world.case_id)  # whose case was asked about


async def test_a_client_quoting_someone_elses_reference_learns_nothing(
    services: Services,
) -> None:
    victim = await open_case(services)
    other = await open_case(services, phone="+12025550188", attorney=False)
    chat = Chat(services, address="+12025550188", client_id=other.client_id)
    ref = victim.reference.replace("-", "").lower()  # however it is typed
    assert await chat.text(f"status {ref}") == NO_CASE
    [row] = await audits(services)
    assert (row.allowed, row.case_id, row.client_id) == (False, victim.case_id, other.client_id)


async def test_the_owner_may_quote_their_own_reference(services: Services) -> None:
    world = await open_case(services)
    answer = await owner(services, world).text(f"STATUS {world.reference}")
    assert answer.startswith(f"Your case {world.reference}:")


async def test_an_unverified_identity_learns_nothing(services: Services) -> None:
    world = await open_case(services)
    async with transaction(services.sessions) as session:
        [ident] = await repo.identities(session, client_id=world.client_id)
        ident.verified = False
        session.add(ident)
    assert await owner(services, world).text("STATUS") == NO_CASE
    [row] = await audits(services)
    assert row.allowed is False


async def test_a_closed_case_is_not_shown(services: Services) -> None:
    world = await open_case(services)
    async with transaction(services.sessions) as session:
        case = await repo.require_case(session, reference=world.reference)
        case.closed = True
    assert await owner(services, world).text("STATUS") == NO_CASE


# --------------------------------------------------------------------------- the optional PIN


@pytest.fixture
def pin_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data", PROBONO_REQUIRE_PIN="true")


async def test_pin_required_before_any_detail(pin_settings: Settings, clock: FakeClock) -> None:
    services = Services.build(pin_settings, clock=clock)
    try:
        world = await open_case(services)
        async with transaction(services.sessions) as session:
            client = await session.get(Client, world.client_id)
            assert client is not None
            repo.set_pin(client, "4821")
            session.add(client)
        chat = owner(services, world)
        assert await chat.text("STATUS") == (
            "Please reply STATUS and your PIN, for example: STATUS 1234"
        )
        assert await chat.text("STATUS 1111") == (
            "That PIN is not right. Reply STATUS and your PIN to try again."
        )
        answer = await chat.text("STATUS 4821")
        assert answer.startswith(f"Your case {world.reference}:")
        [wrong] = await audits(services, "status.pin")
        assert wrong.allowed is False and wrong.detail == "wrong PIN"
        for _ in range(4):
            await chat.text("STATUS 0000")
        # Five wrong tries within the hour: even the right PIN is refused now.
        assert await chat.text("STATUS 4821") == "Too many tries. Please contact us directly."
    finally:
        await services.close()


async def test_pin_required_but_never_set(pin_settings: Settings, clock: FakeClock) -> None:
    services = Services.build(pin_settings, clock=clock)
    try:
        world = await open_case(services)
        answer = await owner(services, world).text("STATUS 1234")
        assert answer == "For your case status, please contact us directly."
    finally:
        await services.close()


def test_pins_are_stored_hashed() -> None:
    client = Client()
    repo.set_pin(client, "4821")
    assert client.pin_hash is not None and "4821" not in client.pin_hash
    assert repo.pin_matches(client, "4821")
    assert not repo.pin_matches(client, "4822")
    assert not repo.pin_matches(Client(pin_hash="pbkdf2$x"), "4821")


# --------------------------------------------------------------------------- a program's statuses


async def test_a_program_defines_its_own_statuses(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    custom = tmp_path / "statuses.toml"
    custom.write_text(
        """
[fallback]
client = "update: {status}"
discreet = "update"

[statuses.filed]
aliases = ["petition filed"]
client = "we filed your papers with the court"
client_es = "presentamos sus papeles en la corte"
discreet = "we sent your papers"
""",
        encoding="utf-8",
    )
    settings = make_settings(
        database_url, tmp_path / "data", STATUSES_FILE=str(custom), PROGRAM_NAME="Help"
    )
    services = Services.build(settings, clock=clock)
    try:
        en = await open_case(services)
        es = await open_case(services, phone="+12025550188", language="es")
        await change_status(services, en, "Petition-Filed")
        await change_status(services, es, "filed")
        await change_status(services, en, "Appeal")
        assert await client_texts(services, kind="status") == [
            f"Help: news on your case {en.reference}: we filed your papers with the court.",
            f"Help: novedades en su caso {es.reference}: presentamos sus papeles en la corte.",
            f"Help: news on your case {en.reference}: update: Appeal.",
        ]
        assert is_closing_status(settings, "closed") is False  # not in this file
    finally:
        await services.close()


def test_a_broken_statuses_file_names_itself(settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[statuses.x]\nclient = 'only this'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_statuses(settings.model_copy(update={"statuses_file": bad}))
    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        load_statuses(settings.model_copy(update={"statuses_file": tmp_path / "nowhere.toml"}))


def test_the_shipped_statuses_close_what_should_close(settings: Settings) -> None:
    assert is_closing_status(settings, "Case Closed")
    assert is_closing_status(settings, "referred")
    assert not is_closing_status(settings, "hearing scheduled")
    assert not is_closing_status(settings, "something new")

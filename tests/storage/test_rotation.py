"""Keys: rotation from A to B, removing A, tampering, a missing key, and erasure."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import LargeBinary
from sqlmodel import SQLModel, col, select

from bot.services import Services
from storage import repo
from storage.crypto import ERASED, TamperedError, UnknownKeyError, Vault, generate_key
from storage.models import (
    AdverseParty,
    Appointment,
    Case,
    Channel,
    ChannelIdentity,
    Client,
    KeyState,
    Message,
    OutboxItem,
    OutboxStatus,
    Staff,
)
from storage.rotate import (
    BLIND_INDEXES,
    CLIENT_SEALED,
    MASTER_SEALED,
    RotationError,
    RotationReport,
    rotate_keys,
)
from tests.conftest import TEST_KEY
from tests.storage.snapshot import snapshot

KEY_A = TEST_KEY  # what the services fixture writes with
PHONE = "+12025550143"
TELEGRAM_CHAT = "55501234"


@dataclass
class Written:
    client_id: int
    erased_id: int
    staff_id: int
    inbound_id: int
    alert_id: int
    erased_outbox_id: int


async def _write(services: Services, extra_clients: int = 0) -> Written:
    """Data of every kind, written under key A."""
    vault = services.vault
    async with services.sessions() as session, session.begin():
        client = await repo.create_client(
            session, vault=vault, channel=Channel.SMS, address=PHONE, name="Ana Díaz"
        )
        await repo.add_identity(
            session, vault=vault, client=client, channel=Channel.TELEGRAM, address=TELEGRAM_CHAT
        )
        case = await repo.create_case(session, client=client, category="housing")
        await repo.add_adverse_party(
            session, vault=vault, client=client, case=case, name="Acme Rentals"
        )
        inbound = await repo.store_inbound(
            session, vault=vault, client=client, channel=Channel.SMS, provider_id="SM1", body="Hi"
        )
        staff = await repo.create_staff(
            session, vault=vault, name="Jo Lawyer", role="attorney", telegram_id=4242,
            phone="+13105550122",
        )  # fmt: skip
        alert = await repo.enqueue_staff(session, vault=vault, chat_id=-100, text="New intake")
        assert alert is not None
        erased = await repo.create_client(
            session, vault=vault, channel=Channel.SMS, address="+12025550100", name="Gone"
        )
        pending = await repo.enqueue(session, vault=vault, client=erased, text="Reminder")
        assert pending is not None
        await repo.erase_client(session, client=erased)
        for i in range(extra_clients):
            await repo.create_client(
                session, vault=vault, channel=Channel.SMS, address=f"+1202555020{i}", name=f"C{i}"
            )
    assert client.id and erased.id and staff.id and inbound.id and pending.id
    return Written(client.id, erased.id, staff.id, inbound.id, alert.message_id, pending.id)


async def _rotate(services: Services, vault: Vault, batch_size: int = 500) -> RotationReport:
    async with services.sessions() as session, session.begin():
        return await rotate_keys(session, vault=vault, batch_size=batch_size)


async def _assert_everything_reads(services: Services, vault: Vault, w: Written) -> None:
    async with services.sessions() as session:
        client = await repo.find_client_by_address(
            session, vault=vault, channel=Channel.SMS, address=PHONE
        )
        assert client is not None and client.id == w.client_id
        assert repo.client_name(vault, client) == "Ana Díaz"
        by_chat = await repo.find_client_by_address(
            session, vault=vault, channel=Channel.TELEGRAM, address=TELEGRAM_CHAT
        )
        assert by_chat is not None and by_chat.id == w.client_id
        inbound = await session.get(Message, w.inbound_id)
        assert inbound is not None and repo.message_body(vault, client, inbound) == "Hi"
        alert = await session.get(Message, w.alert_id)
        assert alert is not None and repo.message_body(vault, None, alert) == "New intake"
        staff = await repo.find_staff_by_telegram_id(session, vault=vault, telegram_id=4242)
        assert staff is not None and staff.id == w.staff_id
        assert repo.staff_name(vault, staff) == "Jo Lawyer"
        assert repo.staff_telegram_id(vault, staff) == 4242
        [case] = await repo.cases_with_adverse_party(session, vault=vault, name="ACME rentals")
        assert case.client_id == w.client_id
        named = await repo.clients_named(session, vault=vault, name="ana  DÍAZ")
        assert [c.id for c in named] == [w.client_id]
        erased = await session.get(Client, w.erased_id)
        assert erased is not None and repo.client_name(vault, erased) == ERASED


async def test_data_under_a_reads_after_rotating_to_b_and_removing_a(services: Services) -> None:
    w = await _write(services, extra_clients=5)
    key_b = generate_key()
    both = Vault([key_b, KEY_A])

    report = await _rotate(services, both, batch_size=2)  # several batches

    # 6 live clients; staff name, Telegram id and phone plus one staff alert; 6 client names,
    # 7 identities, one adverse party and two staff hashes.
    assert (report.data_keys, report.sealed, report.indexes, report.erased) == (6, 4, 16, 1)
    await _assert_everything_reads(services, both, w)
    only_b = Vault([key_b])
    await _assert_everything_reads(services, only_b, w)
    async with services.sessions() as session:
        wrapped = (await session.exec(select(Client.wrapped_key))).all()
        assert {only_b.key_id_of(k) for k in wrapped if k} == {only_b.newest.kid_hex}
        state = (await session.exec(select(KeyState))).one()
        assert state.current_kid == only_b.newest.kid_hex
    # Nothing is left to do a second time.
    again = await _rotate(services, only_b)
    assert (again.data_keys, again.sealed, again.indexes) == (0, 0, 0)


async def test_rotation_keeps_new_writes_working(services: Services) -> None:
    await _write(services)
    key_b = generate_key()
    await _rotate(services, Vault([key_b, KEY_A]))
    only_b = Vault([key_b])
    async with services.sessions() as session, session.begin():
        client, _ident, created = await repo.get_or_create_client(
            session, vault=only_b, channel=Channel.SMS, address=PHONE
        )
        assert not created  # the same person, not a new client
        item = await repo.enqueue(session, vault=only_b, client=client, text="Your hearing")
        assert item is not None
        msg = await session.get(Message, item.message_id)
        assert msg is not None and repo.message_body(only_b, client, msg) == "Your hearing"


async def test_a_missing_key_is_named_not_garbage(services: Services) -> None:
    w = await _write(services)
    stranger = Vault([generate_key()])
    async with services.sessions() as session:
        client = await session.get(Client, w.client_id)
        assert client is not None
        with pytest.raises(UnknownKeyError) as err:
            repo.client_name(stranger, client)
        assert "PROBONO_ENCRYPTION_KEYS" in str(err.value)
        assert services.vault.newest.kid_hex in str(err.value)
        staff = await session.get(Staff, w.staff_id)
        assert staff is not None
        with pytest.raises(UnknownKeyError):
            repo.staff_name(stranger, staff)
        # Lookups under an unknown key find nothing rather than the wrong person.
        found = await repo.find_client_by_address(
            session, vault=stranger, channel=Channel.SMS, address=PHONE
        )
        assert found is None


async def test_rotation_without_the_old_key_changes_nothing(services: Services) -> None:
    await _write(services)
    before = await snapshot(services)
    with pytest.raises(UnknownKeyError):
        await _rotate(services, Vault([generate_key()]))
    assert await snapshot(services) == before


def _flip_last_byte(blob: bytes | None) -> bytes:
    assert blob
    return blob[:-1] + bytes([blob[-1] ^ 0x01])


@pytest.mark.parametrize("column", ["client.name_enc", "client.wrapped_key", "staff.name_enc"])
async def test_tampered_ciphertext_is_rejected(services: Services, column: str) -> None:
    w = await _write(services)
    async with services.sessions() as session, session.begin():
        client = await session.get(Client, w.client_id)
        staff = await session.get(Staff, w.staff_id)
        assert client is not None and staff is not None
        if column == "client.name_enc":
            client.name_enc = _flip_last_byte(client.name_enc)
        elif column == "client.wrapped_key":
            client.wrapped_key = _flip_last_byte(client.wrapped_key)
        else:
            staff.name_enc = _flip_last_byte(staff.name_enc)
    async with services.sessions() as session:
        client = await session.get(Client, w.client_id)
        staff = await session.get(Staff, w.staff_id)
        assert client is not None and staff is not None
        with pytest.raises(TamperedError):
            if column.startswith("client"):
                repo.client_name(services.vault, client)
            else:
                repo.staff_name(services.vault, staff)


async def test_a_field_moved_to_another_column_is_rejected(services: Services) -> None:
    """Ciphertext is bound to its field: a staff phone pasted over the name does not read."""
    w = await _write(services)
    async with services.sessions() as session, session.begin():
        staff = await session.get(Staff, w.staff_id)
        assert staff is not None
        staff.name_enc = staff.phone_enc
    async with services.sessions() as session:
        staff = await session.get(Staff, w.staff_id)
        assert staff is not None
        with pytest.raises(TamperedError):
            repo.staff_name(services.vault, staff)


async def test_an_erased_client_reads_as_erased_everywhere(services: Services) -> None:
    w = await _write(services)
    async with services.sessions() as session, session.begin():
        client = await session.get(Client, w.client_id)
        assert client is not None
        queued = await repo.enqueue(session, vault=services.vault, client=client, text="Soon")
        assert queued is not None
        await repo.erase_client(session, client=client)
        # Nothing more can be queued for them.
        assert await repo.enqueue(session, vault=services.vault, client=client, text="x") is None
    async with services.sessions() as session:
        client = await session.get(Client, w.client_id)
        assert client is not None
        assert repo.client_name(services.vault, client) == ERASED
        inbound = await session.get(Message, w.inbound_id)
        assert inbound is not None
        assert repo.message_body(services.vault, client, inbound) == ERASED
        idents = await repo.identities(session, client_id=w.client_id)
        assert len(idents) == 2
        assert [repo.identity_address(services.vault, client, i) for i in idents] == [None, None]
        [party] = (await session.exec(select(AdverseParty))).all()
        assert repo.adverse_party_name(services.vault, client, party) == ERASED
        statuses = (
            await session.exec(
                select(OutboxItem.status).where(col(OutboxItem.client_id) == w.client_id)
            )
        ).all()
        assert statuses == [OutboxStatus.SKIPPED]
        erased_item = await session.get(OutboxItem, w.erased_outbox_id)
        assert erased_item is not None and erased_item.status == OutboxStatus.SKIPPED


async def test_rotation_leaves_erased_clients_erased(services: Services) -> None:
    w = await _write(services)
    key_b = generate_key()
    await _rotate(services, Vault([key_b, KEY_A]))
    async with services.sessions() as session:
        erased = await session.get(Client, w.erased_id)
        assert erased is not None and erased.wrapped_key is None
        assert repo.client_name(Vault([key_b]), erased) == ERASED


async def test_rotation_refuses_master_sealed_data_it_does_not_know(services: Services) -> None:
    """A new master-sealed column must be taught to rotation, or the old key could not go."""
    await _write(services)
    async with services.sessions() as session, session.begin():
        case = (await session.exec(select(Case))).one()
        assert case.id is not None
        session.add(
            Appointment(
                case_id=case.id,
                starts_at=services.clock(),
                timezone="America/New_York",
                place_enc=services.vault.seal_text("Room 4", "appointment.place"),
            )
        )
    before = await snapshot(services)
    with pytest.raises(RotationError, match=r"appointment\.place_enc"):
        await _rotate(services, Vault([generate_key(), KEY_A]))
    assert await snapshot(services) == before


async def test_identity_hashes_move_to_the_new_key(services: Services) -> None:
    w = await _write(services)
    key_b = generate_key()
    only_b = Vault([key_b])
    async with services.sessions() as session:
        old = (
            await session.exec(
                select(ChannelIdentity.address_hash).where(
                    col(ChannelIdentity.client_id) == w.client_id
                )
            )
        ).all()
    await _rotate(services, Vault([key_b, KEY_A]))
    async with services.sessions() as session:
        new = (
            await session.exec(
                select(ChannelIdentity.address_hash).where(
                    col(ChannelIdentity.client_id) == w.client_id
                )
            )
        ).all()
    assert set(old).isdisjoint(new)
    assert only_b.blind_index(repo.address_index_kind(Channel.SMS), PHONE) in new


def test_rotation_knows_every_encrypted_and_hashed_column() -> None:
    """A new ``*_enc`` or ``*_hash`` column must be classified in storage/rotate.py."""
    binary, hashed = set(), set()
    for table in SQLModel.metadata.sorted_tables:
        for column in table.columns:
            name = f"{table.name}.{column.name}"
            if isinstance(column.type, LargeBinary):
                binary.add(name)
            elif column.name.endswith("_hash") and name != "client.pin_hash":  # a PIN check
                hashed.add(name)
    assert binary == set(MASTER_SEALED) | CLIENT_SEALED
    assert hashed == BLIND_INDEXES

"""No client name, message body or phone number is stored in clear (the raw bytes are searched)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.services import Services
from storage import repo
from storage.models import Channel
from tests.conftest import BACKEND

CLIENT_NAME = "Zyxwanda Quillfeather"
CLIENT_PHONE = "+12025550187"
BODY = "Landlord Krumbleton changed the locks"
REPLY = "Bring the Quillfeather lease on Monday"
STAFF_NAME = "Oberon Staffmarker"
STAFF_PHONE = "+13105550122"
STAFF_TELEGRAM = 987654321
ADVERSE = "Krumbleton Holdings LLC"
STAFF_ALERT = "Alert about Zyxwanda for the team"
# Stored in clear on purpose (a category is not a secret): proves the search sees the data.
CLEAR_CONTROL = "evictionmarker"

SECRETS = [
    CLIENT_NAME,
    "Quillfeather",
    CLIENT_PHONE,
    CLIENT_PHONE[2:],  # the digits without +1
    BODY,
    "Krumbleton",
    REPLY,
    STAFF_NAME,
    STAFF_PHONE,
    STAFF_PHONE[2:],
    str(STAFF_TELEGRAM),
    ADVERSE,
    "Zyxwanda",
]


async def _write_markers(services: Services) -> bytes:
    """Writes every kind of secret; returns one ciphertext, to show binary columns are searched."""
    vault = services.vault
    async with services.sessions() as session, session.begin():
        client = await repo.create_client(
            session, vault=vault, channel=Channel.SMS, address=CLIENT_PHONE, name=CLIENT_NAME
        )
        await repo.add_identity(
            session, vault=vault, client=client, channel=Channel.TELEGRAM, address="55501234"
        )
        case = await repo.create_case(session, client=client, category=CLEAR_CONTROL)
        await repo.add_adverse_party(session, vault=vault, client=client, case=case, name=ADVERSE)
        await repo.store_inbound(
            session, vault=vault, client=client, channel=Channel.SMS, provider_id="SM1", body=BODY
        )
        await repo.enqueue(session, vault=vault, client=client, text=REPLY, channel=Channel.SMS)
        staff = await repo.create_staff(
            session,
            vault=vault,
            name=STAFF_NAME,
            role="attorney",
            telegram_id=STAFF_TELEGRAM,
            phone=STAFF_PHONE,
        )
        await repo.enqueue_staff(session, vault=vault, staff=staff, text=STAFF_ALERT)
        await repo.enqueue_staff(session, vault=vault, staff=staff, client=client, text=BODY)
        assert client.name_enc is not None
        return client.name_enc


def _found(blob: bytes) -> list[str]:
    """The markers visible in these bytes, as text or as the hex a dump shows binary as."""
    found = []
    for marker in [*SECRETS, STAFF_ALERT]:
        raw = marker.encode()
        if raw in blob or raw.hex().encode() in blob.lower():
            found.append(marker)
    return found


def _sqlite_bytes(database_url: str) -> bytes:
    path = Path(make_url(database_url).database or "")
    parts = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")]
    return b"".join(p.read_bytes() for p in parts if p.exists())


@pytest.mark.skipif(BACKEND != "sqlite", reason="the SQLite file")
async def test_sqlite_file_holds_no_secret_in_clear(services: Services, database_url: str) -> None:
    cipher = await _write_markers(services)
    # While connections are open the new pages sit in the -wal file...
    live = _sqlite_bytes(database_url)
    assert CLEAR_CONTROL.encode() in live and cipher in live
    assert _found(live) == []
    # ...and after closing they are checkpointed into the main file.
    await services.engine.dispose()
    closed = _sqlite_bytes(database_url)
    assert CLEAR_CONTROL.encode() in closed and cipher in closed
    assert _found(closed) == []


@pytest.mark.skipif(BACKEND != "postgresql", reason="a PostgreSQL dump")
async def test_postgresql_dump_holds_no_secret_in_clear(
    services: Services, database_url: str
) -> None:
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump is not installed")
    cipher = await _write_markers(services)
    done = await asyncio.to_thread(
        subprocess.run,
        ["pg_dump", "--no-owner", "--dbname", database_url],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert CLEAR_CONTROL.encode() in done.stdout
    assert cipher.hex().encode() in done.stdout  # binary columns appear, as hex
    assert _found(done.stdout) == []


async def test_markers_are_readable_through_the_store(services: Services) -> None:
    """The search above is only meaningful if the markers really were stored."""
    await _write_markers(services)
    async with services.sessions() as session:
        client = await repo.find_client_by_address(
            session, vault=services.vault, channel=Channel.SMS, address=CLIENT_PHONE
        )
        assert client is not None
        assert repo.client_name(services.vault, client) == CLIENT_NAME
        staff = await repo.find_staff_by_telegram_id(
            session, vault=services.vault, telegram_id=STAFF_TELEGRAM
        )
        assert staff is not None and repo.staff_name(services.vault, staff) == STAFF_NAME
        cases = await repo.cases_with_adverse_party(
            session, vault=services.vault, name="krumbleton  holdings llc"
        )
        assert [c.category for c in cases] == [CLEAR_CONTROL]

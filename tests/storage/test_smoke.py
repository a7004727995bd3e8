"""The store opens, and a client round-trips encrypted."""

from __future__ import annotations

from bot.services import Services
from storage import repo
from storage.models import Client


async def test_client_round_trip(services: Services) -> None:
    async with services.sessions() as session, session.begin():
        client = await repo.create_client(
            session, vault=services.vault, channel="sms", address="+15550001111", name="Ana Díaz"
        )
        cid = client.id
    async with services.sessions() as session:
        found = await repo.find_client_by_address(
            session, vault=services.vault, channel="sms", address="+15550001111"
        )
        assert found is not None and found.id == cid
        loaded = await session.get(Client, cid)
        assert loaded is not None
        assert repo.client_name(services.vault, loaded) == "Ana Díaz"

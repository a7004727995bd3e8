"""The linking dialogue as a conversation: a Turn in, Replies and an identity moved out."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import col, select

from bot.conversations import link
from bot.conversations.base import Turn
from bot.core import InboundMessage, Reply, SharedContact
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import AuditLog, Channel, ChannelIdentity, Client

ROSA_PHONE = "+12025550143"
ANA_ID = "8001"
BUTTON = "Share my phone number"


@dataclass
class Outcome:
    replies: list[Reply]
    client_id: int | None  # whom this chat belongs to after the turn
    identity_owner: int  # the client the chat's identity row now names


async def _people(services: Services) -> tuple[Client, Client]:
    async with transaction(services.sessions) as session:
        rosa = await repo.create_client(
            session, vault=services.vault, channel=Channel.SMS, address=ROSA_PHONE, language="en"
        )
        ana = await repo.create_client(
            session, vault=services.vault, channel=Channel.TELEGRAM, address=ANA_ID
        )
    return rosa, ana


async def _turn(services: Services, chat_client: Client, message: InboundMessage) -> Outcome:
    assert chat_client.id is not None
    async with transaction(services.sessions) as session:
        client = await session.get(Client, chat_client.id)
        ident = await repo.reply_identity(
            session, client_id=chat_client.id, channel=Channel.TELEGRAM
        )
        assert client is not None and ident is not None
        stored = await repo.store_inbound(
            session,
            vault=services.vault,
            client=client,
            channel=Channel.TELEGRAM,
            provider_id=message.provider_id,
            body="",
        )
        turn = Turn(
            services=services,
            session=session,
            client=client,
            identity=ident,
            message=message,
            stored=stored,
        )
        await link.respond(turn)
        ident_id, client_id = ident.id, turn.client.id
    async with services.sessions() as session:
        moved = await session.get(ChannelIdentity, ident_id)
        assert moved is not None
        return Outcome(turn.replies, client_id, moved.client_id)


def _msg(
    provider_id: str, *, contact: SharedContact | None = None, text: str = ""
) -> InboundMessage:
    return InboundMessage(
        channel=Channel.TELEGRAM,
        address=ANA_ID,
        provider_id=provider_id,
        text=text,
        contact=contact,
    )


async def _link_audits(services: Services) -> list[tuple[int | None, bool, str | None]]:
    async with services.sessions() as session:
        rows = await session.exec(
            select(AuditLog).where(AuditLog.action == "identity.link").order_by(col(AuditLog.id))
        )
        return [(a.client_id, a.allowed, a.detail) for a in rows.all()]


def test_offer_is_the_share_button() -> None:
    reply = link.offer("en")
    assert reply.ask_phone == BUTTON and reply.urgent
    assert "Have you already texted us" in reply.text


async def test_link_without_a_number_asks_for_the_button(services: Services) -> None:
    _rosa, ana = await _people(services)
    out = await _turn(services, ana, _msg("1", text="/link"))
    assert [(r.text, r.ask_phone) for r in out.replies] == [
        (f"Tap “{BUTTON}” below to connect this chat to your case.", BUTTON)
    ]
    assert out.identity_owner == ana.id and await _link_audits(services) == []


async def test_someone_elses_number_is_refused_and_audited(services: Services) -> None:
    _rosa, ana = await _people(services)
    out = await _turn(services, ana, _msg("1", contact=SharedContact("12025550143", own=False)))
    assert out.identity_owner == ana.id and out.client_id == ana.id
    assert out.replies[0].text.startswith("I can only connect your own phone number.")
    assert out.replies[0].ask_phone == BUTTON  # they may try again with the button
    assert await _link_audits(services) == [(ana.id, False, "contact of someone else")]


async def test_unknown_number_links_nothing_and_offers_no_button(services: Services) -> None:
    _rosa, ana = await _people(services)
    out = await _turn(services, ana, _msg("1", contact=SharedContact("12025550100", own=True)))
    assert out.identity_owner == ana.id
    assert out.replies == [
        Reply(
            "We have no case for this phone number. Just write here and we will help you.",
            urgent=True,
        )
    ]
    assert await _link_audits(services) == [(ana.id, False, "no client with that number")]


async def test_own_number_moves_this_chat_to_the_sms_client(services: Services) -> None:
    rosa, ana = await _people(services)
    out = await _turn(services, ana, _msg("1", contact=SharedContact("12025550143", own=True)))
    assert out.identity_owner == rosa.id and out.client_id == rosa.id  # the answer goes to Rosa
    assert out.replies[0].text.startswith("Done: this chat is now connected to your case.")
    assert out.replies[0].clear_buttons and out.replies[0].ask_phone is None
    assert await _link_audits(services) == [
        (rosa.id, True, f"telegram linked (was client {ana.id})")
    ]

    again = await _turn(services, rosa, _msg("2", contact=SharedContact("12025550143", own=True)))
    assert [(r.text, r.clear_buttons) for r in again.replies] == [
        ("This chat is already connected to your case.", True)
    ]

"""Drive the client conversation one message at a time, as the router does, for tests."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from sqlmodel import select

from bot.conversations import client as client_conversation
from bot.conversations.base import Turn
from bot.core import InboundMessage, Reply
from bot.outgoing import queue_reply, render_text
from bot.services import Services
from storage import repo
from storage.db import transaction
from storage.models import Case, Client, ConversationState, OutboxItem

_ids = itertools.count(1)


@dataclass
class Chat:
    """One client texting the bot: each ``send`` is one committed turn, like the real router."""

    services: Services
    address: str = "+15555550100"
    channel: str = "sms"
    language: str = "en"
    client_id: int | None = None
    log: list[tuple[str, list[str]]] = field(default_factory=list)
    last: list[Reply] = field(default_factory=list)

    async def ensure_client(self) -> int:
        if self.client_id is None:
            async with transaction(self.services.sessions) as session:
                known = await repo.find_client_by_address(
                    session, vault=self.services.vault, channel=self.channel, address=self.address
                )
                if known is not None:
                    self.client_id = known.id
                    return known.id  # type: ignore[return-value]
                client = await repo.create_client(
                    session,
                    vault=self.services.vault,
                    channel=self.channel,
                    address=self.address,
                    language=self.language,
                )
                self.client_id = client.id
        assert self.client_id is not None
        return self.client_id

    async def send(self, text: str, *, choice: str | None = None) -> list[str]:
        """Send one message; returns the replies as the channel would show them."""
        client_id = await self.ensure_client()
        async with transaction(self.services.sessions) as session:
            client = await session.get(Client, client_id)
            assert client is not None
            ident = await repo.reply_identity(session, client_id=client_id, channel=self.channel)
            assert ident is not None
            provider_id = f"SM{next(_ids):032d}"
            stored = await repo.store_inbound(
                session,
                vault=self.services.vault,
                client=client,
                channel=self.channel,
                provider_id=provider_id,
                body=text,
            )
            turn = Turn(
                services=self.services,
                session=session,
                client=client,
                identity=ident,
                message=InboundMessage(
                    channel=self.channel,
                    address=self.address,
                    provider_id=provider_id,
                    text=text,
                    choice=choice,
                ),
                stored=stored,
            )
            await client_conversation.respond(turn)
            for reply in turn.replies:
                await queue_reply(session, self.services, client, reply, channel=self.channel)
            lang = client.language
        self.last = list(turn.replies)
        shown = [render_text(r, self.channel, lang) for r in turn.replies]
        self.log.append((text, shown))
        return shown

    async def text(self, message: str, *, choice: str | None = None) -> str:
        """Send one message; the replies joined into one text."""
        return "\n".join(await self.send(message, choice=choice))

    async def client(self) -> Client:
        async with self.services.sessions() as session:
            client = await session.get(Client, await self.ensure_client())
            assert client is not None
            return client

    async def state(self) -> ConversationState | None:
        async with self.services.sessions() as session:
            return await session.get(ConversationState, await self.ensure_client())

    async def cases(self) -> list[Case]:
        async with self.services.sessions() as session:
            rows = await session.exec(select(Case).where(Case.client_id == self.client_id))
            return list(rows.all())

    def transcript(self) -> str:
        out = []
        for sent, replies in self.log:
            out.append(f"> {sent}")
            out += [f"< {r}" for r in replies]
        return "\n".join(out)


async def outbox(services: Services, *, kind: str | None = None) -> list[OutboxItem]:
    async with services.sessions() as session:
        query = select(OutboxItem).order_by(OutboxItem.id)  # type: ignore[arg-type]
        if kind is not None:
            query = query.where(OutboxItem.kind == kind)
        return list((await session.exec(query)).all())


async def alert_texts(services: Services) -> list[str]:
    """What the coordinators' group was sent, decrypted, oldest first."""
    from storage.models import Message

    out = []
    async with services.sessions() as session:
        rows = await session.exec(
            select(OutboxItem, Message)
            .join(Message, Message.id == OutboxItem.message_id)  # type: ignore[arg-type]
            .where(OutboxItem.kind == "alert")
            .order_by(OutboxItem.id)  # type: ignore[arg-type]
        )
        for _item, msg in rows.all():
            out.append(repo.message_body(services.vault, None, msg))
    return out


def english_leaks(text: str) -> list[str]:
    """English source strings that appear untranslated in a text meant to be Spanish."""
    from bot.i18n import _catalog

    catalog = _catalog("es")
    return [
        msgid
        for msgid, translated in catalog.items()
        if len(msgid) >= 12
        and "{" not in msgid
        and "|" not in msgid
        and translated != msgid
        and msgid in text
    ]

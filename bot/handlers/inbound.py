"""Inbound client messages: store first, then process each one (opt-out words, dialogue).

Every channel's message reaches ``store`` through the router (bot/handlers/router.py)
before the provider is acknowledged, then ``InboundProcessor.submit``. Processing claims
the stored row inside the transaction that writes its replies, so a message is handled
exactly once, and a message stored but never processed (a crash) is found again by
``InboundProcessor.sweep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot import keywords
from bot.appkeys import DISPATCHER, METRICS, SERVICES
from bot.channels.base import FetchedMedia, MediaError
from bot.conversations import client as client_conversation
from bot.conversations.base import Turn
from bot.core import (
    HELP_REPLY,
    OPTIN_CONFIRM,
    OPTOUT_CONFIRM,
    EventKind,
    InboundMessage,
    Media,
    ProviderKeyword,
    Reply,
)
from bot.metrics import Metrics
from bot.outgoing import queue_reply, render_text
from bot.services import Services
from bot.sms_text import MAX_BODY, split_text, units
from storage import repo
from storage.db import GroupCommit, transaction
from storage.models import Channel, ChannelIdentity, Client, Message

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5  # a message that fails this often is marked failed and left for a person
MEDIA_ATTEMPTS = 2  # after this, a message is handled without the attachments we cannot get
SPLIT_CHANNELS = frozenset({Channel.SMS, Channel.CONSOLE})


@dataclass(frozen=True)
class Stored:
    """The outcome of storing one inbound message."""

    message_id: int
    client_id: int
    duplicate: bool


async def store(services: Services, inbound: InboundMessage) -> Stored:
    """Store an inbound message (or a STOP event) once, committed, before it is acknowledged.

    Messages arriving together are committed together (storage.db.GroupCommit), ahead of
    background writes: under a burst each webhook waits for about one commit. The same
    provider id twice is recognised (the unique constraint decides under races).
    """
    group: GroupCommit[InboundMessage, Stored] | None = services.group_commits.get("inbound")
    if group is None:
        group = services.group_commits["inbound"] = GroupCommit(
            services.sessions,
            lambda session, item: _store_in(session, services, item),
            alone=lambda item: _store_alone(services, item),
            prefetch=lambda session, batch: _prefetch(session, services, batch),
            first=True,
        )
    return await group.submit(inbound)


_KNOWN = "inbound.known"  # session.info: what a batch's prefetch found, kept up to date


@dataclass
class _Known:
    """A batch's messages and identities, looked up together: absent here is absent in the db."""

    messages: dict[tuple[str, str], Message]
    identities: dict[tuple[str, str], ChannelIdentity]


async def _prefetch(session: AsyncSession, services: Services, batch: list[InboundMessage]) -> None:
    """Look up a batch's provider ids, senders and their clients in three queries, not 3 each."""
    messages = await repo.find_messages(session, keys=[(m.channel, m.provider_id) for m in batch])
    identities = await repo.find_identities(
        session, vault=services.vault, addresses=[(m.channel, m.address) for m in batch]
    )
    client_ids = list({i.client_id for i in identities.values()})
    if client_ids:
        # Into the identity map, where _store_in's session.get finds them.
        await repo.preload(session, select(Client).where(col(Client.id).in_(client_ids)))
    session.info[_KNOWN] = _Known(messages, identities)


async def _store_alone(services: Services, inbound: InboundMessage) -> Stored:
    """Store one message in its own transaction, retrying a lost race on a unique key."""
    for _attempt in range(3):
        try:
            async with transaction(services.sessions, first=True) as session:
                return await _store_in(session, services, inbound)
        except IntegrityError:
            # A concurrent webhook stored this message or created this client first.
            continue
    raise RuntimeError("could not store an inbound message after three tries")


async def _store_in(session: AsyncSession, services: Services, inbound: InboundMessage) -> Stored:
    """Store one message inside the caller's transaction; a known provider id is a duplicate."""
    settings = services.settings
    known: _Known | None = session.info.get(_KNOWN)
    key = (inbound.channel, inbound.provider_id)
    if known is not None:
        existing = known.messages.get(key)
    else:
        existing = await repo.find_message(
            session, channel=inbound.channel, provider_id=inbound.provider_id
        )
    if existing is not None:
        assert existing.id is not None and existing.client_id is not None
        return Stored(existing.id, existing.client_id, duplicate=True)
    sender = (inbound.channel, inbound.address)
    client, ident = await repo.client_for_address(
        session,
        vault=services.vault,
        channel=inbound.channel,
        address=inbound.address,
        language=settings.default_language,
        timezone=settings.default_timezone,
        identity=known.identities.get(sender) if known is not None else None,
    )
    now = services.clock()
    media = [{"url": m.url, "content_type": m.content_type} for m in inbound.media]
    msg = await repo.store_inbound(
        session,
        vault=services.vault,
        client=client,
        channel=inbound.channel,
        provider_id=inbound.provider_id,
        body=inbound.text,
        media=media or None,
    )
    # After the insert: the client row first, then the identity, as processing does.
    ident.last_inbound_at = now
    session.add(ident)
    if inbound.kind == EventKind.STOPPED:
        # The provider already unsubscribed the number and told them so: an
        # event, not a message, and nothing more to say.
        await repo.record_consent(
            session, identity=ident, kind="opt_out", source="provider", at=now
        )
        repo.mark_inbound_processed(session, msg=msg, now=now)
    elif inbound.provider_answered is not None:
        # Twilio's Advanced Opt-Out already answered START or HELP: a second answer from us
        # would text the client twice. START resubscribes them, as Twilio has done; HELP
        # needs nothing more. Either way the message is done, not a turn of the dialogue.
        if inbound.provider_answered == ProviderKeyword.START and ident.opted_out_at is not None:
            await repo.record_consent(
                session, identity=ident, kind="opt_in", source="provider", at=now
            )
        repo.mark_inbound_processed(session, msg=msg, now=now)
    if known is not None:  # later messages of this batch from the same sender or id
        known.messages[key] = msg
        known.identities[sender] = ident
    assert msg.id is not None and client.id is not None
    return Stored(msg.id, client.id, duplicate=False)


async def _queue(
    session: AsyncSession,
    services: Services,
    client: Client,
    identity: ChannelIdentity,
    reply: Reply,
    *,
    kind: str = "reply",
) -> None:
    """Queue one reply to this identity's channel, split if it is too long for one SMS send."""
    rendered = render_text(reply, identity.channel, client.language)
    if identity.channel not in SPLIT_CHANNELS or units(rendered, "UCS-2") <= MAX_BODY:
        await queue_reply(session, services, client, reply, kind=kind, channel=identity.channel)
        return
    parts = split_text(rendered, MAX_BODY)
    for part in parts:
        await queue_reply(
            session,
            services,
            client,
            Reply(text=part, urgent=reply.urgent),
            kind=kind,
            channel=identity.channel,
        )


async def _store_documents(
    session: AsyncSession,
    services: Services,
    client: Client,
    stored: Message,
    fetched: list[FetchedMedia],
) -> None:
    if not fetched:
        return
    assert client.id is not None
    cases = await repo.open_cases(session, client_id=client.id)
    case_id = cases[0].id if cases else None
    for item in fetched:
        await repo.add_document(
            session,
            vault=services.vault,
            client=client,
            content=item.content,
            content_type=item.content_type,
            message_id=stored.id,
            case_id=case_id,
        )


async def route(
    session: AsyncSession,
    services: Services,
    client: Client,
    stored: Message,
    fetched: list[FetchedMedia],
) -> None:
    """Handle one claimed client message: opt-out and help words, then their conversation."""
    assert client.id is not None
    if client.wrapped_key is None:
        return  # erased after the message arrived: nothing can be read or answered
    identity = await repo.reply_identity(session, client_id=client.id, channel=stored.channel)
    if identity is None:
        return
    now = services.clock()
    await _store_documents(session, services, client, stored, fetched)
    text = repo.message_body(services.vault, client, stored)
    media = tuple(
        Media(url=str(m.get("url", "")), content_type=str(m.get("content_type", "")))
        for m in stored.media or []
    )
    inbound = InboundMessage(
        channel=stored.channel,
        address=repo.identity_address(services.vault, client, identity) or "",
        provider_id=stored.provider_id or "",
        text=text,
        media=media,
    )
    program = services.settings.program_name
    lang = client.language or services.settings.default_language
    found = keywords.match(text)
    if found is not None:
        reply_lang = keywords.reply_language(found, lang)
        if found.action == keywords.STOP:
            if identity.opted_out_at is None:
                await repo.record_consent(
                    session, identity=identity, kind="opt_out", source="keyword", at=now
                )
                confirm = keywords.text(reply_lang, "stopped", program=program)
                await _queue(
                    session,
                    services,
                    client,
                    identity,
                    Reply(confirm, urgent=True),
                    kind=OPTOUT_CONFIRM,
                )
            return
        if found.action == keywords.HELP:
            contact = services.settings.program_contact.strip()
            help_text = keywords.text(
                reply_lang, "help", program=program, contact=f"{contact} " if contact else ""
            )
            await _queue(
                session, services, client, identity, Reply(help_text, urgent=True), kind=HELP_REPLY
            )
            return
        if found.action == keywords.START and identity.opted_out_at is not None:
            await repo.record_consent(
                session, identity=identity, kind="opt_in", source="keyword", at=now
            )
            started = keywords.text(reply_lang, "started", program=program)
            await _queue(
                session, services, client, identity, Reply(started, urgent=True), kind=OPTIN_CONFIRM
            )
            return
    if identity.opted_out_at is not None:
        return  # they said STOP: stored, and nothing of any kind is said back
    turn = Turn(
        services=services,
        session=session,
        client=client,
        identity=identity,
        message=inbound,
        stored=stored,
        first_contact=identity.notice_sent_at is None,
    )
    await client_conversation.respond(turn)
    for reply in turn.replies:
        await _queue(session, services, client, identity, reply)


async def _fetch_media(services: Services, msg: Message) -> tuple[list[FetchedMedia], bool]:
    """Download attachments outside any transaction; second item: all of them arrived."""
    if not msg.media:
        return [], True
    sender = services.senders.get(msg.channel)
    if sender is None:
        return [], False
    out: list[FetchedMedia] = []
    complete = True
    for entry in msg.media:
        media = Media(
            url=str(entry.get("url", "")),
            content_type=str(entry.get("content_type") or "application/octet-stream"),
        )
        try:
            out.append(await sender.fetch_media(media))
        except MediaError as exc:
            complete = False
            log.warning("attachment of message %s not fetched: %s", msg.id, exc)
    return out, complete


class _RetryLater(Exception):
    """Processing should be tried again later (an attachment could not be fetched yet)."""


async def process_next(
    services: Services, client_id: int, *, metrics: Metrics | None = None
) -> bool | None:
    """Process this client's oldest unprocessed message: True done, None none left, False failed."""
    async with services.sessions() as session:
        msg = await repo.next_unprocessed_inbound(session, client_id=client_id)
    if msg is None or msg.id is None:
        return None
    started = time.perf_counter()
    try:
        fetched, complete = await _fetch_media(services, msg)
        if not complete and msg.attempts + 1 < MEDIA_ATTEMPTS:
            raise _RetryLater
        async with transaction(services.sessions) as session:
            client = await repo.lock_client(session, client_id=client_id)
            if client is None:
                return None
            if not await repo.claim_inbound(session, message_id=msg.id, at=services.clock()):
                return True  # another worker or process took it
            stored = await session.get(Message, msg.id, populate_existing=True)
            assert stored is not None
            await route(session, services, client, stored, fetched)
    except Exception as exc:
        if not isinstance(exc, _RetryLater):
            # Type only: an exception's text may quote what the client wrote.
            log.error("inbound message %s failed: %s", msg.id, type(exc).__name__)
            log.debug("inbound failure detail", exc_info=True)
        await _record_failure(services, msg.id)
        return False
    if metrics is not None:
        metrics.handle_seconds.observe(time.perf_counter() - started)
    return True


async def _record_failure(services: Services, message_id: int) -> None:
    try:
        async with transaction(services.sessions) as session:
            if await repo.record_inbound_failure(
                session, message_id=message_id, max_attempts=MAX_ATTEMPTS, now=services.clock()
            ):
                log.error(
                    "inbound message %s failed %s times; left for review", message_id, MAX_ATTEMPTS
                )
    except Exception as exc:
        log.error("could not record failure of message %s: %s", message_id, type(exc).__name__)


class InboundProcessor:
    """Processes stored messages in the background, one client at a time, in arrival order."""

    def __init__(
        self,
        services: Services,
        *,
        metrics: Metrics | None = None,
        on_queued: Callable[[], None] | None = None,
        concurrency: int = 8,
        sweep_every: float = 30.0,
        sweep_age: timedelta = timedelta(seconds=30),
    ) -> None:
        self.services = services
        self.metrics = metrics
        self.on_queued = on_queued
        self.sweep_every = sweep_every
        self.sweep_age = sweep_age
        self._sem = asyncio.Semaphore(concurrency)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._again: set[int] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def submit(self, client_id: int) -> None:
        """Process this client's stored messages soon (call after the store committed)."""
        if client_id in self._tasks:
            self._again.add(client_id)
            return
        self._tasks[client_id] = asyncio.create_task(self._run(client_id))

    async def _run(self, client_id: int) -> None:
        try:
            while True:
                self._again.discard(client_id)
                async with self._sem:
                    await self.process_client(client_id)
                if client_id not in self._again:
                    break
        except Exception as exc:
            log.error("inbound worker failed: %s", type(exc).__name__)
        finally:
            self._tasks.pop(client_id, None)

    async def process_client(self, client_id: int) -> int:
        """Process every stored message of this client, oldest first; how many were handled."""
        handled = 0
        while True:
            outcome = await process_next(self.services, client_id, metrics=self.metrics)
            if outcome is not True:
                break  # none left, or a failure the sweep will retry later
            handled += 1
            if self.on_queued is not None:
                self.on_queued()
        return handled

    async def sweep(self, *, age: timedelta | None = None) -> int:
        """Queue clients whose stored messages were never processed (after a crash)."""
        before = None if age is None else self.services.clock() - age
        async with self.services.sessions() as session:
            ids = await repo.clients_with_unprocessed_inbound(session, before=before)
        for cid in ids:
            self.submit(cid)
        return len(ids)

    async def drain(self) -> None:
        """Wait until every submitted client is processed (tests, `probono chat`)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def start(self) -> None:
        """Pick up everything left unprocessed (in the background), then sweep periodically."""
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="inbound-sweep")

    async def _sweep_loop(self) -> None:
        age: timedelta | None = None  # the first sweep, at start, takes everything left over
        while True:
            try:
                await self.sweep(age=age)
                age = self.sweep_age
            except Exception as exc:
                # The database may be down; the next sweep tries again.
                log.error("inbound sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(self.sweep_every)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop sweeping; let messages being processed finish (a cut one rolls back)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        tasks = list(self._tasks.values())
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task


PROCESSOR = web.AppKey("inbound_processor", InboundProcessor)
# Seconds between sweeps that take every unprocessed message: set in a worker process, which
# is handed nothing by the web processes that store what arrives.
SWEEP_EVERY = web.AppKey("inbound_sweep_every", float)


async def processor_ctx(app: web.Application) -> AsyncIterator[None]:
    """Processes stored inbound messages in the background (cleanup_ctx, after the dispatcher)."""
    dispatcher = app.get(DISPATCHER)
    processor = InboundProcessor(
        app[SERVICES],
        metrics=app[METRICS],
        on_queued=dispatcher.poke if dispatcher is not None else None,
    )
    if SWEEP_EVERY in app:
        processor.sweep_every, processor.sweep_age = app[SWEEP_EVERY], timedelta(0)
    app[PROCESSOR] = processor
    await processor.start()
    yield
    await processor.stop()

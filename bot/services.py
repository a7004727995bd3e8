"""The process's shared parts, built once in create_app() or a CLI command, passed in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, system_clock
from bot.config import Settings
from bot.keys import load_vault
from storage.crypto import Vault
from storage.db import GroupCommit, create_engine, session_factory

if TYPE_CHECKING:
    from bot.channels.base import ChannelSender


@dataclass
class Services:
    """Settings, database, keys and clock: what every handler and command needs."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    clock: Clock = system_clock
    senders: dict[str, ChannelSender] = field(default_factory=dict)
    # Group commits shared by everyone storing the same kind of thing (see bot.handlers.inbound).
    group_commits: dict[str, GroupCommit[Any, Any]] = field(default_factory=dict)
    # Work a handler starts to run after its transaction (a confirmed broadcast being queued):
    # held so it is not garbage-collected mid-way, and finished before close() lets go.
    # Nothing here is needed by another process; the work's outcome is in the database.
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @classmethod
    def build(cls, settings: Settings, *, clock: Clock = system_clock) -> Services:
        engine = create_engine(settings.database_url)
        return cls(
            settings=settings,
            engine=engine,
            sessions=session_factory(engine),
            vault=load_vault(settings),
            clock=clock,
        )

    async def close(self) -> None:
        if self.background:
            await asyncio.gather(*self.background, return_exceptions=True)
        for sender in self.senders.values():
            await sender.close()
        await self.engine.dispose()

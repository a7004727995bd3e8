"""The process's shared parts, built once in create_app() or a CLI command, passed in."""

from __future__ import annotations

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
        for sender in self.senders.values():
            await sender.close()
        await self.engine.dispose()

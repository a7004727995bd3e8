"""Async engine and sessions for SQLite (WAL) and PostgreSQL from a plain DATABASE_URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession


class DatabaseURLError(ValueError):
    """DATABASE_URL is not a SQLite or PostgreSQL URL."""


def async_url(url: str) -> str:
    """Map a plain sqlite:/// or postgresql:// URL to its async driver."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return str(u.set(drivername="sqlite+aiosqlite"))
    if backend in ("postgresql", "postgres"):
        return u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    raise DatabaseURLError(
        f"DATABASE_URL must start with sqlite:/// or postgresql://, not {backend}"
    )


def sync_url(url: str) -> str:
    """The same database for synchronous tools (Alembic runs through the async driver too)."""
    return async_url(url)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def create_engine(url: str, **kw: Any) -> AsyncEngine:
    """One engine for the process; WAL, foreign keys and a busy timeout on SQLite."""
    path = _sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    if make_url(url).get_backend_name() == "sqlite":
        kw.setdefault("connect_args", {"timeout": 30})
    else:
        kw.setdefault("pool_size", 10)
        kw.setdefault("max_overflow", 10)
        kw.setdefault("pool_pre_ping", True)
    engine = create_async_engine(async_url(url), **kw)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (no lazy loads under async)."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error."""
    async with sessions() as session, session.begin():
        yield session


async def ping(engine: AsyncEngine) -> bool:
    """True when the database answers."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False

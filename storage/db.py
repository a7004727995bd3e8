"""Async engine and sessions for SQLite (WAL) and PostgreSQL from a plain DATABASE_URL."""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

T = TypeVar("T")
R = TypeVar("R")


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


class _WriterLock:
    """One SQLite write transaction at a time in this process; ``first`` waiters go ahead.

    SQLite has a single write lock. Left to itself, a connection that finds it taken sleeps in
    SQLite's busy handler with growing back-offs (up to 100 ms) even when the lock frees a
    millisecond later; under a burst of webhooks that turned 1 ms commits into seconds.
    Queueing writers here instead hands the lock over at once, and lets the commits a provider
    is waiting on (``first``: storing an inbound message before it is acknowledged) go before
    background work. Other processes still meet SQLite's busy timeout. Re-entrant per task: a
    transaction opened inside another by the same task goes ahead as it did before.
    """

    def __init__(self) -> None:
        self._locked = False
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0
        self._first: deque[asyncio.Future[None]] = deque()
        self._later: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def held(self, *, first: bool = False) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and task is self._owner:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        await self._acquire(first)
        self._owner, self._depth = task, 1
        try:
            yield
        finally:
            self._owner, self._depth = None, 0
            self._release()

    async def _acquire(self, first: bool) -> None:
        if not self._locked and not self._first and not self._later:
            self._locked = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._first if first else self._later
        queue.append(fut)
        try:
            await asyncio.wait_for(fut, WRITER_WAIT)
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self._release()  # handed the lock just as we gave up: pass it on
            elif fut in queue:
                queue.remove(fut)
            if isinstance(exc, TimeoutError):
                raise OperationalError(
                    "waiting for the SQLite writer", None, TimeoutError("database is locked")
                ) from None
            raise

    def _release(self) -> None:
        for queue in (self._first, self._later):
            while queue:
                fut = queue.popleft()
                if not fut.done():
                    fut.set_result(None)  # the lock passes straight to this waiter
                    return
        self._locked = False


# As long as SQLite's own busy timeout: a writer that waits longer fails the same way.
WRITER_WAIT = 30.0
_writers: weakref.WeakKeyDictionary[AsyncEngine, dict[int, _WriterLock]] = (
    weakref.WeakKeyDictionary()
)


def _writer(sessions: async_sessionmaker[AsyncSession]) -> _WriterLock | None:
    """The write queue of a SQLite engine (per event loop); None for PostgreSQL."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, AsyncEngine) or bind.dialect.name != "sqlite":
        return None
    per_loop = _writers.setdefault(bind, {})
    loop_id = id(asyncio.get_running_loop())
    lock = per_loop.get(loop_id)
    if lock is None:
        lock = per_loop[loop_id] = _WriterLock()
    return lock


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
    *,
    first: bool = False,
) -> AsyncIterator[AsyncSession]:
    """A session inside one transaction: committed on success, rolled back on error.

    ``first``: on SQLite, this commit goes ahead of queued background writes (someone waits).
    """
    writer = _writer(sessions)
    if writer is None:
        async with sessions() as session, session.begin():
            yield session
        return
    async with writer.held(first=first), sessions() as session, session.begin():
        yield session


class GroupCommit(Generic[T, R]):
    """Group commit: items submitted while a commit runs share the next transaction.

    Under a burst each caller waits for about one commit instead of a queue of them (commits,
    not statements, are what a database serialises). ``work`` does one item inside the shared
    session. If the shared transaction fails, every item of that batch is done again ``alone``
    (its own transaction, its own retries), so one bad item or a lost race costs the others
    nothing. A caller that stops waiting does not stop its item: it is committed anyway.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        work: Callable[[AsyncSession, T], Awaitable[R]],
        *,
        alone: Callable[[T], Awaitable[R]] | None = None,
        prefetch: Callable[[AsyncSession, list[T]], Awaitable[None]] | None = None,
        max_batch: int = 64,
        first: bool = False,
    ) -> None:
        self.sessions = sessions
        self.work = work
        self.alone = alone or self._alone
        self.prefetch = prefetch
        self.max_batch = max_batch
        self.first = first
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: T) -> R:
        """Do ``item`` in the next group commit; its result once committed."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): nothing pending carries over
            self._loop, self._pending, self._flusher = loop, [], None
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="group-commit")
        return await asyncio.shield(fut)

    async def idle(self) -> None:
        """Wait until everything submitted so far is committed (or has failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _alone(self, item: T) -> R:
        async with transaction(self.sessions, first=self.first) as session:
            return await self.work(session, item)

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            results: list[R] | None
            try:
                async with transaction(self.sessions, first=self.first) as session:
                    if self.prefetch is not None:
                        await self.prefetch(session, [item for item, _ in batch])
                    results = [await self.work(session, item) for item, _ in batch]
            except Exception:
                results = None
            for i, (item, fut) in enumerate(batch):
                if results is not None:
                    _settle(fut, results[i], None)
                    continue
                try:
                    _settle(fut, await self.alone(item), None)
                except Exception as exc:
                    _settle(fut, None, exc)


def _settle(fut: asyncio.Future[R], result: R | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)  # type: ignore[arg-type]


async def ping(engine: AsyncEngine) -> bool:
    """True when the database answers."""
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False

"""Shared fixtures: a fresh migrated database per test (SQLite, or PostgreSQL when asked)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bot.clock import FakeClock
from bot.config import Settings
from bot.services import Services
from storage import migrate
from storage.crypto import generate_key

# `make test` runs the suite once on SQLite and, when TEST_DATABASE_URL is set, once more
# with PROBONO_TEST_BACKEND=postgresql.
BACKEND = os.environ.get("PROBONO_TEST_BACKEND", "sqlite")
PG_BASE_URL = os.environ.get("TEST_DATABASE_URL")

TEST_KEY = generate_key()


def _pg_admin_url() -> str:
    assert PG_BASE_URL
    return PG_BASE_URL


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Migrate once per session: a SQLite file to copy, or a PostgreSQL database to truncate."""
    if BACKEND == "postgresql":
        if not PG_BASE_URL:
            pytest.exit("PROBONO_TEST_BACKEND=postgresql needs TEST_DATABASE_URL", returncode=2)
        name = f"probono_test_{uuid.uuid4().hex[:10]}"
        import asyncio

        import asyncpg

        base = make_url(_pg_admin_url())

        async def _admin(sql: str) -> None:
            conn = await asyncpg.connect(
                host=base.host or "127.0.0.1",
                port=base.port or 5432,
                user=base.username or "postgres",
                password=base.password,
                database=base.database or "postgres",
            )
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
        url = base.set(database=name).render_as_string(hide_password=False)
        migrate.upgrade(url)
        yield url
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        path = tmp_path_factory.mktemp("template") / "template.db"
        url = f"sqlite:///{path}"
        migrate.upgrade(url)
        yield url


async def _truncate_pg(url: str) -> None:
    from storage.db import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            rows = await conn.execute(
                text(
                    "SELECT tablename FROM pg_tables WHERE schemaname='public' "
                    "AND tablename <> 'alembic_version'"
                )
            )
            names = ", ".join(f'"{r[0]}"' for r in rows)
            if names:
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        await engine.dispose()


@pytest.fixture
async def database_url(_template_db: str, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated, empty database for this test."""
    if BACKEND == "postgresql":
        await _truncate_pg(_template_db)
        yield _template_db
    else:
        src = Path(make_url(_template_db).database or "")
        dst = tmp_path / "db" / "probono.db"
        dst.parent.mkdir()
        shutil.copyfile(src, dst)
        yield f"sqlite:///{dst}"


def make_settings(database_url: str, data_dir: Path, **overrides: object) -> Settings:
    """Settings for a test: nothing read from the developer's environment or .env."""
    values: dict[str, object] = {
        "DATABASE_URL": database_url,
        "PROBONO_DATA_DIR": data_dir,
        "PROBONO_ENV": "test",
        "PROBONO_ENCRYPTION_KEYS": TEST_KEY,
        "QUIET_HOURS": "",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "data")


@pytest.fixture
def clock() -> FakeClock:
    """A clock the test moves: 2026-03-02 15:00 UTC (10:00 in New York)."""
    return FakeClock(datetime(2026, 3, 2, 15, 0, tzinfo=UTC))


@pytest.fixture
async def services(settings: Settings) -> AsyncIterator[Services]:
    svc = Services.build(settings)
    yield svc
    await svc.close()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never read the developer's .env or settings."""
    for name in list(os.environ):
        if name.startswith(
            ("TWILIO_", "TELEGRAM_", "PROBONO_", "PUBLIC_BASE_URL")
        ) and name not in ("PROBONO_TEST_BACKEND",):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)

"""Fixtures for conversation tests: services on a clock the test moves, with a staff group."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.clock import FakeClock
from bot.config import Settings
from bot.services import Services
from tests.conftest import make_settings

STAFF_CHAT = -1001234567890


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        TELEGRAM_STAFF_CHAT_ID=str(STAFF_CHAT),
        PROGRAM_NAME="Legal Aid Line",
    )


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[Services]:
    svc = Services.build(settings, clock=clock)
    yield svc
    await svc.close()

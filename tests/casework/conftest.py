"""The use cases run on a fake clock (2026-03-02 15:00 UTC)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.clock import FakeClock
from bot.config import Settings
from bot.services import Services


@pytest.fixture
async def services(settings: Settings, clock: FakeClock) -> AsyncIterator[Services]:
    svc = Services.build(settings, clock=clock)
    yield svc
    await svc.close()

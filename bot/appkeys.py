"""Typed aiohttp application state (web.AppKey)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bot.metrics import Metrics
from bot.services import Services

if TYPE_CHECKING:
    from bot.dispatch import Dispatcher

SERVICES = web.AppKey("services", Services)
METRICS = web.AppKey("metrics", Metrics)
DISPATCHER: web.AppKey[Dispatcher] = web.AppKey("dispatcher")

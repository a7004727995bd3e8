"""The dispatcher: claims due outbox rows and sends them through their channel."""

from __future__ import annotations


class Dispatcher:
    """Placeholder until the SMS issue lands: see issue 3."""

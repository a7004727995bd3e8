"""The console channel: replies printed to a terminal, for `probono chat`."""

from __future__ import annotations

import sys
import uuid
from typing import TextIO

from bot.channels.base import ChannelSender, OutboundMessage, SendResult
from storage.models import Channel


class ConsoleSender(ChannelSender):
    """Prints each outbound message; choices arrive already numbered, as on SMS."""

    name = Channel.CONSOLE

    def __init__(self, out: TextIO | None = None, prefix: str = "bot> ") -> None:
        self.out = out
        self.prefix = prefix
        self.sent: list[OutboundMessage] = []

    async def send(self, message: OutboundMessage) -> SendResult:
        """Prints the message, each line prefixed so it reads apart from what was typed."""
        out = self.out or sys.stdout
        indent = " " * len(self.prefix)
        lines = message.text.splitlines() or [""]
        out.write(self.prefix + lines[0] + "\n")
        for line in lines[1:]:
            out.write(indent + line + "\n")
        out.flush()
        self.sent.append(message)
        return SendResult(provider_id=f"console-{uuid.uuid4().hex}", status="delivered")

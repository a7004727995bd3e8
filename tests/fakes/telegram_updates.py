"""Factories for real-shaped Telegram updates (as Telegram posts them to a webhook)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.fake_telegram import BOT_ID, BOT_USERNAME

DATE = 1772463600  # 2026-03-02 15:00 UTC


@dataclass(frozen=True)
class User:
    """A Telegram user (a client or a staff member)."""

    id: int
    first_name: str = "Ana"
    language_code: str = "en"

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "is_bot": False,
            "first_name": self.first_name,
            "language_code": self.language_code,
        }

    def private_chat(self) -> dict[str, Any]:
        return {"id": self.id, "type": "private", "first_name": self.first_name}


def group_chat(chat_id: int) -> dict[str, Any]:
    return {"id": chat_id, "type": "supergroup", "title": "Coordinators"}


def _bot_user() -> dict[str, Any]:
    return {"id": BOT_ID, "is_bot": True, "first_name": "Legal Aid Line", "username": BOT_USERNAME}


@dataclass
class Updates:
    """Numbers updates and messages the way Telegram does: increasing, per bot and per chat."""

    next_update: itertools.count[int] = field(default_factory=lambda: itertools.count(500_000))
    next_message: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def _message(
        self, user: User, chat: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        return {
            "message_id": next(self.next_message),
            "from": user.json(),
            "chat": chat or user.private_chat(),
            "date": DATE,
            **fields,
        }

    def _update(self, **fields: Any) -> dict[str, Any]:
        return {"update_id": next(self.next_update), **fields}

    def text(
        self,
        user: User,
        text: str,
        *,
        chat: dict[str, Any] | None = None,
        reply_to: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A text message; ``reply_to`` is the message it answers (e.g. a bot card)."""
        fields: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            command = text.split()[0]
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if reply_to is not None:
            fields["reply_to_message"] = reply_to
        return self._update(message=self._message(user, chat, **fields))

    def bot_message(self, chat_id: int, message_id: int, text: str) -> dict[str, Any]:
        """A message the bot sent (what reply_to_message holds when someone replies to it)."""
        chat = {"id": chat_id, "type": "private", "first_name": "User"}
        return {
            "message_id": message_id,
            "from": _bot_user(),
            "chat": chat,
            "date": DATE,
            "text": text,
        }

    def callback(
        self, user: User, data: str, *, message: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A press on an inline button of ``message`` (a bot message with the keyboard)."""
        msg = message or self.bot_message(user.id, 101, "Choose one")
        return self._update(
            callback_query={
                "id": f"cq{next(self.next_message)}",
                "from": user.json(),
                "chat_instance": "-4242",
                "message": msg,
                "data": data,
            }
        )

    def contact(self, user: User, phone: str, *, contact_user_id: int | None) -> dict[str, Any]:
        """A shared contact; from the request-contact button it is the sender's own."""
        contact: dict[str, Any] = {"phone_number": phone, "first_name": user.first_name}
        if contact_user_id is not None:
            contact["user_id"] = contact_user_id
        return self._update(message=self._message(user, contact=contact))

    def photo(self, user: User, file_id: str, *, caption: str | None = None) -> dict[str, Any]:
        sizes = [
            {"file_id": f"{file_id}-small", "file_unique_id": "s1", "width": 90, "height": 90},
            {"file_id": file_id, "file_unique_id": "s2", "width": 1280, "height": 960},
        ]
        fields: dict[str, Any] = {"photo": sizes}
        if caption:
            fields["caption"] = caption
        return self._update(message=self._message(user, **fields))

    def document(
        self, user: User, file_id: str, *, mime_type: str = "application/pdf"
    ) -> dict[str, Any]:
        doc = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": "lease.pdf",
            "mime_type": mime_type,
        }
        return self._update(message=self._message(user, document=doc))

    def blocked(self, user: User) -> dict[str, Any]:
        """The user blocked the bot (Telegram's my_chat_member update)."""
        return self._update(
            my_chat_member={
                "chat": user.private_chat(),
                "from": user.json(),
                "date": DATE,
                "old_chat_member": {"user": _bot_user(), "status": "member"},
                "new_chat_member": {"user": _bot_user(), "status": "kicked", "until_date": 0},
            }
        )

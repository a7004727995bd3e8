"""A fake Telegram Bot API server on loopback (port 0) that records calls and fails the test.

It answers the methods probono-bot uses with real-shaped JSON. Anything else is a problem:
an unknown method, a wrong token, or a ``sendMessage`` to a chat that never started the bot
(a real bot cannot write to such a chat, and a message to the wrong person is exactly what
the tests must catch). Problems are collected and raised by ``check()``, which the fixture
calls when the test ends, so a fake that is merely logged can never hide a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

TOKEN = "123456:TEST-token_for-the-fake"
BOT_ID = 123456
BOT_USERNAME = "probono_test_bot"

# Parameters PTB sends JSON-encoded (everything else is a plain string in the form).
_JSON_PARAMS = {
    "reply_markup",
    "reply_parameters",
    "commands",
    "scope",
    "allowed_updates",
    "entities",
    "link_preview_options",
}
_INT_PARAMS = {"chat_id", "message_id", "offset", "limit", "timeout", "user_id", "max_connections"}


@dataclass
class Call:
    """One request the fake received."""

    method: str
    params: dict[str, Any]
    result: dict[str, Any] | None = None  # the message the fake answered with

    @property
    def message_id(self) -> int:
        assert self.result is not None, f"{self.method} did not succeed"
        return int(self.result["message_id"])

    @property
    def chat_id(self) -> int | None:
        value = self.params.get("chat_id")
        return int(value) if value is not None else None

    @property
    def text(self) -> str:
        return str(self.params.get("text", ""))

    @property
    def reply_markup(self) -> dict[str, Any] | None:
        markup = self.params.get("reply_markup")
        return markup if isinstance(markup, dict) else None

    @property
    def inline_buttons(self) -> list[tuple[str, str]]:
        """(label, callback data) of every inline button, row by row."""
        markup = self.reply_markup or {}
        return [
            (b["text"], b.get("callback_data", ""))
            for row in markup.get("inline_keyboard", [])
            for b in row
        ]

    @property
    def reply_to(self) -> int | None:
        rp = self.params.get("reply_parameters")
        if isinstance(rp, dict):
            return int(rp["message_id"])
        return None


@dataclass
class Scripted:
    """A canned failure for the next matching call."""

    method: str
    chat_id: int | None
    status: int
    description: str
    retry_after: int | None = None


@dataclass
class FakeTelegram:
    """The server's state: known chats, scripted failures, queued updates, files."""

    token: str = TOKEN
    calls: list[Call] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    chats: dict[int, str] = field(default_factory=dict)  # chat id -> type
    blocked: set[int] = field(default_factory=set)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (path, bytes)
    webhook: dict[str, Any] = field(default_factory=dict)
    _scripted: list[Scripted] = field(default_factory=list)
    _updates: list[dict[str, Any]] = field(default_factory=list)
    _update_event: asyncio.Event = field(default_factory=asyncio.Event)
    _next_message_id: dict[int, int] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    url: str = ""

    # ----------------------------------------------------------------- test controls

    def add_chat(self, chat_id: int, chat_type: str = "private") -> None:
        """A chat that started the bot (a user) or a group the bot is in."""
        self.chats[chat_id] = chat_type

    def block(self, chat_id: int) -> None:
        """The user blocked the bot: every send to them is 403."""
        self.blocked.add(chat_id)

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str,
        chat_id: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        """The next call of ``method`` (to ``chat_id`` if given) fails like this."""
        self._scripted.append(Scripted(method, chat_id, status, description, retry_after))

    def push_update(self, update: dict[str, Any]) -> None:
        """An update for the next getUpdates (long polling)."""
        self._updates.append(update)
        self._update_event.set()

    def add_file(self, file_id: str, content: bytes, path: str = "photos/file_0.jpg") -> None:
        self.files[file_id] = (path, content)

    def sent(self, chat_id: int | None = None) -> list[Call]:
        """Every sendMessage, optionally to one chat."""
        return [
            c
            for c in self.calls
            if c.method == "sendMessage" and (chat_id is None or c.chat_id == chat_id)
        ]

    def of(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def check(self) -> None:
        """Fail the test if anything unexpected reached the fake."""
        assert not self.problems, "fake Telegram saw unexpected requests:\n" + "\n".join(
            self.problems
        )

    # ----------------------------------------------------------------- server

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._file)
        app.router.add_route("*", "/{tail:.*}", self._unknown)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ----------------------------------------------------------------- handlers

    async def _unknown(self, request: web.Request) -> web.Response:
        self.problems.append(f"unexpected request {request.method} {request.path}")
        return _error(404, "Not Found")

    async def _file(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            self.problems.append("file download with a wrong token")
            return _error(401, "Unauthorized")
        path = request.match_info["path"]
        for stored_path, content in self.files.values():
            if stored_path == path:
                return web.Response(body=content)
        self.problems.append(f"download of an unknown file {path}")
        return web.Response(status=404)

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        if request.match_info["token"] != self.token:
            self.problems.append(f"{method} with a wrong token")
            return _error(401, "Unauthorized")
        params = await _params(request)
        call = Call(method, params)
        self.calls.append(call)
        handler = _METHODS.get(method)
        if handler is None:
            self.problems.append(f"unexpected method {method}")
            return _error(404, "Not Found: method not found")
        scripted = self._take_scripted(method, call.chat_id)
        if scripted is not None:
            return _error(scripted.status, scripted.description, scripted.retry_after)
        return await handler(self, call)

    def _take_scripted(self, method: str, chat_id: int | None) -> Scripted | None:
        for i, s in enumerate(self._scripted):
            if s.method == method and (s.chat_id is None or s.chat_id == chat_id):
                return self._scripted.pop(i)
        return None

    # ----------------------------------------------------------------- methods

    async def _get_me(self, call: Call) -> web.Response:
        return _ok(
            {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "Legal Aid Line",
                "username": BOT_USERNAME,
                "can_join_groups": True,
                "can_read_all_group_messages": False,
                "supports_inline_queries": False,
            }
        )

    async def _set_webhook(self, call: Call) -> web.Response:
        self.webhook = dict(call.params)
        return _ok(True)

    async def _delete_webhook(self, call: Call) -> web.Response:
        self.webhook = {}
        return _ok(True)

    async def _true(self, call: Call) -> web.Response:
        return _ok(True)

    def _chat_error(self, call: Call) -> web.Response | None:
        chat_id = call.chat_id
        if chat_id is None:
            self.problems.append(f"{call.method} without chat_id")
            return _error(400, "Bad Request: chat_id is empty")
        if chat_id in self.blocked:
            return _error(403, "Forbidden: bot was blocked by the user")
        if chat_id not in self.chats:
            self.problems.append(
                f"{call.method} to chat {chat_id}, which never started the bot: {call.text[:80]!r}"
            )
            return _error(400, "Bad Request: chat not found")
        return None

    def _message(self, call: Call, message_id: int | None = None) -> dict[str, Any]:
        chat_id = call.chat_id
        assert chat_id is not None
        if message_id is None:
            message_id = self._next_message_id.get(chat_id, 100) + 1
            self._next_message_id[chat_id] = message_id
        chat_type = self.chats.get(chat_id, "private")
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat["first_name"] = "User"
        else:
            chat["title"] = "Coordinators"
        msg: dict[str, Any] = {
            "message_id": message_id,
            "from": {
                "id": BOT_ID,
                "is_bot": True,
                "first_name": "Legal Aid Line",
                "username": BOT_USERNAME,
            },
            "chat": chat,
            "date": 1772463600,
            "text": call.text,
        }
        markup = call.reply_markup
        if markup and "inline_keyboard" in markup:
            msg["reply_markup"] = markup
        call.result = msg
        return msg

    async def _send_message(self, call: Call) -> web.Response:
        error = self._chat_error(call)
        if error is not None:
            return error
        if not call.text:
            self.problems.append("sendMessage with an empty text")
            return _error(400, "Bad Request: message text is empty")
        if len(call.text) > 4096:
            self.problems.append("sendMessage longer than 4096 characters")
            return _error(400, "Bad Request: message is too long")
        return _ok(self._message(call))

    async def _edit_message_text(self, call: Call) -> web.Response:
        error = self._chat_error(call)
        if error is not None:
            return error
        message_id = call.params.get("message_id")
        if message_id is None:
            self.problems.append("editMessageText without message_id")
            return _error(400, "Bad Request: message identifier is not specified")
        return _ok(self._message(call, int(message_id)))

    async def _get_updates(self, call: Call) -> web.Response:
        offset = int(call.params.get("offset", 0) or 0)
        # Answer at once when updates wait; otherwise hold the poll briefly, like Telegram.
        if not any(u["update_id"] >= offset for u in self._updates):
            self._update_event.clear()
            timeout = min(float(call.params.get("timeout", 0) or 0), 0.2)
            if timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._update_event.wait(), timeout)
        # Telegram forgets the updates before the offset once asked with it.
        self._updates = [u for u in self._updates if u["update_id"] >= offset]
        return _ok(list(self._updates))

    async def _get_file(self, call: Call) -> web.Response:
        file_id = str(call.params.get("file_id", ""))
        if file_id not in self.files:
            self.problems.append(f"getFile of an unknown file {file_id}")
            return _error(400, "Bad Request: invalid file_id")
        path, content = self.files[file_id]
        return _ok(
            {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_size": len(content),
                "file_path": path,
            }
        )


_METHODS = {
    "getMe": FakeTelegram._get_me,
    "setWebhook": FakeTelegram._set_webhook,
    "deleteWebhook": FakeTelegram._delete_webhook,
    "setMyCommands": FakeTelegram._true,
    "answerCallbackQuery": FakeTelegram._true,
    "sendMessage": FakeTelegram._send_message,
    "editMessageText": FakeTelegram._edit_message_text,
    "getUpdates": FakeTelegram._get_updates,
    "getFile": FakeTelegram._get_file,
}


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return dict(data) if isinstance(data, dict) else {}
    form = await request.post()
    out: dict[str, Any] = {}
    for key, value in form.items():
        if not isinstance(value, str):
            continue
        if key in _JSON_PARAMS:
            out[key] = json.loads(value)
        elif key in _INT_PARAMS and value.lstrip("-").isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


def _error(status: int, description: str, retry_after: int | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=status)


def texts(calls: Iterable[Call]) -> list[str]:
    return [c.text for c in calls]

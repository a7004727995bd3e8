"""A local fake of Twilio's REST API (Messages and Media) on port 0, strict about surprises.

Every request it does not expect (an unknown path, wrong credentials, a message after
``expect_no_more()``) is recorded in ``problems``; ``check()`` (called when the
``running_fake_twilio`` context ends) fails the test with them. It can be told to answer
429 (with Retry-After), 500, 21610, 21211 or to stall past the client's timeout, for the
next N messages or with a probability, and to hold answers after the Nth message.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import re
import secrets
from collections import deque
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.test_utils import TestServer
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"
FROM_NUMBER = "+15005550006"
PUBLIC_BASE_URL = "https://bot.example.org"

_MESSAGES = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC\w+)/Messages\.json$")
_MEDIA = re.compile(r"^/2010-04-01/Accounts/(?P<sid>AC\w+)/Messages/(MM\w+)/Media/(ME\w+)$")

FAULTS = ("429", "500", "21610", "21211", "timeout")


@dataclass
class SentMessage:
    """One message the fake accepted, as the SDK posted it."""

    sid: str
    to: str
    body: str
    from_: str | None
    messaging_service_sid: str | None
    status_callback: str | None
    form: dict[str, str] = field(default_factory=dict)


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _rfc2822(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


class FakeTwilio:
    """The fake server; ``base_url`` is what TWILIO_API_BASE_URL should point at."""

    def __init__(
        self,
        *,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        rng: random.Random | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.rng = rng or random.Random(1234)
        self.messages: list[SentMessage] = []
        self.problems: list[str] = []
        self.attempts = 0  # every POST to Messages.json, faults included
        self.faults_served: list[str] = []
        self.retry_after = "1"
        self.slow_seconds = 2.0
        self._queued_faults: deque[str] = deque()
        self._fault_probability = 0.0
        self._fault_kinds: tuple[str, ...] = ()
        self._no_more = False
        self._hang_after: int | None = None
        self._released = asyncio.Event()
        self._closing = asyncio.Event()
        self._media: dict[str, tuple[bytes, str]] = {}
        self.media_fetches = 0
        self.account_fetches = 0
        self._server: TestServer | None = None
        self.base_url = ""

    # ------------------------------------------------------------------ control

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        self.base_url = str(self._server.make_url("")).rstrip("/")
        return self.base_url

    async def close(self) -> None:
        self._closing.set()
        self._released.set()
        if self._server is not None:
            await self._server.close()

    def fail_next(self, kind: str, n: int = 1) -> None:
        """Answer the next ``n`` messages with this fault (429, 500, 21610, 21211, timeout)."""
        assert kind in FAULTS, kind
        self._queued_faults.extend([kind] * n)

    def fail_randomly(self, probability: float, kinds: Iterable[str] = ("429", "500")) -> None:
        """Answer each message with one of ``kinds`` with this probability."""
        self._fault_probability = probability
        self._fault_kinds = tuple(kinds)
        assert all(k in FAULTS for k in self._fault_kinds)

    def expect_no_more(self) -> None:
        """From now on any message is a test failure."""
        self._no_more = True

    def hang_after(self, n: int) -> None:
        """Accept and record messages beyond the ``n``th but hold their answers until release()."""
        self._hang_after = n

    def release(self) -> None:
        self._hang_after = None
        self._released.set()

    def add_media(self, content: bytes, content_type: str) -> str:
        """Serve an attachment; returns its URL, as Twilio puts it in MediaUrl0."""
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{_sid('MM')}/Media/{_sid('ME')}"
        self._media[path] = (content, content_type)
        return self.base_url + path

    def sent_to(self, number: str) -> list[SentMessage]:
        return [m for m in self.messages if m.to == number]

    def check(self) -> None:
        """Fail the test if anything unexpected reached the fake."""
        assert not self.problems, "fake Twilio saw unexpected requests:\n" + "\n".join(
            self.problems
        )

    # ------------------------------------------------------------------ server

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        m = _MESSAGES.match(path)
        if m and request.method == "POST":
            return await self._create_message(request, m.group("sid"))
        if _MEDIA.match(path) and request.method == "GET":
            return self._serve_media(request, path)
        if path == f"/2010-04-01/Accounts/{self.account_sid}.json" and request.method == "GET":
            return self._account(request)
        self.problems.append(f"unexpected {request.method} {path}")
        return self._error(404, 20404, "The requested resource was not found")

    def _error(self, status: int, code: int, message: str, **headers: str) -> web.Response:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return web.json_response(body, status=status, headers=headers)

    def _account(self, request: web.Request) -> web.Response:
        """The account resource, as the SDK's ``accounts(sid).fetch()`` reads it."""
        self.account_fetches += 1
        if not self._authorized(request):
            return self._error(401, 20003, "Authenticate")
        return web.json_response(
            {
                "sid": self.account_sid,
                "friendly_name": "fake account",
                "status": "active",
                "type": "Full",
                "uri": f"/2010-04-01/Accounts/{self.account_sid}.json",
            }
        )

    def _serve_media(self, request: web.Request, path: str) -> web.Response:
        if not self._authorized(request):
            self.problems.append(f"media fetch without the account's credentials: {path}")
            return self._error(401, 20003, "Authenticate")
        if path not in self._media:
            self.problems.append(f"unknown media {path}")
            return self._error(404, 20404, "The requested resource was not found")
        self.media_fetches += 1
        content, ctype = self._media[path]
        return web.Response(body=content, content_type=ctype)

    def _next_fault(self) -> str | None:
        if self._queued_faults:
            return self._queued_faults.popleft()
        if self._fault_probability and self.rng.random() < self._fault_probability:
            return self.rng.choice(self._fault_kinds)
        return None

    async def _create_message(self, request: web.Request, sid: str) -> web.StreamResponse:
        self.attempts += 1
        if not self._authorized(request) or sid != self.account_sid:
            self.problems.append("message posted without the account's credentials")
            return self._error(401, 20003, "Authenticate")
        form = {k: str(v) for k, v in (await request.post()).items()}
        if self._no_more:
            self.problems.append(f"unexpected message after expect_no_more(): {form.get('To')}")
            return self._error(400, 21211, "Invalid 'To' Phone Number")
        if "To" not in form or not ("From" in form or "MessagingServiceSid" in form):
            self.problems.append(f"message without To or sender: {sorted(form)}")
            return self._error(400, 21604, "A 'To' phone number is required.")
        fault = self._next_fault()
        if fault is not None:
            self.faults_served.append(fault)
            if fault == "429":
                return self._error(
                    429, 20429, "Too Many Requests", **{"Retry-After": self.retry_after}
                )
            if fault == "500":
                return self._error(500, 20500, "Internal Server Error")
            if fault == "21610":
                return self._error(400, 21610, "Attempt to send to unsubscribed recipient")
            if fault == "21211":
                return self._error(400, 21211, f"The 'To' number {form['To']} is not valid.")
            # "timeout": stall past the client's timeout; the message is never created.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.slow_seconds)
            return self._error(503, 20503, "Service Unavailable")
        message = SentMessage(
            sid=_sid("SM"),
            to=form["To"],
            body=form.get("Body", ""),
            from_=form.get("From"),
            messaging_service_sid=form.get("MessagingServiceSid"),
            status_callback=form.get("StatusCallback"),
            form=form,
        )
        self.messages.append(message)
        if self._hang_after is not None and len(self.messages) > self._hang_after:
            await self._released.wait()
        return web.json_response(self._resource(message), status=201)

    def _resource(self, message: SentMessage) -> dict[str, Any]:
        now = _rfc2822(datetime.now(UTC))
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message.sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": message.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": message.from_,
            "messaging_service_sid": message.messaging_service_sid,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": message.sid,
            "status": "queued",
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": message.to,
            "uri": uri,
        }


@asynccontextmanager
async def running_fake_twilio(**kw: Any) -> AsyncIterator[FakeTwilio]:
    """A started fake that fails the test, on exit, if it saw anything unexpected."""
    fake = FakeTwilio(**kw)
    await fake.start()
    try:
        yield fake
        fake.check()
    finally:
        await fake.close()


# --------------------------------------------------------------------------- webhooks


def sign(url: str, params: Mapping[str, str], token: str = AUTH_TOKEN) -> str:
    """The X-Twilio-Signature Twilio would send for this URL and these parameters."""
    return str(RequestValidator(token).compute_signature(url, params))


def form_body(params: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    items = params.items() if isinstance(params, Mapping) else params
    return urlencode(list(items)).encode()


def inbound_params(
    *,
    from_: str,
    body: str = "",
    sid: str | None = None,
    to: str = FROM_NUMBER,
    media: Iterable[tuple[str, str]] = (),
    account_sid: str = ACCOUNT_SID,
) -> dict[str, str]:
    """An incoming-message webhook as Twilio posts it (the fields it really sends)."""
    message_sid = sid or _sid("SM")
    media = list(media)
    params = {
        "ToCountry": "US",
        "ToState": "NY",
        "SmsMessageSid": message_sid,
        "NumMedia": str(len(media)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": message_sid,
        "FromState": "NY",
        "SmsStatus": "received",
        "FromCity": "",
        "Body": body,
        "FromCountry": "US",
        "To": to,
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": message_sid,
        "AccountSid": account_sid,
        "From": from_,
        "ApiVersion": "2010-04-01",
    }
    for i, (url, ctype) in enumerate(media):
        params[f"MediaUrl{i}"] = url
        params[f"MediaContentType{i}"] = ctype
    return params


def status_params(
    *, message_sid: str, status: str, error_code: str | None = None, to: str = "+15550001111"
) -> dict[str, str]:
    """A status callback as Twilio posts it."""
    params = {
        "SmsSid": message_sid,
        "SmsStatus": status,
        "MessageStatus": status,
        "To": to,
        "MessageSid": message_sid,
        "AccountSid": ACCOUNT_SID,
        "From": FROM_NUMBER,
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        params["ErrorCode"] = error_code
    return params

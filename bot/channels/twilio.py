"""Twilio SMS/MMS: verify and parse webhooks, send through the REST API, fetch media."""

from __future__ import annotations

import base64
import contextvars
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
from multidict import MultiDict
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client as TwilioClient

from bot.channels.base import (
    ChannelSender,
    FetchedMedia,
    MediaError,
    OutboundMessage,
    SendError,
    SendErrorKind,
    SendResult,
)
from bot.config import Settings
from bot.core import EventKind, InboundMessage, Media, ProviderKeyword
from bot.sms_text import MAX_BODY, truncate
from storage.models import Channel
from storage.types import utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Signature"
SIGNATURE_SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
STATUS_PATH = "/twilio/status"
SMS_PATH = "/twilio/sms"
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'

ERR_UNSUBSCRIBED = 21610  # the recipient texted STOP: never retry, mark them opted out
ERR_INVALID_TO = 21211
MAX_MEDIA = 10  # Twilio sends at most ten attachments per message
MAX_MEDIA_BYTES = 10 * 1024 * 1024
MAX_INBOUND_CHARS = 10_000  # Twilio's own limit is 1,600; anything far beyond is not a text

# The response headers of the last request made in this task: Retry-After lives there, and
# the SDK's exceptions do not carry headers.
_last_headers: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "twilio_last_headers", default=None
)


class ParseError(ValueError):
    """A webhook body lacks what every Twilio message has (From, MessageSid)."""


# --------------------------------------------------------------------------- webhooks in


def verify_signature(
    auth_token: str | None,
    url: str,
    params: Mapping[str, str] | MultiDict[str],
    signature: str | None,
    signature_settings: str | None = None,
) -> bool:
    """True only for a request Twilio signed: URL plus every posted parameter, constant time.

    A missing or empty signature or token is a refusal, never an exception.
    """
    if not auth_token or not signature:
        return False
    try:
        validator = RequestValidator(auth_token)
        algorithm = get_signature_algorithm(signature_settings)
        ok = bool(validator.validate(url, params, signature, algorithm))
    except Exception:  # a hostile header must never become a 500
        return False
    if not ok and signature_settings:
        # A Webhook Rule signs with a SharedKey this deployment does not hold.
        log.warning("Twilio webhook signed with a SharedKey; only the Auth Token is configured")
    return ok


def _first(params: Mapping[str, str] | MultiDict[str], *names: str) -> str:
    for name in names:
        value = params.get(name)
        if value:
            return str(value)
    return ""


def _clean(text: str) -> str:
    # NUL bytes have no place in a text and upset databases and terminals downstream.
    return text.replace("\x00", "")[:MAX_INBOUND_CHARS]


def parse_inbound(params: Mapping[str, str] | MultiDict[str]) -> InboundMessage:
    """Turn an incoming-message webhook into an InboundMessage (or a STOP event)."""
    sid = _first(params, "MessageSid", "SmsMessageSid", "SmsSid").strip()
    sender = _clean(_first(params, "From")).strip()
    if not sid or not sender:
        raise ParseError("webhook without MessageSid or From")
    if len(sid) > 128 or len(sender) > 64:
        raise ParseError("webhook with an oversized MessageSid or From")
    try:
        count = max(0, min(int(_first(params, "NumMedia") or 0), MAX_MEDIA))
    except ValueError:
        count = 0
    media = []
    for i in range(count):
        url = _first(params, f"MediaUrl{i}").strip()
        if url:
            ctype = _first(params, f"MediaContentType{i}") or "application/octet-stream"
            media.append(Media(url=url, content_type=ctype.strip()[:128]))
    # With Advanced Opt-Out, Twilio has already answered STOP, START or HELP itself (and
    # unsubscribed or resubscribed the number); any other value is not a keyword it handled.
    opt_out = _first(params, "OptOutType").strip().upper()
    answered = ProviderKeyword(opt_out) if opt_out in ProviderKeyword.__members__ else None
    stopped = answered == ProviderKeyword.STOP
    return InboundMessage(
        channel=Channel.SMS,
        address=sender,
        provider_id=sid,
        text=_clean(_first(params, "Body")),
        media=tuple(media),
        kind=EventKind.STOPPED if stopped else EventKind.MESSAGE,
        provider_answered=answered,
    )


@dataclass(frozen=True)
class StatusUpdate:
    """A delivery-status callback: which message, its status, and Twilio's error code."""

    provider_id: str
    status: str
    error_code: str | None


def parse_status(params: Mapping[str, str] | MultiDict[str]) -> StatusUpdate:
    """Turn a status callback into a StatusUpdate."""
    sid = _first(params, "MessageSid", "SmsSid").strip()
    status = _first(params, "MessageStatus", "SmsStatus").strip().lower()
    if not sid or not status or len(sid) > 128:
        raise ParseError("status callback without MessageSid or MessageStatus")
    code = _first(params, "ErrorCode").strip() or None
    return StatusUpdate(provider_id=sid, status=status[:16], error_code=code[:32] if code else None)


# --------------------------------------------------------------------------- REST out


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client with a real timeout, quiet logs and the response headers kept."""

    def __init__(self, timeout: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the SDK's signature
        allow_redirects: bool = False,
    ) -> Response:
        """Makes one request; never logs it (the URL and form hold phone numbers)."""
        headers = dict(headers or {})
        if auth:
            headers["Authorization"] = basic_auth(auth[0], auth[1])
        session: Any = self.session
        async with session.request(
            method.upper(),
            url,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout,
            allow_redirects=allow_redirects,
        ) as resp:
            text = await resp.text()
            _last_headers.set(dict(resp.headers))
            return Response(resp.status, text, resp.headers)


def basic_auth(user: str, password: str) -> str:
    """An HTTP Basic Authorization header value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a Retry-After header (a number, or an HTTP date)."""
    if not headers:
        return None
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(raw) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def classify_error(status: int, code: int | None, retry_after: float | None) -> SendError:
    """Map a Twilio REST error to what the dispatcher should do."""
    label = str(code or status)
    if code == ERR_UNSUBSCRIBED:
        return SendError(SendErrorKind.STOPPED, label, "recipient unsubscribed")
    if status == 429 or status >= 500:
        return SendError(SendErrorKind.RETRY, label, f"HTTP {status}", retry_after=retry_after)
    if status == 401:
        # Wrong credentials are the operator's to fix; the message itself is fine.
        return SendError(SendErrorKind.RETRY, label, "authentication failed")
    return SendError(SendErrorKind.PERMANENT, label, f"HTTP {status}")


@dataclass(frozen=True)
class CredentialCheck:
    """Twilio's answer to our credentials; ``final`` is False when it may change on a retry."""

    ok: bool
    detail: str
    final: bool = True


class TwilioSender(ChannelSender):
    """Sends SMS through Twilio's REST API (the real SDK) at TWILIO_API_BASE_URL."""

    name = Channel.SMS

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        api_base_url: str = "https://api.twilio.com",
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("TwilioSender needs a from number or a messaging service sid")
        self.account_sid = account_sid
        self._auth_token = auth_token
        self.api_base_url = api_base_url.rstrip("/")
        self.from_number = from_number
        self.messaging_service_sid = messaging_service_sid
        self.status_callback = status_callback
        self.timeout = timeout
        self._client: TwilioClient | None = None
        self._http: _HttpClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, timeout: float = 10.0) -> TwilioSender | None:
        """The sender these settings describe, or None when SMS is off or has no sender."""
        if not settings.sms_enabled or settings.twilio_auth_token is None:
            return None
        if not (settings.twilio_from_number or settings.twilio_messaging_service_sid):
            log.warning("SMS is off: set TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID")
            return None
        callback = f"{settings.public_base_url}{STATUS_PATH}" if settings.public_base_url else None
        return cls(
            account_sid=str(settings.twilio_account_sid),
            auth_token=settings.twilio_auth_token.get_secret_value(),
            api_base_url=settings.twilio_api_base_url,
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            status_callback=callback,
            timeout=timeout,
        )

    def _rest(self) -> TwilioClient:
        # Built on first use: aiohttp sessions belong inside the running event loop.
        if self._client is None:
            self._http = _HttpClient(self.timeout)
            client = TwilioClient(self.account_sid, self._auth_token, http_client=self._http)
            # TWILIO_API_BASE_URL replaces the host; edges and regions would rewrite it.
            client.edge = None
            client.region = None
            client.api.base_url = self.api_base_url
            self._client = client
        return self._client

    async def send(self, message: OutboundMessage) -> SendResult:
        """Creates the message at Twilio; raises SendError saying whether to retry."""
        kwargs: dict[str, Any] = {"to": message.address, "body": truncate(message.text, MAX_BODY)}
        if self.messaging_service_sid:
            kwargs["messaging_service_sid"] = self.messaging_service_sid
        else:
            kwargs["from_"] = self.from_number
        callback = message.status_callback or self.status_callback
        if callback:
            kwargs["status_callback"] = callback
        _last_headers.set(None)
        try:
            created = await self._rest().messages.create_async(**kwargs)
        except (TwilioRestException, TwilioServiceException) as exc:
            code = exc.code if isinstance(exc.code, int) else None
            raise classify_error(int(exc.status), code, _retry_after(_last_headers.get())) from None
        except TimeoutError:
            raise SendError(SendErrorKind.RETRY, "timeout", "no answer from Twilio") from None
        except aiohttp.ClientError as exc:
            raise SendError(SendErrorKind.RETRY, "network", type(exc).__name__) from None
        return SendResult(provider_id=str(created.sid), status=str(created.status or "queued"))

    async def check_credentials(self) -> CredentialCheck:
        """Fetches our own account: Twilio's answer says whether it accepts these credentials."""
        try:
            await self._rest().api.v2010.accounts(self.account_sid).fetch_async()
        except (TwilioRestException, TwilioServiceException) as exc:
            if int(exc.status) in (401, 403, 404):
                return CredentialCheck(False, f"credentials rejected (HTTP {int(exc.status)})")
            return CredentialCheck(False, f"Twilio answered HTTP {int(exc.status)}", final=False)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return CredentialCheck(False, f"Twilio unreachable ({type(exc).__name__})", final=False)
        return CredentialCheck(True, "credentials accepted")

    async def fetch_media(self, media: Media) -> FetchedMedia:
        """Downloads an attachment with the account's credentials (only from the API host)."""
        if not media.url.startswith(self.api_base_url + "/"):
            # The credentials go only where the API lives; anything else is not Twilio's.
            raise MediaError("attachment URL is not on the Twilio API host")
        self._rest()
        assert self._http is not None
        session: Any = self._http.session
        try:
            async with session.get(
                media.url,
                headers={"Authorization": basic_auth(self.account_sid, self._auth_token)},
                timeout=aiohttp.ClientTimeout(total=max(self.timeout, 30.0)),
                allow_redirects=True,
            ) as resp:
                if resp.status != 200:
                    raise MediaError(f"attachment download answered HTTP {resp.status}")
                if (resp.content_length or 0) > MAX_MEDIA_BYTES:
                    raise MediaError("attachment too large")
                content = await resp.content.read(MAX_MEDIA_BYTES + 1)
                if len(content) > MAX_MEDIA_BYTES:
                    raise MediaError("attachment too large")
                ctype = resp.headers.get("Content-Type", media.content_type).split(";")[0]
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise MediaError(f"attachment download failed: {type(exc).__name__}") from None
        return FetchedMedia(content=content, content_type=ctype.strip() or media.content_type)

    async def close(self) -> None:
        """Closes the HTTP session."""
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None


def request_url(public_base_url: str | None, fallback_origin: str, raw_path: str) -> str:
    """The URL Twilio signed: PUBLIC_BASE_URL (or, unset, what we were called at) + path + query."""
    base = public_base_url.rstrip("/") if public_base_url else fallback_origin.rstrip("/")
    return base + raw_path

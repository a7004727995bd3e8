"""POST /twilio/sms and POST /twilio/status: verify the signature, store first, answer at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict

from bot.appkeys import METRICS, SERVICES
from bot.channels.twilio import (
    EMPTY_TWIML,
    ERR_UNSUBSCRIBED,
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    SMS_PATH,
    STATUS_PATH,
    CredentialCheck,
    ParseError,
    TwilioSender,
    parse_inbound,
    parse_status,
    request_url,
    verify_signature,
)
from bot.handlers import router
from bot.handlers.inbound import PROCESSOR
from storage import repo
from storage.db import transaction
from storage.models import Channel, ChannelIdentity, Direction

log = logging.getLogger(__name__)

FORM = "application/x-www-form-urlencoded"


def _twiml() -> web.Response:
    return web.Response(text=EMPTY_TWIML, content_type="text/xml")


async def _verified_form(request: web.Request) -> MultiDict[str]:
    """The posted parameters of a request Twilio signed; 403 or 400 otherwise, never 500."""
    settings = request.app[SERVICES].settings
    metrics = request.app[METRICS]
    signature = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not signature or settings.twilio_auth_token is None:
        metrics.webhook_rejected.labels(channel=Channel.SMS).inc()
        raise web.HTTPForbidden(text="forbidden")
    if request.content_type != FORM:
        raise web.HTTPUnsupportedMediaType(text="expected a form")
    raw = await request.read()
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            encoding="utf-8",
            errors="strict",
        )
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPBadRequest(text="undecodable form") from None
    params: MultiDict[str] = MultiDict(pairs)
    url = request_url(
        settings.public_base_url, f"{request.scheme}://{request.host}", request.raw_path
    )
    ok = verify_signature(
        settings.twilio_auth_token.get_secret_value(),
        url,
        params,
        signature,
        request.headers.get(SIGNATURE_SETTINGS_HEADER),
    )
    if not ok:
        metrics.webhook_rejected.labels(channel=Channel.SMS).inc()
        raise web.HTTPForbidden(text="forbidden")
    return params


async def sms_webhook(request: web.Request) -> web.Response:
    """Stores an incoming SMS/MMS and answers an empty TwiML; the reply goes out via the API."""
    params = await _verified_form(request)
    try:
        inbound = parse_inbound(params)
    except ParseError:
        raise web.HTTPBadRequest(text="not a message") from None
    await router.receive(
        request.app[SERVICES],
        inbound,
        processor=request.app.get(PROCESSOR),
        metrics=request.app[METRICS],
    )
    return _twiml()


async def status_webhook(request: web.Request) -> web.Response:
    """Records a delivery status; error 21610 marks the recipient opted out."""
    params = await _verified_form(request)
    try:
        update = parse_status(params)
    except ParseError:
        raise web.HTTPBadRequest(text="not a status callback") from None
    services = request.app[SERVICES]
    async with transaction(services.sessions) as session:
        msg = await repo.find_message(session, channel=Channel.SMS, provider_id=update.provider_id)
        if msg is None or msg.direction != Direction.OUT:
            return web.Response(status=204)
        repo.record_delivery_report(
            session,
            msg=msg,
            status=update.status,
            error_code=update.error_code,
            now=services.clock(),
        )
        if update.error_code == str(ERR_UNSUBSCRIBED) and msg.id is not None:
            item = await repo.outbox_item_for_message(session, message_id=msg.id)
            ident_id = (item.extra or {}).get("identity_id") if item is not None else None
            ident = await session.get(ChannelIdentity, ident_id) if ident_id else None
            if ident is not None:
                await repo.record_consent(
                    session,
                    identity=ident,
                    kind="opt_out",
                    source="provider_error",
                    at=services.clock(),
                )
    # A report, not a send: the dispatcher counted the send itself (probono_outbound_messages).
    request.app[METRICS].delivery_reports.labels(channel=Channel.SMS, status=update.status).inc()
    return web.Response(status=204)


class CredentialWatch:
    """Twilio's answer to our credentials, asked once at start and remembered (for /readyz).

    Only a network failure or a Twilio 5xx is asked again, with a growing pause: a rejected
    token stays rejected until someone fixes the setting and restarts.
    """

    def __init__(self, sender: TwilioSender) -> None:
        self.sender = sender
        self.result: CredentialCheck | None = None

    async def run(self, first_pause: float = 5.0) -> None:
        pause = first_pause
        while True:
            self.result = await self.sender.check_credentials()
            if self.result.final:
                if not self.result.ok:
                    log.error("Twilio %s", self.result.detail)
                return
            await asyncio.sleep(pause)
            pause = min(pause * 2, 300.0)


CREDENTIALS = web.AppKey("twilio_credentials", CredentialWatch)


async def credentials_ctx(app: web.Application) -> AsyncIterator[None]:
    """Asks Twilio about our credentials in the background while the app runs."""
    task = asyncio.create_task(app[CREDENTIALS].run(), name="twilio-credentials")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application, *, routes: bool = True) -> None:
    """Adds the Twilio routes (unless ``routes`` is False), and the SMS sender when Twilio is
    configured."""
    services = app[SERVICES]
    if routes:
        app.router.add_post(SMS_PATH, sms_webhook)
        app.router.add_post(STATUS_PATH, status_webhook)
    if Channel.SMS not in services.senders:
        sender = TwilioSender.from_settings(services.settings)
        if sender is not None:
            services.senders[Channel.SMS] = sender
    sms = services.senders.get(Channel.SMS)
    if isinstance(sms, TwilioSender):
        app[CREDENTIALS] = CredentialWatch(sms)
        app.cleanup_ctx.append(credentials_ctx)

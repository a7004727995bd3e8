"""POST /twilio/status: signed delivery callbacks update the message; 21610 opts the client out."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from storage.models import ChannelIdentity, ConsentEvent, Direction, Message
from tests.fakes.fake_twilio import status_params
from tests.handlers.twilio_harness import SmsApp, sms_app
from tests.metrics_text import scrape

PHONE = "+15550104321"


async def _sent_message(app: SmsApp) -> Message:
    status, _ = await app.text(PHONE, "hello")
    assert status == 200
    await app.settle()
    async with app.services.sessions() as session:
        out = (await session.exec(select(Message).where(Message.direction == Direction.OUT))).all()
    assert len(out) >= 1 and out[0].provider_id == app.fake.messages[0].sid
    return out[0]


async def _status_of(app: SmsApp, message_id: int | None) -> Message:
    async with app.services.sessions() as session:
        msg = await session.get(Message, message_id)
        assert msg is not None
        return msg


async def test_callbacks_move_the_status_forward_only(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as app:
        msg = await _sent_message(app)
        assert msg.provider_id is not None
        for status in ("sent", "delivered", "sent"):  # the last one arrives late
            resp = await app.post(
                status_params(message_sid=msg.provider_id, status=status), path="/twilio/status"
            )
            assert resp.status == 204
        assert (await _status_of(app, msg.id)).status == "delivered"
        page = await scrape(app.http)
        # One message went out: the dispatcher counted it; Twilio's "sent" reports do not
        # count it again, they count as reports.
        assert page.value("probono_outbound_messages_total", channel="sms", outcome="sent") == 1
        assert page.value("probono_delivery_reports_total", channel="sms", status="sent") == 2
        assert page.value("probono_delivery_reports_total", channel="sms", status="delivered") == 1
        assert sum(page.with_name("probono_outbound_messages_total").values()) == 1


async def test_unsigned_callbacks_change_nothing(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as app:
        msg = await _sent_message(app)
        assert msg.provider_id is not None
        params = status_params(
            message_sid=msg.provider_id, status="undelivered", error_code="30003"
        )
        for signature in (None, "", "bogus"):
            resp = await app.post(params, path="/twilio/status", signature=signature)
            assert resp.status == 403
        # Signed for the SMS route, replayed against the status route.
        resp = await app.post(
            params, path="/twilio/status", signature="sign", signed_params={**params, "x": "1"}
        )
        assert resp.status == 403
        fresh = await _status_of(app, msg.id)
        assert fresh.status == "sent" and fresh.error_code is None


async def test_21610_in_a_callback_opts_the_client_out(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as app:
        msg = await _sent_message(app)
        assert msg.provider_id is not None
        resp = await app.post(
            status_params(message_sid=msg.provider_id, status="failed", error_code="21610"),
            path="/twilio/status",
        )
        assert resp.status == 204
        fresh = await _status_of(app, msg.id)
        assert (fresh.status, fresh.error_code) == ("failed", "21610")
        async with app.services.sessions() as session:
            ident = (await session.exec(select(ChannelIdentity))).one()
            event = (await session.exec(select(ConsentEvent))).one()
        assert ident.opted_out_at is not None
        assert (event.kind, event.source) == ("opt_out", "provider_error")
        app.fake.expect_no_more()
        await app.text(PHONE, "hello again")
        await app.settle()


async def test_odd_callbacks_are_answered_without_a_5xx(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as app:
        unknown = await app.post(
            status_params(message_sid="SM" + "0" * 32, status="delivered"), path="/twilio/status"
        )
        assert unknown.status == 204
        missing = await app.post({"MessageSid": "SM1"}, path="/twilio/status")
        assert missing.status == 400

"""The Twilio channel: signatures, webhook parsing, and the real SDK against the fake server."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from bot.channels.base import MediaError, OutboundMessage, SendError, SendErrorKind
from bot.channels.twilio import (
    ParseError,
    TwilioSender,
    parse_inbound,
    parse_status,
    verify_signature,
)
from bot.core import EventKind, Media
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    inbound_params,
    running_fake_twilio,
    sign,
)

# twilio-python's own test vector.
VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
VECTOR_SIGNATURE = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_request_validator_known_vector() -> None:
    validator = RequestValidator(VECTOR_TOKEN)
    assert validator.compute_signature(VECTOR_URL, VECTOR_PARAMS) == VECTOR_SIGNATURE
    assert verify_signature(VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)
    # Repeated parameters (Twilio's vector): every value counts, sorted.
    repeated = MultiDict(
        [
            ("Sid", "CA123"),
            ("SidAccount", "AC123"),
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]
    )
    assert verify_signature(VECTOR_TOKEN, VECTOR_URL, repeated, "IK+Dwps556ElfBT0I3Rgjkr1wJU=")


def _changed(params: dict[str, str], **changes: str) -> dict[str, str]:
    return {**params, **changes}


@pytest.mark.parametrize(
    ("case", "url", "params", "signature", "ok"),
    [
        ("valid", VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE, True),
        (
            "shuffled parameters",
            VECTOR_URL,
            dict(reversed(list(VECTOR_PARAMS.items()))),
            VECTOR_SIGNATURE,
            True,
        ),
        (
            "as a multidict",
            VECTOR_URL,
            MultiDict(list(VECTOR_PARAMS.items())),
            VECTOR_SIGNATURE,
            True,
        ),
        (
            "explicit :443 port",
            VECTOR_URL.replace(".com/", ".com:443/"),
            VECTOR_PARAMS,
            VECTOR_SIGNATURE,
            True,
        ),
        ("missing signature", VECTOR_URL, VECTOR_PARAMS, None, False),
        ("empty signature", VECTOR_URL, VECTOR_PARAMS, "", False),
        ("wrong signature", VECTOR_URL, VECTOR_PARAMS, "RSOYDt4T1cUTdK1PDd93/VVr8B9=", False),
        ("garbage signature", VECTOR_URL, VECTOR_PARAMS, "ünïcødé\x00", False),
        (
            "changed parameter",
            VECTOR_URL,
            _changed(VECTOR_PARAMS, Digits="1235"),
            VECTOR_SIGNATURE,
            False,
        ),
        (
            "added parameter",
            VECTOR_URL,
            _changed(VECTOR_PARAMS, Extra="1"),
            VECTOR_SIGNATURE,
            False,
        ),
        (
            "changed query",
            VECTOR_URL.replace("foo=1", "foo=2"),
            VECTOR_PARAMS,
            VECTOR_SIGNATURE,
            False,
        ),
        (
            "other host",
            VECTOR_URL.replace("mycompany", "evil"),
            VECTOR_PARAMS,
            VECTOR_SIGNATURE,
            False,
        ),
    ],
)
def test_verify_signature_table(
    case: str, url: str, params: dict[str, str], signature: str | None, ok: bool
) -> None:
    assert verify_signature(VECTOR_TOKEN, url, params, signature) is ok, case


def test_verify_signature_refuses_without_a_token_and_with_an_odd_algorithm() -> None:
    assert not verify_signature(None, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)
    assert not verify_signature("", VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE)
    assert not verify_signature(
        VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS, VECTOR_SIGNATURE, "algorithm=ROT13"
    )


def test_parse_inbound_text_media_and_stop_event() -> None:
    params = inbound_params(
        from_="+15550001111",
        body="hello\x00 there",
        media=[
            ("https://api.twilio.com/a", "image/jpeg"),
            ("https://api.twilio.com/b", "application/pdf"),
        ],
    )
    msg = parse_inbound(params)
    assert msg.channel == "sms"
    assert msg.address == "+15550001111"
    assert msg.provider_id == params["MessageSid"]
    assert msg.text == "hello there"  # NUL bytes dropped
    assert msg.media == (
        Media("https://api.twilio.com/a", "image/jpeg"),
        Media("https://api.twilio.com/b", "application/pdf"),
    )
    assert msg.kind == EventKind.MESSAGE

    stop = parse_inbound(
        {**inbound_params(from_="+15550001111", body="STOP"), "OptOutType": "STOP"}
    )
    assert stop.kind == EventKind.STOPPED


@pytest.mark.parametrize(
    "params",
    [
        {"Body": "hi", "MessageSid": "SM1"},
        {"Body": "hi", "From": "+15550001111"},
        {"From": " ", "MessageSid": "SM1"},
        {"From": "+1555", "MessageSid": "SM" + "x" * 200},
    ],
)
def test_parse_inbound_refuses_what_is_not_a_message(params: dict[str, str]) -> None:
    with pytest.raises(ParseError):
        parse_inbound(params)


def test_parse_inbound_tolerates_a_bad_media_count() -> None:
    msg = parse_inbound({**inbound_params(from_="+15550001111", body="x"), "NumMedia": "lots"})
    assert msg.media == ()


def test_parse_status() -> None:
    update = parse_status({"MessageSid": "SM1", "MessageStatus": "Delivered", "ErrorCode": "30003"})
    assert (update.provider_id, update.status, update.error_code) == ("SM1", "delivered", "30003")
    with pytest.raises(ParseError):
        parse_status({"MessageSid": "SM1"})


def _sender(fake: FakeTwilio, **kw: object) -> TwilioSender:
    values: dict[str, object] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "api_base_url": fake.base_url,
        "from_number": FROM_NUMBER,
        "status_callback": "https://bot.example.org/twilio/status",
        "timeout": 0.2,
    }
    values.update(kw)
    return TwilioSender(**values)  # type: ignore[arg-type]


async def test_send_goes_to_the_messages_endpoint_with_callback() -> None:
    async with running_fake_twilio() as fake:
        sender = _sender(fake)
        try:
            result = await sender.send(
                OutboundMessage(address="+15550001111", text="Hola, ¿cómo está?")
            )
        finally:
            await sender.close()
        assert result.provider_id.startswith("SM") and result.status == "queued"
        (sent,) = fake.messages
        assert sent.sid == result.provider_id
        assert (sent.to, sent.body, sent.from_) == (
            "+15550001111",
            "Hola, ¿cómo está?",
            FROM_NUMBER,
        )
        assert sent.status_callback == "https://bot.example.org/twilio/status"
        assert sent.messaging_service_sid is None


async def test_send_with_a_messaging_service() -> None:
    async with running_fake_twilio() as fake:
        sender = _sender(fake, from_number=None, messaging_service_sid="MG" + "0" * 32)
        try:
            await sender.send(OutboundMessage(address="+15550001111", text="hi"))
        finally:
            await sender.close()
        (sent,) = fake.messages
        assert sent.messaging_service_sid == "MG" + "0" * 32 and sent.from_ is None


async def test_send_trims_a_body_twilio_would_refuse() -> None:
    async with running_fake_twilio() as fake:
        sender = _sender(fake)
        try:
            await sender.send(OutboundMessage(address="+15550001111", text="word " * 500))
        finally:
            await sender.close()
        (sent,) = fake.messages
        assert len(sent.body) <= 1600 and sent.body.endswith("…")


@pytest.mark.parametrize(
    ("fault", "kind", "code", "retry_after"),
    [
        ("429", SendErrorKind.RETRY, "20429", 7.0),
        ("500", SendErrorKind.RETRY, "20500", None),
        ("timeout", SendErrorKind.RETRY, "timeout", None),
        ("21610", SendErrorKind.STOPPED, "21610", None),
        ("21211", SendErrorKind.PERMANENT, "21211", None),
    ],
)
async def test_send_errors_say_what_to_do(
    fault: str, kind: SendErrorKind, code: str, retry_after: float | None
) -> None:
    async with running_fake_twilio() as fake:
        fake.retry_after = "7"
        fake.fail_next(fault)
        sender = _sender(fake, timeout=0.1)
        try:
            with pytest.raises(SendError) as caught:
                await sender.send(OutboundMessage(address="+15550001111", text="hi"))
        finally:
            await sender.close()
        assert caught.value.kind == kind
        assert caught.value.code == code
        assert caught.value.retry_after == retry_after
        assert fake.messages == [] and fake.faults_served == [fault]


async def test_send_to_a_dead_server_is_retried() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = TwilioSender(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        api_base_url=f"http://127.0.0.1:{port}",
        from_number=FROM_NUMBER,
        timeout=0.5,
    )
    try:
        with pytest.raises(SendError) as caught:
            await sender.send(OutboundMessage(address="+15550001111", text="hi"))
    finally:
        await sender.close()
    assert caught.value.kind == SendErrorKind.RETRY


async def test_fetch_media_uses_the_account_credentials_and_only_the_api_host() -> None:
    async with running_fake_twilio() as fake:
        url = fake.add_media(b"\x89PNG fake", "image/png")
        sender = _sender(fake)
        try:
            got = await sender.fetch_media(Media(url, "image/png"))
            with pytest.raises(MediaError):
                await sender.fetch_media(Media("https://elsewhere.example/x.png", "image/png"))
        finally:
            await sender.close()
        assert got.content == b"\x89PNG fake" and got.content_type == "image/png"
        assert fake.media_fetches == 1


async def test_the_fake_fails_the_test_on_unexpected_requests() -> None:
    fake = FakeTwilio()
    await fake.start()
    try:
        url = fake.base_url + "/2010-04-01/Accounts/x/Calls.json"
        async with aiohttp.ClientSession() as http, http.get(url) as resp:
            assert resp.status == 404
        fake.expect_no_more()
        sender = _sender(fake)
        try:
            with pytest.raises(SendError):
                await sender.send(OutboundMessage(address="+15550001111", text="hi"))
        finally:
            await sender.close()
        with pytest.raises(AssertionError, match="unexpected"):
            fake.check()
    finally:
        await fake.close()


def test_signing_helper_matches_the_validator() -> None:
    params = inbound_params(from_="+15550001111", body="hi")
    url = "https://bot.example.org/twilio/sms"
    assert verify_signature(AUTH_TOKEN, url, params, sign(url, params))

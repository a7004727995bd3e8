"""POST /twilio/sms: signatures, store-first, dedupe, opt-out words, media and malformed bodies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from bot.appkeys import METRICS
from bot.channels.twilio import EMPTY_TWIML
from bot.handlers.inbound import PROCESSOR
from storage import repo
from storage.models import Client, ConsentEvent, Document, Message
from tests.fakes.fake_twilio import FROM_NUMBER, PUBLIC_BASE_URL, inbound_params, sign
from tests.handlers.twilio_harness import SmsApp, sms_app

PHONE = "+15550101234"


async def _count(app: object, model: type) -> int:
    services = app.services  # type: ignore[attr-defined]
    async with services.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


def _first_line(body: str) -> str:
    return body.split("\n")[0]


# ------------------------------------------------------------------ signatures


def _params() -> dict[str, str]:
    return inbound_params(from_=PHONE, body="Hello, I got an eviction notice", sid="SM" + "1" * 32)


@pytest.mark.parametrize(
    ("case", "signature", "posted", "status"),
    [
        ("valid", "sign", None, 200),
        ("unsigned", None, None, 403),
        ("empty signature", "", None, 403),
        ("blank signature", "   ", None, 403),
        ("wrong signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=", None, 403),
        ("signed for another URL", sign(PUBLIC_BASE_URL + "/twilio/status", _params()), None, 403),
        (
            "signed with another token",
            sign(PUBLIC_BASE_URL + "/twilio/sms", _params(), "x"),
            None,
            403,
        ),
        ("a changed parameter", "sign", {"Body": "Hello, I got an eviction notice!"}, 403),
        ("an added parameter", "sign", {"Extra": "1"}, 403),
        ("a replaced sender", "sign", {"From": "+15559999999"}, 403),
        ("shuffled parameters", "sign", "shuffle", 200),
    ],
)
async def test_signatures(
    database_url: str,
    tmp_path: Path,
    case: str,
    signature: str | None,
    posted: dict[str, str] | str | None,
    status: int,
) -> None:
    params = _params()
    if posted == "shuffle":
        body = dict(reversed(list(params.items())))
    elif isinstance(posted, dict):
        body = {**params, **posted}
    else:
        body = params
    async with sms_app(database_url, tmp_path) as app:
        if status == 403:
            app.fake.expect_no_more()
        resp = await app.post(body, signature=signature, signed_params=params)
        text = await resp.text()
        assert resp.status == status, case
        await app.settle()
        if status == 200:
            assert text == EMPTY_TWIML
            assert resp.content_type == "text/xml"
            assert await _count(app, Message) >= 1
            assert len(app.fake.sent_to(PHONE)) >= 1
        else:
            # Forged: nothing stored, nobody created, nothing sent.
            assert await _count(app, Message) == 0
            assert await _count(app, Client) == 0
            assert app.fake.messages == []
            rejected = app.app[METRICS].webhook_rejected.labels(channel="sms")
            assert rejected._value.get() == 1


async def test_sms_is_refused_when_twilio_is_not_configured(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path, TWILIO_AUTH_TOKEN=None) as app:
        resp = await app.post(_params())
        assert resp.status == 403
        assert await _count(app, Message) == 0


# ------------------------------------------------------------------ the reply


async def test_a_signed_text_gets_its_reply(database_url: str, tmp_path: Path) -> None:
    # How fast is the bench's business (bench/run.py); here only that the answer comes while
    # the client waits, woken by the store (the recovery sweep is 30 s away).
    async with sms_app(database_url, tmp_path) as app:
        status, _params_sent = await app.text(PHONE, "Hi, I need help with my landlord")
        assert status == 200
        await app.wait_for(lambda: len(app.fake.messages) >= 1, within=10.0)
        reply = app.fake.messages[0]
        assert reply.to == PHONE and reply.from_ == FROM_NUMBER
        assert reply.status_callback == PUBLIC_BASE_URL + "/twilio/status"
        assert reply.body.endswith("Reply STOP to opt out, HELP for help.")
        (stored,) = await app.inbound()
        assert stored.status == "processed"
        client = await app.client_for(PHONE)
        assert client is not None
        # Stored encrypted: the body is not in the row in clear.
        assert stored.body_enc is not None and b"landlord" not in stored.body_enc
        assert repo.message_body(app.services.vault, client, stored).endswith("my landlord")


async def test_a_replayed_message_sid_is_handled_once(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as app:
        params = inbound_params(from_=PHONE, body="hello")
        first = await app.post(params)
        assert first.status == 200
        replays = await asyncio.gather(*(app.post(params) for _ in range(5)))
        assert [r.status for r in replays] == [200] * 5
        await app.settle()
        assert len(await app.inbound()) == 1
        before = len(app.fake.sent_to(PHONE))
        assert before >= 1
        again = await app.post(params)
        assert again.status == 200
        await app.settle()
        assert len(app.fake.sent_to(PHONE)) == before
        assert len(await app.inbound()) == 1


async def test_concurrent_first_texts_from_one_new_number_make_one_client(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        posts = [app.post(inbound_params(from_=PHONE, body=f"msg {i}")) for i in range(6)]
        statuses = [r.status for r in await asyncio.gather(*posts)]
        assert statuses == [200] * 6
        await app.settle()
        assert await _count(app, Client) == 1
        assert len(await app.inbound()) == 6
        assert all(m.status == "processed" for m in await app.inbound())


# ------------------------------------------------------------------ opt-out words

OPT_OUT = [
    ("STOP", "en"),
    ("stop", "en"),
    ("  Stop  ", "en"),
    ("STOP.", "en"),
    ("stop!!", "en"),
    ("StopAll", "en"),
    ("UNSUBSCRIBE", "en"),
    ("Cancel", "en"),
    ("end", "en"),
    ("QUIT", "en"),
    ("revoke", "en"),
    ("OPTOUT", "en"),
    ("opt out", "en"),
    ("Opt-out", "en"),
    ("please stop", "en"),
    ("\u200fSTOP\u200f", "en"),
    ("STOP 🛑", "en"),
    ("PARAR", "es"),
    ("parar", "es"),
    ("Alto", "es"),
    ("CANCELAR", "es"),
    ("no más", "es"),
    ("No Mas!", "es"),
    ("baja", "es"),
]


async def test_every_opt_out_word_silences_everything(database_url: str, tmp_path: Path) -> None:
    phones = [f"+1555030{i:04d}" for i in range(len(OPT_OUT))]
    async with sms_app(database_url, tmp_path) as app:
        # Each number first has a conversation going, then sends its opt-out word.
        for phone in phones:
            assert (await app.text(phone, "hello"))[0] == 200
        await app.settle()
        before = {phone: len(app.fake.sent_to(phone)) for phone in phones}
        for phone, (word, _lang) in zip(phones, OPT_OUT, strict=True):
            assert (await app.text(phone, word))[0] == 200
        await app.settle()
        for phone, (word, lang) in zip(phones, OPT_OUT, strict=True):
            sent = app.fake.sent_to(phone)
            assert len(sent) == before[phone] + 1, word  # exactly one confirmation
            confirmation = sent[-1].body
            expected = "unsubscribed" if lang == "en" else "ya no recibirá"
            assert expected in confirmation, (word, confirmation)
            assert "Reply STOP to opt out, HELP" not in confirmation
            client = await app.client_for(phone)
            assert client is not None
            async with app.services.sessions() as session:
                assert client.id is not None
                ident = await repo.reply_identity(session, client_id=client.id)
                assert ident is not None and ident.opted_out_at is not None, word
        # Then nothing of any kind: not a reply, not a second confirmation.
        app.fake.expect_no_more()
        for phone in phones:
            assert (await app.text(phone, "are you there?"))[0] == 200
            assert (await app.text(phone, "STOP"))[0] == 200
        await app.settle()
        async with app.services.sessions() as session:
            events = await session.scalar(
                select(func.count()).select_from(ConsentEvent).where(ConsentEvent.kind == "opt_out")
            )
        assert events == len(phones)


async def test_start_after_stop_resubscribes(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as app:
        await app.text(PHONE, "STOP")
        await app.settle()
        await app.text(PHONE, "hello?")
        await app.settle()
        assert len(app.fake.sent_to(PHONE)) == 1
        await app.text(PHONE, "Start")
        await app.settle()
        sent = app.fake.sent_to(PHONE)
        assert len(sent) == 2 and "subscribed again" in sent[1].body
        await app.text(PHONE, "hello again")
        await app.settle()
        assert len(app.fake.sent_to(PHONE)) >= 3  # the conversation answers again
        async with app.services.sessions() as session:
            kinds = (await session.exec(select(ConsentEvent.kind))).all()
        assert list(kinds) == ["opt_out", "opt_in"]


async def test_yes_is_only_an_opt_in_for_someone_who_stopped(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        await app.text(PHONE, "YES")
        await app.settle()
        (reply,) = app.fake.sent_to(PHONE)
        assert "subscribed again" not in reply.body  # it went to the conversation
        async with app.services.sessions() as session:
            assert (await session.exec(select(ConsentEvent))).all() == []


@pytest.mark.parametrize("word", ["HELP", "help", " Info ", "AYUDA"])
async def test_help_names_the_program_and_its_contact(
    database_url: str, tmp_path: Path, word: str
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        await app.text(PHONE, word)
        await app.settle()
        (reply,) = app.fake.sent_to(PHONE)
        assert reply.body.startswith("Legal Aid Line")
        assert "Call 555-0100 weekdays." in reply.body
        assert "STOP" in reply.body or "PARAR" in reply.body


async def test_help_is_answered_even_after_stop(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as app:
        await app.text(PHONE, "STOP")
        await app.text(PHONE, "HELP")
        await app.settle()
        sent = app.fake.sent_to(PHONE)
        assert len(sent) == 2
        assert "unsubscribed" in sent[0].body and "Call 555-0100" in sent[1].body


async def test_a_twilio_stop_event_records_the_opt_out_without_a_reply(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        app.fake.expect_no_more()  # Twilio already confirmed it to the client
        params = {**inbound_params(from_=PHONE, body="STOP"), "OptOutType": "STOP"}
        resp = await app.post(params)
        assert resp.status == 200
        await app.settle()
        async with app.services.sessions() as session:
            event = (await session.exec(select(ConsentEvent))).one()
        assert (event.kind, event.source) == ("opt_out", "provider")
        (stored,) = await app.inbound()
        assert stored.status == "processed"


async def _consents(app: SmsApp) -> list[tuple[str, str]]:
    async with app.services.sessions() as session:
        rows = await session.exec(select(ConsentEvent).order_by(col(ConsentEvent.id)))
        return [(e.kind, e.source) for e in rows.all()]


async def test_after_a_twilio_stop_a_later_message_is_not_answered(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        app.fake.expect_no_more()
        await app.post({**inbound_params(from_=PHONE, body="STOP"), "OptOutType": "STOP"})
        await app.text(PHONE, "hello, I need help with my landlord")
        await app.settle()
        assert await app.outbox() == []
        assert app.fake.sent_to(PHONE) == []
        assert await _consents(app) == [("opt_out", "provider")]
        assert [m.status for m in await app.inbound()] == ["processed", "processed"]


async def test_a_twilio_help_is_recorded_and_not_answered_twice(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        app.fake.expect_no_more()  # Twilio sent its own HELP answer
        resp = await app.post({**inbound_params(from_=PHONE, body="HELP"), "OptOutType": "HELP"})
        assert resp.status == 200
        await app.settle()
        assert await app.outbox() == []
        (stored,) = await app.inbound()
        assert stored.status == "processed"


async def test_a_twilio_start_resubscribes_without_a_second_confirmation(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        await app.post({**inbound_params(from_=PHONE, body="STOP"), "OptOutType": "STOP"})
        await app.post({**inbound_params(from_=PHONE, body="START"), "OptOutType": "START"})
        await app.settle()
        assert await app.outbox() == []
        assert app.fake.sent_to(PHONE) == []
        assert await _consents(app) == [("opt_out", "provider"), ("opt_in", "provider")]
        client = await app.client_for(PHONE)
        assert client is not None
        # Subscribed again: their next message is answered as any other.
        await app.text(PHONE, "hello")
        await app.settle()
        assert len(app.fake.sent_to(PHONE)) == 1


# ------------------------------------------------------------------ media


async def test_a_media_only_message_is_stored_encrypted_on_the_open_case(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        async with app.services.sessions() as session, session.begin():
            client = await repo.create_client(
                session, vault=app.services.vault, channel="sms", address=PHONE
            )
            case = await repo.create_case(session, client=client, category="housing")
        photo = b"\xff\xd8\xff\xe0 a photo of the eviction notice"
        url = app.fake.add_media(photo, "image/jpeg")
        status, _ = await app.text(PHONE, "", media=[(url, "image/jpeg")])
        assert status == 200
        await app.settle()
        assert app.fake.media_fetches == 1
        async with app.services.sessions() as session:
            doc = (await session.exec(select(Document))).one()
            fresh = await session.get(Client, client.id)
        assert fresh is not None
        assert doc.case_id == case.id and doc.content_type == "image/jpeg"
        assert doc.size == len(photo) and doc.content_enc is not None
        assert photo not in doc.content_enc
        assert repo.document_content(app.services.vault, fresh, doc) == photo
        (stored,) = await app.inbound()
        assert stored.status == "processed" and doc.message_id == stored.id
        assert len(app.fake.sent_to(PHONE)) == 1  # a media-only message is still a message


async def test_media_that_cannot_be_fetched_does_not_lose_the_message(
    database_url: str, tmp_path: Path
) -> None:
    async with sms_app(database_url, tmp_path) as app:
        bad = "https://elsewhere.example/photo.jpg"  # not on the Twilio API host
        status, _ = await app.text(PHONE, "see photo", media=[(bad, "image/jpeg")])
        assert status == 200
        await app.settle()
        # First try defers; the sweep retries and handles it without the attachment.
        await app.app[PROCESSOR].sweep()
        await app.settle()
        (stored,) = await app.inbound()
        assert stored.status == "processed"
        assert await _count(app, Document) == 0
        assert len(app.fake.sent_to(PHONE)) == 1


# ------------------------------------------------------------------ malformed bodies


async def test_malformed_bodies_never_get_a_5xx(database_url: str, tmp_path: Path) -> None:
    cases: list[tuple[str, dict[str, str] | None, bytes | None, str | None, dict[str, str]]] = []

    def signed(name: str, params: dict[str, str]) -> None:
        cases.append((name, params, None, "sign", {}))

    cases.append(("undecodable bytes", None, b"Body=\xff\xfe\x00&From=%2B1555", "x", {}))
    cases.append(("bad percent-encoding", None, b"Body=%FF%FE&From=%2B15550100001", "x", {}))
    cases.append(("not a form", None, b'{"Body": "hi"}', "x", {"Content-Type": "application/json"}))
    cases.append(("empty body", None, b"", "x", {}))
    signed("missing From", {k: v for k, v in inbound_params(from_=PHONE).items() if k != "From"})
    signed(
        "missing MessageSid",
        {
            k: v
            for k, v in inbound_params(from_=PHONE).items()
            if k not in ("MessageSid", "SmsMessageSid", "SmsSid")
        },
    )
    signed("1,600+ characters", inbound_params(from_="+15550100002", body="palabra " * 250))
    signed("NUL bytes", inbound_params(from_="+15550100003", body="hi\x00there\x00"))
    signed("emoji", inbound_params(from_="+15550100004", body="😀👩‍👩‍👧 ayuda 🏠"))
    signed("RTL marks", inbound_params(from_="+15550100005", body="\u200fمرحبا\u200f \u202eabc"))
    signed("only spaces", inbound_params(from_="+15550100006", body="   "))
    signed("backslash escapes", inbound_params(from_="+15550100007", body="a\\ud800b"))
    async with sms_app(database_url, tmp_path) as app:
        for name, params, body, signature, headers in cases:
            resp = await app.post(params, body=body, signature=signature, headers=headers)
            await resp.read()
            assert resp.status < 500, name
            if body is not None or name.startswith("missing"):
                assert 400 <= resp.status < 500, name
        huge = await app.post(None, body=b"Body=" + b"a" * (3 * 1024 * 1024), signature="x")
        assert huge.status == 413
        await app.settle()
        health = await app.http.get("/healthz")
        assert health.status == 200
        # Everything that was a message got exactly one answer.
        for i in range(2, 8):
            assert len(app.fake.sent_to(f"+1555010000{i}")) == 1, i
        long_reply_ok = all(len(m.body) <= 1600 for m in app.fake.messages)
        assert long_reply_ok

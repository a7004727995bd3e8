"""The Telegram transport: real python-telegram-bot against the fake Bot API on loopback.

Parsing real-shaped updates, rendering buttons, replies and edits, and mapping every Bot
API failure to what the dispatcher should do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from telegram import Update

from bot.channels.base import MediaError, OutboundMessage, SendError, SendErrorKind
from bot.channels.telegram import (
    MEDIA_PREFIX,
    ChatPacer,
    TelegramChannel,
    TelegramSender,
    parse_update,
)
from bot.core import Choice, EventKind, Media, SharedContact
from tests.conftest import make_settings
from tests.fakes.fake_telegram import TOKEN, FakeTelegram
from tests.fakes.telegram_updates import Updates, User, group_chat

ANA = User(8001, "Ana")
CHAT = ANA.id


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram()
    await server.start()
    server.add_chat(CHAT)
    yield server
    await server.close()
    server.check()


@pytest.fixture
async def sender(fake: FakeTelegram, tmp_path: Path) -> AsyncIterator[TelegramSender]:
    settings = make_settings(
        "sqlite:///unused.db",
        tmp_path,
        TELEGRAM_BOT_TOKEN=TOKEN,
        TELEGRAM_API_BASE_URL=fake.url,
        PUBLIC_BASE_URL="https://bot.example.org",
        TELEGRAM_WEBHOOK_SECRET="s3cret",
    )
    channel = TelegramChannel(settings)

    async def sink(update: Update) -> None:
        raise AssertionError("no update expected")

    async def ready() -> None:
        return None

    await channel.start(sink, on_ready=ready)
    out = TelegramSender(channel, pacer=ChatPacer(burst=1000))
    yield out
    await out.close()


def _parse(data: dict[str, Any]) -> Any:
    return parse_update(Update.de_json(data, None))


# --------------------------------------------------------------------------- parsing


def test_parse_text_reply_and_group() -> None:
    u = Updates()
    msg = _parse(u.text(ANA, "hello"))
    assert (msg.channel, msg.address, msg.text, msg.kind) == (
        "telegram",
        str(ANA.id),
        "hello",
        EventKind.MESSAGE,
    )
    assert msg.provider_id == "500000"
    assert msg.telegram is not None
    assert msg.telegram.chat_type == "private" and msg.telegram.reply_to is None
    assert msg.telegram.from_id == ANA.id and msg.contact is None

    card = u.bot_message(ANA.id, 101, "Case X")
    reply = _parse(u.text(ANA, "answer", reply_to=card))
    assert reply.telegram is not None
    assert reply.telegram.reply_to == f"{ANA.id}:101"  # keyed by the chat it was written in

    in_group = _parse(u.text(ANA, "/find X", chat=group_chat(-100)))
    assert in_group.telegram is not None
    assert in_group.telegram.chat_type == "supergroup" and in_group.telegram.chat_id == -100
    assert not in_group.telegram.private


def test_parse_button_contact_media_and_blocked() -> None:
    u = Updates()
    button = _parse(u.callback(ANA, "housing"))
    assert (button.text, button.choice) == ("housing", "housing")
    assert button.telegram is not None and button.telegram.callback_query_id is not None
    assert button.telegram.callback_query_id.startswith("cq")

    own = _parse(u.contact(ANA, "12025550143", contact_user_id=ANA.id))
    assert own.contact == SharedContact(phone="12025550143", own=True)
    other = _parse(u.contact(ANA, "12025550199", contact_user_id=None))
    assert other.contact == SharedContact(phone="12025550199", own=False)

    photo = _parse(u.photo(ANA, "PHOTO1", caption="my lease"))
    assert photo.text == "my lease"
    assert photo.media == (Media(url=MEDIA_PREFIX + "PHOTO1", content_type="image/jpeg"),)
    doc = _parse(u.document(ANA, "DOC1"))
    assert doc.media == (Media(url=MEDIA_PREFIX + "DOC1", content_type="application/pdf"),)

    blocked = _parse(u.blocked(ANA))
    assert blocked.kind == EventKind.STOPPED and blocked.address == str(ANA.id)

    edited = u.text(ANA, "typo")
    edited["edited_message"] = edited.pop("message")
    assert _parse(edited) is None


# --------------------------------------------------------------------------- sending


async def test_buttons_replies_contact_button_and_edits(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    sent = await sender.send(
        OutboundMessage(
            address=str(CHAT),
            text="What is your legal problem about?",
            choices=(Choice("housing", "Housing or eviction"), Choice("x" * 70, "Other")),
        )
    )
    call = fake.sent(CHAT)[-1]
    # A value too long for callback data falls back to its number, as typed on SMS.
    assert call.inline_buttons == [("Housing or eviction", "housing"), ("Other", "2")]
    assert sent.provider_id == f"{CHAT}:{call.message_id}"

    await sender.send(
        OutboundMessage(
            address=str(CHAT),
            text="✓ Queued",
            extra={"reply_to_message_id": f"{CHAT}:55", "choices": [["a", "A"]]},
        )
    )
    assert fake.sent(CHAT)[-1].reply_to == 55
    assert fake.sent(CHAT)[-1].inline_buttons == [("A", "a")]

    await sender.send(
        OutboundMessage(address=str(CHAT), text="Link?", extra={"request_contact": "Share"})
    )
    keyboard = fake.sent(CHAT)[-1].reply_markup
    assert keyboard is not None
    assert keyboard["keyboard"] == [[{"text": "Share", "request_contact": True}]]

    edit = await sender.send(
        OutboundMessage(
            address=str(CHAT), text="✓✓ Delivered", extra={"edit_message_id": sent.provider_id}
        )
    )
    [call] = fake.of("editMessageText")
    assert (call.params["message_id"], call.text) == (
        int(sent.provider_id.split(":")[1]),
        "✓✓ Delivered",
    )
    assert edit.provider_id.startswith(sent.provider_id + ":edit:")  # its own, unique id


async def test_long_text_is_split_with_buttons_on_the_last_piece(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    text = ("word " * 1500).strip()
    result = await sender.send(
        OutboundMessage(address=str(CHAT), text=text, choices=(Choice("ok", "OK"),))
    )
    calls = fake.sent(CHAT)
    assert len(calls) == 2 and all(len(c.text) <= 4096 for c in calls)
    assert " ".join(c.text for c in calls) == text
    assert calls[0].reply_markup is None and calls[1].inline_buttons == [("OK", "ok")]
    assert result.provider_id == f"{CHAT}:{calls[1].message_id}"


@pytest.mark.parametrize(
    ("status", "description", "retry_after", "kind", "code"),
    [
        (429, "Too Many Requests: retry after 7", 7, SendErrorKind.RETRY, "429"),
        (403, "Forbidden: bot was blocked by the user", None, SendErrorKind.STOPPED, "403"),
        (403, "Forbidden: user is deactivated", None, SendErrorKind.STOPPED, "403"),
        (
            403,
            "Forbidden: bot was kicked from the group chat",
            None,
            SendErrorKind.PERMANENT,
            "403",
        ),
        (400, "Bad Request: chat not found", None, SendErrorKind.PERMANENT, "400"),
        (500, "Internal Server Error", None, SendErrorKind.RETRY, "network"),
        (502, "Bad Gateway", None, SendErrorKind.RETRY, "network"),
    ],
)
async def test_bot_api_errors_map_to_what_the_dispatcher_does(
    fake: FakeTelegram,
    sender: TelegramSender,
    status: int,
    description: str,
    retry_after: int | None,
    kind: SendErrorKind,
    code: str,
) -> None:
    fake.fail_next("sendMessage", status=status, description=description, retry_after=retry_after)
    with pytest.raises(SendError) as caught:
        await sender.send(OutboundMessage(address=str(CHAT), text="hello"))
    assert (caught.value.kind, caught.value.code) == (kind, code)
    assert caught.value.retry_after == (float(retry_after) if retry_after else None)
    assert "hello" not in str(caught.value)  # never the message text in errors or logs


async def test_unreachable_api_is_a_retry(fake: FakeTelegram, sender: TelegramSender) -> None:
    await fake.close()
    with pytest.raises(SendError) as caught:
        await sender.send(OutboundMessage(address=str(CHAT), text="hello"))
    assert caught.value.kind == SendErrorKind.RETRY


async def test_not_a_chat_id_is_permanent(sender: TelegramSender) -> None:
    with pytest.raises(SendError) as caught:
        await sender.send(OutboundMessage(address="+12025550143", text="hello"))
    assert caught.value.kind == SendErrorKind.PERMANENT


async def test_fetch_media_downloads_through_get_file(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    fake.add_file("PHOTO1", b"\xff\xd8jpeg-bytes", "photos/file_7.jpg")
    got = await sender.fetch_media(Media(MEDIA_PREFIX + "PHOTO1", "image/jpeg"))
    assert (got.content, got.content_type) == (b"\xff\xd8jpeg-bytes", "image/jpeg")
    fake.problems.clear()
    fake.fail_next("getFile", status=400, description="Bad Request: invalid file_id")
    with pytest.raises(MediaError):
        await sender.fetch_media(Media(MEDIA_PREFIX + "GONE", "image/jpeg"))
    with pytest.raises(MediaError):
        await sender.fetch_media(Media("https://example.org/x.jpg", "image/jpeg"))


def test_pacer_allows_a_burst_then_one_per_second_per_chat() -> None:
    now = [100.0]
    pacer = ChatPacer(burst=3, monotonic=lambda: now[0])
    assert [pacer.wait_for(CHAT) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert pacer.wait_for(CHAT) == pytest.approx(1.0)
    assert pacer.wait_for(CHAT + 1) == 0.0  # another chat is not held
    now[0] += 1.0
    assert pacer.wait_for(CHAT) == 0.0
    # Groups: about 20 a minute.
    for _ in range(3):
        assert pacer.wait_for(-100) == 0.0
    assert pacer.wait_for(-100) == pytest.approx(3.0)


async def test_paced_send_asks_the_dispatcher_to_come_back(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    now = [0.0]
    sender.pacer = ChatPacer(burst=1, monotonic=lambda: now[0])
    await sender.send(OutboundMessage(address=str(CHAT), text="one"))
    with pytest.raises(SendError) as caught:
        await sender.send(OutboundMessage(address=str(CHAT), text="two"))
    assert caught.value.kind == SendErrorKind.RETRY and caught.value.retry_after == 1.0
    assert [c.text for c in fake.sent(CHAT)] == ["one"]  # Telegram was not asked


async def test_the_fake_fails_the_test_on_surprises(
    fake: FakeTelegram, sender: TelegramSender
) -> None:
    # Proof the fake cannot let a wrong request pass: an unknown method and a message to
    # a chat that never started the bot are both recorded as problems.
    with pytest.raises(Exception, match="Not Found"):
        await sender.channel.bot.send_dice(CHAT)
    with pytest.raises(SendError):
        await sender.send(OutboundMessage(address="424242", text="to a stranger"))
    assert len(fake.problems) == 2
    with pytest.raises(AssertionError, match="unexpected method sendDice"):
        fake.check()
    fake.problems.clear()

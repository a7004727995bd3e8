"""LOG_FORMAT=json: one JSON object per line, with ids and never a client's phone, name or words."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.config import load_settings
from bot.logging_setup import setup_logging
from tests.conversations.test_intake_flows import ES_WHOLE
from tests.handlers.twilio_harness import sms_app

PHONE = "+15550104477"
# What the client said that is theirs: their name and their account of the problem.
PRIVATE = ("María", "López", "Maria", "Lopez", "casero", "sacarme", "apartamento")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
async def test_a_whole_intake_logs_json_lines_without_client_data(
    database_url: str, tmp_path: Path
) -> None:
    settings = load_settings(LOG_FORMAT="json")
    assert settings.log_format == "json"
    out = io.StringIO()
    setup_logging(fmt=settings.log_format, stream=out)
    async with sms_app(database_url, tmp_path) as sms:
        for answer, _expected in ES_WHOLE:
            status, _ = await sms.text(PHONE, answer)
            assert status == 200
            await sms.settle()
        sent = len(sms.fake.sent_to(PHONE))
    lines = out.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert records
    for record in records:
        assert {"time", "level", "logger", "event"} <= set(record)
        assert record["time"].endswith("+00:00")
    stored = [r for r in records if r["event"].endswith(" stored")]
    assert len(stored) == len(ES_WHOLE)
    assert all(isinstance(r["message_id"], int) and r["channel"] == "sms" for r in stored)
    sends = [r for r in records if r.get("outcome") == "sent"]
    assert len(sends) == sent and all(isinstance(r["outbox_id"], int) for r in sends)
    (opened,) = [r for r in records if "case_reference" in r]
    assert opened["case_reference"] in opened["event"]
    text = out.getvalue()
    for secret in (PHONE, PHONE[2:], PHONE[-7:], *PRIVATE):
        assert secret not in text, secret
    for answer, _expected in ES_WHOLE:
        if len(answer) > 4 and not answer.isdigit():
            assert answer not in text, answer


def test_the_default_is_text() -> None:
    assert load_settings().log_format == "text"

"""End to end: a Spanish speaker texts "Hola" through the signed Twilio webhook and finishes
the intake with a case reference, every reply coming back through the fake Twilio."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from storage.models import Case
from tests.conversations.test_intake_flows import ES_WHOLE
from tests.handlers.twilio_harness import sms_app

PHONE = "+15550104444"


async def test_spanish_intake_over_sms(database_url: str, tmp_path: Path) -> None:
    async with sms_app(database_url, tmp_path) as sms:
        seen = 0
        for answer, expected in ES_WHOLE:
            status, _params = await sms.text(PHONE, answer)
            assert status == 200
            await sms.settle()
            sent = sms.fake.sent_to(PHONE)
            new = "\n".join(m.body for m in sent[seen:])
            seen = len(sent)
            assert expected in new, f"after {answer!r}: {new!r}"
        async with sms.services.sessions() as session:
            (case,) = (await session.exec(select(Case))).all()
        assert f"Su número de caso es {case.reference}" in new
        client = await sms.client_for(PHONE)
        assert client is not None and client.language == "es"
        sms.fake.check()

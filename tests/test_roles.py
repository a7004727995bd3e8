"""Process roles: a web process stores and acknowledges but sends nothing; a worker on the
same database answers what it stored; SQLite runs only the one `all` process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from sqlmodel import col, select

from bot.app import ProcessRole, create_app
from bot.appkeys import DISPATCHER
from bot.cli import main
from bot.clock import FakeClock
from bot.config import Settings
from bot.handlers.cli_core import ROLES
from bot.handlers.inbound import PROCESSOR
from bot.services import Services
from storage.models import Message
from tests.conftest import BACKEND, make_settings
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    PUBLIC_BASE_URL,
    FakeTwilio,
    form_body,
    inbound_params,
    running_fake_twilio,
    sign,
)

PHONE = "+15550300001"


async def _until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
async def twilio() -> AsyncIterator[FakeTwilio]:
    async with running_fake_twilio() as fake:
        yield fake


def _settings(database_url: str, tmp_path: Path, fake: FakeTwilio) -> Settings:
    return make_settings(
        database_url,
        tmp_path / "data",
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        TWILIO_API_BASE_URL=fake.base_url,
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        SMS_SEND_RATE=1000,
    )


async def _serve(
    settings: Settings, clock: FakeClock, role: ProcessRole
) -> tuple[web.Application, Services, TestClient[Any, Any]]:
    services = Services.build(settings, clock=clock)
    app = create_app(settings, services=services, role=role)
    http: TestClient[Any, Any] = TestClient(TestServer(app))
    await http.start_server()
    return app, services, http


async def _inbound(services: Services) -> list[Message]:
    async with services.sessions() as session:
        rows = await session.exec(select(Message).where(col(Message.direction) == "in"))
        return list(rows.all())


async def test_a_web_process_stores_and_acks_and_a_worker_answers(
    database_url: str, tmp_path: Path, clock: FakeClock, twilio: FakeTwilio
) -> None:
    settings = _settings(database_url, tmp_path, twilio)
    web_app, web_services, web_http = await _serve(settings, clock, ProcessRole.WEB)
    try:
        assert PROCESSOR not in web_app and DISPATCHER not in web_app
        params = inbound_params(from_=PHONE, body="hello")
        resp = await web_http.post(
            "/twilio/sms",
            data=form_body(params),
            headers={
                "X-Twilio-Signature": sign(f"{PUBLIC_BASE_URL}/twilio/sms", params),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert resp.status == 200, await resp.text()
        stored = await _inbound(web_services)
        assert [m.provider_id for m in stored] == [params["MessageSid"]]
        await asyncio.sleep(0.2)
        assert twilio.messages == [], "a web process sends nothing"
        assert [m.processed_at for m in await _inbound(web_services)] == [None]

        _worker, worker_services, worker_http = await _serve(settings, clock, ProcessRole.WORKER)
        try:
            # A worker takes no webhooks: nobody should point Twilio at it.
            assert (await worker_http.post("/twilio/sms", data=b"")).status == 404
            await _until(lambda: bool(twilio.sent_to(PHONE)), "the worker's answer")
            assert [m.processed_at is not None for m in await _inbound(worker_services)] == [True]
        finally:
            await worker_http.close()
            await worker_services.close()
    finally:
        await web_http.close()
        await web_services.close()


def test_the_cli_roles_are_the_app_roles() -> None:
    assert tuple(r.value for r in ProcessRole) == ROLES


@pytest.mark.skipif(BACKEND != "sqlite", reason="the refusal is SQLite's")
@pytest.mark.parametrize("role", ["web", "worker"])
def test_sqlite_refuses_a_role_other_than_all(
    role: str,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("PROBONO_DATA_DIR", str(settings.probono_data_dir))
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--role", role, "--port", "0"])
    assert exc.value.code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"--role {role} needs PostgreSQL" in err[0]

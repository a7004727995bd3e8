"""`kill -9` in the middle of 200 incoming texts loses none that were acknowledged.

A real `probono serve` process takes signed webhooks and replies through the fake Twilio.
The fake holds its answers after the 20th reply, so the dispatcher has sends in flight
(reached Twilio, not yet recorded) when the process is killed mid-stream. After a
restart every acknowledged text must have its reply exactly once: none lost (stored
before the 200, picked up on start) and none doubled (in-flight rows are not resent).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
from sqlmodel import select

from bot.services import Services
from storage import repo
from storage.models import Direction, Message, OutboxItem, OutboxStatus
from tests.conftest import TEST_KEY, make_settings
from tests.fakes.fake_twilio import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    FakeTwilio,
    form_body,
    inbound_params,
    running_fake_twilio,
    sign,
)

TEXTS = 200
HANG_AFTER = 20
KILL_AFTER_ACKS = 90
REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(database_url: str, data_dir: Path, fake: FakeTwilio, port: int) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "DATABASE_URL": database_url,
            "PROBONO_DATA_DIR": str(data_dir),
            "PROBONO_ENV": "test",
            "PROBONO_ENCRYPTION_KEYS": TEST_KEY,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": fake.base_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "QUIET_HOURS": "",
            "SMS_SEND_RATE": "1000",
        }
    )
    return env


def _serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("probono")), "serve", "--port", str(port)],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def _healthy(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "probono serve exited early"
        try:
            async with http.get(base + "/healthz") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError("probono serve did not become healthy")


async def test_kill_9_mid_stream_loses_no_acknowledged_text(
    database_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    phones = [f"+1555050{i:04d}" for i in range(TEXTS)]
    acked: list[str] = []
    async with running_fake_twilio() as fake:
        env = _env(database_url, tmp_path / "data", fake, port)
        fake.hang_after(HANG_AFTER)
        proc = _serve(env, port, log)
        try:
            async with aiohttp.ClientSession() as http:
                await _healthy(http, base, proc)
                gate = asyncio.Semaphore(8)
                second_half = asyncio.Event()
                enough = asyncio.Event()
                kill_at: list[int] = []

                async def text(phone: str, i: int) -> None:
                    params = inbound_params(from_=phone, body=f"hello, this is text {i}")
                    headers = {
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Twilio-Signature": sign(base + "/twilio/sms", params),
                    }
                    if i >= TEXTS // 2:
                        await second_half.wait()
                    async with gate:
                        if proc.poll() is not None:
                            return
                        try:
                            async with http.post(
                                base + "/twilio/sms", data=form_body(params), headers=headers
                            ) as resp:
                                await resp.read()
                                if resp.status == 200:
                                    acked.append(phone)
                                    if kill_at and len(acked) >= kill_at[0]:
                                        enough.set()
                        except aiohttp.ClientError:
                            pass  # not acknowledged: Twilio would count it as failed

                async def killer() -> None:
                    quiet_since = None
                    last = 0
                    deadline = time.monotonic() + 30
                    while True:
                        assert time.monotonic() < deadline, "the replies never reached the fake"
                        await asyncio.sleep(0.02)
                        n = len(fake.messages)
                        if n != last:
                            last, quiet_since = n, time.monotonic()
                        hanging = n > HANG_AFTER and quiet_since is not None
                        # Every send the dispatcher started has reached the fake (and hangs
                        # there, so it starts no more): the in-doubt window is closed.
                        settled = hanging and time.monotonic() - quiet_since > 0.3
                        if settled and len(acked) >= KILL_AFTER_ACKS:
                            break
                    # Now the second half of the texts flows, and the kill lands among them.
                    kill_at.append(len(acked) + 30)
                    second_half.set()
                    await enough.wait()
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()

                async def stream() -> None:
                    await asyncio.gather(*(text(p, i) for i, p in enumerate(phones)))
                    enough.set()  # never leave the killer waiting

                await asyncio.gather(killer(), stream())
                acked_at_kill = len(acked)
                assert len(fake.messages) > HANG_AFTER
                assert acked_at_kill < TEXTS, "the kill should land mid-stream"
                in_flight = len(fake.messages)
                fake.release()

                proc = _serve(env, port, log)
                await _healthy(http, base, proc)
                settings = make_settings(database_url, tmp_path / "check")
                services = Services.build(settings)
                try:
                    await _wait_settled(services, fake, set(acked))
                    await _check(services, fake, acked, phones)
                finally:
                    await services.close()
                assert len(fake.messages) >= in_flight
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        assert proc.returncode == 0, log.read_text()[-3000:]


async def _wait_settled(services: Services, fake: FakeTwilio, acked: set[str]) -> None:
    deadline = time.monotonic() + 30
    stable = 0
    last = -1
    while time.monotonic() < deadline:
        async with services.sessions() as session:
            inbound = (
                await session.exec(select(Message).where(Message.direction == Direction.IN))
            ).all()
            pending = (
                await session.exec(
                    select(OutboxItem).where(OutboxItem.status == OutboxStatus.PENDING)
                )
            ).all()
        unprocessed = [m for m in inbound if m.status != "processed"]
        if not unprocessed and not pending and len(inbound) >= len(acked):
            stable = stable + 1 if len(fake.messages) == last else 0
            if stable >= 5:
                return
        last = len(fake.messages)
        await asyncio.sleep(0.05)
    raise AssertionError("the restarted server did not answer everything in time")


async def _check(services: Services, fake: FakeTwilio, acked: list[str], phones: list[str]) -> None:
    by_phone = Counter(m.to for m in fake.messages)
    assert len(set((m.to, m.body) for m in fake.messages)) == len(fake.messages), (
        "a reply was sent twice"
    )
    async with services.sessions() as session:
        for phone in phones:
            client = await repo.find_client_by_address(
                session, vault=services.vault, channel="sms", address=phone
            )
            if client is None:
                assert phone not in acked
                assert by_phone[phone] == 0
                continue
            inbound = (
                await session.exec(
                    select(Message).where(
                        Message.client_id == client.id, Message.direction == Direction.IN
                    )
                )
            ).all()
            assert len(inbound) == 1 and inbound[0].status == "processed"
            rows = (
                await session.exec(select(OutboxItem).where(OutboxItem.client_id == client.id))
            ).all()
            went_out = [
                r
                for r in rows
                if r.status in (OutboxStatus.SENT, OutboxStatus.SENDING, OutboxStatus.REVIEW)
            ]
            # What the store says went out is exactly what Twilio received: no loss, no double.
            assert by_phone[phone] == len(went_out) == len(rows), phone
            assert by_phone[phone] >= 1, phone

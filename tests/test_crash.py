"""`kill -9` in the middle of 200 incoming texts loses none that were acknowledged.

A real `probono serve` process takes signed webhooks and replies through the fake Twilio.
The fake holds its answers after the 20th reply, so the dispatcher has sends in flight
(reached Twilio, not yet recorded) when the process is killed mid-stream. After a
restart every acknowledged text must have its reply exactly once: none lost (stored
before the 200, picked up on start) and none doubled (in-flight rows are not resent). The
exception is a reply the killed dispatcher had claimed but whose send had not reached Twilio:
it is in doubt like any send in flight, left for a person, and never resent blindly.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import aiohttp
from sqlmodel import select

from bot.dispatch import Dispatcher
from bot.services import Services
from storage import repo
from storage.models import Direction, Message, OutboxItem, OutboxStatus
from tests.conftest import make_settings
from tests.fakes.fake_twilio import (
    FakeTwilio,
    form_body,
    inbound_params,
    running_fake_twilio,
    sign,
)
from tests.serve_proc import free_port as _free_port
from tests.serve_proc import healthy as _healthy
from tests.serve_proc import serve as _serve
from tests.serve_proc import serve_env

TEXTS = 200
HANG_AFTER = 20
KILL_AFTER_ACKS = 90


async def test_kill_9_mid_stream_loses_no_acknowledged_text(
    database_url: str, tmp_path: Path
) -> None:
    await kill_mid_stream(
        database_url, tmp_path, texts=TEXTS, hang_after=HANG_AFTER, kill_after_acks=KILL_AFTER_ACKS
    )


async def kill_mid_stream(
    database_url: str, tmp_path: Path, *, texts: int, hang_after: int, kill_after_acks: int
) -> tuple[int, int, int]:
    """Kill -9 mid-stream, restart, check; (acknowledged at the kill, at Twilio, in doubt)."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    phones = [f"+1555050{i:04d}" for i in range(texts)]
    acked: list[str] = []
    async with running_fake_twilio() as fake:
        env = serve_env(database_url, tmp_path / "data", fake.base_url, port)
        fake.hang_after(hang_after)
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
                    if i >= texts // 2:
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
                    quiet_since: float | None = None
                    last = 0
                    deadline = time.monotonic() + 30
                    while True:
                        assert time.monotonic() < deadline, "the replies never reached the fake"
                        await asyncio.sleep(0.02)
                        n = len(fake.messages)
                        if n != last:
                            last, quiet_since = n, time.monotonic()
                        # Every send the dispatcher started has reached the fake (and hangs
                        # there, so it starts no more): the in-doubt window is closed.
                        settled = (
                            n > hang_after
                            and quiet_since is not None
                            and time.monotonic() - quiet_since > 0.3
                        )
                        if settled and len(acked) >= kill_after_acks:
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
                assert len(fake.messages) > hang_after
                assert acked_at_kill < texts, "the kill should land mid-stream"
                in_flight = len(fake.messages)
                fake.release()

                proc = _serve(env, port, log)
                await _healthy(http, base, proc)
                settings = make_settings(database_url, tmp_path / "check")
                services = Services.build(settings)
                try:
                    await _wait_settled(services, fake, set(acked))
                    in_doubt = await _check(services, fake, acked, phones)
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
    return acked_at_kill, in_flight, in_doubt


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


async def _check(services: Services, fake: FakeTwilio, acked: list[str], phones: list[str]) -> int:
    """Every acknowledged text answered once, or its reply in doubt; how many in doubt."""
    by_phone = Counter(m.to for m in fake.messages)
    missing = 0
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
            sent = [r for r in rows if r.status == OutboxStatus.SENT]
            # Claimed by the killed process: the send was at Twilio, on its way, or not yet
            # started. Nobody can tell (no idempotency key), so the row waits for a person.
            doubt = [r for r in rows if r.status in (OutboxStatus.SENDING, OutboxStatus.REVIEW)]
            # Everything is sent or in doubt: nothing pending, failed or lost.
            assert len(sent) + len(doubt) == len(rows) >= 1, phone
            # Twilio got every sent reply once, plus some of those in doubt; never a double.
            assert len(sent) <= by_phone[phone] <= len(rows), phone
            missing += len(rows) - by_phone[phone]
    # Only sends the killed dispatcher had claimed can be missing: at most what it keeps in
    # flight (Dispatcher.max_in_flight), in practice a handful.
    assert missing <= Dispatcher.MAX_IN_FLIGHT, missing
    return missing

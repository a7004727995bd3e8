"""A real `probono serve` subprocess against the fake Twilio: for crash tests and bench."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import TEST_KEY
from tests.fakes.fake_twilio import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(
    database_url: str, data_dir: Path, twilio_base_url: str, port: int, **extra: str
) -> dict[str, str]:
    """The environment of a `probono serve` whose SMS goes to the fake and whose URL signs."""
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
            "TWILIO_API_BASE_URL": twilio_base_url,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "QUIET_HOURS": "",
            "SMS_SEND_RATE": "1000",
        }
    )
    env.update(extra)
    return env


def serve(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """Start `probono serve` on this port, appending its output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("probono")), "serve", "--port", str(port)],
            cwd=log.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def healthy(http: aiohttp.ClientSession, base: str, proc: subprocess.Popen[bytes]) -> None:
    """Wait until /healthz answers 200; fail if the process dies or takes over 30 s."""
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


def stop(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM, wait (up to 20 s, then SIGKILL); the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)

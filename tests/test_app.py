"""The web app: create_app starts and stops, /healthz and /metrics, and `probono serve` itself."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.app import create_app
from bot.config import ConfigError, Settings
from bot.services import Services
from storage.db import create_engine, session_factory
from tests.conftest import TEST_KEY, make_settings

PROBONO = str(Path(sys.executable).parent / "probono")


async def test_healthz_and_metrics(services: Services) -> None:
    app = create_app(services.settings, services=services)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/healthz")
        assert resp.status == 200
        body = await resp.json()
        assert body["status"] == "ok"
        assert body["sms"] is False and body["telegram"] is False

        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
        assert "# TYPE probono_outbox_pending gauge" in text
        assert "# HELP probono_inbound_messages_total" in text


async def test_create_app_builds_and_closes_its_own_services(settings: Settings) -> None:
    app = create_app(settings)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
    # A second app on the same settings starts as cleanly: nothing was left half-closed.
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await client.get("/healthz")).status == 200


@pytest.mark.parametrize(
    "bad_url",
    [
        "postgresql://postgres@127.0.0.1:1/nowhere",  # nothing listens there
        "sqlite:///{tmp}/garbage.db",  # a file that is no longer a database
    ],
)
async def test_healthz_is_503_when_the_database_is_gone(
    services: Services, tmp_path: Path, bad_url: str
) -> None:
    (tmp_path / "garbage.db").write_bytes(b"not a database " * 512)
    engine = create_engine(bad_url.format(tmp=tmp_path))
    gone = Services(
        settings=services.settings,
        engine=engine,
        sessions=session_factory(engine),
        vault=services.vault,
    )
    try:
        async with TestClient(TestServer(create_app(services.settings, services=gone))) as client:
            resp = await client.get("/healthz")
            assert resp.status == 503
            assert (await resp.json())["status"] != "ok"
    finally:
        await engine.dispose()


def test_production_without_keys_refuses_naming_the_setting(
    database_url: str, tmp_path: Path
) -> None:
    settings = make_settings(
        database_url, tmp_path / "data", PROBONO_ENV="production", PROBONO_ENCRYPTION_KEYS=None
    )
    with pytest.raises(ConfigError, match="PROBONO_ENCRYPTION_KEYS"):
        create_app(settings)


# --------------------------------------------------------------------------- the process


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PROBONO_", "DATABASE_URL", "TWILIO_", "TELEGRAM_"))
    }
    env.update(values)
    return env


async def _run(*argv: str, env: dict[str, str], cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        PROBONO, *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    return proc.returncode or 0, err.decode()


async def test_serve_answers_healthz_and_stops_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = _env(
        DATABASE_URL=database_url,
        PROBONO_DATA_DIR=str(tmp_path / "data"),
        PROBONO_ENCRYPTION_KEYS=TEST_KEY,
        PROBONO_ENV="development",
    )
    proc = await asyncio.create_subprocess_exec(
        PROBONO, "serve", "--port", str(port), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        body = None
        async with aiohttp.ClientSession() as http:
            for _ in range(300):  # up to ~30 s for the process to start
                if proc.returncode is not None:
                    break
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200
                        body = await resp.json()
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.1)
        assert body is not None and body["status"] == "ok", "probono serve never answered"
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, err.decode()
        assert "shutting down" in err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_in_production_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = _env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'new' / 'probono.db'}",
        PROBONO_DATA_DIR=str(tmp_path / "data"),
        PROBONO_ENCRYPTION_KEYS=TEST_KEY,
        PROBONO_ENV="production",
        PROGRAM_CONTACT="Call 555-0100",
    )
    code, err = await _run("serve", "--port", str(_free_port()), env=env, cwd=tmp_path)
    assert code != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("probono: error:") and "probono db upgrade" in last


async def test_serve_in_production_needs_encryption_keys(database_url: str, tmp_path: Path) -> None:
    env = _env(
        DATABASE_URL=database_url,
        PROBONO_DATA_DIR=str(tmp_path / "data"),
        PROBONO_ENV="production",
    )
    code, err = await _run("serve", "--port", str(_free_port()), env=env, cwd=tmp_path)
    assert code != 0
    last = err.strip().splitlines()[-1]
    assert last.startswith("probono: error:") and "PROBONO_ENCRYPTION_KEYS" in last
    assert not (tmp_path / "data" / "encryption.key").exists()  # no key was made up


def test_the_readme_table_lists_every_setting() -> None:
    """The Configuration table, like .env.example below, cannot drift from Settings."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Configuration") :]
    section = section[: section.index("\n## ", 1)]
    in_table = {
        name
        for row in section.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split(" | ")[0])
    }
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert aliases - in_table == set()


def test_env_example_lists_every_setting_and_loads(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / ".env.example"
    text = example.read_text()
    listed = set(re.findall(r"^# ([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    aliases = {field.alias for field in Settings.model_fields.values()}
    assert listed == aliases
    # Copied as it is, it changes nothing: every line is a comment.
    env_file = tmp_path / ".env"
    env_file.write_text(text)
    loaded = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert loaded.database_url == "sqlite:///./var/probono.db"

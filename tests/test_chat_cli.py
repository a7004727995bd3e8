"""`probono chat`: the console is one more channel, through the same store, router and outbox."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from bot.handlers.cli_chat import cmd_chat
from bot.services import Services
from storage import repo
from storage.models import ChannelIdentity, Client, Direction, Message, OutboxItem
from tests.conftest import TEST_KEY, make_settings

REPO = Path(__file__).resolve().parent.parent
PROBONO = Path(sys.executable).with_name("probono")  # the installed command, as a user runs it


async def _chat(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    settings_dir: tuple[str, Path],
    lines: str,
    phone: str = "+15550109999",
    language: str | None = None,
) -> list[str]:
    database_url, tmp_path = settings_dir
    settings = make_settings(
        database_url,
        tmp_path / "data",
        PROGRAM_NAME="Legal Aid Line",
        PROGRAM_CONTACT="Call 555-0100.",
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO(lines))
    code = await cmd_chat(argparse.Namespace(phone=phone, language=language), settings)
    assert code == 0
    return capsys.readouterr().out.splitlines()


async def test_a_conversation_in_the_terminal(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = await _chat(
        monkeypatch,
        capsys,
        (database_url, tmp_path),
        "hello\nHELP\nSTOP\nanyone there?\n/quit\nthis is never read\n",
    )
    bot_lines = [line for line in out if line.startswith("bot> ")]
    text = "\n".join(out)
    assert out[0].startswith("Talking to Legal Aid Line")
    assert "Reply STOP to opt out, HELP for help." in text  # the first reply's notice
    assert any(line.startswith("bot> Legal Aid Line. Call 555-0100.") for line in bot_lines)
    assert "unsubscribed" in bot_lines[-1]  # nothing after the STOP confirmation
    settings = make_settings(database_url, tmp_path / "data")
    services = Services.build(settings)
    try:
        async with services.sessions() as session:
            inbound = (
                await session.exec(
                    select(Message)
                    .where(Message.direction == Direction.IN)
                    .order_by(col(Message.id))
                )
            ).all()
            assert [m.channel for m in inbound] == ["console"] * 4  # /quit and after: not sent
            assert all(m.status == "processed" for m in inbound)
            rows = (await session.exec(select(OutboxItem))).all()
            assert {r.channel for r in rows} == {"console"}
            assert all(r.status == "sent" for r in rows)
    finally:
        await services.close()


async def test_chat_as_a_client_who_texts_us(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(database_url, tmp_path / "data")
    services = Services.build(settings)
    try:
        async with services.sessions() as session, session.begin():
            await repo.create_client(
                session, vault=services.vault, channel="sms", address="+15550108888", name="Ana"
            )
        out = await _chat(
            monkeypatch, capsys, (database_url, tmp_path), "HELP\n", phone="(555) 010-8888"
        )
        assert any("Call 555-0100." in line for line in out)
        async with services.sessions() as session:
            assert await session.scalar(select(func.count()).select_from(Client)) == 1
            channels = (await session.exec(select(ChannelIdentity.channel))).all()
            assert sorted(channels) == ["console", "sms"]
    finally:
        await services.close()


def _env(database_url: str, data_dir: Path) -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        {
            "PYTHONPATH": str(REPO),
            "DATABASE_URL": database_url,
            "PROBONO_DATA_DIR": str(data_dir),
            "PROBONO_ENV": "test",
            "PROBONO_ENCRYPTION_KEYS": TEST_KEY,
            "PROGRAM_NAME": "Legal Aid Line",
        }
    )
    return env


async def _run(
    args: list[str], stdin: bytes, env: dict[str, str], cwd: Path
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(PROBONO),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=cwd,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_exits_cleanly_at_end_of_input_and_refuses_bad_input(
    database_url: str, tmp_path: Path
) -> None:
    env = _env(database_url, tmp_path / "data")
    # HELP, then the end of input, as Ctrl-D gives.
    code, out, err = await _run(["chat", "--phone", "+15550107000"], b"HELP\n", env, tmp_path)
    assert code == 0, err[-2000:]
    assert "bot> Legal Aid Line." in out
    assert "+15550107000" not in err  # never a phone number in the logs
    code, out, err = await _run(["chat", "--phone", "not a phone"], b"", env, tmp_path)
    assert code == 2
    assert err.strip().startswith("probono: error:") and len(err.strip().splitlines()) == 1
    code, out, err = await _run(
        ["chat", "--phone", "+15550107000", "--language", "xx"], b"", env, tmp_path
    )
    assert code == 2 and "unknown language" in err

"""The wheel, installed the way the Dockerfile installs it, runs outside the checkout.

No container engine runs where the tests run, so this test takes the Dockerfile's steps
itself: a new virtual environment, the locked dependencies, the wheel built from the
sources the image gets, `probono db upgrade` on a new database, a Spanish client's first
turn through the installed `probono chat`, and the image's health check against the
installed `probono serve`. A second test fails when the Dockerfile stops running exactly
these commands.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from bot.i18n import LANGUAGES, gettext
from storage.migrate import head_revision
from tests.conftest import BACKEND
from tests.serve_proc import free_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"

# The Dockerfile's build steps, run from the copied sources. {python}, {venv} and {dist} are
# the Dockerfile's `python`, /opt/probono and /dist.
STEPS = (
    "{python} -m venv {venv}",
    "{venv}/bin/pip install --require-hashes -r requirements/lock.txt",
    "{venv}/bin/pip wheel --no-deps --no-build-isolation --wheel-dir {dist} .",
    "{venv}/bin/pip install --no-deps {dist}/probono_bot-*.whl",
)
IN_IMAGE = {"python": "python", "venv": "/opt/probono", "dist": "/dist"}
PROGRAM = "Legal Aid Line"


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            out.append((keyword.upper(), args.strip()))
    return out


def _healthcheck() -> list[str]:
    """The HEALTHCHECK's command, in exec form."""
    [args] = [args for keyword, args in _dockerfile() if keyword == "HEALTHCHECK"]
    command: list[str] = json.loads(args[args.index("CMD ") + 4 :])
    return command


def _copy_build_context(dest: Path) -> None:
    """Copy the checkout as `docker build` sends it: without what .dockerignore names."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(directory: str, names: list[str]) -> set[str]:
        rel_dir = Path(directory).relative_to(REPO)
        out = set()
        for name in names:
            rel = (rel_dir / name).as_posix()
            for pattern in patterns:
                anywhere = pattern.startswith("**/")
                if fnmatch.fnmatch(name if anywhere else rel, pattern.removeprefix("**/")):
                    out.add(name)
        return out

    shutil.copytree(REPO, dest, ignore=ignored)


def _without_faketime(env: dict[str, str]) -> dict[str, str]:
    """pip checks the index's TLS certificate against the real date, not a shifted clock."""
    return {k: v for k, v in env.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


def _run(command: str, cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=540
    )
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "sqlite", reason="the installed wheel is checked once, on SQLite")
def test_the_installed_wheel_answers_a_spanish_client_in_spanish(tmp_path: Path) -> None:
    src, venv, dist, work = (tmp_path / name for name in ("src", "venv", "dist", "work"))
    _copy_build_context(src)
    work.mkdir()
    outside = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    outside.update({k: v for k, v in os.environ.items() if k.startswith(("PIP_", "FAKETIME"))})
    outside.update({k: v for k, v in os.environ.items() if k == "LD_PRELOAD"})
    paths = {"python": sys.executable, "venv": str(venv), "dist": str(dist)}
    for step in STEPS:
        _run(step.format(**paths), src, _without_faketime(outside))

    # The installed package runs, not the checkout: no PYTHONPATH, and a folder of its own.
    where = _run(
        f"{venv}/bin/python -c 'import bot, storage, bot.i18n as i; "
        "print(bot.__file__, storage.__file__, *i.available_languages())'",
        work,
        outside,
    ).split()
    site_packages = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert all(Path(f).is_relative_to(site_packages) for f in where[:2]), where
    assert where[2:] == list(LANGUAGES)  # every catalog shipped, not English alone

    probono = str(venv / "bin" / "probono")
    key = _run(f"{probono} keys generate", work, outside).splitlines()[-1]
    env = outside | {
        "PROBONO_ENV": "production",
        "PROBONO_ENCRYPTION_KEYS": key,
        "DATABASE_URL": f"sqlite:///{work / 'probono.db'}",
        "PROBONO_DATA_DIR": str(work / "data"),
        "PROGRAM_NAME": PROGRAM,
        # Production refuses to serve without it: HELP tells clients how to reach the program.
        "PROGRAM_CONTACT": "Call 555-0100, Mon-Fri 9-5.",
    }
    migrated = _run(f"{probono} db upgrade", work, env)
    assert migrated.split()[-1] == head_revision()  # the migrations shipped, every one

    # A new client who said Spanish: the menu, then (after "2", Español) the intake's next
    # question, both in the Spanish of the catalog.
    chat = subprocess.run(
        [probono, "chat", "--phone", "+15550107777", "--language", "es"],
        input="hola\n2\n/quit\n",
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chat.returncode == 0, chat.stderr
    intake = tomllib.loads((REPO / "bot" / "data" / "intake.toml").read_text(encoding="utf-8"))
    after_menu = intake["states"][intake["dialogue"]["start"]]["next"]
    question = intake["states"][after_menu]["prompt"]
    notice = "Reply STOP to opt out, HELP for help."
    replies = chat.stdout.split("bot> ")[1:]
    assert len(replies) == 2, chat.stdout
    assert gettext("es", notice) in replies[0] and notice not in replies[0]
    spanish = gettext("es", question, program=PROGRAM)
    assert spanish != question.format(program=PROGRAM)
    assert replies[1].startswith(spanish)

    # The image's health check, against the installed server on a free port.
    port = free_port()
    log = work / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [probono, "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        check = [sys.executable if part == "python" else part for part in _healthcheck()]
        check = [part.replace(":8080/", f":{port}/") for part in check]
        deadline = time.monotonic() + 60
        while subprocess.run(check, cwd=work, env=env, capture_output=True).returncode != 0:
            assert server.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the health check never passed\n{log.read_text()}"
            time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode == 0, log.read_text()


def test_the_dockerfile_runs_the_steps_the_wheel_test_runs() -> None:
    instructions = _dockerfile()
    runs = [args for keyword, args in instructions if keyword == "RUN"]
    for step in STEPS:
        assert step.format(**IN_IMAGE) in runs
    assert ("COPY", "requirements/lock.txt requirements/lock.txt") in instructions
    final = instructions[max(i for i, (k, _) in enumerate(instructions) if k == "FROM") :]
    [user] = [args for keyword, args in final if keyword == "USER"]
    assert user not in ("root", "0")
    assert ("ENTRYPOINT", '["probono"]') in final
    assert ("CMD", '["serve", "--host", "0.0.0.0", "--port", "8080"]') in final
    assert "http://127.0.0.1:8080/healthz" in " ".join(_healthcheck())

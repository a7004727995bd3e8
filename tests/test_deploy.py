"""What an operator installs is what was tested: the lock files, the Makefile's installs,
compose's order and the systemd unit."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements" / "lock.txt"
TEST_LOCK = REPO / "requirements" / "lock-test.txt"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))

_PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)")


def _pins(lock: Path) -> dict[str, tuple[str, list[str]]]:
    """{name: (version, hashes)} of a pip-compile --generate-hashes file."""
    pins: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in lock.read_text(encoding="utf-8").splitlines():
        if m := _PIN.match(line):
            name = canonicalize_name(m.group(1))
            pins[name] = (m.group(2), [])
        elif line.strip().startswith("--hash=sha256:") and name:
            pins[name][1].append(line.strip().removeprefix("--hash=").rstrip(" \\"))
        elif line and not line.startswith((" ", "#")):
            pytest.fail(f"{lock.name}: an unexpected line {line!r}")
    return pins


def _assert_locked(requirements: list[str], pins: dict[str, tuple[str, list[str]]]) -> None:
    for text in requirements:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not in the lock: run `make lock`"
        version = pins[name][0]
        assert req.specifier.contains(version, prereleases=True), f"{name}=={version} vs {req}"


def test_every_dependency_is_pinned_with_hashes_and_the_two_locks_agree() -> None:
    runtime, test = _pins(LOCK), _pins(TEST_LOCK)
    project = PYPROJECT["project"]
    build = PYPROJECT["build-system"]["requires"]
    _assert_locked(project["dependencies"] + build, runtime)
    _assert_locked(project["dependencies"] + project["optional-dependencies"]["test"] + build, test)
    assert all(hashes for _, hashes in [*runtime.values(), *test.values()])
    assert {name: runtime[name][0] for name in runtime} == {name: test[name][0] for name in runtime}
    # The denial-of-service fixes of aiohttp 3.13.3 and 3.14.4.
    assert Requirement(
        next(d for d in project["dependencies"] if d.startswith("aiohttp"))
    ).specifier.contains("3.14.4")
    assert not Requirement(
        next(d for d in project["dependencies"] if d.startswith("aiohttp"))
    ).specifier.contains("3.14.3")


@pytest.mark.parametrize(
    ("target", "lock"),
    [(".venv/.installed", "requirements/lock.txt"), (".venv/.installed-test", TEST_LOCK.name)],
)
def test_make_installs_only_what_the_lock_pins(target: str, lock: str) -> None:
    """`make serve`, `make test` and .ci/run (which deletes .venv first) install this way."""
    plan = subprocess.run(
        ["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    installs = [line for line in plan.splitlines() if " install " in line and "pip" in line]
    deps = [line for line in installs if "--require-hashes" in line]
    assert len(deps) == 1 and deps[0].endswith(f"-r requirements/{Path(lock).name}")
    rest = [line for line in installs if line not in deps and "--upgrade pip" not in line]
    assert rest and all("--no-deps" in line for line in rest), rest


def test_compose_migrates_before_the_bot_starts() -> None:
    compose = (REPO / "compose.yaml").read_text(encoding="utf-8")
    migrate = compose[compose.index("\n  migrate:") : compose.index("\n  bot:")]
    bot = compose[compose.index("\n  bot:") : compose.index("\nvolumes:")]
    assert 'command: ["db", "upgrade"]' in migrate
    assert 'command: ["serve", "--host", "0.0.0.0", "--port", "8080"]' in bot
    assert re.search(r"migrate:\s+condition: service_completed_successfully", bot)
    assert "postgresql://" in compose and "image: postgres:" in compose


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_the_systemd_unit_is_valid_and_migrates_first(tmp_path: Path) -> None:
    unit = (REPO / "deploy" / "probono.service").read_text(encoding="utf-8")
    assert unit.index("ExecStartPre=/opt/probono/bin/probono db upgrade") < unit.index(
        "ExecStart=/opt/probono/bin/probono serve"
    )
    assert "User=probono" in unit and "NoNewPrivileges=yes" in unit
    # This test's own environment has a `probono` to stand for /opt/probono's.
    local = tmp_path / "probono.service"
    local.write_text(unit.replace("/opt/probono/bin/", f"{Path(sys.executable).parent}/"))
    check = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and not check.stderr.strip(), check.stderr

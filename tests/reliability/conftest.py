"""The reliability suite (each module is marked `reliability`); each check reports one line."""

from __future__ import annotations

from typing import Any

from tests.conftest import BACKEND

LINES: list[str] = []


def say(line: str) -> None:
    """Record what a check tried and what held; printed in the terminal summary."""
    LINES.append(f"[{BACKEND}] {line}")
    print(f"\nreliability: {line}", flush=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if LINES:
        terminalreporter.section("reliability")
        for line in LINES:
            terminalreporter.write_line(line)

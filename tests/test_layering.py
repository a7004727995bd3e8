"""Arrows point one way: each folder of bot/ imports only the layers the README's table allows.

Entry points -> dialogues and casework -> the outbox -> channels and the low modules ->
storage. An import under ``if TYPE_CHECKING:`` is a type annotation, not an arrow, and is
left out; an import inside a function counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bot

BOT = Path(bot.__file__).parent
ROOT = BOT.parent

# The layer of each module, by its dotted name's first two parts.
OUTBOX = {"bot.outgoing", "bot.dispatch"}
TOP = {"bot.app", "bot.cli"}

# What each layer may import (besides itself), as the README's architecture table says.
ALLOWED: dict[str, set[str]] = {
    "low": {"storage"},
    "channels": {"low", "storage"},
    "outbox": {"channels", "low", "storage"},
    "casework": {"outbox", "low", "storage"},
    "conversations": {"casework", "outbox", "low", "storage"},
    "scheduler": {"conversations", "casework", "outbox", "low", "storage"},
    # `probono serve` runs the wired app: the one entry point that needs bot.app.
    "handlers": {"top", "scheduler", "conversations", "casework", "outbox", "channels", "low"}
    | {"storage"},
    "top": {"handlers", "scheduler", "conversations", "casework", "outbox", "channels", "low"}
    | {"storage"},
}


def layer_of(module: str) -> str | None:
    """The layer a dotted module name belongs to; None outside bot/ and storage/."""
    parts = module.split(".")
    if parts[0] == "storage":
        return "storage"
    if parts[0] != "bot":
        return None
    if len(parts) == 1:
        return "low"
    name = ".".join(parts[:2])
    if parts[1] in ("channels", "conversations", "casework", "handlers"):
        return parts[1]
    if name in OUTBOX:
        return "outbox"
    if name == "bot.scheduler":
        return "scheduler"
    if name in TOP:
        return "top"
    return "low"


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skipped


def imports_of(path: Path) -> list[str]:
    """The modules a file imports (``from bot import x`` counts as ``bot.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _type_checking_nodes(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in ("bot", "bot.channels", "bot.conversations", "bot.casework"):
                found.extend(f"{node.module}.{alias.name}" for alias in node.names)
            elif node.module == "bot.handlers":
                found.extend(f"bot.handlers.{alias.name}" for alias in node.names)
            else:
                found.append(node.module)
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_every_import_points_down() -> None:
    files = sorted(BOT.rglob("*.py"))
    assert len(files) > 40, "the scan must see the whole of bot/"
    wrong = []
    for path in files:
        source = module_name(path)
        mine = layer_of(source)
        assert mine is not None
        for target in imports_of(path):
            theirs = layer_of(target)
            if theirs is None or theirs == mine:
                continue
            if theirs not in ALLOWED[mine]:
                wrong.append(f"{source} ({mine}) imports {target} ({theirs})")
    assert wrong == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from bot.handlers import staff\n", ["bot.handlers.staff"]),
        ("def f() -> None:\n    from bot.app import create_app\n", ["bot.app"]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bot.app import x\n", []),
    ],
)
def test_the_scan_sees_what_it_must(tmp_path: Path, source: str, expected: list[str]) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(source)
    assert [m for m in imports_of(sample) if m.startswith("bot")] == expected


def test_an_upward_import_is_caught() -> None:
    assert "handlers" not in ALLOWED[layer_of("bot.scheduler") or ""]
    assert "conversations" not in ALLOWED[layer_of("bot.casework.status") or ""]
    assert "conversations" not in ALLOWED[layer_of("bot.dispatch") or ""]
    assert "channels" not in ALLOWED[layer_of("bot.conversations.engine") or ""]

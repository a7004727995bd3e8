"""storage/ sits below everything: it imports nothing from bot/."""

from __future__ import annotations

import ast
from pathlib import Path

import storage

STORAGE = Path(storage.__file__).parent


def _imported_modules(path: Path) -> list[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
    return found


def test_storage_imports_nothing_from_bot() -> None:
    files = sorted(STORAGE.rglob("*.py"))
    assert any(f.parent.name == "repo" for f in files), "the scan must see storage/repo/"
    offenders = [
        f"{path.relative_to(STORAGE.parent)} imports {module}"
        for path in files
        for module in _imported_modules(path)
        if module == "bot" or module.startswith("bot.")
    ]
    assert offenders == []


def test_the_scan_finds_a_bot_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f() -> None:\n    from bot.services import Services\n")
    assert _imported_modules(sample) == ["bot.services"]

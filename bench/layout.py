"""How the code is laid out: the figures the re-seat is judged by, printed as one table.

Run: `.venv/bin/python bench/layout.py` (from the project's root). It reads the source only:
- the largest modules of bot/ and storage/ (migrations left out);
- functions (and methods) longer than 80 lines;
- places under bot/ that write down a stored field's size (an integer constant named
  `*_MAX`, a `len(...) > N` test or a `[:N]` cut, N being one of the column sizes): storage's
  models define the columns, everyone else should take the size from one table;
- modules that set a row's status (`x.status = ...`, or `status=` in an UPDATE's values).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LONG_FUNCTION = 80


def sources() -> Iterator[Path]:
    for top in ("bot", "storage"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "migrations" not in path.parts:
                yield path


# The column sizes of storage's models that a caller might copy (64, 200, 256, 300...).
COLUMN_SIZES = frozenset({64, 128, 200, 256, 300, 500})


def _big_literal(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value in COLUMN_SIZES


def field_limits(tree: ast.Module) -> list[int]:
    """Line numbers that write down a field's size."""
    lines: list[int] = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        named = any(isinstance(t, ast.Name) and t.id.endswith("_MAX") for t in targets)
        if named and _big_literal(value) and value is not None:
            lines.append(value.lineno)
        if (
            isinstance(node, ast.Compare)
            and isinstance(node.left, ast.Call)
            and isinstance(node.left.func, ast.Name)
            and node.left.func.id == "len"
            and any(isinstance(op, ast.Gt | ast.GtE) for op in node.ops)
            and all(_big_literal(c) for c in node.comparators)
        ):
            lines.append(node.lineno)
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.slice, ast.Slice)
            and node.slice.lower is None
            and _big_literal(node.slice.upper)
        ):
            lines.append(node.lineno)
    return lines


def sets_status(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Attribute) and t.attr == "status" for t in targets):
                return True
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "values"
            and any(k.arg == "status" for k in node.keywords)
        ):
            return True
    return False


def main() -> int:
    sizes: list[tuple[int, str]] = []
    long_functions: list[tuple[int, str]] = []
    limits: list[str] = []
    status_modules: list[str] = []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        rel = str(path.relative_to(ROOT))
        sizes.append((len(text.splitlines()), rel))
        tree = ast.parse(text, filename=rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > LONG_FUNCTION:
                    long_functions.append((length, f"{rel}:{node.lineno} {node.name}"))
        if rel.startswith("bot/"):
            limits += [f"{rel}:{n}" for n in field_limits(tree)]
        if sets_status(tree):
            status_modules.append(rel)
    sizes.sort(reverse=True)
    long_functions.sort(reverse=True)
    print("| figure | value |")
    print("| --- | --- |")
    print(f"| largest module | {sizes[0][1]}, {sizes[0][0]} lines |")
    print(f"| next largest | {', '.join(f'{n} ({c})' for c, n in sizes[1:4])} |")
    print(f"| functions over {LONG_FUNCTION} lines | {len(long_functions)} |")
    print(f"| places defining a field limit | {len(limits)} |")
    print(f"| modules setting a row status | {len(status_modules)} |")
    if "-v" in sys.argv:
        for length, where in long_functions:
            print(f"  long: {length:4d} {where}")
        for where in limits:
            print(f"  limit: {where}")
        for rel in status_modules:
            print(f"  status: {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

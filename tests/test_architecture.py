"""Rules of the code's shape that a reader relies on: no import circles in ``chat/`` (type
checking imports included), and no module that does too many jobs to read in one go."""

from __future__ import annotations

import ast
from pathlib import Path

CHAT = Path(__file__).resolve().parent.parent / "chat"


def _module(path: Path) -> str:
    parts = path.relative_to(CHAT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module(path): path for path in CHAT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chat"):
                graph[name] |= {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                graph[name] |= {node.module} & modules.keys()
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & modules.keys()
    return graph


def test_no_import_circles_in_chat() -> None:
    graph = _imports()
    circles: list[list[str]] = []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for target in sorted(graph[name] - {name}):
            if target in path:
                circles.append([*path[path.index(target) :], target])
            elif target not in done:
                visit(target, [*path, target], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not circles, "\n".join(" -> ".join(circle) for circle in circles)


def test_no_module_over_400_lines() -> None:
    """A module that grows past this is doing more than one job: split it by job."""
    long = {
        str(path.relative_to(CHAT.parent)): count
        for path in CHAT.rglob("*.py")
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert not long, long

"""The repository's layout (issue 26, points 4 and 5): tests and benchmarks share what they share through testkit,
never by importing each other, and the modules of bench and testkit import one another without circles.

Read from the source (every ``import`` statement, module level, inside functions and under ``TYPE_CHECKING``
alike): a circle dodged by a function-local import is still a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOPS = ("tests", "bench", "testkit")
# Which of the three may not import which.
FORBIDDEN = {"tests": {"bench"}, "bench": {"tests"}, "testkit": {"tests", "bench"}}


def _sources(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the file, the names of ``from X import a, b`` as ``X.a``, ``X.b`` too
    (``from bench import lib`` imports the module bench.lib)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _module(path) if path.name == "__init__.py" else _module(path).rpartition(".")[0]
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _modules() -> dict[str, Path]:
    return {_module(p): p for top in ("bench", "testkit") for p in _sources(top)}


def test_tests_bench_and_testkit_do_not_import_each_other() -> None:
    found = []
    for top in TOPS:
        for path in _sources(top):
            for line, name in _imports(path):
                if name.split(".")[0] in FORBIDDEN[top]:
                    found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not found, "\n".join(found)


def test_no_import_circles_among_bench_and_testkit() -> None:
    modules = _modules()
    graph = {name: sorted({m for _, m in _imports(path) if m in modules and m != name})
             for name, path in modules.items()}
    circles: list[list[str]] = []
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                circles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not circles, "\n".join(" -> ".join(c) for c in circles)


def test_the_checker_sees_function_local_and_type_checking_imports(tmp_path: Path) -> None:
    """The two hiding places of the circles this test replaced (run <-> profile_stream, report <-> cost)."""
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.run import pair\n"
                   "def f() -> None:\n    from bench import report\n")
    found = {name for _, name in _imports(src)}
    assert {"bench.run", "bench.report"} <= found


def test_bench_and_testkit_modules_are_found() -> None:
    modules = _modules()
    assert {"bench.run", "bench.lib", "testkit.env", "testkit.stack", "testkit.results"} <= set(modules)


def _fixtures(path: Path) -> set[str]:
    """The names of the functions decorated ``@pytest.fixture`` (bare or called) in a module."""
    names: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                target = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(target, ast.Attribute) and target.attr == "fixture":
                    names.add(node.name)
    return names


def test_the_container_suite_sees_every_integration_fixture() -> None:
    """tests/containers runs beside tests/integration on the same stack and takes its fixtures by importing them
    from tests/integration/conftest.py by name; a fixture added there and not here fails every container test at
    setup ("fixture 'disks' not found"), an hour into CI. Caught here, in the unit stage, instead."""
    wanted = _fixtures(ROOT / "tests" / "integration" / "conftest.py")
    assert {"stack", "make_disk", "disks", "bases"} <= wanted  # the reader finds them
    source = "tests.integration.conftest."
    imported = {name.removeprefix(source) for _, name in _imports(ROOT / "tests" / "containers" / "conftest.py")
                if name.startswith(source)}
    assert wanted - imported == set()

"""One home per path (issue 26): the table maps every path the planner can choose to its class, each class has
the whole of :class:`fastsnap.paths.Path`, and the parts the facade hands work to never import it back."""

from __future__ import annotations

import ast
from pathlib import Path

from fastsnap import paths
from fastsnap.plan import SnapshotPath

PKG = Path(__file__).resolve().parents[2] / "fastsnap"


def test_every_path_has_one_implementation_with_every_method() -> None:
    assert set(paths.PATHS) == set(SnapshotPath)
    for path, impl in paths.PATHS.items():
        for method in ("record", "run", "complete", "roll_forward", "roll_back"):
            assert callable(getattr(impl, method, None)), (path, method)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the tree (so under ``if TYPE_CHECKING:`` too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_facades_parts_do_not_import_it() -> None:
    shells = {"__init__.py", "api.py", "cli.py", "wsgi.py"}
    offenders = [str(p.relative_to(PKG)) for p in sorted(PKG.rglob("*.py"))
                 if p.name not in shells and p.parent.name != "service" and "fastsnap.api" in _imports(p)]
    assert not offenders, offenders

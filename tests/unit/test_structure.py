"""The package's shape (issues 15 and 26): pure modules import without the Ceph bindings, no module imports inside a
function to dodge an import cycle, only the Ceph adapter imports the Ceph bindings, and the import graph of
fastsnap/ has no cycle (every import counted: at module level, under ``if TYPE_CHECKING:`` and inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "fastsnap"

# The modules that may import librbd/librados (``rbd``, ``rados``): the adapter, the only door to Ceph.
CEPH_ADAPTER = {"ceph.py"}
CEPH_BINDINGS = {"rbd", "rados"}

# Import edges (importer, imported) tolerated in a cycle for now, each with its reason and who removes it. An entry
# whose edge is gone fails test_cycle_allow_list_is_current: delete it then.
ALLOWED_CYCLE_EDGES: dict[tuple[str, str], str] = {}

# Function-local imports that are there for a reason other than a cycle, with that reason.
ALLOWED_LOCAL_IMPORTS = {
    ("cli.py", "fastsnap.service.server"): "Flask and cheroot load only for `serve`: the snapshot CLI stays small",
}


def test_pure_modules_import_without_ceph_or_libvirt() -> None:
    code = ("import sys\n"
            "for m in ('rados', 'rbd', 'libvirt', 'libvirt_qemu'):\n"
            "    sys.modules[m] = None  # any import of them fails\n"
            "import fastsnap, fastsnap.plan, fastsnap.request, fastsnap.conf, fastsnap.states, fastsnap.location\n"
            "import fastsnap.errors, fastsnap.inheritance, fastsnap.glance_versions, fastsnap.glance_wait\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastsnap')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "fastsnap.api" not in out.stdout and "fastsnap.ceph'" not in out.stdout, out.stdout
    assert "fastsnap.glance'" not in out.stdout, out.stdout  # what left glance.py needs no HTTP client


def test_fastsnap_package_names_load_lazily() -> None:
    import fastsnap

    assert fastsnap.SnapshotRequest.__module__ == "fastsnap.request"
    assert issubclass(fastsnap.UnknownStore, fastsnap.BadRequest)


def test_no_function_local_imports_of_fastsnap() -> None:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    rel = str(path.relative_to(PKG))
                    if (rel, name) not in ALLOWED_LOCAL_IMPORTS:
                        found.append(f"{rel}:{node.lineno} imports {name} inside {fn.name}()")
    assert not found, "\n".join(found)


def test_every_error_has_one_exit_code_and_status() -> None:
    from fastsnap import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.FastsnapError)]
    assert len(classes) > 10
    for c in classes:
        assert c.exit_code in (1, 2) and 400 <= c.http_status < 600 and c.kind, c
        # bad input (exit 2) is a client error; nothing else claims "nothing was created" by exit code
        assert (c.exit_code == 2) == issubclass(c, errors.BadRequest), c
    assert errors.http_status(errors.PlanError("x"), accepted=False) == 503
    assert errors.http_status(errors.PlanError("x"), accepted=True) == 500
    assert errors.http_status(errors.Conflict("x"), accepted=True) == 409
    assert errors.http_status(errors.NotFound("x"), accepted=False) == 404
    assert not issubclass(errors.NotFound, errors.BadRequest)


def _module_name(path: Path, pkg: Path) -> str:
    parts = list(path.relative_to(pkg.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, pkg: Path = PKG) -> list[tuple[int, str, str | None]]:
    """Every import in the file, wherever it sits (module level, ``if TYPE_CHECKING:``, functions, classes), and
    ``importlib.import_module("x")`` / ``__import__("x")`` with a literal name: (line, module, imported name or
    None). Relative imports are resolved against the file's package."""
    module = _module_name(path, pkg)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            out += [(node.lineno, base, a.name) for a in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            fn = node.func
            name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
            if name in ("import_module", "__import__"):
                out.append((node.lineno, node.args[0].value, None))
    return out


def test_only_the_adapter_imports_the_ceph_bindings() -> None:
    """ceph.py translates every librbd/librados error into the one error table (fastsnap.errors) and hands out no
    raw handle; a module that imported ``rbd`` or ``rados`` itself would go around that door."""
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        if rel in CEPH_ADAPTER:
            continue
        for line, module, _ in _imports(path):
            if module.split(".")[0] in CEPH_BINDINGS:
                found.append(f"{rel}:{line} imports {module}")
    assert not found, "only " + ", ".join(sorted(CEPH_ADAPTER)) + " may import rbd/rados:\n" + "\n".join(found)


def _import_graph(pkg: Path = PKG) -> dict[str, dict[str, int]]:
    """fastsnap module -> {fastsnap module it imports: line}. ``from fastsnap.x import y`` counts as importing
    ``fastsnap.x.y`` when that is a module, else ``fastsnap.x``; a parent package a dotted import runs first is
    not counted (``fastsnap/__init__.py`` loads its names lazily)."""
    paths = {_module_name(p, pkg): p for p in pkg.rglob("*.py")}
    graph: dict[str, dict[str, int]] = {}
    for module, path in paths.items():
        edges: dict[str, int] = {}
        for line, base, name in _imports(path, pkg):
            target = f"{base}.{name}" if name and f"{base}.{name}" in paths else base
            if target in paths and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycles() -> None:
    """A cycle hidden under ``if TYPE_CHECKING:`` or in a function is still two modules that need each other (an
    interface written down nowhere); count them all, less the reasoned ALLOWED_CYCLE_EDGES."""
    graph = _import_graph()
    for importer, imported in ALLOWED_CYCLE_EDGES:
        graph.get(importer, {}).pop(imported, None)
    cycles = _cycles(graph)
    lines = [f"{a} imports {b} (line {graph[a][b]})" for c in cycles for a in c for b in sorted(graph[a]) if b in c]
    assert not cycles, "import cycles in fastsnap/:\n" + "\n".join(lines)


def test_the_cycle_finder_sees_type_checking_and_local_imports(tmp_path: Path) -> None:
    """The graph reader itself: an import under TYPE_CHECKING and one inside a function both make an edge."""
    pkg = tmp_path / "fastsnap"
    pkg.mkdir()
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fastsnap import b\n")
    (pkg / "b.py").write_text("def f() -> None:\n    from .a import x\n")
    graph = _import_graph(pkg)
    assert graph == {"fastsnap.a": {"fastsnap.b": 3}, "fastsnap.b": {"fastsnap.a": 2}}
    assert _cycles(graph) == [["fastsnap.a", "fastsnap.b"]]


def test_cycle_allow_list_is_current() -> None:
    """An allowed edge that no longer exists is an allowance nobody needs: remove its ALLOWED_CYCLE_EDGES entry."""
    graph = _import_graph()
    stale = [f"{a} -> {b}: {why}" for (a, b), why in ALLOWED_CYCLE_EDGES.items() if b not in graph.get(a, {})]
    assert not stale, "stale ALLOWED_CYCLE_EDGES entries:\n" + "\n".join(stale)

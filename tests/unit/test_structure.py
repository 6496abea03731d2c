"""The package's shape (issue 15): pure modules import without the Ceph bindings, and no module imports inside a
function to dodge an import cycle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "fastsnap"

# Function-local imports that are there for a reason other than a cycle, with that reason.
ALLOWED_LOCAL_IMPORTS = {
    ("cli.py", "fastsnap.service.server"): "Flask and cheroot load only for `serve`: the snapshot CLI stays small",
}


def test_pure_modules_import_without_ceph_or_libvirt() -> None:
    code = ("import sys\n"
            "for m in ('rados', 'rbd', 'libvirt', 'libvirt_qemu'):\n"
            "    sys.modules[m] = None  # any import of them fails\n"
            "import fastsnap, fastsnap.plan, fastsnap.request, fastsnap.conf, fastsnap.states, fastsnap.location\n"
            "import fastsnap.errors\n"
            "print(sorted(m for m in sys.modules if m.startswith('fastsnap')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "fastsnap.api" not in out.stdout and "fastsnap.ceph'" not in out.stdout, out.stdout


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

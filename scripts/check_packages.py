"""The checks of scripts/check-packages that run inside a Python: the wheel's contents, then the installed
distribution, each in the interpreter that has it (standard library only, so that any venv can run it).

    check_packages.py wheel WHEEL SOURCE_DIR          the wheel's files (any Python)
    check_packages.py installed NAME SOURCE_DIR       NAME as installed in this interpreter's venv
    check_packages.py nova-hook SITE_PACKAGES         nova-fastsnap, installed into SITE_PACKAGES, against the
                                                      Nova of this interpreter (.venv-nova's)

Each prints what it checked and exits 1 with one line per failure. It is run from outside the source tree (the
caller's working directory is a temporary one), so the source tree is never on ``sys.path``: what imports is the
installed package.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

# Top-level names a wheel must not have: the repository's tests, benchmarks, tools, docs and the raw etc/ tree
# (its files are installed as data files under share/ instead).
FORBIDDEN_TOP = {"tests", "bench", "testkit", "scripts", "doc", "etc", "ceph-test-env", "nova-fastsnap"}


class Failures:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def check(self, ok: bool, what: str) -> None:
        print(f"  {'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            self.lines.append(what)

    def exit(self) -> int:
        for line in self.lines:
            print(f"check_packages: FAILED: {line}", file=sys.stderr)
        return 1 if self.lines else 0


def _pyproject(source: Path) -> dict[str, Any]:
    with open(source / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def _data_files(source: Path) -> dict[str, Path]:
    """``[tool.setuptools.data-files]``: installed path (relative to the prefix) -> the tree's file."""
    table = _pyproject(source).get("tool", {}).get("setuptools", {}).get("data-files", {})
    return {f"{target}/{Path(src).name}": source / src for target, srcs in table.items() for src in srcs}


def check_wheel(wheel: Path, source: Path) -> int:
    """Only the distribution's packages, its metadata and its data files; no parent package of a plugin's."""
    fail = Failures()
    names = zipfile.ZipFile(wheel).namelist()
    print(f"{wheel.name}: {len(names)} files")
    tops = {PurePosixPath(n).parts[0] for n in names}
    fail.check(not tops & FORBIDDEN_TOP,
               f"no tests/bench/testkit/scripts/doc/etc in the wheel (top level: {sorted(tops)})")
    fail.check(not [n for n in names if "__pycache__" in n or n.endswith(".pyc")], "no byte code in the wheel")
    data = sorted(n.split(".data/data/", 1)[1] for n in names if ".data/data/" in n)
    want = sorted(_data_files(source))
    fail.check(data == want, f"data files {want}" + ("" if data == want else f" (the wheel has {data})"))
    # A plugin that adds a package to another distribution's (nova-fastsnap: nova.virt.fastsnap into Nova's
    # nova.virt) lists its packages; their parents' __init__.py must not be in it, or installing it would
    # overwrite (and uninstalling it remove) Nova's own.
    packages = _pyproject(source).get("tool", {}).get("setuptools", {}).get("packages")
    if isinstance(packages, list):
        parents = {"/".join(p.split(".")[:i]) + "/__init__.py" for p in packages for i in range(1, p.count(".") + 1)}
        fail.check(not parents & set(names), f"none of the parent packages' __init__.py ({sorted(parents)})")
        inside = [n for n in names if ".dist-info/" not in n and ".data/" not in n
                  and not any(n.startswith(p.replace(".", "/") + "/") for p in packages)]
        fail.check(not inside, f"only the packages {packages}" + (f" (also: {inside})" if inside else ""))
    return fail.exit()


def _under(path: str | Path, parent: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(Path(parent).resolve())


def check_installed(name: str, source: Path) -> int:
    """Imports from site-packages, console scripts answer --help and --version, entry points load, the data files
    and every file of RECORD are there."""
    fail = Failures()
    dist = metadata.distribution(name)
    site = sysconfig.get_paths()["purelib"]
    print(f"{name} {dist.version} in {sys.prefix}")
    for top in (dist.read_text("top_level.txt") or "").split():
        module = importlib.import_module(top)
        where = str(getattr(module, "__file__", None) or list(getattr(module, "__path__", [])))
        fail.check(_under(where, site) and not _under(where, source),
                   f"import {top} comes from site-packages ({where}), not from the source tree")
    missing = [str(f) for f in dist.files or [] if not Path(str(f.locate())).exists()]
    fail.check(not missing, f"every file of RECORD is installed ({len(dist.files or [])})"
               + (f": missing {missing[:5]}" if missing else ""))
    for installed, tree_file in _data_files(source).items():
        path = Path(sys.prefix) / installed
        fail.check(path.is_file() and path.read_bytes() == tree_file.read_bytes(),
                   f"{path} is the tree's {tree_file.relative_to(source)}")
    for ep in dist.entry_points:
        if ep.group == "console_scripts":
            script = Path(sys.prefix) / "bin" / ep.name
            helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
            fail.check(helped.returncode == 0 and "usage:" in helped.stdout,
                       f"{ep.name} --help" + ("" if helped.returncode == 0 else f": {helped.stderr[-500:]}"))
            version = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
            fail.check(version.returncode == 0 and version.stdout.strip() == f"{ep.name} {dist.version}",
                       f"{ep.name} --version prints '{ep.name} {dist.version}' (it printed "
                       f"{(version.stdout or version.stderr).strip()[-300:]!r})")
        else:
            try:
                ep.load()
                fail.check(True, f"entry point {ep.group} {ep.name} = {ep.value} loads")
            except Exception as exc:  # any failure to load is the finding
                fail.check(False, f"entry point {ep.group} {ep.name} = {ep.value} loads: {exc!r}")
    return fail.exit()


def check_nova_hook(site: Path) -> int:
    """nova-fastsnap's files from SITE, imported with this interpreter's Nova. They are put first on
    ``nova.virt.__path__``: the hook adds a package to Nova's, so it cannot be imported from another venv by
    ``sys.path`` (``nova`` is a regular package), and Nova's venv may hold an older copy of the hook itself."""
    fail = Failures()
    import nova.virt  # Nova's, from this interpreter's venv
    from nova.virt.libvirt.driver import LibvirtDriver

    nova_virt_path: list[str] = nova.virt.__path__
    nova_virt_path.insert(0, str(site / "nova" / "virt"))
    hook = importlib.import_module("nova.virt.fastsnap")
    fail.check(_under(hook.__file__ or "", site), f"nova.virt.fastsnap comes from the wheel's files ({hook.__file__})")
    driver = hook.FastsnapLibvirtDriver
    fail.check(issubclass(driver, LibvirtDriver), "compute_driver fastsnap.FastsnapLibvirtDriver is a LibvirtDriver")
    (info,) = site.glob("nova_fastsnap-*.dist-info")
    dist = metadata.Distribution.at(info)
    for f in dist.files or []:
        if f.suffix == ".py":
            module = ".".join(f.with_suffix("").parts).removesuffix(".__init__")
            loaded = importlib.import_module(module)
            fail.check(_under(loaded.__file__ or "", site), f"import {module} ({loaded.__file__})")
    for ep in dist.entry_points:
        opts = ep.load()()
        fail.check(bool(opts), f"entry point {ep.group} {ep.name} = {ep.value} lists options ({len(opts)} groups)")
    return fail.exit()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    w = sub.add_parser("wheel")
    w.add_argument("wheel", type=Path)
    w.add_argument("source", type=Path)
    i = sub.add_parser("installed")
    i.add_argument("name")
    i.add_argument("source", type=Path)
    n = sub.add_parser("nova-hook")
    n.add_argument("site", type=Path)
    a = p.parse_args()
    if a.what == "wheel":
        return check_wheel(a.wheel, a.source)
    if a.what == "installed":
        return check_installed(a.name, a.source.resolve())
    return check_nova_hook(a.site.resolve())


if __name__ == "__main__":
    sys.exit(main())

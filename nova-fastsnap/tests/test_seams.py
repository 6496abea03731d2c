"""The seam check (nova/virt/fastsnap/seams.py) against the real Nova: it passes on the installed one, each kind
of change to a real Nova class (monkeypatched) is one problem naming the seam, and the table covers every Nova
name the hook's modules use."""

from __future__ import annotations

import ast
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nova.conf
import nova.utils
import pytest
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.objects import instance as instance_obj
from nova.storage import rbd_utils
from nova.virt.fastsnap import seams
from nova.virt.fastsnap.seams import OPTION, Seam
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import imagebackend
from oslo_config import cfg

#: The hook's modules that use Nova (conf.py needs oslo.config only; client.py and seams.py the standard library).
NOVA_MODULES = [Path(seams.__file__).with_name(f"{m}.py") for m in ("driver", "imagebackend", "storage")]
SEAM_IDS = {str(s) for s in seams.SEAMS}
#: The supported Nova releases (major versions): 2025.1 .. 2026.2.
SUPPORTED = (31, 32, 33, 34)
MAJOR = seams.nova_major()
HERE = [s for s in seams.SEAMS if s.applies(MAJOR)]


def test_the_installed_nova_is_a_supported_release() -> None:
    assert MAJOR in SUPPORTED


def test_the_installed_nova_has_every_seam() -> None:
    assert seams.check() == []


def test_every_seam_is_listed_once_per_release() -> None:
    for major in (*SUPPORTED, None):
        ids = [str(s) for s in seams.SEAMS if s.applies(major)]
        assert len(ids) == len(set(ids)), major


def test_only_the_seams_of_the_running_release_are_checked() -> None:
    """Seams of other releases are not checked here: on 31 and 32 utils.tpool_wrap does not exist (the hook uses
    rbd_utils' eventlet tpool.Proxy); from 33 on it does."""
    others = [s for s in seams.SEAMS if not s.applies(MAJOR)]
    assert others  # the table has per-release lines
    ids = {str(s) for s in HERE}
    if MAJOR is not None and MAJOR <= 32:
        assert "nova.storage.rbd_utils.tpool.Proxy" in ids and "nova.utils.tpool_wrap" not in ids
        assert not hasattr(nova.utils, "tpool_wrap")
    else:
        assert "nova.utils.tpool_wrap" in ids and "nova.storage.rbd_utils.tpool.Proxy" not in ids
    # a version that cannot be read is taken as newer than the table: only the open-ended lines
    assert all(s.nova[1] is None for s in seams.SEAMS if s.applies(None))


def test_every_seam_applies_to_a_supported_release() -> None:
    assert [str(s) for s in seams.SEAMS if not any(s.applies(m) for m in SUPPORTED)] == []


# -- each kind of change is one problem that names the seam -----------------------------------------------------


def _destroy_volume_renamed_parameter(self: Any, client: Any, name: Any, pool: Any = None) -> None:
    pass


def _direct_snapshot_with_one_more(self: Any, context: Any, snapshot_name: Any, image_format: Any, image_id: Any,
                                   base_image_id: Any, disk_format: Any = None) -> None:
    pass


def _reporter_one_instance(self: Any, context: Any, event_name: Any, host: Any, instance_uuid: Any,
                           graceful_exit: bool = False) -> None:
    pass


def _cleanup_volumes_elsewhere(self: Any, filter_fn: Any) -> None:
    self._remove_volumes(filter_fn)


def _rbd_init_renamed_attribute(self: Any, instance: Any = None, disk_name: Any = None, path: Any = None,
                                disk_info_mapping: Any = None) -> None:
    self.image_name = path
    self.driver = None


def _rename(cls: Any, old: str, new: str) -> Callable[[pytest.MonkeyPatch], None]:
    def breaker(mp: pytest.MonkeyPatch) -> None:
        mp.setattr(cls, new, getattr(cls, old), raising=False)
        mp.delattr(cls, old)
    return breaker


BROKEN: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str, str]] = {
    "method removed": (lambda mp: mp.delattr(rbd_utils.RBDDriver, "_destroy_volume"),
                       "nova.storage.rbd_utils.RBDDriver._destroy_volume (method): missing", ""),
    "method renamed": (_rename(libvirt_driver.LibvirtDriver, "_cleanup_rbd", "_cleanup_rbd_disks"),
                       "nova.virt.libvirt.driver.LibvirtDriver._cleanup_rbd (method): missing", ""),
    "parameter renamed": (lambda mp: mp.setattr(rbd_utils.RBDDriver, "_destroy_volume",
                                                _destroy_volume_renamed_parameter),
                          "nova.storage.rbd_utils.RBDDriver._destroy_volume (method): signature changed: "
                          "(self, client, volume, pool) expected, found (self, client, name, pool)", ""),
    "parameter added": (lambda mp: mp.setattr(imagebackend.Rbd, "direct_snapshot", _direct_snapshot_with_one_more),
                        "nova.virt.libvirt.imagebackend.Rbd.direct_snapshot (method): signature changed",
                        "found (self, context, snapshot_name, image_format, image_id, base_image_id, disk_format)"),
    "keyword-only parameter": (lambda mp: mp.setattr(compute_utils.EventReporter, "__init__",
                                                     _reporter_one_instance),
                               "nova.compute.utils.EventReporter.__init__ (method): signature changed", ""),
    "override no longer called": (lambda mp: mp.setattr(rbd_utils.RBDDriver, "cleanup_volumes",
                                                        _cleanup_volumes_elsewhere),
                                  "nova.storage.rbd_utils.RBDDriver.cleanup_volumes (method): no longer refers to "
                                  "_destroy_volume", ""),
    "instance attribute": (lambda mp: mp.setattr(imagebackend.Rbd, "__init__", _rbd_init_renamed_attribute),
                           "nova.virt.libvirt.imagebackend.Rbd.rbd_name (instance attribute): not assigned by "
                           "__init__ any more", ""),
    "field": (lambda mp: mp.delitem(instance_obj.Instance.fields, "task_state"),
              "nova.objects.instance.Instance.task_state (field): no such field", ""),
    "constant": (lambda mp: mp.delattr(task_states, "RESIZE_REVERTING"),
                 "nova.compute.task_states.RESIZE_REVERTING (attribute): missing", ""),
    "class": (lambda mp: mp.setattr(rbd_utils.rbd, "ImageBusy", lambda: None),
              "nova.storage.rbd_utils.rbd.ImageBusy (class): not a class but function", ""),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_change_is_one_problem_naming_the_seam(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    breaker, start, contains = BROKEN[case]
    breaker(monkeypatch)
    problems = seams.check()
    assert len(problems) == 1, problems
    assert problems[0].startswith(start) and contains in problems[0]
    monkeypatch.undo()
    assert seams.check() == []


@pytest.fixture
def without_libvirt_option() -> Iterator[str]:
    """Nova without ``[libvirt] rbd_destroy_volume_retries`` (unregistered, then registered again)."""
    conf = nova.conf.CONF
    opt: cfg.Opt = conf._get_opt_info("rbd_destroy_volume_retries", "libvirt")["opt"]
    conf.unregister_opt(opt, group="libvirt")
    try:
        yield "nova.conf.CONF.libvirt.rbd_destroy_volume_retries (option): no such option"
    finally:
        conf.register_opt(opt, group="libvirt")


def test_a_missing_option_is_one_problem(without_libvirt_option: str) -> None:
    assert seams.check() == [without_libvirt_option]


def test_a_missing_class_is_a_problem_for_each_of_its_seams(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(imagebackend, "Rbd")
    problems = seams.check()
    assert sorted(p.split(" ")[0] for p in problems) == sorted(str(s) for s in HERE if s.owner == seams.RBD_BACKEND)
    assert all("nova.virt.libvirt.imagebackend.Rbd not found" in p for p in problems)


def test_without_librbd_every_librbd_seam_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rbd_utils, "rbd", None)  # what rbd_utils has when python3-rbd cannot be imported
    problems = seams.check()
    assert len(problems) == sum(1 for s in HERE if s.owner.startswith(seams.LIBRBD))
    assert all(p.startswith(seams.LIBRBD + ".") for p in problems)


def test_the_check_never_raises() -> None:
    weird = [Seam("nova.utils", "anything", OPTION),              # a module is no option group: TypeError
             Seam("nova.no_such_module.Thing", "method", seams.METHOD, "self"),
             Seam("nova.conf.CONF.no_such_group", "opt", OPTION)]
    problems = seams.check(weird)
    assert len(problems) == 3
    assert problems[0].startswith("nova.utils.anything (option): could not be checked (TypeError")
    assert problems[1].startswith("nova.no_such_module.Thing.method (method): nova.no_such_module.Thing not found")
    assert problems[2].startswith("nova.conf.CONF.no_such_group.opt (option): nova.conf.CONF.no_such_group not found")


def test_signatures_are_written_as_in_a_def() -> None:
    def f(a: int, /, b: int, *args: int, c: int, **kwargs: int) -> None:
        pass

    def g(a: int, *, b: int = 1) -> None:
        pass

    assert seams.params_of(f) == "a, /, b, *args, c, **kwargs"
    assert seams.params_of(g) == "a, *, b"
    assert seams.params_of(rbd_utils.RBDDriver.remove_snap) == "self, volume, name, ignore_errors, pool, force"


# -- the table covers what the hook uses -----------------------------------------------------------------------


def _nova_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> dotted Nova name, for a module's ``from nova... import`` (the hook's own package aside)."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "nova" \
                and not node.module.startswith("nova.virt.fastsnap"):
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _chain(node: ast.expr) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return [node.id, *reversed(parts)]


def _covered(dotted: str) -> bool:
    return dotted in SEAM_IDS or any(s.owner == dotted for s in seams.SEAMS)


def _used_in(path: Path) -> set[str]:
    """Every Nova name the module uses: ``module.attr...`` chains on Nova's modules, Nova's options
    (``CONF.x``, ``CONF.group.x``), and in the classes that subclass Nova's the methods and attributes they
    override or reach through ``super()`` or ``self``."""
    tree = ast.parse(path.read_text())
    nova_names = _nova_names(tree)
    conf = nova.conf.CONF
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in nova_names and not inspect.ismodule(_resolve(nova_names[node.id])):
            used.add(nova_names[node.id])            # e.g. `_` (nova.i18n._)
        if not isinstance(node, ast.Attribute):
            continue
        chain = _chain(node)
        if not chain:
            continue
        if chain[0] in nova_names:
            used.add(".".join([nova_names[chain[0]], *chain[1:]]))
        elif chain[0] == "CONF" and not hasattr(cfg.ConfigOpts, chain[1]):
            if len(chain) >= 3 and chain[1] != "fastsnap":
                used.add(f"nova.conf.CONF.{chain[1]}.{chain[2]}")
            elif len(chain) == 2 and chain[1] != "fastsnap":
                assert chain[1] in conf, chain
                used.add(f"nova.conf.CONF.{chain[1]}")
    # keep the longest chains only (`rbd_utils.rbd.Image` covers `rbd_utils.rbd`)
    used = {u for u in used if not any(v.startswith(u + ".") for v in used)}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        bases = [".".join([nova_names[c[0]], *c[1:]]) for b in cls.bases
                 if (c := _chain(b)) and c[0] in nova_names]
        if not bases:
            continue
        (base,) = bases
        nova_class = _resolve(base)
        used.add(base)
        for node in ast.walk(cls):
            name = None
            if isinstance(node, ast.FunctionDef) and node in cls.body:
                name = node.name                    # an override
            elif isinstance(node, ast.Assign) and node in cls.body:
                name = next((t.id for t in node.targets if isinstance(t, ast.Name)), None)  # a class attribute
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call) \
                    and isinstance(node.value.func, ast.Name) and node.value.func.id == "super":
                name = node.attr                    # super().name
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                name = node.attr                    # self.name
            if name and _is_novas(nova_class, name):
                used.add(f"{base}.{name}")
    return used


def _resolve(dotted: str) -> Any:
    return pkgutil.resolve_name(dotted)


def _is_novas(cls: Any, name: str) -> bool:
    if hasattr(cls, name) and getattr(cls, name) is not getattr(object, name, None):
        return True
    return any(seams._assigns(init, name) for init in seams._inits(cls))


def test_the_table_covers_every_nova_name_the_hook_uses() -> None:
    used = set().union(*(_used_in(path) for path in NOVA_MODULES))
    # what the walk finds, so that a broken walk does not pass for a covered table
    assert {"nova.storage.rbd_utils.RBDDriver._destroy_volume", "nova.virt.libvirt.imagebackend.Rbd.rbd_name",
            "nova.conf.CONF.libvirt.rbd_destroy_volume_retries", "nova.storage.rbd_utils.rbd.ImageHasSnapshots",
            "nova.i18n._", "nova.virt.libvirt.driver.LibvirtDriver.init_host"} <= used
    assert sorted(u for u in used if not _covered(u)) == []

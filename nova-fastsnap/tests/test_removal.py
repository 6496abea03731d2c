"""Every removal of an instance's RBD disks in the running Nova, against the table of
``doc/source/admin/parked-disks.rst`` ("Which removals park a disk"): the places in Nova's code that remove RBD
images are exactly the table's; the ones that can meet a disk fastsnap snapshots hold (delete, shelve offload,
rebuild, evacuation clean-up, a failed spawn, revert resize: all ``destroy``/``cleanup`` -> ``_cleanup`` ->
``_cleanup_rbd``) reach the hook's RBD driver with Nova's own choice of disks; unrescue removes only the
``.rescue`` disk, with Nova's own driver.

Real Nova classes; Ceph is not called (``RBDDriver.cleanup_volumes`` records the driver class and the filter), and
the libvirt parts of ``_cleanup`` around the disk removal (domain, instance directory) are stubs."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nova
import pytest
from nova import context as nova_context
from nova import objects
from nova.compute import task_states
from nova.conf import CONF
from nova.storage import rbd_utils
from nova.virt import fake
from nova.virt.fastsnap import driver, storage
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import utils as libvirt_utils

objects.register_all()

NOVA = Path(nova.__file__).parent
#: What removes an RBD image: RBDDriver's removal methods (and librbd's remove / trash_move under them).
REMOVALS = {"cleanup_volumes", "destroy_volume", "_destroy_volume", "remove_image"}

#: The table: every function of Nova (outside its tests) that calls one of REMOVALS, and what it removes.
TABLE = {
    # instance disks that fastsnap snapshots can hold: the hook overrides it (FastsnapRBDDriver)
    "nova/virt/libvirt/driver.py:LibvirtDriver._cleanup_rbd": "every <uuid>* disk (revert resize: *disk.local)",
    # never fastsnap's: Nova's own removal
    "nova/virt/libvirt/driver.py:LibvirtDriver.unrescue": "<uuid>*.rescue",
    "nova/virt/libvirt/imagebackend.py:Rbd.import_file": "<uuid>_disk.config before it is imported again",
    "nova/virt/libvirt/imagebackend.py:Rbd.cleanup_direct_snapshot": "Nova's own failed snapshot image",
    # RBDDriver itself: the removal methods calling each other
    "nova/storage/rbd_utils.py:RBDDriver.cleanup_volumes": "-",
    "nova/storage/rbd_utils.py:RBDDriver.destroy_volume": "-",
}


def _calls(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            yield node.func.attr


def _functions(tree: ast.Module) -> Iterator[tuple[str, ast.AST]]:
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield f"{node.name}.{item.name}", item


def test_the_table_has_every_rbd_removal_of_the_running_nova() -> None:
    found = set()
    for path in NOVA.rglob("*.py"):
        rel = path.relative_to(NOVA.parent).as_posix()
        if "/tests/" in rel or rel.startswith("nova/virt/fastsnap/"):
            continue
        for name, func in _functions(ast.parse(path.read_text())):
            if REMOVALS & set(_calls(func)):
                found.add(f"{rel}:{name}")
    assert sorted(found) == sorted(TABLE)


# -- the removals the hook parks, through Nova's own entry points -------------------------------------------------


def _disks(inst: Any) -> list[str]:
    other = uuid.uuid4()
    return [f"{inst.uuid}_disk", f"{inst.uuid}_disk.local", f"{inst.uuid}_disk.swap", f"{inst.uuid}_disk.eph0",
            f"{inst.uuid}_disk.config", f"{inst.uuid}_disk.rescue", f"{other}_disk", "volume-1234"]


@pytest.fixture
def removals(monkeypatch: pytest.MonkeyPatch) -> list[tuple[type, Callable[[str], bool]]]:
    """The calls of RBDDriver.cleanup_volumes (Ceph is not called): the driver's class and the filter."""
    calls: list[tuple[type, Callable[[str], bool]]] = []
    monkeypatch.setattr(rbd_utils.RBDDriver, "cleanup_volumes", lambda self, fn: calls.append((type(self), fn)))
    return calls


@pytest.fixture
def rbd_images() -> Iterator[None]:
    CONF.set_override("images_type", "rbd", group="libvirt")
    yield
    CONF.clear_override("images_type", group="libvirt")


def hook_driver() -> Any:
    drv = driver.FastsnapLibvirtDriver(fake.FakeVirtAPI(), False)
    drv.fastsnap_active = True  # as after init_host with every seam (test_driver.py tests the switch itself)
    return drv


def novas_driver() -> Any:
    return libvirt_driver.LibvirtDriver(fake.FakeVirtAPI(), False)


def instance(task_state: str | None) -> Any:
    return objects.Instance(uuid=str(uuid.uuid4()), task_state=task_state, system_metadata={},
                            flavor=objects.Flavor(extra_specs={}), image_ref="", resources=None)


#: The task state each removal path runs with (Nova's compute manager sets them before destroy).
PATHS = {
    "delete": task_states.DELETING,
    "shelve offload": task_states.SHELVING_OFFLOADING,
    "rebuild": task_states.REBUILDING,
    "failed spawn": task_states.SPAWNING,
    "evacuation clean-up (deleted instance)": None,
    "revert resize (storage not shared)": task_states.RESIZE_REVERTING,
}


@pytest.mark.parametrize("path", list(PATHS))
def test_the_hook_removes_novas_choice_of_disks_through_its_driver(
        path: str, removals: list[tuple[type, Callable[[str], bool]]]) -> None:
    inst = instance(PATHS[path])
    libvirt_driver.LibvirtDriver._cleanup_rbd(novas_driver(), inst)
    hook_driver()._cleanup_rbd(inst)
    (novas_class, novas), (hooks_class, hooks) = removals
    assert novas_class is rbd_utils.RBDDriver and hooks_class is storage.FastsnapRBDDriver
    disks = _disks(inst)
    chosen = [d for d in disks if hooks(d)]
    assert chosen == [d for d in disks if novas(d)]
    if path.startswith("revert resize"):
        assert chosen == [f"{inst.uuid}_disk.local"]  # the root disk is rolled back, not removed
    else:
        assert chosen == [d for d in disks if d.startswith(inst.uuid)]


@pytest.fixture
def cleanup_stubs(monkeypatch: pytest.MonkeyPatch, rbd_images: None) -> None:
    """The libvirt and instance-directory parts of Nova's _cleanup (the disk removal itself is Nova's code)."""
    cls = libvirt_driver.LibvirtDriver
    monkeypatch.setattr(cls, "_undefine_domain", lambda self, *a, **kw: None)
    monkeypatch.setattr(cls, "delete_instance_files", lambda self, inst: True)
    monkeypatch.setattr(cls, "_cleanup_ephemeral_encryption_secrets", lambda self, *a, **kw: None)
    monkeypatch.setattr(cls, "_get_vpmems", lambda self, inst: [])
    monkeypatch.setattr(objects.Instance, "save", lambda self, *a, **kw: None)


def test_novas_cleanup_reaches_the_hooks_driver_when_disks_are_destroyed(
        removals: list[tuple[type, Callable[[str], bool]]], cleanup_stubs: None) -> None:
    """``cleanup(destroy_disks=True)``, what ``destroy`` calls (the seam check makes sure it does): the hook's
    driver."""
    inst = instance(task_states.DELETING)
    hook_driver().cleanup(nova_context.get_admin_context(), inst, [], None, destroy_disks=True)
    ((cls, chosen),) = removals
    assert cls is storage.FastsnapRBDDriver and chosen(f"{inst.uuid}_disk")


def test_shared_storage_clean_up_removes_no_disk(removals: list[tuple[type, Callable[[str], bool]]],
                                                 cleanup_stubs: None) -> None:
    """Evacuation clean-up of a live instance and revert resize on rbd (shared block storage): Nova's compute
    manager passes destroy_disks=False, and no disk is removed."""
    hook_driver().cleanup(nova_context.get_admin_context(), instance(task_states.RESIZE_REVERTING), [], None,
                          destroy_disks=False)
    assert removals == []


def test_unrescue_removes_only_the_rescue_disk_with_novas_driver(
        removals: list[tuple[type, Callable[[str], bool]]], rbd_images: None, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    """Not parked, and needs not be: Nova refuses to snapshot a rescued instance (compute API ``snapshot``:
    ACTIVE, STOPPED, PAUSED or SUSPENDED), so fastsnap never snapshots a ``.rescue`` disk."""
    (tmp_path / "unrescue.xml").write_text("<domain/>")
    cls = libvirt_driver.LibvirtDriver
    monkeypatch.setattr(libvirt_utils, "get_instance_path", lambda inst, *a, **kw: str(tmp_path))
    monkeypatch.setattr(cls, "_destroy", lambda self, *a, **kw: None)
    monkeypatch.setattr(cls, "_create_guest", lambda self, *a, **kw: None)
    monkeypatch.setattr(cls, "_lvm_disks", lambda self, inst: [])
    inst = instance(task_states.UNRESCUING)
    hook_driver().unrescue(nova_context.get_admin_context(), inst)
    ((cls_used, chosen),) = removals
    assert cls_used is rbd_utils.RBDDriver
    assert [d for d in _disks(inst) if chosen(d)] == [f"{inst.uuid}_disk.rescue"]

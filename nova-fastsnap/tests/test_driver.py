"""FastsnapLibvirtDriver's start-up against the real Nova (no libvirt, Ceph or services: Nova's own init_host is
replaced by a stub with its signature): with the installed Nova the hook switches on; a missing or changed seam
is one ERROR line naming it and the driver is Nova's LibvirtDriver; init_host never raises because of the
check."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from nova import objects
from nova.compute import utils as compute_utils
from nova.storage import rbd_utils
from nova.version import version_string
from nova.virt import fake
from nova.virt.fastsnap import driver, seams, storage
from nova.virt.fastsnap import imagebackend as fs_imagebackend
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import imagebackend

objects.register_all()

PREFIX = ("fastsnap's Nova hook is disabled, nova-compute runs Nova's own snapshots and disk removal "
          f"(Nova {version_string()}): ")


@pytest.fixture
def nova_init_host(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Nova's init_host (it connects to libvirt) as a stub with the same signature, recording its calls."""
    calls: list[str] = []

    def init_host(self: Any, host: str) -> None:
        calls.append(host)

    monkeypatch.setattr(libvirt_driver.LibvirtDriver, "init_host", init_host)
    return calls


def make_driver() -> Any:
    return driver.FastsnapLibvirtDriver(fake.FakeVirtAPI(), False)


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def instance() -> Any:
    return objects.Instance(uuid=str(uuid.uuid4()), task_state=None)


def cleanup_driver_class(drv: Any, monkeypatch: pytest.MonkeyPatch) -> type:
    """The class of the RBD driver whose cleanup_volumes the driver's _cleanup_rbd uses (Ceph is not called)."""
    used: list[type] = []
    monkeypatch.setattr(rbd_utils.RBDDriver, "cleanup_volumes", lambda self, filter_fn: used.append(type(self)))
    drv._cleanup_rbd(instance())
    (cls,) = used
    return cls


def test_with_the_installed_nova_the_hook_switches_on(nova_init_host: list[str], caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    drv = make_driver()
    assert type(drv.image_backend) is imagebackend.Backend and not drv.fastsnap_active  # Nova's until init_host
    drv.init_host("compute-1")
    assert nova_init_host == ["compute-1"] and errors(caplog) == []
    assert drv.fastsnap_active and isinstance(drv.image_backend, fs_imagebackend.FastsnapBackend)
    # Nova's snapshot() reaches the hook's backend through Nova's own table lookup
    inst = instance()
    disk = drv.image_backend.by_libvirt_path(inst, f"vms/{inst.uuid}_disk", image_type="rbd")
    assert type(disk) is fs_imagebackend.FastsnapRbd and disk.instance is inst and disk.rbd_name == f"{inst.uuid}_disk"
    assert type(drv.image_backend.by_name(inst, "disk", "rbd")) is fs_imagebackend.FastsnapRbd
    assert cleanup_driver_class(drv, monkeypatch) is storage.FastsnapRBDDriver


def _direct_snapshot_changed(self: Any, context: Any, snapshot_name: Any, image_format: Any, image_id: Any,
                             base_image_id: Any, disk_format: Any = None) -> None:
    pass


def _cleanup_volumes_elsewhere(self: Any, filter_fn: Any) -> None:
    self._remove_volumes(filter_fn)


def _reporter_changed(self: Any, context: Any, event_name: Any, host: Any, instance_uuid: Any) -> None:
    pass


BROKEN: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], str]] = {
    "removed": (lambda mp: mp.delattr(rbd_utils.RBDDriver, "_destroy_volume"),
                "nova.storage.rbd_utils.RBDDriver._destroy_volume (method): missing"),
    "signature": (lambda mp: mp.setattr(imagebackend.Rbd, "direct_snapshot", _direct_snapshot_changed),
                  "nova.virt.libvirt.imagebackend.Rbd.direct_snapshot (method): signature changed: (self, context, "
                  "snapshot_name, image_format, image_id, base_image_id) expected, found (self, context, "
                  "snapshot_name, image_format, image_id, base_image_id, disk_format)"),
    "no longer called": (lambda mp: mp.setattr(rbd_utils.RBDDriver, "cleanup_volumes", _cleanup_volumes_elsewhere),
                         "nova.storage.rbd_utils.RBDDriver.cleanup_volumes (method): no longer refers to "
                         "_destroy_volume"),
    "called by the hook": (lambda mp: mp.setattr(compute_utils.EventReporter, "__init__", _reporter_changed),
                           "nova.compute.utils.EventReporter.__init__ (method): signature changed: (self, context, "
                           "event_name, host, *instance_uuids, graceful_exit) expected, found (self, context, "
                           "event_name, host, instance_uuid)"),
}


def assert_novas_own(drv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not drv.fastsnap_active
    assert type(drv.image_backend) is imagebackend.Backend
    inst = instance()
    assert type(drv.image_backend.by_libvirt_path(inst, f"vms/{inst.uuid}_disk", image_type="rbd")) \
        is imagebackend.Rbd
    assert cleanup_driver_class(drv, monkeypatch) is rbd_utils.RBDDriver  # Nova's own _cleanup_rbd


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_missing_or_changed_seam_is_one_error_and_novas_behaviour(
        case: str, nova_init_host: list[str], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    breaker, problem = BROKEN[case]
    breaker(monkeypatch)
    drv = make_driver()
    drv.init_host("compute-1")
    assert errors(caplog) == [PREFIX + problem]
    assert nova_init_host == ["compute-1"]  # Nova's start-up runs on
    assert_novas_own(drv, monkeypatch)


def test_init_host_never_raises_because_of_the_check(nova_init_host: list[str], caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_check() -> list[str]:
        raise RuntimeError("boom")

    monkeypatch.setattr(seams, "check", broken_check)
    drv = make_driver()
    drv.init_host("compute-1")
    assert errors(caplog) == [PREFIX + "the seam check itself failed (RuntimeError: boom)"]
    assert nova_init_host == ["compute-1"]
    assert_novas_own(drv, monkeypatch)


def test_an_image_backend_that_cannot_be_made_leaves_novas(nova_init_host: list[str],
                                                           caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_init(self: Any, use_cow: bool) -> None:
        raise KeyError("rbd")

    monkeypatch.setattr(fs_imagebackend.FastsnapBackend, "__init__", broken_init)
    drv = make_driver()
    drv.init_host("compute-1")
    assert errors(caplog) == [PREFIX + "nova.virt.libvirt.imagebackend.Backend: the hook's image backend could not "
                              "be made (KeyError: 'rbd')"]
    assert nova_init_host == ["compute-1"]
    assert_novas_own(drv, monkeypatch)


def test_novas_own_init_host_errors_are_novas(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check does not hide what Nova's init_host raises (nova-compute fails as it would without the hook)."""
    def init_host(self: Any, host: str) -> None:
        raise RuntimeError("libvirt is down")

    monkeypatch.setattr(libvirt_driver.LibvirtDriver, "init_host", init_host)
    with pytest.raises(RuntimeError, match="libvirt is down"):
        make_driver().init_host("compute-1")


def test_before_init_host_the_driver_is_novas(monkeypatch: pytest.MonkeyPatch) -> None:
    assert_novas_own(make_driver(), monkeypatch)


def test_librbd_calls_are_wrapped_as_novas_own() -> None:
    """The hook wraps librbd objects the way the running Nova's rbd_utils does (utils.tpool_wrap from Nova 33,
    eventlet's tpool.Proxy before): the proxy forwards calls."""
    class Target:
        def id(self) -> str:
            return "abc"

    proxy = storage._tpool_wrap(Target())
    assert proxy.id() == "abc"
    # wrapped exactly when Nova's own RbdProxy wraps rbd.RBD() (eventlet mode), left as is when Nova does not
    novas = rbd_utils.RbdProxy()._rbd
    assert (type(proxy) is Target) == (type(novas) is rbd_utils.rbd.RBD)


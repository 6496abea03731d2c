"""No librbd/librados exception leaves fastsnap.ceph: each becomes a fastsnap error naming the call (issue 11,
point 4), so recover can report one operation and go on with the others."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import rados
import rbd

from fastsnap.ceph import Image, ceph_call
from fastsnap.errors import BadRequest, CephError, CephNotFound


@pytest.mark.parametrize(("exc", "kind", "text"), [
    (rbd.ImageNotFound("gone"), CephNotFound, "removing x@s failed: not found"),
    (rados.ObjectNotFound("gone"), CephNotFound, "not found"),
    (rbd.PermissionError("no"), CephError, "permission denied (check client caps)"),
    (rados.PermissionError("no"), CephError, "permission denied"),
    (rbd.ImageBusy("busy"), CephError, "ImageBusy"),
    (rbd.InvalidArgument("bad"), CephError, "InvalidArgument"),
    (rados.TimedOut("slow"), CephError, "TimedOut"),
])
def test_wrapped(exc: Exception, kind: type[Exception], text: str) -> None:
    with pytest.raises(kind) as got, ceph_call("removing x@s"):
        raise exc
    assert text in str(got.value) and got.value.__cause__ is exc


def test_fastsnap_errors_and_others_pass_through() -> None:
    with pytest.raises(BadRequest, match="as it was"), ceph_call("x"):
        raise BadRequest("as it was")
    with pytest.raises(KeyError), ceph_call("x"):
        raise KeyError("not Ceph's")


class _Completion:
    def get_return_value(self) -> int:
        return -5


class _FailingImage:
    """What librbd's ``rbd.Image`` does when the OSDs refuse: every call raises, a queued read completes -EIO."""

    def read(self, offset: int, length: int) -> bytes:
        raise rbd.IOError("EIO reading")

    def write_zeroes(self, offset: int, length: int) -> None:
        raise rbd.ImageNotFound("gone meanwhile")

    def aio_read(self, offset: int, length: int, cb: Callable[[Any, bytes], None]) -> None:
        if offset:
            raise rbd.ConnectionShutdown("connection shut down")
        threading.Thread(target=cb, args=(_Completion(), b"")).start()


def test_an_open_images_calls_raise_fastsnap_errors_named_like_the_open() -> None:
    """Cluster.image yields an Image, not the rbd.Image: its calls raise what the open's own ceph_call would."""
    img = Image(_FailingImage(), "an operation on vms/disk@snap")
    with pytest.raises(CephError) as got:
        img.read(0, 4096)
    assert str(got.value) == f"Ceph: an operation on vms/disk@snap failed: IOError: {rbd.IOError('EIO reading')}"
    with pytest.raises(CephNotFound, match="an operation on vms/disk@snap failed: not found"):
        img.write_zeroes(0, 4096)


def test_an_aio_read_hands_out_its_return_code_not_librbds_completion() -> None:
    img = Image(_FailingImage(), "an operation on vms/disk@snap")
    got: list[tuple[int, bytes]] = []
    done = threading.Event()

    def cb(completion: Any, data: bytes) -> None:
        got.append((completion.get_return_value(), data))
        done.set()

    img.aio_read(0, 4096, cb)
    assert done.wait(5) and got == [(-5, b"")]
    # a refused read keeps librbd's text: fastsnap.stream names the offset around it, as before the wrapper
    with pytest.raises(CephError) as refused:
        img.aio_read(4096, 4096, cb)
    assert str(refused.value) == str(rbd.ConnectionShutdown("connection shut down"))

"""No librbd/librados exception leaves fastsnap.ceph: each becomes a fastsnap error naming the call (issue 11,
point 4), so recover can report one operation and go on with the others."""

from __future__ import annotations

import pytest
import rados
import rbd

from fastsnap.ceph import ceph_call
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

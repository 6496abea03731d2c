"""Input checks that need no service (issue 11, point 8): each bad input is refused with a precise message."""

from __future__ import annotations

import pytest

from fastsnap.errors import BadRequest
from fastsnap.request import SnapshotRequest, validate_request

DISK = "vms/abc_disk"


@pytest.mark.parametrize(("kw", "message"), [
    ({"disk": "vms"}, "expected POOL/IMAGE"),
    ({"disk": "vms/a/b"}, "expected POOL/IMAGE"),
    ({"disk": "vms/a@snap"}, "expected POOL/IMAGE"),
    ({"disk": "vms/\x07x"}, "disk contains the control character U+0007 at position 4"),
    ({"disk": "vms/x" + "\udcff"}, "disk is not valid UTF-8 (byte 0xff at position 5)"),
    ({"name": ""}, "image name must not be empty"),
    ({"name": "  "}, "image name must not be empty"),
    ({"name": "x" * 256}, "image name is 256 characters long; at most 255 are allowed"),
    ({"name": "a\nb"}, "image name contains the control character U+000A at position 1"),
    ({"name": "a\x85b"}, "U+0085"),
    ({"name": "caf\udce9"}, "image name is not valid UTF-8 (byte 0xe9 at position 3)"),
    ({"image_id": "not-a-uuid"}, "is not a UUID"),
    ({"base_image": "a\tb"}, "base image id contains the control character"),
    ({"store": ""}, "store must not be empty"),
    ({"properties": {"k": "v\x00"}}, "property 'k' contains the control character U+0000"),
    ({"properties": {"k\udcff": "v"}}, "property name is not valid UTF-8"),
    ({"properties": {"k": "v" * 256}}, "property 'k' is 256 characters long"),
    ({"properties": {"a=b": "v"}}, "must not contain '='"),
    ({"properties": {"owner": "me"}}, "reserved by Glance"),
    ({"properties": {f"p{i}": "v" for i in range(129)}}, "129 properties given; at most 128"),
    ({"format": "vmdk"}, "format must be raw or qcow2, not 'vmdk'"),
    ({"format": "QCOW2"}, "format must be raw or qcow2, not 'QCOW2'"),
    ({"format": 2}, "'format' must be a string"),
])
def test_refused(kw: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"disk": DISK, "name": "snap", **kw}
    with pytest.raises(BadRequest) as refused:
        validate_request(SnapshotRequest(**fields))  # type: ignore[arg-type]
    assert message in str(refused.value)


def test_accepted() -> None:
    req = SnapshotRequest(disk=DISK, name="x" * 255, properties={f"p{i}": "é" * 255 for i in range(127)} | {"e": ""})
    assert str(validate_request(req)) == DISK

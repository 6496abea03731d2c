"""Unit tests for fastsnap.location (Glance rbd:// URLs)."""

from __future__ import annotations

import pytest

from fastsnap.errors import BadRequest, InvalidLocation
from fastsnap.location import RbdLocation, backup_snap_image, backup_snap_name

FSID = "7b4f0b1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            f"rbd://{FSID}/images/abc/snap",
            RbdLocation(fsid=FSID, pool="images", image="abc", snapshot="snap"),
            id="four-parts",
        ),
        pytest.param(
            "rbd://f%2Fsid/my%20pool/im%2Fage/sn%40p",
            RbdLocation(fsid="f/sid", pool="my pool", image="im/age", snapshot="sn@p"),
            id="four-parts-quoted",
        ),
        pytest.param("rbd://abc", RbdLocation(fsid=None, pool=None, image="abc", snapshot=None), id="legacy"),
        pytest.param(
            "rbd://a%2Fb%20c",
            RbdLocation(fsid=None, pool=None, image="a/b c", snapshot=None),
            id="legacy-quoted",
        ),
    ],
)
def test_parse_valid(url: str, expected: RbdLocation) -> None:
    loc = RbdLocation.parse(url)
    assert loc == expected
    assert loc.url == url
    assert str(loc) == url


@pytest.mark.parametrize(
    ("url", "phrases"),
    [
        pytest.param("file:///var/lib/glance/images/abc", ["does not start with 'rbd://'"], id="file-scheme"),
        pytest.param("http://host/abc", ["is not an rbd location"], id="http-scheme"),
        pytest.param("RBD://abc", ["does not start with 'rbd://'"], id="uppercase-scheme"),
        pytest.param("", ["does not start with 'rbd://'"], id="empty-string"),
        pytest.param("rbd:/abc", ["does not start with 'rbd://'"], id="one-slash"),
        pytest.param(
            "rbd://fsid/pool", ["has 2 path components", "rbd://<fsid>/<pool>/<image>/<snapshot>"], id="two"
        ),
        pytest.param("rbd://fsid/pool/image", ["has 3 path components", "legacy rbd://<image>"], id="three"),
        pytest.param("rbd://fsid/pool/image/snap/extra", ["has 5 path components"], id="five"),
        pytest.param(f"rbd://{FSID}/images/abc/snap/", ["has 5 path components"], id="trailing-slash"),
        pytest.param("rbd://", ["path component 1 is empty"], id="empty-legacy"),
        pytest.param("rbd://fsid//image/snap", ["path component 2 is empty"], id="empty-pool"),
        pytest.param("rbd:///pool/image/snap", ["path component 1 is empty"], id="empty-fsid"),
        pytest.param("rbd://fsid/pool//snap", ["path component 3 is empty"], id="empty-image"),
        pytest.param("rbd://fsid/pool/image/", ["path component 4 is empty"], id="empty-snapshot"),
    ],
)
def test_parse_invalid(url: str, phrases: list[str]) -> None:
    with pytest.raises(InvalidLocation) as excinfo:
        RbdLocation.parse(url)
    message = str(excinfo.value)
    assert repr(url) in message
    for phrase in phrases:
        assert phrase in message
    assert isinstance(excinfo.value, BadRequest)
    assert isinstance(excinfo.value, ValueError)
    assert excinfo.value.exit_code == 2


@pytest.mark.parametrize(
    ("loc", "url"),
    [
        pytest.param(
            RbdLocation.for_image(FSID, "images", "abc"), f"rbd://{FSID}/images/abc/snap", id="default-snap"
        ),
        pytest.param(
            RbdLocation.for_image("f", "p", "i", snapshot="s1"), "rbd://f/p/i/s1", id="explicit-snap"
        ),
        pytest.param(
            RbdLocation.for_image("f/x", "p q", "i/j", snapshot="s/%"),
            "rbd://f%2Fx/p%20q/i%2Fj/s%2F%25",
            id="quotes-everything",
        ),
        pytest.param(RbdLocation(None, None, "a/b", None), "rbd://a%2Fb", id="legacy"),
    ],
)
def test_url_round_trips(loc: RbdLocation, url: str) -> None:
    assert loc.url == url
    assert RbdLocation.parse(loc.url) == loc


def test_for_image_fields() -> None:
    loc = RbdLocation.for_image(FSID, "images", "abc")
    assert (loc.fsid, loc.pool, loc.image, loc.snapshot) == (FSID, "images", "abc", "snap")


def test_frozen() -> None:
    loc = RbdLocation.for_image(FSID, "images", "abc")
    with pytest.raises(AttributeError):
        loc.image = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("loc", "fsid", "pool", "expected"),
    [
        pytest.param(RbdLocation.for_image(FSID, "images", "abc"), FSID, "images", True, id="same"),
        pytest.param(RbdLocation.for_image(FSID, "images", "abc"), "other", "images", False, id="other-fsid"),
        pytest.param(RbdLocation.for_image(FSID, "images", "abc"), FSID, "vms", False, id="other-pool"),
        pytest.param(RbdLocation.parse("rbd://abc"), FSID, "images", False, id="legacy"),
    ],
)
def test_in_pool(loc: RbdLocation, fsid: str, pool: str, expected: bool) -> None:
    assert loc.in_pool(fsid, pool) is expected


@pytest.mark.parametrize(
    ("fields", "phrase"),
    [
        pytest.param((FSID, "images", "", "snap"), "non-empty image name", id="empty-image"),
        pytest.param((FSID, None, "abc", "snap"), "all set or all None", id="pool-missing"),
        pytest.param((None, None, "abc", "snap"), "all set or all None", id="only-snapshot"),
        pytest.param((FSID, "", "abc", "snap"), "empty fsid, pool or snapshot", id="empty-pool"),
    ],
)
def test_constructor_rejects_inconsistent_fields(
    fields: tuple[str | None, str | None, str, str | None], phrase: str
) -> None:
    with pytest.raises(InvalidLocation, match=phrase):
        RbdLocation(*fields)


def test_backup_source_snapshot_names_round_trip_and_do_not_mix_chains() -> None:
    image = "0b4e8c1e-2f5e-4d3c-9a8b-7c6d5e4f3a2b"
    name = backup_snap_name("remote", image)
    assert name == f"fastsnap-backup-remote-{image}"
    assert backup_snap_image(name, "remote") == image
    assert backup_snap_image(backup_snap_name("remote-b", image), "remote") is None  # another store's
    assert backup_snap_image(f"fastsnap-{image}", "remote") is None
    assert backup_snap_image("fastsnap-backup-remote-not-a-uuid", "remote") is None

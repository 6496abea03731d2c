"""Unit tests for fastsnap.plan.make_plan: every store-choice rule, every path rule, every error."""

from __future__ import annotations

from typing import Any

import pytest

from fastsnap.errors import BadRequest, ConfigError, FastsnapError, PlanError, UnknownStore
from fastsnap.location import RbdLocation
from fastsnap.plan import BaseImage, Plan, PlanRequest, PreviousBackup, SnapshotPath, StoreInfo, make_plan

DISK = "disk-fsid"
OTHER = "other-fsid"
THIRD = "third-fsid"
NO_BASE = "no base image (volume-backed or image deleted)"

FAST = StoreInfo("fast", "rbd", False, "fast ceph", pool="images", fsid=DISK)
FAST2 = StoreInfo("fast2", "rbd", False, pool="images", fsid=DISK)
CHEAP = StoreInfo("cheap", "file", True, "file store")
REMOTE = StoreInfo("remote", "rbd", False, pool="images", fsid=OTHER)
REMOTE2 = StoreInfo("remote2", "rbd", False, pool="glance", fsid=THIRD)
BLIND = StoreInfo("blind", "rbd", False, pool="blind-pool", fsid=None)
BLIND2 = StoreInfo("blind2", "rbd", False, pool="blind-pool", fsid=None)
OPAQUE = StoreInfo("opaque", None, False)
NOPOOL = StoreInfo("nopool", "rbd", False, fsid=DISK)
FAST_DEFAULT = StoreInfo("fast", "rbd", True, pool="images", fsid=DISK)
REMOTE_DEFAULT = StoreInfo("remote", "rbd", True, pool="images", fsid=OTHER)
BLIND_DEFAULT = StoreInfo("blind", "rbd", True, pool="blind-pool", fsid=None)
OPAQUE_DEFAULT = StoreInfo("opaque", None, True)

CATALOGUE = (FAST, CHEAP, REMOTE, REMOTE2, BLIND, OPAQUE)


def url(fsid: str, pool: str, image: str = "base") -> str:
    return RbdLocation.for_image(fsid, pool, image).url


def image(
    stores: tuple[str, ...] = (),
    locations: tuple[tuple[str, str | None], ...] = (),
    direct_url: str | None = None,
) -> BaseImage:
    return BaseImage(id="base", stores=stores, locations=locations, direct_url=direct_url)


def request(**kwargs: Any) -> PlanRequest:
    kwargs.setdefault("disk_fsid", DISK)
    kwargs.setdefault("stores", CATALOGUE)
    return PlanRequest(**kwargs)


IN_FAST = image(stores=("fast",), locations=((url(DISK, "images"), "fast"),))
IN_REMOTE = image(stores=("remote",), locations=((url(OTHER, "images"), "remote"),))


@pytest.mark.parametrize(
    ("req", "path", "store", "pool", "fsid", "phrases"),
    [
        # -- no base image: default store ------------------------------------------------------------
        pytest.param(
            request(),
            SnapshotPath.STREAM, "cheap", None, None,
            [NO_BASE, "default store 'cheap'", "'file' store, not rbd"],
            id="no-base-default-file-stream",
        ),
        pytest.param(
            request(stores=(FAST_DEFAULT, StoreInfo("cheap", "file", False))),
            SnapshotPath.CLONE, "fast", "images", DISK,
            [NO_BASE, "default store 'fast'", "on this cluster: clone"],
            id="no-base-default-rbd-clone",
        ),
        pytest.param(
            request(stores=(REMOTE_DEFAULT, FAST)),
            SnapshotPath.STREAM, "remote", "images", OTHER,
            [NO_BASE, "default store 'remote'", "another cluster (fsid other-fsid, disk on disk-fsid)",
             ": stream"],
            id="no-base-default-rbd-other-cluster-stream",
        ),
        # -- explicit and configured store -----------------------------------------------------------
        pytest.param(
            request(requested_store="fast"),
            SnapshotPath.CLONE, "fast", "images", DISK,
            [NO_BASE, "store 'fast' requested explicitly", "store 'fast' is rbd pool images on this cluster"],
            id="requested-rbd-same-cluster-clone",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_FAST),
            SnapshotPath.STREAM, "remote", "images", OTHER,
            ["store 'remote' requested explicitly", "on another cluster", ": stream"],
            id="requested-beats-base-image",
        ),
        pytest.param(
            request(requested_store="cheap", configured_store="fast"),
            SnapshotPath.STREAM, "cheap", None, None,
            ["store 'cheap' requested explicitly", "'file' store"],
            id="requested-beats-configured",
        ),
        pytest.param(
            request(requested_store="fast", configured_store="nope"),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["requested explicitly"],
            id="requested-ignores-bad-configured",
        ),
        pytest.param(
            request(requested_store="fast", stores=(FAST, REMOTE)),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["requested explicitly"],
            id="requested-needs-no-default-store",
        ),
        pytest.param(
            request(requested_store="", configured_store="fast"),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["store 'fast' from [snapshot] default_store"],
            id="empty-requested-means-not-given",
        ),
        pytest.param(
            request(configured_store="fast"),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["no base image", "store 'fast' from [snapshot] default_store", ": clone"],
            id="configured-clone",
        ),
        pytest.param(
            request(configured_store="cheap", base_image=IN_FAST),
            SnapshotPath.STREAM, "cheap", None, None,
            ["store 'cheap' from [snapshot] default_store", "'file' store"],
            id="configured-beats-base-image",
        ),
        pytest.param(
            request(configured_store="", base_image=IN_FAST),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'fast'"],
            id="empty-configured-means-not-given",
        ),
        # -- base image store ------------------------------------------------------------------------
        pytest.param(
            request(base_image=IN_FAST),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'fast' (rbd pool images) on this cluster: clone"],
            id="base-by-metadata-store",
        ),
        pytest.param(
            request(base_image=image(locations=((url(DISK, "images"), None),))),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'fast'"],
            id="base-by-url-fsid-pool",
        ),
        pytest.param(
            request(base_image=image(stores=("fast",))),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'fast'"],
            id="base-by-stores-field-only",
        ),
        pytest.param(
            request(base_image=image(direct_url=url(DISK, "images"))),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'fast'"],
            id="base-by-direct-url",
        ),
        pytest.param(
            request(base_image=image(locations=(("rbd://legacy-image", "fast"),))),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'fast'"],
            id="base-legacy-url-with-metadata",
        ),
        pytest.param(
            request(stores=(FAST, FAST2, CHEAP), base_image=image(locations=((url(DISK, "images"), None),))),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["in store 'fast'"],
            id="base-url-matches-two-stores-first-wins",
        ),
        pytest.param(
            request(
                stores=(FAST, FAST2, CHEAP),
                base_image=image(stores=("fast2",), locations=((url(DISK, "images"), None),)),
            ),
            SnapshotPath.CLONE, "fast2", "images", DISK,
            ["in store 'fast2'"],
            id="base-url-matches-two-stores-own-wins",
        ),
        pytest.param(
            request(
                base_image=image(
                    stores=("remote", "fast"),
                    locations=((url(OTHER, "images"), "remote"), (url(DISK, "images"), "fast")),
                )
            ),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'fast'"],
            id="base-prefers-store-on-disk-cluster",
        ),
        pytest.param(
            request(stores=(FAST_DEFAULT, REMOTE), base_image=IN_REMOTE),
            SnapshotPath.CLONE, "fast", "images", DISK,
            ["base image base is in store 'remote' on another cluster (fsid other-fsid)",
             "using Glance's default store 'fast'", ": clone"],
            id="base-other-cluster-default-rbd-clone",
        ),
        pytest.param(
            request(base_image=IN_REMOTE),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base is in store 'remote' on another cluster (fsid other-fsid)",
             "default store 'cheap'", "'file' store"],
            id="base-other-cluster-default-stream",
        ),
        pytest.param(
            request(base_image=image(stores=("remote", "remote2"))),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base is in stores 'remote', 'remote2' on other clusters",
             "(fsid other-fsid, third-fsid)", "default store 'cheap'"],
            id="base-two-other-clusters",
        ),
        pytest.param(
            request(base_image=image(locations=((url(DISK, "images"), "remote"),))),
            SnapshotPath.STREAM, "cheap", None, None,
            ["in store 'remote' on another cluster (fsid other-fsid)"],
            id="base-catalogue-fsid-beats-url-fsid",
        ),
        pytest.param(
            request(base_image=image(stores=("cheap",), locations=(("file:///glance/base", "cheap"),))),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base is in no rbd store (stores: 'cheap')", "default store 'cheap'"],
            id="base-in-file-store",
        ),
        pytest.param(
            request(base_image=image()),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base shows no store Glance knows", "default store 'cheap'"],
            id="base-locations-hidden",
        ),
        pytest.param(
            request(base_image=image(stores=("gone",), locations=((url(DISK, "images"), "gone"),))),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base shows no store Glance knows"],
            id="base-store-not-in-catalogue",
        ),
        pytest.param(
            request(base_image=image(locations=(("rbd://fsid/pool", None), (url(THIRD, "x"), None)))),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base shows no store Glance knows"],
            id="base-unparsable-and-unmatched-urls-skipped",
        ),
        pytest.param(
            request(base_image=image(locations=(("rbd://legacy-image", None),))),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base shows no store Glance knows"],
            id="base-legacy-url-without-metadata-skipped",
        ),
        # -- unknown catalogue fsid, URL evidence ----------------------------------------------------
        pytest.param(
            request(base_image=image(stores=("blind",), locations=((url(DISK, "blind-pool"), "blind"),))),
            SnapshotPath.CLONE, "blind", "blind-pool", DISK,
            ["base image base is in store 'blind' (rbd pool blind-pool) on this cluster",
             "fsid taken from the base image's location URL", ": clone"],
            id="blind-evidence-from-metadata-location",
        ),
        pytest.param(
            request(base_image=image(stores=("blind",), locations=((url(DISK, "blind-pool"), None),))),
            SnapshotPath.CLONE, "blind", "blind-pool", DISK,
            ["in store 'blind'", "fsid taken from"],
            id="blind-evidence-from-url-without-metadata",
        ),
        pytest.param(
            request(base_image=image(stores=("blind",), direct_url=url(DISK, "blind-pool"))),
            SnapshotPath.CLONE, "blind", "blind-pool", DISK,
            ["in store 'blind'", "fsid taken from"],
            id="blind-evidence-from-direct-url",
        ),
        pytest.param(
            request(
                base_image=image(
                    stores=("blind",),
                    locations=((url(DISK, "blind-pool"), "blind"),),
                    direct_url=url(DISK, "blind-pool"),
                )
            ),
            SnapshotPath.CLONE, "blind", "blind-pool", DISK,
            ["in store 'blind'"],
            id="blind-direct-url-same-as-location",
        ),
        pytest.param(
            request(base_image=image(stores=("blind",), locations=((url(OTHER, "blind-pool"), "blind"),))),
            SnapshotPath.STREAM, "cheap", None, None,
            ["base image base is in store 'blind' on another cluster (fsid other-fsid)",
             "default store 'cheap'"],
            id="blind-evidence-other-cluster",
        ),
        pytest.param(
            request(
                requested_store="blind",
                base_image=image(stores=("blind",), locations=((url(DISK, "blind-pool"), "blind"),)),
            ),
            SnapshotPath.CLONE, "blind", "blind-pool", DISK,
            ["store 'blind' requested explicitly", "rbd pool blind-pool on this cluster (fsid taken from",
             ": clone"],
            id="requested-blind-with-evidence-clone",
        ),
        pytest.param(
            request(
                requested_store="blind",
                base_image=image(stores=("blind",), locations=((url(OTHER, "blind-pool"), "blind"),)),
            ),
            SnapshotPath.STREAM, "blind", "blind-pool", OTHER,
            ["store 'blind' requested explicitly", "another cluster (fsid other-fsid", ": stream"],
            id="requested-blind-with-evidence-stream",
        ),
    ],
)
def test_make_plan(
    req: PlanRequest, path: SnapshotPath, store: str, pool: str | None, fsid: str | None, phrases: list[str]
) -> None:
    plan = make_plan(req)
    assert isinstance(plan, Plan)
    assert (plan.path, plan.store, plan.pool, plan.fsid) == (path, store, pool, fsid)
    for phrase in phrases:
        assert phrase in plan.reason, f"{phrase!r} not in {plan.reason!r}"
    if req.base_image is not None:
        assert "no base image" not in plan.reason


def test_reason_for_base_image_clone_is_exact() -> None:
    plan = make_plan(request(base_image=IN_FAST))
    assert plan.reason == "base image base is in store 'fast' (rbd pool images) on this cluster: clone"


def test_snapshot_path_is_a_string() -> None:
    assert isinstance(SnapshotPath.CLONE, str)
    assert SnapshotPath.CLONE.value == "clone"
    assert SnapshotPath("stream") is SnapshotPath.STREAM


@pytest.mark.parametrize(
    ("req", "error", "phrases"),
    [
        pytest.param(request(stores=()), ConfigError, ["Glance reports no stores"], id="empty-catalogue"),
        pytest.param(
            request(requested_store="nope"),
            UnknownStore,
            ["'nope'", "known stores: 'fast', 'cheap', 'remote', 'remote2', 'blind', 'opaque'"],
            id="requested-unknown",
        ),
        pytest.param(
            request(configured_store="nope"),
            ConfigError,
            ["[snapshot] default_store", "'nope'", "known stores: 'fast', 'cheap'"],
            id="configured-unknown",
        ),
        pytest.param(request(stores=(FAST, REMOTE)), ConfigError, ["no default store"], id="no-default"),
        pytest.param(
            request(stores=(FAST_DEFAULT, StoreInfo("cheap", "file", True))),
            ConfigError,
            ["several default stores: 'fast', 'cheap'"],
            id="two-defaults",
        ),
        pytest.param(
            request(stores=(FAST, REMOTE), base_image=IN_REMOTE),
            ConfigError,
            ["no default store"],
            id="base-other-cluster-no-default",
        ),
        pytest.param(
            request(base_image=image(stores=("blind",))),
            PlanError,
            ["fsid of store 'blind' unknown", "Glance could not reach its Ceph cluster", "base image base",
             "retry"],
            id="base-blind-no-evidence",
        ),
        pytest.param(
            request(base_image=image(stores=("remote", "blind"))),
            PlanError,
            ["fsid of store 'blind' unknown", "retry"],
            id="base-other-cluster-and-blind",
        ),
        pytest.param(
            request(
                base_image=image(
                    stores=("blind",),
                    locations=(
                        (url(DISK, "blind-pool", "a"), "blind"),
                        (url(OTHER, "blind-pool", "b"), "blind"),
                    ),
                )
            ),
            PlanError,
            ["fsid of store 'blind' unknown", "locations disagree: disk-fsid, other-fsid"],
            id="base-blind-conflicting-evidence",
        ),
        pytest.param(
            request(base_image=image(stores=("blind",), direct_url=url(DISK, "other-pool"))),
            PlanError,
            ["fsid of store 'blind' unknown"],
            id="base-blind-direct-url-other-pool-no-evidence",
        ),
        pytest.param(
            request(
                stores=(*CATALOGUE, BLIND2),
                base_image=image(stores=("blind", "blind2"), locations=((url(DISK, "blind-pool"), None),)),
            ),
            PlanError,
            ["fsid of store 'blind' unknown"],
            id="base-two-blind-stores-url-ambiguous",
        ),
        pytest.param(
            request(base_image=image(stores=("opaque",))),
            PlanError,
            ["type of store 'opaque' unknown", "base image base", "admin or service role"],
            id="base-store-type-unknown",
        ),
        pytest.param(
            request(requested_store="blind"),
            PlanError,
            ["fsid of store 'blind' unknown", "cannot choose clone or stream", "retry"],
            id="requested-blind-no-evidence",
        ),
        pytest.param(
            request(stores=(BLIND_DEFAULT, FAST)),
            PlanError,
            ["fsid of store 'blind' unknown", "retry"],
            id="default-blind",
        ),
        pytest.param(
            request(requested_store="opaque"),
            PlanError,
            ["type of store 'opaque' unknown", "cannot choose clone or stream", "admin or service role"],
            id="requested-type-unknown",
        ),
        pytest.param(
            request(stores=(OPAQUE_DEFAULT, FAST), base_image=image(stores=("cheap",))),
            PlanError,
            ["type of store 'opaque' unknown", "admin or service role"],
            id="default-type-unknown",
        ),
        pytest.param(
            request(stores=(NOPOOL, CHEAP), requested_store="nopool"),
            PlanError,
            ["pool of rbd store 'nopool'", "cannot clone"],
            id="clone-target-pool-unknown",
        ),
    ],
)
def test_make_plan_errors(req: PlanRequest, error: type[FastsnapError], phrases: list[str]) -> None:
    with pytest.raises(error) as excinfo:
        make_plan(req)
    assert type(excinfo.value) is error
    for phrase in phrases:
        assert phrase in str(excinfo.value), f"{phrase!r} not in {str(excinfo.value)!r}"


def test_unknown_store_is_bad_request() -> None:
    with pytest.raises(BadRequest) as excinfo:
        make_plan(request(requested_store="nope"))
    assert excinfo.value.exit_code == 2


# -- cross-cluster paths (issue 16): delta, copy, and stream without credentials ----------------------------

PARENT = url(DISK, "images", "base")                      # the disk is a clone of the base image's copy in 'fast'
IN_BOTH = image(stores=("fast", "remote"),
                locations=((url(DISK, "images"), "fast"), (url(OTHER, "images"), "remote")))
IN_BOTH_NO_META = image(stores=("fast", "remote"),
                        locations=((url(DISK, "images"), None), (url(OTHER, "images"), None)))
CREDS = frozenset({OTHER})


@pytest.mark.parametrize(
    ("req", "path", "base_location", "phrases"),
    [
        pytest.param(
            request(requested_store="remote", base_image=IN_BOTH, remote_fsids=CREDS, disk_parent=PARENT),
            SnapshotPath.DELTA, url(OTHER, "images"),
            ["store 'remote' requested explicitly", "another cluster (fsid other-fsid, disk on disk-fsid)",
             "base image base has a copy there and the disk is a clone of it: delta"],
            id="requested-remote-base-copy-delta",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_BOTH_NO_META, remote_fsids=CREDS, disk_parent=PARENT),
            SnapshotPath.DELTA, url(OTHER, "images"),
            [": delta"],
            id="locations-without-metadata-delta",
        ),
        pytest.param(
            request(configured_store="remote", base_image=IN_BOTH, remote_fsids=CREDS, disk_parent=PARENT),
            SnapshotPath.DELTA, url(OTHER, "images"),
            ["from [snapshot] default_store", ": delta"],
            id="configured-remote-delta",
        ),
        pytest.param(
            request(stores=(REMOTE_DEFAULT, FAST, StoreInfo("cheap", "file", False)), remote_fsids=CREDS,
                    base_image=image(stores=("remote",), locations=((url(OTHER, "images"), "remote"),)),
                    disk_parent=url(DISK, "images", "other-image")),
            SnapshotPath.COPY, None,
            ["default store 'remote'", "the disk is a clone of images/other-image@snap, not of base image base",
             ": copy"],
            id="default-remote-disk-parent-is-another-image-copy",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_FAST, remote_fsids=CREDS, disk_parent=PARENT),
            SnapshotPath.COPY, None,
            ["base image base has no copy in store 'remote'", ": copy (allocated extents only"],
            id="base-only-in-fast-copy",
        ),
        pytest.param(
            request(requested_store="remote", remote_fsids=CREDS),
            SnapshotPath.COPY, None,
            [NO_BASE, "no base image: copy"],
            id="no-base-copy",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_BOTH, remote_fsids=CREDS),
            SnapshotPath.COPY, None,
            ["the disk is not a clone: copy"],
            id="disk-not-a-clone-copy",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_BOTH, remote_fsids=CREDS,
                    disk_parent=url(OTHER, "images", "base")),
            SnapshotPath.COPY, None,
            ["the disk is a clone of images/base@snap, not of base image base"],
            id="parent-url-on-another-cluster-copy",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_BOTH, remote_fsids=CREDS, disk_parent=PARENT,
                    delta_refused="the base image's copy differs at offset 0"),
            SnapshotPath.COPY, None,
            ["the base image's copy differs at offset 0: copy"],
            id="base-copy-check-failed-copy",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_BOTH, disk_parent=PARENT),
            SnapshotPath.STREAM, None,
            ["another cluster (fsid other-fsid, disk on disk-fsid)", "no credentials for it", ": stream"],
            id="no-credentials-stream",
        ),
        pytest.param(
            request(requested_store="remote", base_image=IN_BOTH, remote_fsids=frozenset({THIRD}),
                    disk_parent=PARENT),
            SnapshotPath.STREAM, None,
            ["no credentials for it", ": stream"],
            id="credentials-for-another-cluster-only-stream",
        ),
        pytest.param(
            request(requested_store="remote2", base_image=IN_BOTH, remote_fsids=frozenset({THIRD}),
                    disk_parent=PARENT),
            SnapshotPath.COPY, None,
            ["store 'remote2' is rbd pool glance on another cluster (fsid third-fsid", "no copy in store 'remote2'"],
            id="third-cluster-with-credentials-copy",
        ),
        pytest.param(
            request(requested_store="cheap", base_image=IN_BOTH, remote_fsids=CREDS, disk_parent=PARENT),
            SnapshotPath.STREAM, None,
            ["'file' store, not rbd: stream"],
            id="file-store-with-credentials-stream",
        ),
        pytest.param(
            request(base_image=IN_BOTH, remote_fsids=CREDS, disk_parent=PARENT),
            SnapshotPath.CLONE, None,
            ["in store 'fast'", ": clone"],
            id="base-in-both-no-store-requested-clone-stays",
        ),
    ],
)
def test_cross_cluster_plan(req: PlanRequest, path: SnapshotPath, base_location: str | None,
                            phrases: list[str]) -> None:
    plan = make_plan(req)
    assert plan.path is path
    assert plan.base_location == base_location
    for phrase in phrases:
        assert phrase in plan.reason, f"{phrase!r} not in {plan.reason!r}"


def test_cross_cluster_without_pool_is_an_error() -> None:
    nopool = StoreInfo("far", "rbd", False, fsid=OTHER)
    with pytest.raises(PlanError, match="pool of rbd store 'far'"):
        make_plan(request(stores=(*CATALOGUE, nopool), requested_store="far", remote_fsids=CREDS))


def test_new_paths_are_strings() -> None:
    assert SnapshotPath("delta") is SnapshotPath.DELTA and SnapshotPath("copy") is SnapshotPath.COPY


# -- the result's disk format (issue 25) ---------------------------------------------------------------------


@pytest.mark.parametrize(("requested", "configured", "want"), [
    (None, "raw", "raw"), (None, "qcow2", "qcow2"), ("qcow2", "raw", "qcow2"), ("raw", "qcow2", "raw"),
])
def test_a_stream_makes_the_requested_else_the_configured_format(requested: str | None, configured: str,
                                                                  want: str) -> None:
    plan = make_plan(request(requested_store="cheap", requested_format=requested, configured_format=configured))
    assert (plan.path, plan.format) == (SnapshotPath.STREAM, want)
    assert ("as qcow2" in plan.reason) == (want == "qcow2")


def test_qcow2_asked_of_a_clone_is_refused_and_configured_qcow2_is_not_its_business() -> None:
    with pytest.raises(BadRequest, match=r"format 'qcow2' is made by the stream path only.*clone path into rbd store "
                                         r"'fast'"):
        make_plan(request(requested_store="fast", requested_format="qcow2"))
    plan = make_plan(request(requested_store="fast", configured_format="qcow2"))
    assert (plan.path, plan.format) == (SnapshotPath.CLONE, "raw")
    assert "stream_format is for streams" in plan.reason
    assert make_plan(request(requested_store="fast", requested_format="raw")).format == "raw"
# -- backups: [snapshot] backup_store and the incremental path (issue 25) -------------------------------------

PREV_URL = RbdLocation.for_image(OTHER, "images", "prev", "snap").url
PREV = PreviousBackup("prev", "fastsnap-backup-remote-prev", "active", (PREV_URL,))


def backup(**kwargs: Any) -> PlanRequest:
    kwargs.setdefault("backup", True)
    kwargs.setdefault("remote_fsids", CREDS)
    return request(**kwargs)


@pytest.mark.parametrize(
    ("req", "path", "store", "phrases"),
    [
        pytest.param(backup(backup_store="remote", previous=PREV), SnapshotPath.INCREMENTAL, "remote",
                     ["backup into store 'remote' from [snapshot] backup_store", "previous backup prev of this disk "
                      "is there: incremental", "changed since fastsnap-backup-remote-prev"],
                     id="backup-store-previous-there-incremental"),
        pytest.param(backup(requested_store="remote", previous=PREV, backup_store="cheap"),
                     SnapshotPath.INCREMENTAL, "remote", ["store 'remote' requested explicitly", ": incremental"],
                     id="requested-store-wins-over-backup-store"),
        pytest.param(backup(backup_store="remote", configured_store="cheap", previous=PREV),
                     SnapshotPath.INCREMENTAL, "remote", ["from [snapshot] backup_store"],
                     id="backup-store-wins-over-default-store"),
        pytest.param(request(backup_store="remote", configured_store="cheap", previous=PREV, remote_fsids=CREDS),
                     SnapshotPath.STREAM, "cheap", ["from [snapshot] default_store"],
                     id="a-snapshot-ignores-backup-store"),
        pytest.param(backup(backup_store="remote"), SnapshotPath.COPY, "remote",
                     ["not incremental: no earlier backup of this disk into store 'remote'", ": copy"],
                     id="first-backup-copy"),
        pytest.param(backup(backup_store="remote", base_image=IN_BOTH, disk_parent=PARENT), SnapshotPath.DELTA,
                     "remote", ["not incremental: no earlier backup", ": delta"], id="first-backup-delta"),
        pytest.param(backup(backup_store="remote", previous=PreviousBackup("prev", "s", None)), SnapshotPath.COPY,
                     "remote", ["not incremental: the previous backup prev is gone", ": copy"],
                     id="previous-gone-copy"),
        pytest.param(backup(backup_store="remote", previous=PreviousBackup("prev", "s", "pending_delete", (PREV_URL,))),
                     SnapshotPath.COPY, "remote", ["the previous backup prev is pending_delete, not active"],
                     id="previous-not-active-copy"),
        pytest.param(backup(backup_store="remote", previous=PreviousBackup("prev", "s", "active", None)),
                     SnapshotPath.INCREMENTAL, "remote", [": incremental"],
                     id="a-users-backup-whose-locations-glance-hides-incremental"),
        pytest.param(backup(backup_store="remote", previous=PreviousBackup("prev", "s", "active",
                                                                            (url(OTHER, "images", "x"),))),
                     SnapshotPath.COPY, "remote", ["the previous backup prev is not at " + PREV_URL],
                     id="previous-elsewhere-copy"),
        pytest.param(backup(backup_store="remote", previous=PREV, base_image=IN_BOTH, disk_parent=PARENT,
                            incremental_refused="the previous backup prev differs from its source at offset 0"),
                     SnapshotPath.DELTA, "remote",
                     ["not incremental: the previous backup prev differs from its source at offset 0", ": delta"],
                     id="integrity-check-failed-delta"),
        pytest.param(request(backup=True, backup_store="remote", previous=PREV), SnapshotPath.STREAM, "remote",
                     ["no credentials for it", ": stream"], id="no-credentials-stream"),
        pytest.param(backup(backup_store="fast", previous=PREV), SnapshotPath.CLONE, "fast", [": clone"],
                     id="backup-store-on-this-cluster-clone"),
    ],
)
def test_backup_plan(req: PlanRequest, path: SnapshotPath, store: str, phrases: list[str]) -> None:
    plan = make_plan(req)
    assert (plan.path, plan.store) == (path, store), plan.reason
    for phrase in phrases:
        assert phrase in plan.reason, f"{phrase!r} not in {plan.reason!r}"
    remote_backup = path in (SnapshotPath.INCREMENTAL, SnapshotPath.DELTA, SnapshotPath.COPY)
    assert plan.chain == ("remote" if remote_backup else None)
    if path is SnapshotPath.INCREMENTAL:
        assert plan.previous == req.previous and plan.previous_location == PREV_URL and plan.base_location is None
    else:
        assert plan.previous is None and plan.previous_location is None


def test_unknown_backup_store_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\[snapshot\] backup_store = 'nowhere'"):
        make_plan(backup(backup_store="nowhere"))


def test_incremental_is_a_string() -> None:
    assert SnapshotPath("incremental") is SnapshotPath.INCREMENTAL

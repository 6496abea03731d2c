"""Nova drives fastsnap (issue 12): the stack's real Nova (ceph-test-env/up --nova), its nova-compute switched to
``compute_driver = fastsnap.FastsnapLibvirtDriver`` for this module (and back afterwards), libvirt TCG guests
writing a counter to their rbd disks, the fastsnap service on the compute host's unix socket (started here from
the stack's fastsnap.conf).

Nova is driven through its REST API as the member user ``demo`` (and the documented ``openstack`` commands where
the README shows them). Servers boot from the test guest's images (fast / remote / cheap); every server and image
a test makes is deleted afterwards."""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import rbd

from testkit import counter, novaapi, novahost
from testkit.counter import resumes_from
from testkit.env import ROOT, RUN, read_env
from testkit.nova import Nova as NovaCLI
from testkit.nova import Server
from testkit.novaapi import NovaAPI, read_ini
from testkit.stack import Stack
from tests.integration.conftest import stack_mode

pytestmark = [pytest.mark.stack, pytest.mark.nova]

BOOT_TIMEOUT = 420
SNAP_TIMEOUT = 600


def wait_image(stack: Stack, image_id: str, timeout: float = SNAP_TIMEOUT) -> dict[str, Any]:
    return novaapi.wait_image(stack.glance("admin"), image_id, timeout, poll=0.5)


def image_gone(stack: Stack, image_id: str) -> bool:
    return not list(stack.glance("admin").images.list(filters={"id": image_id}))


def delete_images(stack: Stack, image_ids: list[str], timeout: float = 120) -> dict[str, str]:
    """Delete images (as admin), retrying failed deletes until ``timeout``; returns {id: last error} of those
    still there. Glance answers 500 to a delete that races the end of its own background hash calculation
    (``location_import``: "Operation file ... does not exist, cannot cancel"), which takes minutes for several
    freshly registered images on this machine; the same delete a little later succeeds."""
    g = stack.glance("admin")
    left = {i: "" for i in image_ids}
    deadline = time.monotonic() + timeout
    while left:
        for image_id in list(left):
            try:
                g.images.delete(image_id)
                del left[image_id]
            except Exception as exc:  # glanceclient raises its own HTTP errors
                if image_gone(stack, image_id):
                    del left[image_id]
                else:
                    left[image_id] = f"{type(exc).__name__}: {exc}"
        if not left or time.monotonic() > deadline:
            break
        time.sleep(3)
    return left


# -- the fastsnap service on the compute host ----------------------------------------------------------------


class FastsnapService(novahost.FastsnapService):
    """``fastsnap serve`` on the unix socket nova.conf's [fastsnap] unix_socket names (testkit.novahost's, which
    scripts/demo_nova.py and bench.nova use too), with its own oslo.log file (``oslo_log``: the stack's
    fastsnap.conf logs every fastsnap process into one log_dir)."""

    def __init__(self, stack: Stack, socket_path: Path, work: Path, extra_conf: str = "") -> None:
        self.stack = stack
        self.oslo_log = work / "fastsnap.log"
        super().__init__(stack.env, work, extra_conf="flatten_poll_interval = 5\n" + extra_conf, socket=socket_path,
                         log_file=self.oslo_log)

    def start(self, crash_at: str | None = None) -> None:
        """Start the service; with ``crash_at`` it SIGKILLs itself at that point of a snapshot's workflow
        (``fastsnap.workflow.crash_point``, through tests/crashing_cli.py)."""
        if crash_at:
            self.launch([str(ROOT / ".venv/bin/python"), "-m", "tests.crashing_cli"],
                        {"FASTSNAP_TEST_CRASH_AT": crash_at})
        else:
            super().start()

    def job_for(self, image_id: str) -> dict[str, Any]:
        code, body = self.call("GET", f"/v1/snapshots?image_id={image_id}")
        assert code == 200, body
        jobs = body["snapshots"]
        assert len(jobs) == 1, f"fastsnap jobs for image {image_id}: {jobs}"
        return dict(jobs[0])


# -- fixtures ------------------------------------------------------------------------------------------------


HOOK_DRIVER = "fastsnap.FastsnapLibvirtDriver"


def up_nova(stack: Stack, **settings: str) -> float:
    """ceph-test-env/up --nova with these FASTSNAP_TEST_NOVA_* settings (:func:`testkit.novahost.up_nova`): it
    rewrites nova.conf and restarts nova-compute when it changed; the stack's env then updated. Seconds it took."""
    t0 = time.monotonic()
    up = novahost.up_nova(settings, timeout=1200)
    if up.returncode != 0:
        pytest.fail(f"ceph-test-env/up ({settings}) failed:\n{up.stderr[-4000:]}")
    stack.env.update(read_env(RUN / "env.sh"))
    return time.monotonic() - t0


def driver_now(stack: Stack) -> str:
    """The compute_driver nova-compute runs now; fails the test outside the native stack or without a Nova part."""
    if stack_mode() != "native":
        pytest.fail("Nova runs in the native stack only")
    NovaCLI(stack)  # fails the test when the stack has no Nova part
    return stack.env.get("FASTSNAP_TEST_NOVA_DRIVER", "libvirt.LibvirtDriver")


@pytest.fixture(scope="module")
def fastsnap_driver(stack: Stack) -> Iterator[str]:
    """nova-compute runs fastsnap's hook for this module; the driver it ran before comes back afterwards."""
    before = driver_now(stack)
    if before != HOOK_DRIVER:
        up_nova(stack, FASTSNAP_TEST_NOVA_DRIVER=HOOK_DRIVER)
    try:
        yield HOOK_DRIVER
    finally:
        if before != HOOK_DRIVER:
            up_nova(stack, FASTSNAP_TEST_NOVA_DRIVER=before)


@pytest.fixture(scope="module")
def hook_nova(stack: Stack, fastsnap_driver: str) -> Iterator[NovaAPI]:
    n = NovaAPI(stack.env, stack.session("demo"), stack.session("admin"), boot_timeout=BOOT_TIMEOUT)
    assert read_ini(n.conf)["DEFAULT"].get("compute_driver") == fastsnap_driver
    try:
        yield n
    finally:
        n.delete_servers()


@contextlib.contextmanager
def serving(stack: Stack, hook_nova: NovaAPI, prefix: str, extra_conf: str = "") -> Iterator[FastsnapService]:
    """The compute host's fastsnap service in a temporary directory, started; stopped afterwards, and its output
    must hold no traceback."""
    sock = Path(read_ini(hook_nova.conf)["fastsnap"]["unix_socket"])
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        svc = FastsnapService(stack, sock, Path(tmp), extra_conf)
        svc.start()
        try:
            yield svc
        finally:
            svc.stop()
            log = svc.log.read_text(errors="replace")
            assert "Traceback" not in log, log[-4000:]


@pytest.fixture(scope="module")
def fastsnap_service(stack: Stack, hook_nova: NovaAPI) -> Iterator[FastsnapService]:
    with serving(stack, hook_nova, "fastsnap-nova-") as svc:
        yield svc


@pytest.fixture
def images(stack: Stack) -> Iterator[list[str]]:
    """Images a test makes through Nova: deleted afterwards (those Nova or fastsnap already deleted are fine)."""
    made: list[str] = []
    yield made
    delete_images(stack, made)


@pytest.fixture(scope="module")
def server_fast(hook_nova: NovaAPI, fastsnap_service: FastsnapService) -> dict[str, Any]:
    """A running guest booted from the guest image in `fast` (its disk is a clone of it on cluster A)."""
    srv = hook_nova.boot(hook_nova.env["FASTSNAP_NOVA_IMAGE"])
    hook_nova.ready_counter(srv["id"])
    return srv


# -- what a test watches while Nova snapshots ---------------------------------------------------------------


class Watch:
    """During a snapshot: the libvirt state of the guest's domain and the files under snapshots_directory."""

    def __init__(self, nova: NovaAPI, sid: str) -> None:
        import libvirt

        self.conn = libvirt.openReadOnly(nova.libvirt_uri)
        self.dom = self.conn.lookupByName(nova.domain(sid))
        self.snapshots_dir = nova.snapshots_dir
        self.states: set[int] = set()
        self.files: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.running = libvirt.VIR_DOMAIN_RUNNING

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.states.add(self.dom.state()[0])
            if self.snapshots_dir.exists():
                for root, dirs, files in os.walk(self.snapshots_dir):
                    self.files.update(os.path.join(root, x) for x in dirs + files)
            time.sleep(0.05)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.conn.close()

    def assert_live_and_no_local_file(self) -> None:
        assert self.states == {self.running}, f"the guest left RUNNING during the snapshot: states {self.states}"
        assert not self.files, f"files under [libvirt] snapshots_directory: {sorted(self.files)}"


def read_counter(stack: Stack, spec: str) -> dict[str, Any]:
    """The guest's counter on a disk: ``rbd:POOL/IMAGE[@SNAP]`` (cluster A) or an image file."""
    return counter.read_counter(spec, stack.env["CEPH_CONF"])


def snapshot_counter(stack: Stack, image_id: str, rbd_spec: str | None = None) -> int:
    """The counter in a snapshot image: from its RBD image (clone path) or Glance's copy (any store)."""
    if rbd_spec:
        return resumes_from(read_counter(stack, rbd_spec))
    with tempfile.NamedTemporaryFile(suffix=".img") as f:
        for chunk in stack.glance("admin").images.data(image_id):
            f.write(chunk)
        f.flush()
        return resumes_from(read_counter(stack, f.name))


def live_counter(stack: Stack, hook_nova: NovaAPI, sid: str) -> int:
    """The guest's counter now, read inside the guest through its agent."""
    cli = NovaCLI(stack)
    server = Server(sid, sid, hook_nova.domain(sid), 0.0)
    cli.wait_agent(server)
    return cli.counter(server)


def fastsnap_event(nova: NovaAPI, sid: str, request_id: str) -> dict[str, Any]:
    evs = [e for e in nova.events(sid, request_id) if e["event"] == "compute_fastsnap_snapshot"]
    assert len(evs) == 1, f"events of request {request_id}: {nova.events(sid, request_id)}"
    return evs[0]


def wait_idle(nova: NovaAPI, sid: str) -> dict[str, Any]:
    return nova.wait_server(sid, "ACTIVE", SNAP_TIMEOUT)


# -- the tests -------------------------------------------------------------------------------------------------


@pytest.mark.smoke
def test_clone_path_and_a_server_booted_from_the_snapshot(stack: Stack, hook_nova: NovaAPI,
                                                          fastsnap_service: FastsnapService,
                                                          server_fast: dict[str, Any], images: list[str]) -> None:
    sid = server_fast["id"]
    before = live_counter(stack, hook_nova, sid)
    assert before > 0, "the guest has not written its counter yet"
    with Watch(hook_nova, sid) as watch:
        t0 = time.monotonic()
        image_id, request_id = hook_nova.image_create(sid, "fs-clone")
        images.append(image_id)
        wait_image(stack, image_id)
        wait_idle(hook_nova, sid)  # Nova updates the image's metadata after fastsnap activated it
        took = time.monotonic() - t0
    img = stack.glance("admin").images.get(image_id)
    watch.assert_live_and_no_local_file()
    job = fastsnap_service.job_for(image_id)
    assert job["state"] == "done" and job["path"] == "clone" and job["store"] == "fast", job
    assert job["request"]["quiesce_domain"] == hook_nova.domain(sid)
    # On behalf of the user whose token Nova's request carried: the image is the user's project's.
    assert job["result"]["acting_as"]["mode"] == "user", job["result"]["acting_as"]
    assert img["owner"] == hook_nova.sess.get_project_id()
    assert img["stores"] == "fast" and img["disk_format"] == "raw"
    # Nova's own metadata update ran on the active image, and Nova registered no location of its own.
    assert img["image_location"] == "snapshot" and img["instance_uuid"] == sid and img["image_type"] == "snapshot"
    assert fastsnap_event(hook_nova, sid, request_id)["result"] == "Success"
    # The guest image has hw_qemu_guest_agent=yes and the hook passed the domain: frozen around the disk snapshot,
    # so the snapshot is a clean filesystem (Nova's own rbd snapshot never quiesces).
    assert job["result"]["quiesced"] is True, job["result"]["quiesce"]
    assert 0 < job["result"]["quiesce"]["freeze_seconds"] < 5
    rc = read_counter(stack, f"rbd:images/{image_id}@snap")
    assert rc["needs_recovery"] is False and rc["fsck_rc"] == 0, rc
    snap_counter = snapshot_counter(stack, image_id, f"rbd:images/{image_id}@snap")
    assert snap_counter >= before

    booted = hook_nova.boot(image_id)
    try:
        assert hook_nova.ready_counter(booted["id"]) == snap_counter, "the new server does not resume from the snapshot"
    finally:  # its disk is a clone of the snapshot: it goes first, then the image can
        hook_nova.delete_servers(booted["id"])
    print(f"clone path through Nova: image active {took:.1f}s after the request; counter {before} -> {snap_counter}")


@pytest.mark.parametrize("base", ["remote", "cheap"])
def test_stream_path_guest_not_suspended(stack: Stack, hook_nova: NovaAPI, fastsnap_service: FastsnapService,
                                         images: list[str], base: str) -> None:
    srv = hook_nova.boot(stack.env[f"FASTSNAP_NOVA_IMAGE_{base.upper()}"])
    sid = srv["id"]
    try:
        hook_nova.ready_counter(sid)
        before = live_counter(stack, hook_nova, sid)
        default_store = "cheap"
        with Watch(hook_nova, sid) as watch:
            image_id, request_id = hook_nova.image_create(sid, f"fs-stream-{base}")
            images.append(image_id)
            img = wait_image(stack, image_id)
            wait_idle(hook_nova, sid)
        watch.assert_live_and_no_local_file()
        assert fastsnap_event(hook_nova, sid, request_id)["result"] == "Success"
    finally:
        hook_nova.delete_servers(sid)
    job = fastsnap_service.job_for(image_id)
    assert job["state"] == "done" and job["path"] == "stream" and job["store"] == default_store, job
    assert img["stores"] == default_store
    assert snapshot_counter(stack, image_id) >= before


def test_store_property_selects_the_store(stack: Stack, hook_nova: NovaAPI, fastsnap_service: FastsnapService,
                                          server_fast: dict[str, Any], images: list[str]) -> None:
    sid = server_fast["id"]
    before = live_counter(stack, hook_nova, sid)
    # The command the README documents.
    made = NovaCLI(stack).openstack("server", "image", "create", "--property", "fastsnap_store=cheap", "--wait",
                                    "--name", "fs-cheap", sid)
    image_id = made["id"]
    images.append(image_id)
    img = wait_image(stack, image_id)
    wait_idle(hook_nova, sid)
    job = fastsnap_service.job_for(image_id)
    assert job["path"] == "stream" and job["store"] == "cheap", job
    assert img["stores"] == "cheap"
    assert "fastsnap_store" not in img, "the store property must not stay on the snapshot (it would be inherited)"
    assert snapshot_counter(stack, image_id) >= before


def test_unknown_store_fails_cleanly(stack: Stack, hook_nova: NovaAPI, fastsnap_service: FastsnapService,
                                     server_fast: dict[str, Any], images: list[str]) -> None:
    sid = server_fast["id"]
    disk_snaps = stack.snaps("vms", f"{sid}_disk")
    pool_images = stack.rbd_images("images")
    image_id, request_id = hook_nova.image_create(sid, "fs-nowhere", fastsnap_store="nowhere")
    images.append(image_id)
    srv = wait_idle(hook_nova, sid)
    deadline = time.monotonic() + 60
    while not image_gone(stack, image_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert image_gone(stack, image_id), "the queued image was not deleted"
    assert srv["status"] == "ACTIVE" and srv["OS-EXT-STS:task_state"] is None
    ev = fastsnap_event(hook_nova, sid, request_id)
    assert ev["result"] == "Error" and "nowhere" in (ev.get("details") or ""), ev
    assert stack.snaps("vms", f"{sid}_disk") == disk_snaps and stack.rbd_images("images") == pool_images


def test_job_failing_midway_fails_the_action(stack: Stack, hook_nova: NovaAPI, fastsnap_service: FastsnapService,
                                            server_fast: dict[str, Any], images: list[str]) -> None:
    """fastsnap accepted the snapshot, then its job ends badly (cancelled mid-stream here): no fallback to Nova's
    path (the image was being filled), the action fails the Nova way and fastsnap leaves nothing behind."""
    sid = server_fast["id"]
    disk_snaps = stack.snaps("vms", f"{sid}_disk")
    image_id, request_id = hook_nova.image_create(sid, "fs-cancelled", fastsnap_store="cheap")
    images.append(image_id)
    deadline = time.monotonic() + 120
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, body = fastsnap_service.call("GET", f"/v1/snapshots?image_id={image_id}")
        jobs = body["snapshots"] if code == 200 else []
        if jobs and jobs[0]["state"] == "running":
            job = jobs[0]
            break
        assert not jobs or jobs[0]["state"] in ("planning", "running"), jobs
        time.sleep(0.05)
    assert job, "the stream job was not seen running"  # (a 1 GiB disk with ~260 MiB written: seconds)
    code, _ = fastsnap_service.call("DELETE", f"/v1/snapshots/{job['id']}")
    assert code == 202
    srv = wait_idle(hook_nova, sid)
    assert srv["status"] == "ACTIVE"
    deadline = time.monotonic() + 60
    while not image_gone(stack, image_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert image_gone(stack, image_id), "the queued image was not deleted"
    ev = fastsnap_event(hook_nova, sid, request_id)
    assert ev["result"] == "Error" and "cancelled" in (ev.get("details") or ""), ev
    assert fastsnap_service.job_for(image_id)["state"] == "cancelled"
    assert stack.snaps("vms", f"{sid}_disk") == disk_snaps


def test_backup_rotation(stack: Stack, hook_nova: NovaAPI, fastsnap_service: FastsnapService,
                         server_fast: dict[str, Any], images: list[str]) -> None:
    sid = server_fast["id"]
    made = []
    cli = NovaCLI(stack)
    for i in range(3):
        # The command the README documents (`openstack server backup create --type daily --rotate 2`).
        image_id = cli.openstack("server", "backup", "create", "--name", f"fs-backup-{i}", "--type", "daily",
                                 "--rotate", "2", "--wait", sid)["id"]
        images.append(image_id)
        made.append(image_id)
        wait_image(stack, image_id)
        wait_idle(hook_nova, sid)
        job = fastsnap_service.job_for(image_id)
        assert job["state"] == "done" and job["request"]["type"] == "backup", job
        assert job["result"]["rotated"] == [], "fastsnap rotated: Nova does that"
    g = stack.glance("admin")
    # Nova rotates after the snapshot, in the same call but after the server's task state is cleared: the last
    # backup's rotation may still be running (seen on Nova 31 on a busy machine).
    deadline = time.monotonic() + 120
    while True:
        left = [i["id"] for i in g.images.list(filters={"instance_uuid": sid, "image_type": "backup"})]
        if sorted(left) == sorted(made[1:]) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert sorted(left) == sorted(made[1:]), f"backups left {left}, made {made}"
    for image_id in made[1:]:
        img = g.images.get(image_id)
        assert img["status"] == "active" and img["backup_type"] == "daily"


def test_backup_rotate_incremental_into_remote(stack: Stack, hook_nova: NovaAPI, fastsnap_service: FastsnapService,
                                              images: list[str]) -> None:
    """``server backup create --rotate 2`` with ``[snapshot] backup_store = remote`` (cluster B): the first backup
    is full, the next ones incremental (clones of the previous one on B); Nova's rotation deletes a backup newer
    ones depend on, and they stay readable; deleting the server removes the disk with the source snapshot fastsnap
    keeps on it (issue 25)."""
    srv = hook_nova.boot(stack.env["FASTSNAP_NOVA_IMAGE"])
    sid = srv["id"]
    hook_nova.ready_counter(sid)
    fastsnap_service.stop()
    cli = NovaCLI(stack)
    try:
        with serving(stack, hook_nova, "fastsnap-nova-incr-", "\n[snapshot]\nbackup_store = remote\n") as svc:
            made, paths = [], []
            for i in range(3):
                image_id = cli.openstack("server", "backup", "create", "--name", f"fs-incr-{i}", "--type", "daily",
                                         "--rotate", "2", "--wait", sid)["id"]
                images.append(image_id)
                made.append(image_id)
                wait_image(stack, image_id)
                wait_idle(hook_nova, sid)
                job = svc.job_for(image_id)
                assert job["state"] == "done" and job["request"]["type"] == "backup", job
                paths.append((job["result"]["path"], job["result"]["reason"]))
                assert job["result"]["store"] == "remote", job
            assert paths[0][0] in ("copy", "delta") and [p for p, _ in paths[1:]] == ["incremental"] * 2, paths
            disk_snaps = [n for n, ns in stack.snaps("vms", f"{sid}_disk") if ns == 0]
            assert disk_snaps == [f"fastsnap-backup-remote-{made[-1]}"], disk_snaps
            g = stack.glance("admin")
            deadline = time.monotonic() + 120
            while True:  # Nova rotates after clearing the task state
                left = [i["id"] for i in g.images.list(filters={"instance_uuid": sid, "image_type": "backup"})]
                if sorted(left) == sorted(made[1:]) or time.monotonic() > deadline:
                    break
                time.sleep(1)
            assert sorted(left) == sorted(made[1:]), f"backups left {left}, made {made}"
            # The rotated first backup was the second's parent on B: both kept ones read whole, in order.
            counters = [snapshot_counter(stack, image_id) for image_id in made[1:]]
            assert counters[0] <= counters[1], counters
    finally:
        fastsnap_service.start()
    hook_nova.delete_servers(only=sid)
    assert f"{sid}_disk" not in stack.rbd_images("vms")
    with stack.ioctx("vms") as io:
        assert not [e for e in rbd.RBD().trash_list(io) if e["name"] == f"{sid}_disk"], "disk parked, not removed"


def test_service_stopped_nova_falls_back(stack: Stack, hook_nova: NovaAPI, fastsnap_service: FastsnapService,
                                         server_fast: dict[str, Any], images: list[str]) -> None:
    sid = server_fast["id"]
    fastsnap_service.stop()
    try:
        offset = hook_nova.log_size()
        image_id, request_id = hook_nova.image_create(sid, "fs-fallback")
        images.append(image_id)
        wait_image(stack, image_id)
        wait_idle(hook_nova, sid)
        log = hook_nova.log_since(offset)
        lines = [ln for ln in log.splitlines() if f"fastsnap did not take snapshot {image_id}" in ln]
        assert len(lines) == 1 and "WARNING" in lines[0], log[-3000:]
        assert "fastsnap unreachable" in lines[0] and str(fastsnap_service.socket) in lines[0], lines[0]
        assert "Declined" not in lines[0], f"one plain line, no exception appended: {lines[0]}"
        assert not [e for e in hook_nova.events(sid, request_id) if e["event"] == "compute_fastsnap_snapshot"]
    finally:
        fastsnap_service.start()

"""A cloud, not a host (issue 23): two or three fastsnap hosts share one Ceph cluster and one Glance.

Each host is a fastsnap configuration of its own ``[DEFAULT] host`` and local state directory, sharing the journal
(one RADOS namespace of the test's own). Real crashes (the CLI SIGKILLed at a step), real leases, real recovers;
after each test, the pools and Glance hold nothing the test made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from fastsnap import conf as fsconf
from fastsnap import journal as jr
from fastsnap.api import Fastsnap
from fastsnap.rados_journal import RadosOperations
from fastsnap.states import OpState
from testkit.env import ROOT
from testkit.nova import Server
from testkit.service import Service
from testkit.stack import Stack, journal_for, journal_section
from tests.integration.conftest import Writer

LEASE = 2  # seconds: a lost host's operations wait this long for another host


class Host:
    """One compute host's fastsnap: its configuration, sharing the journal namespace ``ns``."""

    def __init__(self, stack: Stack, tmp: Path, name: str, ns: str, extra: str = "") -> None:
        self.stack, self.name = stack, name
        self.state = tmp / f"{name}-state"
        text = Path(stack.config_file).read_text().replace("[journal]\n", "[journal_unused]\n")
        self.conf = tmp / f"{name}.conf"
        self.conf.write_text(text + journal_section(self.state, host=name, lease_seconds=LEASE, namespace=ns)
                             + extra)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.stack.fastsnap("--config-file", str(self.conf), *args, env=env)

    def killed(self, step: str, *args: str) -> str:
        """A snapshot on this host SIGKILLed when it reaches ``step``; returns its image id."""
        before = {o.op_id for o in self.journal.list()}
        out = self.cli("snapshot", "--json", *args, env={"FASTSNAP_TEST_CRASH_AT": step})
        assert out.returncode == -9, (out.returncode, out.stderr)
        (op,) = [o for o in self.journal.list(OpState.RUNNING) if o.op_id not in before]
        assert op.host == self.name
        self.stack.snapshots.append(op.op_id)  # deleted at the end whatever happens
        return op.op_id

    def recover(self) -> dict[str, dict[str, Any]]:
        out = self.cli("recover", "--json")
        assert out.returncode == 0, out.stderr
        return {a["op_id"]: a for a in json.loads(out.stdout)}

    @property
    def journal(self) -> jr.Journal:
        return journal_for(self.conf)

    def lose(self) -> None:
        """The host is reinstalled: its local state is gone."""
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def ns() -> str:
    return f"t-fleet-{uuid.uuid4().hex[:10]}"


def _load(conf: Path) -> Any:
    return fsconf.load(str(conf))


def _rados(journal: jr.Journal) -> RadosOperations:
    assert isinstance(journal.ops, RadosOperations)
    return journal.ops


def _until_lapsed(host: Host, observer: Host, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while observer.journal.ops.lease_alive(host.name):
        assert time.monotonic() < deadline, f"the lease of {host.name} never lapsed"
        time.sleep(0.2)


def _clean(stack: Stack, disk: str, image_ids: list[str], *, active: tuple[str, ...] = ()) -> None:
    """Nothing of the operations is left: no fastsnap snapshot on the disk, no clone in images, and in Glance
    only the images that ended active (the caller deletes those)."""
    left = [s for s, kind in stack.snaps("vms", disk) if kind == 0 and s.startswith("fastsnap-")]
    assert not left, left
    g = stack.glance("admin")
    visible = stack.image_ids()
    for image_id in image_ids:
        if image_id in active:
            assert g.images.get(image_id)["status"] == "active"
        else:
            assert image_id not in visible
            assert image_id not in stack.rbd_images("images")


def test_host_lost_mid_stream_is_taken_over_by_another_host(stack: Stack, tmp_path: Path, ns: str,
                                                           make_disk: Writer) -> None:
    """The first finding: host A streams and is killed -9, then reinstalled (its state directory is gone). Host B
    leaves A's operation alone while A's lease lives, then rolls it back: the queued image and the disk's
    snapshot are removed, and Nova could remove the disk again."""
    a, b = Host(stack, tmp_path, "host-a", ns), Host(stack, tmp_path, "host-b", ns)
    disk = make_disk(size=96 << 20, chunks=tuple(range(0, 96 << 20, 4 << 20)))
    op_id = a.killed("upload:mid", "--disk", f"vms/{disk}", "--name", "lost-stream", "--store", "cheap")
    a.lose()
    assert stack.glance("admin").images.get(op_id)["status"] in ("queued", "saving")
    assert f"fastsnap-{op_id}" in [s for s, _ in stack.snaps("vms", disk)]
    _until_lapsed(a, b)
    acted = b.recover()
    assert acted[op_id]["action"] == "rolled_back", acted
    op = b.journal.get(op_id)
    assert op is not None and op.state == OpState.ROLLED_BACK and op.host == "host-a"
    _clean(stack, disk, [op_id])


def test_host_lost_mid_clone_is_finished_by_another_host(stack: Stack, tmp_path: Path, ns: str,
                                                        make_disk: Writer, bases: dict[str, str]) -> None:
    """Host A is killed after its clone is complete, before Glance knows the location; host B registers it once
    A's lease lapsed (roll forward), and a second recover finds nothing more to do."""
    a, b = Host(stack, tmp_path, "host-a", ns), Host(stack, tmp_path, "host-b", ns)
    disk = make_disk()
    want = stack.disk_sha256("vms", disk)
    op_id = a.killed("location", "--disk", f"vms/{disk}", "--name", "lost-clone", "--base-image", bases["fast"])
    a.lose()
    _until_lapsed(a, b)
    acted = b.recover()
    assert acted[op_id]["action"] == "rolled_forward", acted
    assert b.recover() == {}
    assert stack.glance_sha256(op_id) == want
    _clean(stack, disk, [op_id], active=(op_id,))


def test_a_live_lease_is_never_trespassed(stack: Stack, tmp_path: Path, ns: str, make_disk: Writer) -> None:
    """Host A's service lives (it holds A's lease) while an operation of A is left running by a killed CLI of
    A. Host B's recover, run well past the lease's duration, never touches it; once A's service is stopped (its
    lease released), B's recover does."""
    (tmp_path / "a").mkdir()
    a = Service(stack, tmp_path / "a", host="host-a", lease_seconds=LEASE, namespace=ns,
                extra="recover_interval = 0\n")
    b = Host(stack, tmp_path, "host-b", ns)
    disk = make_disk(size=16 << 20)
    a.start()
    try:
        a_cli = Host(stack, tmp_path, "host-a", ns)  # A's CLI: the same host and journal as A's service
        op_id = a_cli.killed("disk_snap", "--disk", f"vms/{disk}", "--name", "live-lease", "--store", "cheap")
        for _ in range(3):
            time.sleep(LEASE)
            assert b.journal.ops.lease_alive("host-a")
            assert op_id not in b.recover()
            op = b.journal.get(op_id)
            assert op is not None and op.state == OpState.RUNNING
    finally:
        a.stop()
    _until_lapsed(a_cli, b)
    assert b.recover()[op_id]["action"] == "rolled_back"
    _clean(stack, disk, [op_id])


def test_both_hosts_recovering_at_once_handle_each_operation_once(stack: Stack, tmp_path: Path, ns: str,
                                                                  make_disk: Writer,
                                                                  bases: dict[str, str]) -> None:
    """Host C is lost with four operations running (clone and stream, before and after the point of no
    return); hosts A and B recover at the same moment. Each operation is settled by exactly one of them."""
    a, b, c = (Host(stack, tmp_path, n, ns) for n in ("host-a", "host-b", "host-c"))
    disks = [make_disk(size=16 << 20) for _ in range(4)]
    ids = [
        c.killed("location", "--disk", f"vms/{disks[0]}", "--name", "c0", "--base-image", bases["fast"]),
        c.killed("clone", "--disk", f"vms/{disks[1]}", "--name", "c1", "--base-image", bases["fast"]),
        c.killed("upload", "--disk", f"vms/{disks[2]}", "--name", "c2", "--store", "cheap"),
        c.killed("disk_snap", "--disk", f"vms/{disks[3]}", "--name", "c3", "--store", "cheap"),
    ]
    c.lose()
    _until_lapsed(c, a)
    procs = [subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), "--config-file", str(h.conf), "recover", "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **stack.env}) for h in (a, b)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    handled = [act["op_id"] for out, _ in outs for act in json.loads(out)]
    assert sorted(handled) == sorted(ids), outs   # every one, and each once
    for op_id in ids:
        op = a.journal.get(op_id)
        assert op is not None and op.state in (OpState.DONE, OpState.ROLLED_BACK), op
    assert a.journal.get(ids[0]).state == OpState.DONE  # type: ignore[union-attr]  # complete clone: forward
    done = tuple(i for i in ids if a.journal.get(i).state == OpState.DONE)  # type: ignore[union-attr]
    for disk, op_id in zip(disks, ids, strict=True):
        _clean(stack, disk, [op_id], active=done)


def test_the_sqlite_journal_is_carried_into_rados_once(stack: Stack, tmp_path: Path, ns: str,
                                                       make_disk: Writer) -> None:
    """An older fastsnap's SQLite journal, with an operation its killed process left running (a queued image
    and the disk's snapshot exist) and a finished one, plus a REST job: the first start of this fastsnap carries
    both operations into RADOS, once (a second start, or one after a migration cut short, carries nothing and
    changes nothing), the job stays local, and recover then undoes the interrupted one."""
    a = Host(stack, tmp_path, "host-a", ns)
    disk = make_disk(size=16 << 20)
    running_id, done_id = str(uuid.uuid4()), str(uuid.uuid4())
    g = stack.glance("fastsnap")
    g.images.create(id=running_id, name="from-sqlite", disk_format="raw", container_format="bare")
    stack.snapshots.append(running_id)
    subprocess.run(["rbd", "-c", stack.env["CEPH_CONF"], "snap", "create", f"vms/{disk}@fastsnap-{running_id}"],
                   check=True, capture_output=True, timeout=60)

    def stream_op(op_id: str, state: OpState, steps: list[str], **more: Any) -> jr.Operation:
        return jr.Operation(op_id=op_id, disk=f"vms/{disk}", path="stream", store="cheap", pool=None, fsid=None,
                            image_created=True, delete_image_on_error=True, state=state, steps=steps, **more)

    # A migration cut short: the finished one reached RADOS already (and was touched there since).
    _rados(journal_for(a.conf)).import_record(stream_op(done_id, OpState.DONE, ["image"], error="kept"))
    old = jr.Journal(str(a.state))  # the SQLite store an older fastsnap wrote
    old.reserve(stream_op(running_id, OpState.RUNNING, ["image", "disk_snap"], host="old-hostname"))
    old.reserve(stream_op(done_id, OpState.DONE, ["image", "disk_snap", "upload"]))
    old.insert_job(jr.Job(id="job-1", key="k", request={"disk": f"vms/{disk}"}, image_id=done_id))
    # The first start (any process of the host) carries the rest.
    fs = Fastsnap(config_file=str(a.conf))
    try:
        carried = _rados(fs.journal).migrated()["host-a"].operations
        assert sorted(carried) == sorted([running_id, done_id])
        op = fs.journal.get(running_id)
        assert op is not None and op.state == OpState.RUNNING and op.host == "host-a"
        assert op.steps == ["image", "disk_snap"]
        kept = fs.journal.get(done_id)
        assert kept is not None and kept.error == "kept" and kept.steps == ["image"]  # not overwritten
        assert jr.Journal(str(a.state)).ops.list() == []  # gone from SQLite
        assert fs.journal.get_job("job-1") is not None    # jobs stay local
        assert fs.journal.migrate() == []                 # nothing to carry a second time
    finally:
        fs.close()
    acted = a.recover()
    assert acted[running_id]["action"] == "rolled_back", acted
    assert done_id not in acted
    _clean(stack, disk, [running_id])


def test_no_journal_no_snapshot(stack: Stack, tmp_path: Path, ns: str, make_disk: Writer,
                                bases: dict[str, str]) -> None:
    """When the journal cannot be reached (its pool is gone or out of reach), a snapshot fails with a clear error
    and creates nothing: never act first and journal later."""
    h = Host(stack, tmp_path, "host-a", ns)
    h.conf.write_text(h.conf.read_text() + "[journal]\npool = no-such-pool\n")
    disk = make_disk(size=16 << 20)
    images = stack.image_ids()
    for args in (("--store", "cheap"), ("--base-image", bases["fast"])):
        out = h.cli("snapshot", "--disk", f"vms/{disk}", "--name", "no-journal", *args)
        assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
        assert "the journal cannot be written, so nothing was created" in out.stderr, out.stderr
        assert "no-such-pool" in out.stderr
    assert stack.image_ids() == images
    assert stack.snaps("vms", disk) == []


def test_one_image_id_on_two_hosts_at_once_runs_once(stack: Stack, tmp_path: Path, ns: str, make_disk: Writer,
                                                      bases: dict[str, str]) -> None:
    """The same queued image id requested on hosts A and B at the same moment is filled once: one snapshot runs,
    the other request is refused (the id is reserved across the cluster) or returns the first one's result;
    asked again later on either host, the finished one is returned untouched."""
    a, b = Host(stack, tmp_path, "host-a", ns), Host(stack, tmp_path, "host-b", ns)
    disk = make_disk()
    image_id = str(uuid.uuid4())
    stack.glance("fastsnap").images.create(id=image_id, name="one-id", disk_format="raw", container_format="bare")
    stack.snapshots.append(image_id)
    args = ("snapshot", "--json", "--disk", f"vms/{disk}", "--name", "one-id", "--base-image", bases["fast"],
            "--image-id", image_id)
    procs = [subprocess.Popen([str(ROOT / ".venv/bin/fastsnap"), "--config-file", str(h.conf), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **stack.env}) for h in (a, b)]
    outs = [(p.communicate(timeout=300), p.returncode) for p in procs]
    made = [json.loads(out) for (out, _), rc in outs if rc == 0 and not json.loads(out)["already_done"]]
    assert len(made) == 1, outs
    for (out, err), rc in outs:
        if rc != 0:
            # refused as Reserved either way: by the journal's reserve ("reserved by an operation"), or, when the
            # other host's operation is already journaled as running, before it ("is being taken on host ...")
            assert rc == 2 and f"image {image_id}" in err and ("reserved" in err or "is being taken on host" in err), \
                (rc, err)
        elif json.loads(out)["already_done"]:
            assert json.loads(out)["location"] == made[0]["location"]
    op = a.journal.get(image_id)
    assert op is not None and op.state == OpState.DONE
    record = op.to_record()
    for h in (a, b):
        again = h.cli(*args)
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["already_done"] is True
    assert a.journal.get(image_id).to_record() == record  # type: ignore[union-attr]  # untouched
    assert stack.glance_sha256(image_id) == stack.disk_sha256("vms", disk)
    assert not [s for s, kind in stack.snaps("vms", disk) if kind == 0]


@pytest.mark.nova
def test_a_users_image_is_rolled_back_by_another_host(stack: Stack, tmp_path: Path, ns: str,
                                                      tenant_servers: dict[str, Server]) -> None:
    """A snapshot host A took for a user (its image is in the user's project) is undone by host B after A was
    lost: B reads the trust id from the journal and acts through it with fastsnap's own credentials; the trust is
    deleted once the operation is settled."""
    a, b = Host(stack, tmp_path, "host-a", ns), Host(stack, tmp_path, "host-b", ns)
    demo2 = stack.session("demo2")
    token, project = demo2.get_token(), demo2.get_project_id()
    assert token and project
    server = tenant_servers["demo2"]
    op_id = a.killed("image:after", "--disk", server.disk, "--name", "users", "--base-image",
                     stack.env["FASTSNAP_NOVA_IMAGE"], "--os-token", token, "--instance-uuid", server.id)
    a.lose()
    assert stack.glance("admin").images.get(op_id)["owner"] == project
    op = b.journal.get(op_id)
    assert op is not None and op.trust_id
    _until_lapsed(a, b)
    assert b.recover()[op_id]["action"] == "rolled_back"
    op = b.journal.get(op_id)
    assert op is not None and op.state == OpState.ROLLED_BACK and op.trust_id is None
    assert op_id not in stack.image_ids()
    assert not [s for s, kind in stack.snaps(*server.disk.split("/")) if kind == 0 and s.startswith("fastsnap-")]


def test_the_journal_needs_only_its_namespace(stack: Stack, tmp_path: Path, ns: str) -> None:
    """The caps the docs give for the journal (``allow rwx pool=<pool> namespace=<namespace>``, with ``mon 'allow
    r'``) are enough for all of it, a reservation, a step, the lease, a claim, a listing, and they give nothing
    else: not the pool's RBD images, not another pool."""
    user = f"fastsnap-journal-{uuid.uuid4().hex[:6]}"
    keyring = tmp_path / f"ceph.client.{user}.keyring"
    ret, out, err = stack.admin_a.mon_command(json.dumps({
        "prefix": "auth get-or-create", "entity": f"client.{user}", "format": "plain",
        "caps": ["mon", "allow r", "osd", f"allow rwx pool=vms namespace={ns}"]}), b"")
    assert ret == 0, err
    keyring.write_bytes(out)
    try:
        h = Host(stack, tmp_path, "host-a", ns,
                 extra=f"[ceph]\nuser = {user}\nkeyring = {keyring}\n")
        journal = jr.Journal.from_conf(_load(h.conf))
        try:
            op = jr.Operation(op_id=str(uuid.uuid4()), disk="vms/x", path="stream", store="cheap", pool=None,
                              fsid=None, image_created=True, delete_image_on_error=True)
            journal.reserve(op)
            journal.begin(op, "image")
            with journal.ops.claim(op.op_id) as won:
                assert won
            journal.finish(op, OpState.ROLLED_BACK)
            assert [o.op_id for o in journal.list()] == [op.op_id]
            assert journal.ops.lease_alive("host-a")
        finally:
            journal.close()
        # Nothing else: the pool's images (default namespace) and another pool are out of reach.
        probe = "import rbd, rados, sys\n" \
                "c = rados.Rados(conffile=sys.argv[1], rados_id=sys.argv[2], conf={'keyring': sys.argv[3]})\n" \
                "c.connect(timeout=10)\n" \
                "for pool in ('vms', 'images'):\n" \
                "    try:\n" \
                "        print(pool, len(rbd.RBD().list(c.open_ioctx(pool))))\n" \
                "    except (rbd.PermissionError, rados.PermissionError) as e:\n" \
                "        print(pool, 'denied')\n"
        got = subprocess.run([str(ROOT / ".venv/bin/python"), "-c", probe, stack.env["CEPH_CONF"], user,
                              str(keyring)], capture_output=True, text=True, timeout=60, check=True)
        assert got.stdout.split("\n")[:2] == ["vms denied", "images denied"], got
    finally:
        stack.admin_a.mon_command(json.dumps({"prefix": "auth rm", "entity": f"client.{user}"}), b"")

"""``recover`` goes on past any one failure, and can finish or undo what a snapshot taken for a user left
(issue 11, point 4). Real crashes: the CLI is killed (SIGKILL) at a step, then ``fastsnap recover`` runs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fastsnap.states import OpState
from testkit.nova import Server
from testkit.reqcount import counting_proxy
from testkit.stack import Stack, journal_for, journal_section
from tests.integration.conftest import Writer


@pytest.fixture
def conf(stack: Stack, tmp_path: Path) -> str:
    """The stack's fastsnap.conf with a journal of the test's own (so recover sees only this test's work)."""
    text = Path(stack.config_file).read_text().replace("[journal]\n", "[journal_unused]\n")
    path = tmp_path / "fastsnap.conf"
    path.write_text(text + journal_section(tmp_path / "state"))
    return str(path)


def _killed(stack: Stack, conf: str, step: str, *args: str) -> str:
    """Start a snapshot that is SIGKILLed when it reaches ``step``; returns the image id it journaled."""
    out = stack.fastsnap("--config-file", conf, "snapshot", *args, env={"FASTSNAP_TEST_CRASH_AT": step})
    assert out.returncode == -9, (out.returncode, out.stderr)
    running = journal_for(conf).list(OpState.RUNNING)
    return max(running, key=lambda o: o.created_at).op_id


def _recover(stack: Stack, conf: str) -> tuple[int, dict[str, dict[str, Any]]]:
    out = stack.fastsnap("--config-file", conf, "recover", "--json")
    assert out.stdout, out.stderr
    return out.returncode, {a["op_id"]: a for a in json.loads(out.stdout)}


def _rbd(stack: Stack, *args: str) -> None:
    subprocess.run(["rbd", "-c", stack.env["CEPH_CONF"], *args], check=True, capture_output=True, timeout=120)


@pytest.mark.nova
def test_recover_reports_one_failure_and_recovers_the_rest(stack: Stack, conf: str, make_disk: Writer,
                                                           bases: dict[str, str],
                                                           tenant_servers: dict[str, Server]) -> None:
    demo2 = stack.session("demo2")
    token, project = demo2.get_token(), demo2.get_project_id()
    assert token and project
    user_base = stack.env["FASTSNAP_NOVA_IMAGE"]
    # Snapshots for demo2 are of its own server's disk (the only one it may name); the others of test disks.
    server = tenant_servers["demo2"]
    disks = {k: make_disk(size=16 << 20) for k in ("stream", "bad")}
    disks["user_back"] = disks["user_forward"] = server.disk.split("/")[1]
    mine = ("--instance-uuid", server.id)
    ids = {
        # for a user: killed after the user's image was created → must be deleted (it is the user project's).
        # (The image is created in a thread beside the disk snapshot and the clone, joined at "image:after": a kill
        # at an earlier step may come before Glance created it.)
        "user_back": _killed(stack, conf, "image:after", "--disk", f"vms/{disks['user_back']}", "--name", "ub",
                             "--base-image", user_base, "--os-token", token, *mine),
        # for a user: killed with the clone complete → must be registered and activated in the user's project
        "user_forward": _killed(stack, conf, "location", "--disk", f"vms/{disks['user_forward']}", "--name",
                                "uf", "--base-image", user_base, "--os-token", token, *mine),
        "stream": _killed(stack, conf, "upload", "--disk", f"vms/{disks['stream']}", "--name", "s",
                          "--store", "cheap"),
        "bad": _killed(stack, conf, "clone", "--disk", f"vms/{disks['bad']}", "--name", "b",
                       "--base-image", bases["fast"]),
    }
    stack.snapshots.extend(ids.values())
    admin = stack.glance("admin")
    assert admin.images.get(ids["user_back"])["owner"] == project
    # Someone made a (format 1) clone of the bad operation's temporary snapshot: it cannot be removed now.
    bad_snap = f"vms/{disks['bad']}@fastsnap-{ids['bad']}"
    _rbd(stack, "snap", "protect", bad_snap)
    _rbd(stack, "clone", "--rbd-default-clone-format", "1", bad_snap, f"vms/{disks['bad']}-blocker")
    try:
        code, actions = _recover(stack, conf)
        assert code == 1
        assert actions[ids["bad"]]["action"] == "failed"
        assert f"fastsnap-{ids['bad']}" in actions[ids["bad"]]["error"]
        assert actions[ids["user_back"]]["action"] == "rolled_back", actions
        assert actions[ids["user_forward"]]["action"] == "rolled_forward", actions[ids["user_forward"]]
        assert actions[ids["stream"]]["action"] == "rolled_back", actions
        # The user's image was deleted (fastsnap's own user could not even see it) and nothing else is left.
        assert ids["user_back"] not in stack.image_ids()
        assert [s for s in stack.snaps("vms", disks["user_back"]) if s[1] == 0] == []
        fwd = admin.images.get(ids["user_forward"])
        assert fwd["status"] == "active" and fwd["owner"] == project
        assert stack.glance_sha256(ids["user_forward"], "demo2") == stack.disk_sha256("vms", disks["user_forward"])
        assert ids["stream"] not in stack.image_ids()
        assert [s for s in stack.snaps("vms", disks["stream"]) if s[1] == 0] == []
        # The recovered user operations' trusts are gone; the bad one stays for the next recover.
        journal = journal_for(conf)
        for k in ("user_back", "user_forward"):
            op = journal.get(ids[k])
            assert op is not None and op.trust_id is None
        assert [op.op_id for op in journal.list(OpState.RUNNING)] == [ids["bad"]]
    finally:
        _rbd(stack, "rm", f"vms/{disks['bad']}-blocker")
    code, actions = _recover(stack, conf)
    assert code == 0 and list(actions) == [ids["bad"]] and actions[ids["bad"]]["action"] == "rolled_back"
    assert [s for s in stack.snaps("vms", disks["bad"]) if s[1] == 0] == []
    assert ids["bad"] not in stack.image_ids()


def test_recover_keeps_a_complete_clone_while_glance_fails_for_now(stack: Stack, conf: str, make_disk: Writer,
                                                                   bases: dict[str, str], tmp_path: Path) -> None:
    """Killed with the clone complete; during the first recover Glance answers 503 to the location add (a proxy in
    front of the real Glance): the snapshot is not undone but left running, and the next recover registers it."""
    disk = make_disk(size=16 << 20)
    op_id = _killed(stack, conf, "location", "--disk", f"vms/{disk}", "--name", "kept", "--base-image", bases["fast"])
    stack.snapshots.append(op_id)
    with counting_proxy(stack.env["FASTSNAP_TEST_GLANCE_URL"]) as glance:
        glance.fail = {"POST /v2/images/{id}/locations": 99, "PATCH /v2/images/{id}": 99}
        proxied = tmp_path / "proxied.conf"
        proxied.write_text(Path(conf).read_text() + f"\n[glance]\nendpoint_override = {glance.url}\n")
        code, actions = _recover(stack, str(proxied))
        refused = glance.snapshot().get("POST /v2/images/{id}/locations", 0)
    assert refused >= 1, glance.snapshot()
    assert code == 1 and actions[op_id]["action"] == "failed", actions
    error = actions[op_id]["error"]
    assert "left for the next recover" in error and "ServiceUnavailable" in error, error
    assert stack.glance("admin").images.get(op_id)["status"] == "queued"
    assert ("snap", 0) in stack.snaps("images", op_id)  # the clone is whole
    running = journal_for(conf).list(OpState.RUNNING)
    assert [op.op_id for op in running] == [op_id]
    code, actions = _recover(stack, conf)
    assert code == 0 and actions[op_id]["action"] == "rolled_forward", actions
    assert stack.glance("admin").images.get(op_id)["status"] == "active"
    assert stack.glance_sha256(op_id) == stack.disk_sha256("vms", disk)

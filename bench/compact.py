"""Compact streams (issue 25 part 2): the same disk streamed raw and as qcow2 into the file store ``cheap``, against
Nova's own fallback with ``[libvirt] snapshot_image_format = qcow2``, in one run.

    python -m bench.compact [--scale 0.25] [--repeats 1] [--out bench/results/compact.json] [--tmp-dir DIR]

The issue's disk: 4 GiB virtual, cloned from a base image, written to by the instance, 25 % allocated (1 GiB; the
issue's "1 GiB base, 1 GiB written" would make 50 % unless the writes fell on the base: this bench keeps the 25 %,
half from the base, half written by the instance). On this shared 2-core machine the default ``--scale 0.25`` runs
it at a quarter: 1 GiB virtual cloned from a base of 128 MiB (all data), 128 MiB more written by the instance
spread over the rest of the disk: 256 MiB allocated. Every piece is whole 8 MiB objects (Glance's rbd chunk, which
the clone keeps).

Methods (each until the image is active; the guest, had there been one, never paused: all read the live disk or a
snapshot of it):
  raw stream     ``fastsnap snapshot --store cheap --format raw`` (CLI wall, a new process)
  qcow2 stream   ``fastsnap snapshot --store cheap --format qcow2``
  nova qcow2     what Nova does without a direct snapshot (``snapshot_image_format = qcow2``): a queued image,
                 ``qemu-img convert -f raw -O qcow2 rbd:vms/<disk>:...`` to a local file, then ``images.upload`` of
                 that file into the default store (``cheap``), until active

Per method: wall seconds, bytes sent (the image's size in Glance), bytes read from the OSD (perf counters), CPU
seconds of Glance and of the client, peak RSS and bytes written to the local disk. The qcow2 stream is judged by
``qemu-img check`` and ``qemu-img compare`` against the disk after a download (not timed).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import rbd

from bench.lib import (
    Env,
    connect,
    daemon_cpu,
    fastsnap_argv,
    log,
    machine_facts,
    osd_delta,
    print_json,
    run,
    scaled_parser,
)
from testkit.stack import Stack

MiB = 1 << 20
GiB = 1 << 30
OBJ = 8 * MiB   # Glance's rbd chunk: the base image's objects, which its clone keeps
CLUSTER = 64 << 10


def make_clone(stack: Stack, name: str, virtual: int) -> tuple[str, int]:
    """A base image in store ``fast`` (virtual/8 bytes of data) and ``vms/<name>`` cloned from it, resized to
    ``virtual``, with as much again written by the instance over the rest: 25 % allocated. Returns (base image id,
    allocated bytes)."""
    base_size = virtual // 8
    pattern = os.urandom(OBJ)
    img = stack.fastsnap_glance.images.create(name=f"bench-compact-base-{name}", disk_format="raw",
                                              container_format="bare")
    base = str(img["id"])

    class Body:
        def __init__(self) -> None:
            self.pos = 0

        def read(self, n: int = -1) -> bytes:
            if self.pos >= base_size:
                return b""
            n = min(n if n > 0 else MiB, MiB, base_size - self.pos)
            off = self.pos % OBJ
            n = min(n, OBJ - off)
            out = pattern[off:off + n]
            self.pos += n
            return out

    stack.fastsnap_glance.images.upload(base, Body(), image_size=base_size, backend="fast")
    stack.wait_active(base)
    rbd.RBD().clone(stack.images, base, "snap", stack.vms, name)
    base_data = base_size // OBJ * OBJ
    with rbd.Image(stack.vms, name) as d:
        d.resize(virtual)
        rest = (virtual - base_size) // OBJ
        n = base_data // OBJ
        for i in range(n):
            d.write(pattern, base_size + (i * rest // n) * OBJ)
    return base, 2 * base_data


def remove(stack: Stack, name: str, base: str) -> None:
    try:
        with rbd.Image(stack.vms, name) as img:
            for s in list(img.list_snaps()):
                if int(s.get("namespace", 0)) == 0:
                    img.remove_snap2(s["name"], rbd.RBD_SNAP_REMOVE_UNPROTECT)
        rbd.RBD().remove(stack.vms, name)
    except rbd.Error as exc:
        log(f"could not remove vms/{name}: {exc}")
    with contextlib.suppress(Exception):
        stack.delete_image(base)


def fastsnap_stream(stack: Stack, env: Env, config: str, disk: str, fmt: str) -> dict[str, Any]:
    with daemon_cpu(env.run_dir) as cpu, osd_delta(env.ceph_conf) as osd:
        p = run(fastsnap_argv(config, "snapshot", "--disk", f"vms/{disk}", "--name", f"bench-compact-{fmt}",
                              "--store", "cheap", "--format", fmt, "--json"))
    res = p.json()
    img = stack.image(res["image_id"]) or {}
    return {"method": f"{fmt} stream", "image_id": res["image_id"], "seconds": round(p.wall, 2),
            "api_seconds": res["seconds"], "format": res["format"], "reason": res["reason"],
            "bytes_sent": int(img.get("size") or 0), "result_bytes_streamed": res["bytes_streamed"],
            "result_bytes_read": res["bytes_read"], "osd_read_bytes": osd.op_r_out_bytes, "osd_read_ops": osd.op_r,
            "glance_cpu": cpu.get("glance", 0.0), "client_cpu": round(p.user_cpu + p.sys_cpu, 2),
            "peak_rss": p.max_rss, "local_write_bytes": p.write_bytes, "disk_format": img.get("disk_format"),
            "virtual_size": img.get("virtual_size")}


def nova_qcow2(stack: Stack, env: Env, disk: str, tmp_dir: str) -> dict[str, Any]:
    """Nova's fallback with snapshot_image_format = qcow2: convert to a local qcow2 file, then upload it."""
    steps: dict[str, float] = {}
    path = os.path.join(tmp_dir, f"bench-compact-{os.getpid()}.qcow2")
    t0 = time.monotonic()
    img = stack.fastsnap_glance.images.create(name="bench-compact-nova", disk_format="qcow2", container_format="bare")
    image_id = str(img["id"])
    steps["create_image"] = round(time.monotonic() - t0, 3)
    try:
        with daemon_cpu(env.run_dir) as cpu, osd_delta(env.ceph_conf) as osd:
            p = run(["qemu-img", "convert", "-t", "none", "-f", "raw", "-O", "qcow2",
                     f"rbd:vms/{disk}:id=admin:conf={env.ceph_conf}", path])
            if p.returncode != 0:
                raise RuntimeError(f"qemu-img convert failed: {p.stderr[-1000:]}")
            steps["qemu_img_convert"] = round(p.wall, 3)
            file_size = os.stat(path).st_size
            t1 = time.monotonic()
            with open(path, "rb") as f:
                stack.fastsnap_glance.images.upload(image_id, f)  # no store: Glance's default (cheap), as Nova does
            done = stack.wait_active(image_id)
            steps["upload"] = round(time.monotonic() - t1, 3)
        seconds = time.monotonic() - t0
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return {"method": "nova qcow2", "image_id": image_id, "seconds": round(seconds, 2), "steps": steps,
            "bytes_sent": int(done.get("size") or 0), "temp_file_bytes": file_size,
            "osd_read_bytes": osd.op_r_out_bytes, "osd_read_ops": osd.op_r, "glance_cpu": cpu.get("glance", 0.0),
            "client_cpu": round(p.user_cpu + p.sys_cpu, 2), "peak_rss": p.max_rss,
            "local_write_bytes": p.write_bytes, "disk_format": done.get("disk_format"),
            "virtual_size": done.get("virtual_size")}


def judge(stack: Stack, env: Env, image_id: str, disk: str, tmp_dir: str) -> dict[str, Any]:
    """Download a qcow2 image; qemu-img check and compare it with the disk (not timed)."""
    with tempfile.NamedTemporaryFile(dir=tmp_dir, suffix=".qcow2") as f:
        for chunk in stack.fastsnap_glance.images.data(image_id):
            f.write(chunk)
        f.flush()
        check = subprocess.run(["qemu-img", "check", "--output=json", "-f", "qcow2", f.name],
                               capture_output=True, text=True, check=False)
        cmp = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", f.name,
                              f"rbd:vms/{disk}:id=admin:conf={env.ceph_conf}"],
                             capture_output=True, text=True, check=False)
    report = json.loads(check.stdout) if check.stdout.strip() else {}
    return {"check_rc": check.returncode, "corruptions": report.get("corruptions"), "leaks": report.get("leaks"),
            "compare_rc": cmp.returncode, "compare": (cmp.stdout + cmp.stderr).strip()[-300:]}


def main(argv: list[str] | None = None) -> int:
    p = scaled_parser(__doc__, "fraction of the issue's 4 GiB-virtual disk [0.25]")
    p.add_argument("--repeats", type=int, default=1, help="rounds of the three methods, alternated [1]")
    p.add_argument("--tmp-dir", default=tempfile.gettempdir(), help="local directory of Nova's qcow2 file")
    a = p.parse_args(argv)
    env = Env.load()
    stack = connect(env)
    config = env.bench_config()
    facts = machine_facts(stack)
    virtual = int(4 * GiB * a.scale) // OBJ * OBJ
    disk = f"bench-compact-{os.getpid()}"
    load_before = os.getloadavg()
    base, allocated = make_clone(stack, disk, virtual)
    log(f"disk vms/{disk}: {virtual >> 20} MiB virtual, cloned from {base}, {allocated >> 20} MiB allocated")
    rounds: list[list[dict[str, Any]]] = []
    judged: dict[str, Any] = {}
    try:
        for r in range(a.repeats):
            rows = []
            for method in ("raw", "qcow2", "nova"):
                row = (nova_qcow2(stack, env, disk, a.tmp_dir) if method == "nova"
                       else fastsnap_stream(stack, env, config, disk, method))
                log(f"round {r} {row['method']}: {row['seconds']}s, {row['bytes_sent'] >> 20} MiB sent")
                if method == "qcow2" and not judged:
                    judged = judge(stack, env, row["image_id"], disk, a.tmp_dir)
                    log(f"qemu-img on the qcow2 stream: {judged}")
                with contextlib.suppress(Exception):
                    stack.delete_image(row["image_id"])
                rows.append(row)
            rounds.append(rows)
    finally:
        remove(stack, disk, base)
    best = {m: min((row for rows in rounds for row in rows if row["method"] == m), key=lambda x: x["seconds"])
            for m in ("raw stream", "qcow2 stream", "nova qcow2")}
    q = best["qcow2 stream"]
    metadata = q["bytes_sent"] - allocated
    out = {"benchmark": "compact", "scale": a.scale, "virtual": virtual, "allocated": allocated,
           "allocated_fraction": round(allocated / virtual, 3), "machine": facts, "loadavg_before": load_before,
           "loadavg_after": os.getloadavg(), "rounds": rounds, "qemu_img": judged,
           "ratios": {"raw_over_qcow2_seconds": round(best["raw stream"]["seconds"] / q["seconds"], 2),
                      "nova_over_qcow2_seconds": round(best["nova qcow2"]["seconds"] / q["seconds"], 2),
                      "qcow2_bytes_sent_over_allocated": round(q["bytes_sent"] / allocated, 4),
                      "qcow2_metadata_bytes": metadata,
                      "raw_bytes_sent_over_qcow2": round(best["raw stream"]["bytes_sent"] / q["bytes_sent"], 2)},
           "targets": {"raw_over_qcow2_seconds": 3, "nova_over_qcow2_seconds": 2,
                       "qcow2_bytes_sent_over_allocated": "<= 1.05 (plus metadata)"}}
    print_json(out, a.out)
    stack.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Incremental backups into the rbd store on another cluster (issue 25) against today's delta path and the stream,
in the same run, on the same disk; then a chain of backups with rotation.

    python -m bench.incremental [--scale 0.25] [--chain 30] [--rotation 7] [--out bench/results/incremental.json]

The issue's workload is a 4 GiB-virtual disk cloned from a 1 GiB base, 1 GiB written by the instance, then 64 MiB
rewritten between backups. On this shared 2-core machine the default ``--scale 0.25`` runs it at a quarter: 1 GiB
virtual, a 256 MiB base, 256 MiB written, 16 MiB rewritten. The three measurements take the same disk state: the
incremental (the second backup of the chain; the first is a delta backup), then today's delta path
(``--type snapshot --base-image``) and the stream (no credentials for B) of it.

The chain: ``--chain`` backups of a 128 MiB disk with ``--rotation``, 4 MiB rewritten between two: every kept
backup is compared (sha256 through Glance) with the disk as it was when taken, the chain's depth on B is
reported, and after the disk and every backup are deleted (and ``fastsnap recover`` swept B's trash) nothing of
them may be left on A or B.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
from typing import Any

import rados
import rbd

from bench.lib import Env, connect, fastsnap_argv, log, machine_facts, osd_delta, print_json, run, scaled_parser
from bench.xcluster import GLANCE_OBJ, Sparse, delete, remove_disk, wait_for
from testkit.stack import Stack

MiB = 1 << 20
GiB = 1 << 30
BACKUP_ENV = {"OS_SNAPSHOT__BACKUP_STORE": "remote"}


def measure(stack: Stack, env: Env, config: str, label: str, disk: str, extra_env: dict[str, str],
            *args: str) -> dict[str, Any]:
    conf_b = os.environ["CEPH_CONF_REMOTE"]
    with osd_delta(env.ceph_conf) as a, osd_delta(conf_b) as b:
        proc = run(fastsnap_argv(config, "snapshot", "--disk", f"vms/{disk}", "--name", f"bench-{label}", "--json",
                                 *args), env={**os.environ, **extra_env})
    res = proc.json()
    if res["path"] != "stream":  # Glance hashes a registered rbd image after activating it: not into the next one
        wait_for("Glance's hash", lambda: bool((stack.image(res["image_id"]) or {}).get("os_hash_value")))
    return {"label": label, "path": res["path"], "reason": res["reason"], "image_id": res["image_id"],
            "seconds": round(proc.wall, 2), "api_seconds": res["seconds"],
            "osd_a_read_bytes": a.op_r_out_bytes, "osd_b_write_bytes": b.op_w_in_bytes,
            "result_transfer": res.get("transfer", {}), "rotated": res.get("rotated", [])}


def write_objects(img: Any, virtual: int, nbytes: int, seed: int = 0) -> None:
    """``nbytes`` of random data as whole 8 MiB objects spread over the disk (offset by ``seed`` objects)."""
    n_obj = virtual // GLANCE_OBJ
    n = max(1, nbytes // GLANCE_OBJ)
    for i in range(n):
        img.write(os.urandom(GLANCE_OBJ), ((i * n_obj // n) + seed) % n_obj * GLANCE_OBJ)


def backup_args(instance: str, *extra: str) -> tuple[str, ...]:
    return ("--type", "backup", "--instance-uuid", instance, "--backup-type", "daily", *extra)


def comparison(stack: Stack, env: Env, config: str, scale: float) -> dict[str, Any]:
    virtual, base_written, written, rewritten = (int(4 * GiB * scale), int(GiB * scale), int(GiB * scale),
                                                 int(64 * MiB * scale))
    log(f"incremental: disk {virtual >> 20} MiB cloned from a {base_written >> 20} MiB base, {written >> 20} MiB "
        f"written, {rewritten >> 20} MiB rewritten")
    base = stack.create_image("bench-incr-base")
    disk = f"bench-incr-{base[:8]}"
    made: list[str] = []
    instance = str(uuid.uuid4())
    try:
        stack.fastsnap_glance.images.upload(base, Sparse(base_written, base_written), image_size=base_written,
                                   backend="fast")
        stack.copy_image(base, timeout=900)
        rbd.RBD().clone(stack.images, base, "snap", stack.vms, disk)
        with rbd.Image(stack.vms, disk) as d:
            d.resize(virtual)
            write_objects(d, virtual, written)
        first = measure(stack, env, config, "first-backup", disk, BACKUP_ENV, *backup_args(instance, "--base-image",
                                                                                            base))
        made.append(first["image_id"])
        with rbd.Image(stack.vms, disk) as d:
            write_objects(d, virtual, rewritten, seed=3)
        rows = [measure(stack, env, config, "incremental", disk, BACKUP_ENV, *backup_args(instance))]
        made.append(rows[0]["image_id"])
        for label, extra in (("delta", {}), ("stream", {"OS_CEPH__REMOTE_CLUSTERS": ""})):
            row = measure(stack, env, config, label, disk, extra, "--store", "remote", "--base-image", base)
            made.append(row["image_id"])
            rows.append(row)
        for r in rows:
            log(f"{r['label']} ({r['path']}): {r['seconds']}s, A read {r['osd_a_read_bytes'] >> 20} MiB, "
                f"B written {r['osd_b_write_bytes'] >> 20} MiB")
        by = {r["label"]: r for r in rows}
        inc = by["incremental"]
        return {"virtual": virtual, "base_written": base_written, "written": written, "rewritten": rewritten,
                "first": first, "rows": rows,
                "a_read_over_changed": round(inc["osd_a_read_bytes"] / rewritten, 3),
                "b_written_over_changed": round(inc["osd_b_write_bytes"] / rewritten, 3),
                "speedup_over_delta": round(by["delta"]["seconds"] / inc["seconds"], 2),
                "speedup_over_stream": round(by["stream"]["seconds"] / inc["seconds"], 2),
                "speedup_over_delta_in_process": round(by["delta"]["api_seconds"] / inc["api_seconds"], 2),
                "speedup_over_stream_in_process": round(by["stream"]["api_seconds"] / inc["api_seconds"], 2)}
    finally:
        for image_id in made:
            delete(stack, image_id)
        remove_disk(stack, disk)
        delete(stack, base)


def disk_sha(stack: Stack, name: str) -> str:
    h = hashlib.sha256()
    with rbd.Image(stack.vms, name, read_only=True) as img:
        for off in range(0, img.size(), 8 * MiB):
            h.update(img.read(off, min(8 * MiB, img.size() - off)))
    return h.hexdigest()


def glance_sha(stack: Stack, image_id: str) -> str:
    h = hashlib.sha256()
    for chunk in stack.fastsnap_glance.images.data(image_id):
        h.update(chunk)
    return h.hexdigest()


def leftovers(ids: set[str], disk: str, stack: Stack) -> dict[str, list[str]]:
    """What is left of the chain: on A (the disk, images named after a backup), on B (images, trash entries)."""
    b = rados.Rados(conffile=os.environ["CEPH_CONF_REMOTE"], rados_id="admin")
    b.connect(timeout=30)
    try:
        with b.open_ioctx("images") as io:
            on_b = sorted(ids & set(rbd.RBD().list(io)))
            trash_b = sorted(ids & {str(e["name"]) for e in rbd.RBD().trash_list(io)})
    finally:
        b.shutdown()
    on_a = sorted((ids | {disk}) & (set(rbd.RBD().list(stack.vms)) | set(rbd.RBD().list(stack.images))))
    return {"a": on_a, "b": on_b, "b_trash": trash_b}


def chain(stack: Stack, env: Env, config: str, n: int, rotation: int) -> dict[str, Any]:
    virtual, rewritten = 128 * MiB, 4 * MiB
    disk = f"bench-chain-{uuid.uuid4().hex[:8]}"
    instance = str(uuid.uuid4())
    rbd.RBD().create(stack.vms, disk, virtual, old_format=False)
    taken: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    try:
        with rbd.Image(stack.vms, disk) as d:
            write_objects(d, virtual, 64 * MiB)
        for i in range(n):
            if i:
                with rbd.Image(stack.vms, disk) as d:
                    d.write(os.urandom(rewritten), (i * 5 % 30) * (rewritten))
                time.sleep(1.1)  # Glance's created_at has one-second resolution (rotation orders by it)
            sha = disk_sha(stack, disk)
            row = measure(stack, env, config, f"chain-{i}", disk, BACKUP_ENV,
                          *backup_args(instance, "--rotation", str(rotation)))
            taken[row["image_id"]] = sha
            rows.append({k: row[k] for k in ("path", "seconds", "osd_a_read_bytes", "osd_b_write_bytes",
                                            "result_transfer", "rotated")})
            log(f"chain {i}: {row['path']} {row['seconds']}s depth {row['result_transfer'].get('chain_depth')}")
        kept = [i["id"] for i in stack.fastsnap_glance.images.list(filters={"instance_uuid": instance})]
        identical = {image_id: glance_sha(stack, image_id) == taken[image_id] for image_id in kept}
    finally:
        for image_id in taken:
            delete(stack, image_id)
        remove_disk(stack, disk)
    deadline = time.monotonic() + 300
    while True:  # recover sweeps B's trash; a flatten on B's mgr may still be freeing a parent
        run(fastsnap_argv(config, "recover", "--json"))
        left = leftovers(set(taken), disk, stack)
        if not any(left.values()) or time.monotonic() > deadline:
            break
        time.sleep(3)
    depths = [int(r["result_transfer"].get("chain_depth", 0)) for r in rows]
    return {"backups": n, "rotation": rotation, "virtual": virtual, "rewritten": rewritten,
            "paths": sorted({r["path"] for r in rows}), "kept": len(kept),
            "kept_identical": all(identical.values()) and len(identical) == rotation, "max_depth": max(depths),
            "depths": depths, "seconds_median": sorted(r["seconds"] for r in rows)[n // 2],
            "left_after_delete": left, "clean": not any(left.values()), "rows": rows}


def main(argv: list[str] | None = None) -> int:
    p = scaled_parser(__doc__, "fraction of the issue's workload")
    p.add_argument("--chain", type=int, default=30, help="backups in the chain (0: none)")
    p.add_argument("--rotation", type=int, default=7)
    a = p.parse_args(argv)
    env = Env.load()
    stack = connect(env)
    config = env.bench_config()
    out: dict[str, Any] = {"benchmark": "incremental", "scale": a.scale, "machine": machine_facts(stack),
                           "comparison": comparison(stack, env, config, a.scale)}
    if a.chain:
        out["chain"] = chain(stack, env, config, a.chain, a.rotation)
    out["loadavg_after"] = os.getloadavg()
    out["targets"] = {"a_read_over_changed": 1.1, "b_written_over_changed": 1.1, "speedup_over_delta": 10,
                      "speedup_over_stream": 20}
    print_json(out, a.out)
    stack.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

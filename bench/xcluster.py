"""Snapshots into the rbd store on another cluster (issue 16): ``delta`` and ``copy`` against today's stream
through Glance, in the same run, on the same disks.

    python -m bench.xcluster [--scale 0.25] [--copy-sizes 0.25,1,2] [--out bench/results/xcluster.json]

The issue's workload is an 8 GiB virtual disk cloned from a 4 GiB-written base with 512 MiB rewritten by the
instance, and copies at 1/4/8 GiB written. On this shared 2-core machine the default ``--scale 0.25`` runs it at a
quarter: 2 GiB virtual, 1 GiB-written base, 128 MiB rewritten; copies at 0.25/1/2 GiB written (virtual 2x).

Per method: wall seconds of the CLI until the image is active (what the caller waits for; includes ~2-3 s of
Python start-up on this loaded machine), ``api_seconds`` (fastsnap's own clock from planning to active, as a
service or the Nova hook sees it), fastsnap's CPU seconds, Glance's
CPU seconds, bytes read from cluster A's OSD and written to cluster B's OSD (OSD perf counters), and the result's
own accounting. Glance's location import hashes a registered rbd image after activating it (reading it from B);
the bench waits for that hash before the next measurement and reports how long it took, apart.
Stream = the same fastsnap with no credentials for B (``OS_CEPH__REMOTE_CLUSTERS=``), i.e. today's path.
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import rbd

from bench.lib import (
    OBJ,
    Env,
    connect,
    daemon_cpu,
    fastsnap_argv,
    log,
    machine_facts,
    make_disk,
    osd_delta,
    print_json,
    run,
    scaled_parser,
)
from testkit import cleanup
from testkit.stack import Stack

MiB = 1 << 20
GiB = 1 << 30
GLANCE_OBJ = 8 * MiB  # Glance's rbd stores: rbd_store_chunk_size = 8


class Sparse(io.RawIOBase):
    """A file-like image body: ``written`` bytes of random data as whole objects spread over ``size``."""

    def __init__(self, size: int, written: int) -> None:
        self.size, self.pos = size, 0
        n_obj = size // GLANCE_OBJ
        n_data = max(1, min(n_obj, written // GLANCE_OBJ))
        self.data = {(i * n_obj // n_data) for i in range(n_data)}
        self.pattern = os.urandom(GLANCE_OBJ)

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.size:
            return b""
        n = min(n if n > 0 else MiB, MiB, self.size - self.pos)
        obj, off = divmod(self.pos, GLANCE_OBJ)
        n = min(n, GLANCE_OBJ - off)
        out = self.pattern[off:off + n] if obj in self.data else bytes(n)
        self.pos += n
        return out


def wait_for(what: str, pred: Any, timeout: float = 900) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.5)
    raise SystemExit(f"bench: timed out waiting for {what}")


def measure(stack: Stack, env: Env, config: str, label: str, disk: str, store_env: dict[str, str],
            *args: str) -> dict[str, Any]:
    conf_b = os.environ["CEPH_CONF_REMOTE"]
    with daemon_cpu(env.run_dir) as cpu, osd_delta(env.ceph_conf) as a, osd_delta(conf_b) as b:
        proc = run(fastsnap_argv(config, "snapshot", "--disk", f"vms/{disk}", "--name", f"bench-{label}",
                                 "--store", "remote", "--json", *args), env={**os.environ, **store_env})
    res = proc.json()
    # Glance hashes a registered rbd image after activating it; wait for it so it does not run into the next one.
    hashed = 0.0
    if res["path"] != "stream":
        hashed = wait_for("Glance's hash", lambda: bool((stack.image(res["image_id"]) or {}).get("os_hash_value")))
    return {"label": label, "path": res["path"], "reason": res["reason"], "image_id": res["image_id"],
            "seconds": round(proc.wall, 2), "api_seconds": res["seconds"],
            "fastsnap_cpu": round(proc.user_cpu + proc.sys_cpu, 2),
            "glance_cpu": cpu.get("glance", 0.0), "osd_a_cpu": cpu.get("osd", 0.0),
            "osd_a_read_bytes": a.op_r_out_bytes, "osd_a_read_ops": a.op_r, "osd_b_write_bytes": b.op_w_in_bytes,
            "result_bytes_read": res["bytes_read"], "result_transfer": res.get("transfer", {}),
            "peak_rss": proc.max_rss, "glance_hash_seconds_after": round(hashed, 1)}


def delete(stack: Stack, image_id: str) -> None:
    try:
        stack.fastsnap_glance.images.delete(image_id)
    except Exception as exc:  # best effort clean-up, reported
        log(f"could not delete image {image_id}: {exc}")


def remove_disk(stack: Stack, name: str) -> None:
    """Best-effort clean-up, reported."""
    try:
        cleanup.remove_disk(stack.vms, name)
    except rbd.Error as exc:
        log(f"could not remove vms/{name}: {exc}")


def delta_series(stack: Stack, env: Env, config: str, scale: float) -> Iterator[dict[str, Any]]:
    virtual, base_written, rewritten = int(8 * GiB * scale), int(4 * GiB * scale), int(512 * MiB * scale)
    base_size = base_written * 3 // 2
    log(f"delta: base {base_written >> 20} MiB written of {base_size >> 20} MiB, disk {virtual >> 20} MiB, "
        f"{rewritten >> 20} MiB rewritten")
    img = stack.fastsnap_glance.images.create(name="bench-xc-base", disk_format="raw", container_format="bare")
    base = str(img["id"])
    disk = f"bench-xc-delta-{base[:8]}"
    try:
        t0 = time.monotonic()
        stack.fastsnap_glance.images.upload(base, Sparse(base_size, base_written), image_size=base_size, backend="fast")
        upload_s = time.monotonic() - t0
        t0 = time.monotonic()
        stack.copy_image(base, timeout=900)
        copy_s = time.monotonic() - t0
        log(f"base uploaded to fast in {upload_s:.1f}s, copied to remote in {copy_s:.1f}s")
        rbd.RBD().clone(stack.images, base, "snap", stack.vms, disk)
        with rbd.Image(stack.vms, disk) as d:
            d.resize(virtual)
            n_obj = virtual // GLANCE_OBJ
            n = max(1, rewritten // GLANCE_OBJ)
            pattern = os.urandom(GLANCE_OBJ)
            for i in range(n):
                d.write(pattern, (i * n_obj // n) * GLANCE_OBJ)
        meta = {"virtual": virtual, "base_written": base_written, "rewritten": rewritten,
                "base_upload_seconds": round(upload_s, 1), "copy_image_seconds": round(copy_s, 1)}
        for label, store_env in (("delta", {}), ("stream", {"OS_CEPH__REMOTE_CLUSTERS": ""})):
            row = measure(stack, env, config, label, disk, store_env, "--base-image", base)
            row.update(meta)
            log(f"{label}: {row['seconds']}s, A read {row['osd_a_read_bytes'] >> 20} MiB")
            delete(stack, row["image_id"])
            yield row
    finally:
        remove_disk(stack, disk)
        delete(stack, base)


def copy_series(stack: Stack, env: Env, config: str, sizes: list[float]) -> Iterator[dict[str, Any]]:
    for gib in sizes:
        written = int(gib * GiB) // OBJ * OBJ
        disk = f"bench-xc-copy-{int(gib * 1000)}-{os.getpid()}"
        make_disk(stack, disk, 2 * written, written)
        try:
            for label, store_env in (("copy", {}), ("stream", {"OS_CEPH__REMOTE_CLUSTERS": ""})):
                row = measure(stack, env, config, label, disk, store_env)
                row.update({"virtual": 2 * written, "written": written})
                log(f"{label} {gib} GiB: {row['seconds']}s")
                delete(stack, row["image_id"])
                yield row
        finally:
            remove_disk(stack, disk)


def ratios(rows: list[dict[str, Any]], fast: str) -> dict[str, Any]:
    by = {r["label"]: r for r in rows}
    f, s = by[fast], by["stream"]
    return {"speedup": round(s["seconds"] / f["seconds"], 2),
            "speedup_in_process": round(s["api_seconds"] / f["api_seconds"], 2),
            "glance_cpu_stream_over_fast": round(s["glance_cpu"] / max(f["glance_cpu"], 0.01), 1),
            "a_read_bytes_ratio": round(f["osd_a_read_bytes"] / max(s["osd_a_read_bytes"], 1), 3)}


def main(argv: list[str] | None = None) -> int:
    p = scaled_parser(__doc__, "fraction of the issue's delta workload")
    p.add_argument("--copy-sizes", default="0.25,1,2", help="GiB written for copy vs stream")
    a = p.parse_args(argv)
    env = Env.load()
    stack = connect(env)
    config = env.bench_config()
    facts = machine_facts(stack)
    delta_rows = list(delta_series(stack, env, config, a.scale))
    d = {r["label"]: r for r in delta_rows}
    delta = {"rows": delta_rows, **ratios(delta_rows, "delta"),
             "bytes_moved_over_changed": round(d["delta"]["osd_b_write_bytes"] / d["delta"]["rewritten"], 3),
             "a_read_over_changed": round(d["delta"]["osd_a_read_bytes"] / d["delta"]["rewritten"], 3)}
    copies = []
    for gib in [float(x) for x in a.copy_sizes.split(",")]:
        rows = list(copy_series(stack, env, config, [gib]))
        copies.append({"written_gib": gib, "rows": rows, **ratios(rows, "copy")})
    out = {"benchmark": "xcluster", "scale": a.scale, "machine": facts,
           "loadavg_after": os.getloadavg(), "delta": delta, "copy": copies,
           "targets": {"delta_speedup": 10, "delta_bytes_moved_over_changed": 1.1, "copy_speedup": 3}}
    print_json(out, a.out)
    stack.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

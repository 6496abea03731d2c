"""The snapshot methods compared, each measured on a given disk ``vms/<disk>`` and returning a :class:`Row`.

Clone family (same cluster, O(1) or O(data)):
  floor             two bare RBD snapshot creations + one clone (librbd, connected client): the least any
                    clone-path snapshot must do
  fastsnap-clone    ``Fastsnap(...).snapshot(...)`` into store ``fast`` in this process (warm client)
  fastsnap-clone-cli  the ``fastsnap snapshot --store fast`` command (wall time, peak RSS, local disk)
  nova-direct       Nova's libvirt rbd ``direct_snapshot``: queued image, temporary snapshot (protected),
                    clone into the Glance pool, **synchronous flatten**, remove the temporary snapshot,
                    create + protect ``snap``, register the location (Glance location API), wait until active
Stream family (into the default file store ``cheap``):
  fastsnap-stream   ``fastsnap snapshot --store cheap`` (stream path) as a subprocess
  ceiling-export    ``rbd export vms/<disk> - | curl -T - .../v2/images/<id>/file`` (same store)
  ceiling-zeros     ``head -c <size> /dev/zero | curl -T - ...`` (same upload, no Ceph at all)
  nova-generic      Nova's fallback: ``qemu-img convert -t none -f raw -O raw rbd:vms/<disk>:...`` to a local
                    file, then ``images.upload`` of that file to the default store
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from typing import Any

import rbd

from bench.lib import (
    Cleanup,
    Row,
    daemon_cpu,
    fastsnap_argv,
    log,
    median,
    osd_delta,
    run,
    run_shell,
    unique,
)
from testkit.stack import Stack

SNAP = "snap"


def settle(stack: Stack, cleanup: Cleanup, image_id: str, result: dict[str, Any] | None = None) -> dict[str, Any]:
    """After a clone-path snapshot: wait for a queued background flatten to finish (so it does not load the
    cluster during the next measurement), then delete the image. Returns what was observed."""
    info: dict[str, Any] = {}
    flatten = (result or {}).get("flatten") or {}
    if isinstance(flatten, dict) and flatten:
        info["flatten"] = {k: flatten.get(k) for k in ("policy", "state", "why")}
        if flatten.get("state") == "queued":
            try:
                info["background_flatten_s"] = round(stack.wait_no_parent(stack.images, image_id, 900), 2)
            except RuntimeError as exc:
                info["background_flatten_error"] = str(exc)
    cleanup.drop_image(image_id)
    return info


# -- clone family -------------------------------------------------------------------------------------------


def floor(stack: Stack, disk: str, repeats: int) -> Row:
    runs: list[float] = []
    with rbd.Image(stack.vms, disk, read_only=True) as img:
        virtual = int(img.size())
    for _ in range(repeats):
        snap = f"bench-floor-{uuid.uuid4().hex[:8]}"
        clone = unique("floor")
        t0 = time.monotonic()
        with rbd.Image(stack.vms, disk) as img:
            img.create_snap(snap)
        rbd.RBD().clone(stack.vms, disk, snap, stack.images, clone)
        with rbd.Image(stack.images, clone) as c:
            c.create_snap(SNAP)
        runs.append(time.monotonic() - t0)
        with rbd.Image(stack.images, clone) as c:
            c.remove_snap(SNAP)
        rbd.RBD().remove(stack.images, clone)
        with rbd.Image(stack.vms, disk) as img:
            img.remove_snap2(snap, rbd.RBD_SNAP_REMOVE_UNPROTECT)
    return Row("floor", disk, 0, virtual, median(runs), runs=runs,
               note="2 RBD snapshot creations + 1 clone (librbd, connected); median")


def fastsnap_clone_api(stack: Stack, cleanup: Cleanup, fs: Any, disk: str, repeats: int) -> Row:
    from fastsnap import SnapshotRequest

    runs: list[float] = []
    extra: dict[str, Any] = {"results": []}
    virtual = 0
    for _ in range(repeats):
        name = unique("clone")
        t0 = time.monotonic()
        res = fs.snapshot(SnapshotRequest(disk=f"vms/{disk}", name=name, store="fast"))
        runs.append(time.monotonic() - t0)
        d = res.to_dict()
        virtual = int(d["size"])
        cleanup.image(d["image_id"])
        if d["path"] != "clone":
            raise RuntimeError(f"expected the clone path, got {d['path']}: {d['reason']}")
        extra["results"].append(settle(stack, cleanup, d["image_id"], d))
    return Row("fastsnap-clone", disk, 0, virtual, median(runs), runs=runs,
               note="Fastsnap.snapshot() in-process, warm client; median", extra=extra)


def fastsnap_clone_cli(stack: Stack, cleanup: Cleanup, config: str, disk: str) -> Row:
    p = run(fastsnap_argv(config, "snapshot", "--disk", f"vms/{disk}", "--name", unique("clonecli"),
                          "--store", "fast", "--json"))
    d = p.json()
    cleanup.image(d["image_id"])
    extra = settle(stack, cleanup, d["image_id"], d)
    return Row("fastsnap-clone-cli", disk, 0, int(d["size"]), float(d["seconds"]), runs=[float(d["seconds"])],
               wall=p.wall, peak_rss=p.max_rss, local_write_bytes=p.write_bytes,
               note="fastsnap CLI: seconds = its own timing, wall = process", extra=extra)


def nova_direct(stack: Stack, cleanup: Cleanup, disk: str) -> Row:
    """Nova's ``Rbd.direct_snapshot`` + location registration, step by step, timed."""
    steps: dict[str, float] = {}
    t0 = last = time.monotonic()

    def mark(step: str) -> None:
        nonlocal last
        now = time.monotonic()
        steps[step] = round(now - last, 3)
        last = now

    image_id = cleanup.image(stack.create_image(unique("novadirect")))  # nova-api's queued image
    mark("create_image")
    snap = uuid.uuid4().hex
    with rbd.Image(stack.vms, disk) as img:
        virtual = int(img.size())
        img.create_snap(snap)
        img.protect_snap(snap)
    mark("snapshot+protect")
    rbd.RBD().clone(stack.vms, disk, snap, stack.images, image_id)
    mark("clone")
    try:
        with rbd.Image(stack.images, image_id) as c:
            c.flatten()
        mark("flatten")
    finally:
        with rbd.Image(stack.vms, disk) as img:  # cleanup_direct_snapshot: unprotect + remove
            with contextlib.suppress(rbd.InvalidArgument):
                img.unprotect_snap(snap)
            img.remove_snap(snap)
        mark("remove_temp_snap")
    with rbd.Image(stack.images, image_id) as c:
        c.create_snap(SNAP)
        c.protect_snap(SNAP)
    mark("snap+protect")
    url = f"rbd://{stack.fsid_a}/images/{image_id}/{SNAP}"
    stack.fastsnap_glance.images.add_image_location(image_id, url, validation_data={})
    mark("add_location")
    stack.wait_active(image_id)
    mark("wait_active")
    seconds = time.monotonic() - t0
    cleanup.drop_image(image_id)
    return Row("nova-direct", disk, 0, virtual, seconds, runs=[seconds], extra={"steps": steps},
               note="Nova libvirt rbd direct_snapshot (sync flatten) + location API, until active")


# -- stream family ------------------------------------------------------------------------------------------


def fastsnap_stream(stack: Stack, cleanup: Cleanup, config: str, disk: str, store: str = "cheap",
                    extra_env: dict[str, str] | None = None) -> Row:
    env = dict(os.environ, **(extra_env or {}))
    with osd_delta(stack.ceph_conf) as osd, daemon_cpu(stack.run_dir) as cpu:
        p = run(fastsnap_argv(config, "snapshot", "--disk", f"vms/{disk}", "--name", unique("stream"),
                              "--store", store, "--json"), env=env)
    d = p.json()
    cleanup.image(d["image_id"])
    if d["path"] != "stream":
        raise RuntimeError(f"expected the stream path, got {d['path']}")
    checksum = (stack.image(d["image_id"]) or {}).get("checksum")
    cleanup.drop_image(d["image_id"])
    return Row("fastsnap-stream", disk, 0, int(d["size"]), p.wall, runs=[p.wall], wall=p.wall,
               peak_rss=p.max_rss, local_write_bytes=p.write_bytes, osd_read_ops=osd.op_r,
               osd_read_bytes=osd.op_r_out_bytes,
               note="fastsnap CLI stream path; seconds = process wall",
               extra={"in_process_seconds": d["seconds"], "bytes_read": d["bytes_read"],
                      "bytes_streamed": d["bytes_streamed"], "checksum": checksum,
                      "cpu_s": {**cpu, "client": round(p.user_cpu + p.sys_cpu, 2)}})


AUTH_JSON = ('{"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "fastsnap", '
             '"domain": {"name": "Default"}, "password": "%s"}}}, "scope": {"project": {"name": "service", '
             '"domain": {"name": "Default"}}}}}')


def _ceiling_script(source: str, stack: Stack, name: str, store: str | None) -> tuple[str, dict[str, str]]:
    """A whole snapshot by shell, as little work as possible: Keystone token, queued image, ``source | curl``
    upload. Prints the image id first (for cleanup)."""
    env = dict(os.environ, BENCH_AUTH=AUTH_JSON % stack.env["FASTSNAP_TEST_SERVICE_PASSWORD"],
               BENCH_KS=stack.env["OS_AUTH_URL"], BENCH_GLANCE=stack.env["FASTSNAP_TEST_GLANCE_URL"],
               BENCH_IMAGE=json.dumps({"name": name, "disk_format": "raw", "container_format": "bare"}))
    store_h = f"-H 'X-Image-Meta-Store: {store}'" if store else ""
    script = f"""set -euo pipefail
tok=$(curl -sS -f -i -H 'Content-Type: application/json' -d "$BENCH_AUTH" "$BENCH_KS/auth/tokens" \
      | awk 'tolower($1) == "x-subject-token:" {{ print $2 }}' | tr -d '\r')
id=$(curl -sS -f -H "X-Auth-Token: $tok" -H 'Content-Type: application/json' -d "$BENCH_IMAGE" \
     "$BENCH_GLANCE/v2/images" | grep -o '"id": *"[^"]*"' | head -n 1 | cut -d '"' -f 4)
echo "$id"
{source} | curl -sS -f -T - -H "X-Auth-Token: $tok" -H 'Content-Type: application/octet-stream' {store_h} \
  "$BENCH_GLANCE/v2/images/$id/file"
"""
    return script, env


def ceiling(stack: Stack, cleanup: Cleanup, disk: str, zeros: bool, store: str = "cheap") -> Row:
    with rbd.Image(stack.vms, disk, read_only=True) as img:
        virtual = int(img.size())
    source = (f"head -c {virtual} /dev/zero" if zeros else
              f"rbd -c {stack.ceph_conf} --id admin export --no-progress vms/{disk} -")
    script, env = _ceiling_script(source, stack, unique("ceiling"), store)
    with osd_delta(stack.ceph_conf) as osd, daemon_cpu(stack.run_dir) as cpu:
        p = run_shell(script, env)
    image_id = (p.stdout.split() or ["?"])[0]
    if len(image_id) == 36:
        cleanup.image(image_id)
    if p.returncode != 0:
        raise RuntimeError(f"ceiling upload failed: {p.stderr[-1000:]}")
    img = stack.wait_active(image_id)
    if int(img.get("size") or 0) != virtual:
        raise RuntimeError(f"ceiling upload stored {img.get('size')} bytes, not {virtual}")
    checksum = img.get("checksum")
    cleanup.drop_image(image_id)
    return Row("ceiling-zeros" if zeros else "ceiling-export", disk, 0, virtual, p.wall, runs=[p.wall],
               wall=p.wall, peak_rss=p.max_rss, local_write_bytes=p.write_bytes, osd_read_ops=osd.op_r,
               osd_read_bytes=osd.op_r_out_bytes,
               note="token + image create + " + ("zeros" if zeros else "rbd export") +
                    " | curl -T - into the same store; shell wall",
               extra={"cpu_s": {**cpu, "client": round(p.user_cpu + p.sys_cpu, 2)}, "checksum": checksum})


def nova_generic(stack: Stack, cleanup: Cleanup, disk: str, tmp_dir: str) -> Row:
    steps: dict[str, Any] = {}
    os.makedirs(tmp_dir, exist_ok=True)
    path = os.path.join(tmp_dir, f"{unique('generic')}.raw")
    t0 = time.monotonic()
    image_id = cleanup.image(stack.create_image(unique("novageneric")))
    steps["create_image"] = round(time.monotonic() - t0, 3)
    try:
        with osd_delta(stack.ceph_conf) as osd:
            p = run(["qemu-img", "convert", "-t", "none", "-f", "raw", "-O", "raw",
                     f"rbd:vms/{disk}:id=admin:conf={stack.ceph_conf}", path])
        if p.returncode != 0:
            raise RuntimeError(f"qemu-img convert failed: {p.stderr[-1000:]}")
        steps["qemu_img_convert"] = round(p.wall, 3)
        allocated = os.stat(path).st_blocks * 512
        t1 = time.monotonic()
        with open(path, "rb") as f, daemon_cpu(stack.run_dir) as cpu:
            stack.fastsnap_glance.images.upload(image_id, f)  # no store: Glance's default store, as Nova does
        steps["upload"] = round(time.monotonic() - t1, 3)
        img = stack.wait_active(image_id)
        seconds = time.monotonic() - t0
        virtual = int(img.get("size") or 0)
        steps["checksum"] = img.get("checksum")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    cleanup.drop_image(image_id)
    return Row("nova-generic", disk, 0, virtual, seconds, runs=[seconds], peak_rss=p.max_rss,
               local_write_bytes=p.write_bytes, osd_read_ops=osd.op_r, osd_read_bytes=osd.op_r_out_bytes,
               note="qemu-img convert to a local file + upload (default store); RSS/disk of qemu-img",
               extra={"steps": steps, "temp_file_allocated": allocated, "upload_cpu_s": cpu,
                      "qemu_img_cpu_s": round(p.user_cpu + p.sys_cpu, 2)})


def all_methods_note() -> str:
    return __doc__ or ""


__all__ = ["ceiling", "fastsnap_clone_api", "fastsnap_clone_cli", "fastsnap_stream", "floor", "log",
           "nova_direct", "nova_generic", "settle"]

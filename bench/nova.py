"""Snapshots through Nova (issue 12, "Benchmark"): `server image create` until the image is active, stock Nova
(``compute_driver = libvirt.LibvirtDriver``) against Nova + fastsnap (``fastsnap.FastsnapLibvirtDriver`` and the
fastsnap service on the compute host's unix socket), on the same running guest, disks with N GiB written.

    source <run dir>/env.sh   # the stack with its Nova part: ceph-test-env/up --nova
    .venv/bin/python -m bench.nova [--clone 1,4,8] [--stream 1,4] [--out bench]

Per case: a server is booted from the test guest image (``fast``: clone path; ``remote``, another cluster: the
stream path, stock Nova's fallback) with a flavor whose root disk is the written size + 1 GiB; it is stopped, N GiB
are written into its RBD disk from the host with librbd (past the guest's 256 MiB filesystem), it is started
again and keeps writing its counter. Then one snapshot with each driver (the order alternates from case to case;
``ceph-test-env/up --nova`` switches nova-compute), timed from the createImage call until Glance shows the image
``active`` (what ``openstack server image create --wait`` waits for), while the guest's libvirt state (every
50 ms) and its counter (every second, through its agent) are recorded. Between measurements: Glance's hashing of a
registered location and fastsnap's background flatten are waited for, the image is deleted and snapshot trimming
is waited for.

Writes OUT/results/nova.json (after every case) and the "Through Nova" section of OUT/RESULTS.md."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lib import arg_parser, trim_at_once, wait_trimmed, write_blocks
from testkit.env import read_env
from testkit.novaapi import NovaAPI
from testkit.novahost import (
    HOOK_DRIVER,
    STOCK_DRIVER,
    FastsnapService,
    Watch,
    switch_driver,
    wait_counter,
)
from testkit.results import markers, read_saved, results_dir, write_section
from testkit.stack import Stack, connect

GiB = 1 << 30
MiB = 1 << 20
SECTION = "nova"
BEGIN, END = markers(SECTION)
DATA_OFFSET = 512 * MiB   # past the guest's 256 MiB ext4 filesystem


def log(msg: str) -> None:
    print(f"[bench.nova {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fill_disk(stack: Stack, disk: str, nbytes: int, window: int = 16) -> float:
    """Write ``nbytes`` of incompressible data into vms/disk from DATA_OFFSET on, ``window`` 4 MiB writes in
    flight; seconds."""
    import rbd

    blocks = [os.urandom(4 * MiB) for _ in range(8)]
    t0 = time.monotonic()
    with rbd.Image(stack.vms, disk) as img:
        assert img.size() >= DATA_OFFSET + nbytes, f"{disk} is {img.size()} bytes, too small"
        errors = write_blocks(img, range(DATA_OFFSET, DATA_OFFSET + nbytes, 4 * MiB), blocks, window)
    if errors:
        raise RuntimeError(f"writing {disk}: errors {errors[:5]}")
    return time.monotonic() - t0


def wait_snaptrim(stack: Stack, timeout: float = 900) -> float:
    return wait_trimmed(stack.admin_a, timeout, poll=1)


class Bench:
    def __init__(self, out: Path) -> None:
        self.env = read_env()
        self.cloud = NovaAPI(self.env)
        self.stack = connect(self.env)
        self.driver = self.env.get("FASTSNAP_TEST_NOVA_DRIVER", STOCK_DRIVER)
        self.out = out
        self.switches: list[float] = []
        self.compute_log = Path(self.env["FASTSNAP_TEST_NOVA_CONF"]).parent / "log/nova-compute.log"

    def use(self, driver: str) -> None:
        if driver != self.driver:
            secs = switch_driver(driver)
            self.switches.append(round(secs, 1))
            log(f"  nova-compute: compute_driver {driver} ({secs:.1f}s)")
            self.driver = driver
            self.env = read_env()

    def prepare(self, path: str, gib: int) -> dict[str, Any]:
        root = gib + 1
        flavor = self.cloud.flavor(f"fastsnap.bench{root}", disk=root)
        image = self.env["FASTSNAP_NOVA_IMAGE"] if path == "clone" else self.env["FASTSNAP_NOVA_IMAGE_REMOTE"]
        t0 = time.monotonic()
        sid = str(self.cloud.boot(image, f"bench-nova-{path}-{gib}g", flavor)["id"])
        boot = time.monotonic() - t0
        domain = self.cloud.domain(sid)
        wait_counter(self.env, domain)
        self.cloud.action(sid, {"os-stop": None})
        self.cloud.wait_server(sid, "SHUTOFF")
        fill = fill_disk(self.stack, f"{sid}_disk", gib * GiB)
        self.cloud.action(sid, {"os-start": None})
        self.cloud.wait_server(sid, "ACTIVE")
        _, value = wait_counter(self.env, domain)
        log(f"  server {sid} ({domain}), root disk {root} GiB: booted in {boot:.1f}s, {gib} GiB written in "
            f"{fill:.1f}s ({gib * GiB / fill / MiB:.0f} MiB/s), counter {value} after restart")
        return {"server": sid, "domain": domain, "root_gib": root, "boot_seconds": round(boot, 1),
                "fill_seconds": round(fill, 1)}

    def snapshot(self, case: dict[str, Any], driver: str, svc: FastsnapService) -> dict[str, Any]:
        sid, domain = case["server"], case["domain"]
        name = f"bench-nova-{case['path']}-{case['written_gib']}g-{'fastsnap' if driver == HOOK_DRIVER else 'stock'}"
        load0 = os.getloadavg()[0]
        with Watch(self.env, domain) as watch:
            t0 = time.monotonic()
            log_offset = self.compute_log.stat().st_size
            image_id, request_id = self.cloud.image_create(sid, name)
            try:
                img = self.cloud.wait_image(image_id)
                active = time.monotonic() - t0
                self.cloud.wait_server(sid, "ACTIVE", 1800)
                idle = time.monotonic() - t0
            except Exception:
                self.cloud.delete_image(image_id)
                raise
        row: dict[str, Any] = {
            "driver": driver, "image_id": image_id, "seconds": round(active, 2), "server_idle_seconds": round(idle, 2),
            "stores": img.get("stores"), "size": img.get("size"), "loadavg_1m_before": round(load0, 2),
            **watch.summary(),
        }
        row.update(nova_steps(self.compute_log, log_offset, request_id))
        job = svc.job_for(image_id)
        if driver == HOOK_DRIVER:
            if not job or job.get("state") != "done":
                raise RuntimeError(f"fastsnap did not take snapshot {image_id} (job {job}): Nova fell back")
            res = job.get("result") or {}
            row["fastsnap"] = {k: res.get(k) for k in ("path", "store", "reason", "seconds", "bytes_streamed",
                                                       "bytes_read", "flatten", "quiesced")}
            row["fastsnap"]["freeze_seconds"] = (res.get("quiesce") or {}).get("freeze_seconds")
        elif job:
            raise RuntimeError(f"stock Nova run went through fastsnap: {job}")
        # Background work the snapshot left, waited for so that it does not weigh on the next measurement.
        deadline = time.monotonic() + 300
        while not (self.cloud.image(image_id) or {}).get("os_hash_value"):
            if time.monotonic() > deadline:
                log(f"  image {image_id}: no os_hash_value 300 s after the server was idle")
                break
            time.sleep(1)
        row["glance_hash_after_active_s"] = round(time.monotonic() - t0 - active, 1)
        if driver == HOOK_DRIVER and row["fastsnap"]["path"] == "clone":
            t2 = time.monotonic()
            while self.stack.has_parent(self.stack.images, image_id) and time.monotonic() - t2 < 1800:
                time.sleep(1)
            row["background_flatten_done_after_active_s"] = round(time.monotonic() - t0 - active, 1)
        self.cloud.delete_image(image_id)
        row["snaptrim_wait_s"] = round(wait_snaptrim(self.stack), 1)
        log(f"  {'fastsnap' if driver == HOOK_DRIVER else 'stock   '}: active in {active:.2f}s (server idle "
            f"{idle:.2f}s), stores {row['stores']}, states {row['domain_states']}, counter stall "
            f"{row['counter_max_stall_s']}s"
            + (f", fastsnap {row['fastsnap']['path']} {row['fastsnap']['seconds']:.2f}s" if "fastsnap" in row else ""))
        return row


STEPS = {"begin": ("Beginning live snapshot process", "Beginning cold snapshot process"),
         "extracted": ("Snapshot extracted, beginning image upload",),
         "uploaded": ("Snapshot image upload complete",)}


def nova_steps(compute_log: Path, offset: int, request_id: str) -> dict[str, Any]:
    """Durations of stock Nova's own snapshot steps, from nova-compute's log lines of this request: extraction
    (its fallback: guest suspended, ``qemu-img convert`` to a local file) and upload."""
    from datetime import datetime

    seen: dict[str, datetime] = {}
    if not request_id:
        return {}
    with open(compute_log, errors="replace") as f:
        f.seek(offset)
        for line in f:
            if request_id not in line:
                continue
            for step, texts in STEPS.items():
                if any(t in line for t in texts):
                    seen[step] = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
    out: dict[str, Any] = {"request_id": request_id}
    if "begin" in seen and "extracted" in seen:
        out["nova_extract_s"] = round((seen["extracted"] - seen["begin"]).total_seconds(), 2)
    if "extracted" in seen and "uploaded" in seen:
        out["nova_upload_s"] = round((seen["uploaded"] - seen["extracted"]).total_seconds(), 2)
    return out


def ratios(cases: list[dict[str, Any]]) -> None:
    for c in cases:
        runs = {r["driver"]: r for r in c.get("runs", [])}
        if STOCK_DRIVER in runs and HOOK_DRIVER in runs:
            c["ratio_stock_over_fastsnap"] = round(runs[STOCK_DRIVER]["seconds"] / runs[HOOK_DRIVER]["seconds"], 2)


def _ratio(r: float | None) -> str:
    return "-" if r is None else (f"**{r:.2f}x**" if r < 10 else f"**{r:.1f}x**")


def section(result: dict[str, Any]) -> str:
    f = result["facts"]
    lines = [BEGIN, f"## Through Nova (`python -m bench.nova`, {f['started']} - {f['ended']})", "",
             "`server image create` until Glance shows the image `active` (what `openstack server image create "
             "--wait` waits for), stock Nova 34 (`compute_driver = libvirt.LibvirtDriver`) against Nova + fastsnap "
             "(`fastsnap.FastsnapLibvirtDriver`, the fastsnap service on the compute host's unix socket), one run "
             "each on the same running guest (QEMU TCG, writing its counter); the data was written into the "
             "server's RBD disk from the host (librbd) beyond the guest's 256 MiB filesystem; root disk = written "
             "+ 1 GiB. Clone path: guest booted from `fast` (stock Nova: clone + synchronous flatten into `images`; "
             "fastsnap: clone, flatten queued in the background). Stream path: guest booted from `remote` (other "
             "cluster; stock Nova: its fallback, guest suspended, `qemu-img convert` to a local file, upload to "
             "the default store `cheap`; fastsnap: live stream into `cheap`). Guest state: libvirt domain state "
             "sampled every 50 ms and the counter read through the guest agent every second, from the call "
             "until the server is idle again.", "",
             "| path | written / disk | stock Nova | Nova + fastsnap | stock / fastsnap | target | "
             "guest during stock | guest during fastsnap | fastsnap's own time |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in result["cases"]:
        runs = {r["driver"]: r for r in c.get("runs", [])}
        st, fs = runs.get(STOCK_DRIVER), runs.get(HOOK_DRIVER)
        ratio = c.get("ratio_stock_over_fastsnap")
        want = 10.0 if c["path"] == "clone" else 1.5
        target = f"≥ {want:g}x" + (("" if c["written_gib"] >= 8 else " (at 8 GiB)") if c["path"] == "clone" else "")
        met = "-" if ratio is None else ("met" if ratio >= want else "not met")
        if c["path"] == "clone" and c["written_gib"] < 8:
            met = "informative"

        def guest(r: dict[str, Any] | None) -> str:
            if not r:
                return "-"
            states = ", ".join(f"{k} {v:.1f} s" for k, v in r["domain_states"].items())
            return f"{states}; counter stalled ≤ {r['counter_max_stall_s']:.1f} s"

        own = "-"
        if fs and fs.get("fastsnap"):
            x = fs["fastsnap"]
            own = f"{x['path']} {x['seconds']:.2f} s" + (f", frozen {x['freeze_seconds'] * 1000:.0f} ms"
                                                          if x.get("freeze_seconds") else "")
        cells = [c["path"], f"{c['written_gib']} GiB / {c.get('root_gib', '?')} GiB",
                 f"{st['seconds']:.1f} s" if st else "-", f"{fs['seconds']:.2f} s" if fs else "-",
                 _ratio(ratio), f"{target}: {met}", guest(st), guest(fs), own]
        lines.append("| " + " | ".join(cells) + " |")
    streams = [(c, {r["driver"]: r for r in c.get("runs", [])}) for c in result["cases"] if c["path"] == "stream"]
    parts = [f"{c['written_gib']} GiB: extraction {rs[STOCK_DRIVER]['nova_extract_s']:.1f} s + upload "
             f"{rs[STOCK_DRIVER]['nova_upload_s']:.1f} s vs fastsnap's stream "
             f"{rs[HOOK_DRIVER]['fastsnap']['seconds']:.1f} s "
             f"({rs[HOOK_DRIVER]['fastsnap']['seconds'] / rs[STOCK_DRIVER]['nova_upload_s']:.2f}x the upload step)"
             for c, rs in streams if STOCK_DRIVER in rs and HOOK_DRIVER in rs
             and "nova_upload_s" in rs[STOCK_DRIVER] and "nova_extract_s" in rs[STOCK_DRIVER]]
    clones = [(c, {r["driver"]: r for r in c.get("runs", [])}) for c in result["cases"] if c["path"] == "clone"]
    after = [f"{c['written_gib']} GiB: stock {rs[STOCK_DRIVER].get('glance_hash_after_active_s')} s, fastsnap "
             f"{rs[HOOK_DRIVER].get('glance_hash_after_active_s')} s (its background flatten done within "
             f"{rs[HOOK_DRIVER].get('background_flatten_done_after_active_s')} s)"
             for c, rs in clones if STOCK_DRIVER in rs and HOOK_DRIVER in rs]
    if after:
        lines += ["", "Clone path, after the image is active (not in the times above, waited for before the next "
                  "measurement): Glance reads the registered image to hash it; hashes were set, after activation, "
                  "within " + "; ".join(after) + "."]
    if parts:
        lines += ["", "Stream path, where the time goes (stock Nova's steps from nova-compute's log lines of the "
                  "request: extraction = from \"Beginning ... snapshot process\" to \"Snapshot extracted\", the guest "
                  "suspended for most of it; upload = from there to \"upload complete\"): " + "; ".join(parts) + ". "
                  "Both carry the whole virtual disk (holes included: Glance takes a byte stream) into Glance's "
                  "file store, so both are bound by Glance's ingest here; what separates them is stock Nova's "
                  "extraction step (its guest does not run during most of it) against how close fastsnap's stream, "
                  "which reads the disk from the OSDs while it uploads, comes to an upload of a local file."]
    for e in result.get("earlier_runs", []):
        rs = ", ".join(f"{r['path']} {r['written_gib']} GiB {_ratio(r['ratio_stock_over_fastsnap']).strip('*')}"
                       for r in e["ratios"])
        lines += ["", f"Earlier run of this benchmark ({e['started']} - {e['ended']}, load average "
                  f"{e['loadavg_1m'][0]} → {e['loadavg_1m'][1]}), stock / fastsnap: {rs}."]
    lines += ["", f"Load average (1 min) at start {f['loadavg_start'][0]:.2f}, at end {f['loadavg_end'][0]:.2f} "
              f"(2 cores shared with other sessions); nova-compute driver switches (`ceph-test-env/up --nova`) took "
              f"{', '.join(f'{x:.0f}' for x in f['switches'])} s. "
              "Raw rows (server idle times, Glance hashing and background flatten after activation, counter "
              "reads): `bench/results/nova.json`.", END]
    return "\n".join(lines) + "\n"


def summarize(result: dict[str, Any], keep: int = 3) -> list[dict[str, Any]]:
    """A run's ratios and load (for ``earlier_runs`` of the next one), followed by its own earlier runs."""
    ratios(result.get("cases", []))
    f = result.get("facts", {})
    this = {"started": f.get("started"), "ended": f.get("ended"),
            "loadavg_1m": [round((f.get("loadavg_start") or [0])[0], 2), round((f.get("loadavg_end") or [0])[0], 2)],
            "ratios": [{"path": c["path"], "written_gib": c["written_gib"],
                        "ratio_stock_over_fastsnap": c.get("ratio_stock_over_fastsnap")}
                       for c in result.get("cases", [])]}
    return [this, *result.get("earlier_runs", [])][:keep]


def saved_section(bench_dir: str) -> str:
    """The recorded "Through Nova" section, for ``bench.report`` (empty when none was recorded)."""
    saved = read_saved(bench_dir, "nova.json")
    return section(saved) if saved is not None else ""


def write(out: Path, result: dict[str, Any]) -> None:
    ratios(result["cases"])
    (Path(results_dir(str(out))) / "nova.json").write_text(json.dumps(result, indent=1) + "\n")


def main() -> int:
    ap = arg_parser(__doc__)
    ap.add_argument("--clone", default="1,4,8", help="GiB written, clone-path cases ('' for none)")
    ap.add_argument("--stream", default="1,4", help="GiB written, stream-path cases ('' for none)")
    ap.add_argument("--out", default="bench")
    a = ap.parse_args()
    out = Path(a.out)
    cases = [("clone", int(x)) for x in a.clone.split(",") if x] + [("stream", int(x)) for x in a.stream.split(",")
                                                                     if x]
    earlier: list[dict[str, Any]] = []
    saved = Path(results_dir(str(out))) / "nova.json"
    if saved.exists():  # the previous runs' ratios stay beside this one's (noise on a shared host)
        earlier = summarize(json.loads(saved.read_text()))
    b = Bench(out)
    trim_at_once(b.stack.admin_a)  # see bench.lib.trim_at_once
    result: dict[str, Any] = {"facts": {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                        "loadavg_start": os.getloadavg(), "cpus": os.cpu_count(),
                                        "switches": b.switches}, "cases": [], "earlier_runs": earlier}
    with tempfile.TemporaryDirectory(prefix="fastsnap-bench-nova-") as tmp:
        svc = FastsnapService(b.env, Path(tmp))
        svc.start()
        try:
            for i, (path, gib) in enumerate(cases):
                log(f"case {path} {gib} GiB written")
                case: dict[str, Any] = {"path": path, "written_gib": gib, "runs": []}
                result["cases"].append(case)
                case.update(b.prepare(path, gib))
                order = [STOCK_DRIVER, HOOK_DRIVER] if i % 2 == 0 else [HOOK_DRIVER, STOCK_DRIVER]
                try:
                    for driver in order:
                        b.use(driver)
                        case["runs"].append(b.snapshot(case, driver, svc))
                        write(out, result)
                finally:
                    b.cloud.delete_servers(only=case["server"])
                    wait_snaptrim(b.stack)
        finally:
            svc.stop()
            log_text = svc.log.read_text(errors="replace")
            result["facts"]["fastsnap_service_tracebacks"] = log_text.count("Traceback")
            result["facts"]["ended"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            result["facts"]["loadavg_end"] = os.getloadavg()
            write(out, result)
            if b.driver != STOCK_DRIVER:
                b.use(STOCK_DRIVER)
    write_section(out / "RESULTS.md", SECTION, section(result))
    print(json.dumps([{k: c.get(k) for k in ("path", "written_gib", "ratio_stock_over_fastsnap")}
                      for c in result["cases"]]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Shared helpers of the benchmarks: connections, test disks, measured subprocesses, OSD counters, tables.

Everything here talks to the local test stack described by the environment of ``ceph-test-env``'s ``env.sh``
(``CEPH_CONF``, ``OS_AUTH_URL``, ``FASTSNAP_CONFIG_FILE``, ``FASTSNAP_TEST_*``). All disks and images the
benchmarks make are named ``bench-...`` and registered in a :class:`Cleanup`, which removes them at the end
(and :func:`sweep` removes leftovers of a killed run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import rbd

from testkit import stack as tk_stack
from testkit.env import read_env
from testkit.stack import Stack

GiB = 1 << 30
MiB = 1 << 20
OBJ = 4 << 20
PREFIX = "bench-"
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
VENV_BIN = os.path.dirname(sys.executable)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- command lines ---------------------------------------------------------------------------------------


def arg_parser(doc: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """A benchmark's argument parser: its module docstring (``doc``) as the description, kept as written."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def scaled_parser(doc: str | None, scale_help: str) -> argparse.ArgumentParser:
    """:func:`arg_parser` of a benchmark run at a fraction of an issue's workload that prints one JSON:
    ``--scale`` (that fraction, default 0.25) and ``--out`` (a file the JSON is written to too)."""
    p = arg_parser(doc)
    p.add_argument("--scale", type=float, default=0.25, help=scale_help)
    p.add_argument("--out", help="write the JSON here too")
    return p


# -- environment and connections ------------------------------------------------------------------------


@dataclass(frozen=True)
class Env:
    ceph_conf: str
    auth_url: str
    glance_url: str
    service_password: str
    fastsnap_config: str
    run_dir: str

    @classmethod
    def load(cls) -> Env:
        e = os.environ
        missing = [k for k in ("CEPH_CONF", "OS_AUTH_URL", "FASTSNAP_TEST_GLANCE_URL",
                               "FASTSNAP_TEST_SERVICE_PASSWORD", "FASTSNAP_CONFIG_FILE") if not e.get(k)]
        if missing:
            raise SystemExit(f"bench: source the stack's env.sh first (missing {', '.join(missing)})")
        return cls(e["CEPH_CONF"], e["OS_AUTH_URL"], e["FASTSNAP_TEST_GLANCE_URL"],
                   e["FASTSNAP_TEST_SERVICE_PASSWORD"], e["FASTSNAP_CONFIG_FILE"],
                   os.path.dirname(e["FASTSNAP_CONFIG_FILE"]))

    def bench_config(self, max_concurrent: int = 64, flatten: str | None = None,
                     location_api: str | None = None) -> str:
        """A copy of the stack's fastsnap.conf with the bench's overrides; returns its path."""
        with open(self.fastsnap_config) as f:
            text = f.read()
        text += f"\n[snapshot]\nmax_concurrent = {max_concurrent}\n"
        if flatten:
            text += f"flatten = {flatten}\n"
        if location_api:
            text += f"[glance]\nlocation_api = {location_api}\n"
        path = os.path.join(self.run_dir, "fastsnap-bench.conf")
        with open(path, "w") as f:
            f.write(text)
        return path


def connect(env: Env) -> Stack:
    """The stack of the sourced env.sh (its run directory's, read with :func:`testkit.env.read_env`), connected to
    Ceph A and B as client.admin; shut it down with :meth:`testkit.stack.Stack.shutdown`."""
    return tk_stack.connect(read_env(os.path.join(env.run_dir, "env.sh")))


# -- RBD images -----------------------------------------------------------------------------------------


def trim_at_once(cluster: Any) -> None:
    """The OSD is a file, so Ceph classes it as hdd and trims deleted snapshots with a 5 s sleep between steps:
    the space of deleted images would come back only long after a run. Trim at once (``cluster``: a connected
    ``rados.Rados`` with the rights of client.admin)."""
    for opt in ("osd_snap_trim_sleep", "osd_snap_trim_sleep_hdd"):
        cluster.mon_command(json.dumps({"prefix": "config set", "who": "osd", "name": opt, "value": "0"}), b"")


def wait_trimmed(cluster: Any, timeout: float, poll: float) -> float:
    """Wait until the OSDs of ``cluster`` (a connected ``rados.Rados``) have trimmed the snapshots of deleted images
    (their space is free again), looking every ``poll`` seconds; seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rc, out, _ = cluster.mon_command(json.dumps({"prefix": "pg stat", "format": "json"}), b"")
        states = json.loads(out).get("pg_summary", {}).get("num_pg_by_state", []) if rc == 0 else []
        if not any("snaptrim" in s.get("name", "") for s in states):
            break
        time.sleep(poll)
    return time.monotonic() - t0


# -- test disks -------------------------------------------------------------------------------------------


_PATTERNS: list[bytes] = []


def _patterns() -> list[bytes]:
    if not _PATTERNS:
        _PATTERNS.extend(os.urandom(OBJ) for _ in range(8))
    return _PATTERNS


def make_disk(stack: Stack, name: str, virtual: int, written: int, depth: int = 16) -> list[tuple[int, int]]:
    """Create ``vms/<name>`` (thin, ``virtual`` bytes) and write ``written`` bytes of random data as whole
    4 MiB objects spread evenly over it, holes between them. Returns the written (offset, length) extents."""
    rbd.RBD().create(stack.vms, name, virtual, old_format=False)
    n_obj = virtual // OBJ
    n_data = min(n_obj, max(1, written // OBJ))
    offsets = [(i * n_obj // n_data) * OBJ for i in range(n_data)]
    with rbd.Image(stack.vms, name) as img:
        errors = write_blocks(img, offsets, _patterns(), depth)
    if errors:
        raise RuntimeError(f"writing {name} failed: {errors[:3]}")
    return [(o, OBJ) for o in offsets]


def write_blocks(img: Any, offsets: Iterable[int], blocks: Sequence[bytes], depth: int) -> list[int]:
    """Write ``blocks[i % len(blocks)]`` at the i-th offset into the open ``rbd.Image``, ``depth`` asynchronous
    writes in flight, then flush; the error codes of the writes that failed."""
    sem = threading.Semaphore(depth)
    errors: list[int] = []

    def done(completion: Any) -> None:
        rc = int(completion.get_return_value())
        if rc < 0:
            errors.append(rc)
        sem.release()

    for i, off in enumerate(offsets):
        sem.acquire()
        img.aio_write(blocks[i % len(blocks)], off, done)
    for _ in range(depth):
        sem.acquire()
    img.flush()
    return errors


# -- measured processes ------------------------------------------------------------------------------------


@dataclass
class Proc:
    argv: list[str]
    returncode: int
    wall: float
    stdout: str
    stderr: str
    max_rss: int            # bytes, the peak of the process (and any children it waited for)
    write_bytes: int        # bytes the process caused to be written to block devices (ru_oublock * 512)
    read_bytes: int
    user_cpu: float
    sys_cpu: float

    def json(self) -> Any:
        if self.returncode != 0:
            raise RuntimeError(f"{' '.join(self.argv)[:200]} exited {self.returncode}: {self.stderr[-2000:]}")
        return json.loads(self.stdout.strip().splitlines()[-1])


class Started:
    """A started child whose resource use (peak RSS, bytes written to block devices) is read with ``wait4``
    by ``bench/launch.py``, a small launcher, so that the peak is the command's own (see launch.py)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, shell: bool = False) -> None:
        self.argv = list(argv)
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in wait()
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        fd, self._ru = tempfile.mkstemp(prefix="bench-ru-")
        os.close(fd)
        cmd = ["/bin/bash", "-c", self.argv[0]] if shell else self.argv
        self.t0 = time.monotonic()
        self.popen = subprocess.Popen(["/usr/bin/python3", "-S", "-I", os.path.join(BENCH_DIR, "launch.py"),
                                       self._ru, *cmd], env=env, stdout=self._out, stderr=self._err)

    def wait(self) -> Proc:
        self.popen.wait()
        wall = time.monotonic() - self.t0
        self._out.seek(0)
        self._err.seek(0)
        out = self._out.read().decode(errors="replace")
        err = self._err.read().decode(errors="replace")
        self._out.close()
        self._err.close()
        try:
            with open(self._ru) as f:
                ru = json.load(f)
        except (OSError, ValueError):
            ru = {"max_rss": 0, "write_bytes": 0, "read_bytes": 0, "user": 0.0, "sys": 0.0}
        finally:
            os.unlink(self._ru)
        return Proc(self.argv, self.popen.returncode, wall, out, err, int(ru["max_rss"]), int(ru["write_bytes"]),
                    int(ru["read_bytes"]), float(ru["user"]), float(ru["sys"]))


def run(argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
    return Started(argv, env).wait()


def run_shell(script: str, env: dict[str, str] | None = None) -> Proc:
    return Started([script], env, shell=True).wait()


def fastsnap_argv(config: str, *args: str) -> list[str]:
    return [os.path.join(VENV_BIN, "fastsnap"), "--config-file", config, *args]


# -- OSD counters ------------------------------------------------------------------------------------------


@dataclass
class OsdCounters:
    op_r: int = 0
    op_r_out_bytes: int = 0
    op_w: int = 0
    op_w_in_bytes: int = 0

    def __sub__(self, other: OsdCounters) -> OsdCounters:
        return OsdCounters(self.op_r - other.op_r, self.op_r_out_bytes - other.op_r_out_bytes,
                           self.op_w - other.op_w, self.op_w_in_bytes - other.op_w_in_bytes)


def osd_counters(ceph_conf: str) -> OsdCounters:
    """Read/write op and byte counters of every OSD of the cluster (``ceph daemon osd.N perf dump``)."""
    total = OsdCounters()
    run_dir = os.path.join(os.path.dirname(ceph_conf), "run")
    socks = sorted(f for f in os.listdir(run_dir) if re.fullmatch(r"osd\.\d+\.asok", f))
    for s in socks:
        out = subprocess.run(["ceph", "--admin-daemon", os.path.join(run_dir, s), "perf", "dump"],
                             capture_output=True, text=True, check=True, timeout=60).stdout
        d = json.loads(out)["osd"]
        total.op_r += int(d["op_r"])
        total.op_r_out_bytes += int(d["op_r_out_bytes"])
        total.op_w += int(d["op_w"])
        total.op_w_in_bytes += int(d["op_w_in_bytes"])
    return total


@contextlib.contextmanager
def osd_delta(ceph_conf: str) -> Iterator[OsdCounters]:
    """``with osd_delta(conf) as d: ...`` fills ``d`` with what the OSDs did inside the block."""
    before = osd_counters(ceph_conf)
    d = OsdCounters()
    yield d
    after = osd_counters(ceph_conf) - before
    d.op_r, d.op_r_out_bytes, d.op_w, d.op_w_in_bytes = (after.op_r, after.op_r_out_bytes, after.op_w,
                                                          after.op_w_in_bytes)


# -- results -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One measured method on one disk."""

    method: str
    disk: str
    written: int
    virtual: int
    seconds: float                      # the headline time of this method (see ``note``)
    runs: list[float] = field(default_factory=list)
    wall: float | None = None           # wall time of the whole process (CLI) when measured
    peak_rss: int | None = None         # bytes
    local_write_bytes: int | None = None
    osd_read_ops: int | None = None
    osd_read_bytes: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        return self.virtual / self.seconds / 1e6 if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mb_s"] = round(self.mb_s, 1)
        return d


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def obj_round(n: float) -> int:
    """``n`` bytes rounded to whole RBD objects (at least one)."""
    return max(OBJ, round(n / OBJ) * OBJ)


def pair(text: str) -> tuple[int, int]:
    """A ``VIRTUAL:WRITTEN`` size in GiB (``4:2``) as bytes, each rounded to whole objects."""
    v, w = (float(x) for x in text.split(":"))
    return obj_round(v * GiB), obj_round(w * GiB)


def gib(n: int | float) -> str:
    v = n / GiB
    return f"{v:g} GiB" if v >= 1 or v == 0 else f"{n / MiB:g} MiB"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def table(rows: Sequence[dict[str, Any]], cols: Sequence[tuple[str, str]]) -> str:
    """A plain-text table; ``cols`` are (key, header)."""
    cells = [[h for _, h in cols]] + [[_fmt(r.get(k)) for k, _ in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = ["  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i]) for i in range(len(cols)))
             for c in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    return str(v)


ROW_COLS: tuple[tuple[str, str], ...] = (
    ("method", "method"), ("disk_label", "written/virtual"), ("seconds", "seconds"), ("wall", "CLI wall s"),
    ("mb_s", "MB/s (virtual)"), ("rss", "peak RSS"), ("local", "local disk written"),
    ("osd_read", "read from OSDs"), ("osd_ops", "OSD read ops"),
)


def row_view(r: Row) -> dict[str, Any]:
    return {"method": r.method, "disk_label": f"{gib(r.written)}/{gib(r.virtual)}", "seconds": r.seconds,
            "wall": r.wall, "mb_s": round(r.mb_s, 1), "rss": human_bytes(r.peak_rss),
            "local": human_bytes(r.local_write_bytes), "osd_read": human_bytes(r.osd_read_bytes),
            "osd_ops": r.osd_read_ops}


def print_json(out: dict[str, Any], path: str | None) -> None:
    """Print a benchmark's JSON result (stdout) and, with ``path``, write the same text there."""
    text = json.dumps(out, indent=1)
    print(text)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")


def emit(name: str, payload: dict[str, Any], rows: Sequence[Row]) -> None:
    """Print a benchmark's JSON (stdout) and its readable table (stdout, after the JSON)."""
    print(json.dumps({"benchmark": name, **payload, "rows": [r.to_dict() for r in rows]}, indent=1))
    print()
    print(table([row_view(r) for r in rows], ROW_COLS))


# -- machine facts ------------------------------------------------------------------------------------------


def machine_facts(stack: Stack | None = None) -> dict[str, Any]:
    def cmd(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    facts: dict[str, Any] = {
        "cpus": os.cpu_count(), "cpu_model": cpu, "memory": human_bytes(mem), "kernel": platform.release(),
        "python": platform.python_version(), "ceph": cmd("ceph", "--version"),
        "qemu_img": cmd("qemu-img", "--version").splitlines()[0] if cmd("qemu-img", "--version") else "?",
        "loadavg": os.getloadavg(),
        "disk": cmd("findmnt", "-n", "-T", ROOT, "-o", "SOURCE,FSTYPE"),
    }
    try:
        from importlib.metadata import version
        facts["glance"] = version("glance")
        facts["glance_store"] = version("glance_store")
        facts["python_glanceclient"] = version("python-glanceclient")
    except Exception:
        pass
    return facts


def unique(label: str) -> str:
    return f"{PREFIX}{label}-{uuid.uuid4().hex[:8]}"


class Cleanup:
    """Glance images and RBD disks made by the benchmarks, removed in the right order at the end."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.images: list[str] = []
        self.disks: list[str] = []

    def image(self, image_id: str) -> str:
        self.images.append(image_id)
        return image_id

    def disk(self, name: str) -> str:
        self.disks.append(name)
        return name

    def drop_image(self, image_id: str) -> None:
        self.stack.delete_image(image_id)
        with contextlib.suppress(ValueError):
            self.images.remove(image_id)

    def drop_disk(self, name: str) -> None:
        self.stack.remove_disk(name)
        with contextlib.suppress(ValueError):
            self.disks.remove(name)

    def all(self) -> None:
        for i in list(self.images):
            try:
                self.drop_image(i)
            except Exception as exc:
                log(f"cleanup: image {i}: {exc}")
        for d in list(self.disks):
            try:
                self.drop_disk(d)
            except Exception as exc:
                log(f"cleanup: disk {d}: {exc}")


def _parent_name(pool: Any, name: str) -> str:
    try:
        with rbd.Image(pool, name, read_only=True) as img:
            return str(img.get_parent_image_spec()["image_name"])
    except rbd.ImageNotFound:
        return ""


def sweep(stack: Stack) -> int:
    """Remove every ``bench-`` Glance image and RBD disk left by an earlier (killed) run."""
    n = 0
    for img in stack.fastsnap_glance.images.list():
        if str(img.get("name") or "").startswith(PREFIX):
            stack.delete_image(img["id"])
            n += 1
    for name in rbd.RBD().list(stack.images):  # clones first: they hold their parents' snapshots
        parent = _parent_name(stack.images, name)
        # a bench image, or a clone of a bench disk that Glance does not know (a killed Nova-direct run)
        if name.startswith(PREFIX) or (parent.startswith(PREFIX) and stack.image(name) is None):
            stack.remove_disk(name, stack.images)
            n += 1
    for name in rbd.RBD().list(stack.vms):
        if name.startswith(PREFIX):
            stack.remove_disk(name, stack.vms)
            n += 1
    return n


def wait_snaptrim(stack: Stack, timeout: float = 600) -> float:
    """Wait until the OSDs have trimmed the snapshots of deleted images (their space is free again); seconds."""
    return wait_trimmed(stack.admin_a, timeout, poll=0.5)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out


# -- CPU of the stack's daemons -------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for t in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{t}/children") as f:
                out += [int(x) for x in f.read().split()]
    return out


def daemon_pids(run_dir: str, services: Sequence[str] = ("glance",)) -> dict[str, list[int]]:
    """The processes of the stack in ``run_dir``: each of ``services`` (a gunicorn master ``<service>/gunicorn.pid``
    and its workers, e.g. glance, keystone), then cluster A's OSDs (``osd``)."""
    pids: dict[str, list[int]] = {name: [] for name in services}
    for name in services:
        with contextlib.suppress(OSError, ValueError), open(os.path.join(run_dir, name, "gunicorn.pid")) as f:
            master = int(f.read().strip())
            pids[name] = [master, *_children(master)]
    pids["osd"] = []
    osd_run = os.path.join(run_dir, "ceph-a", "run")
    with contextlib.suppress(OSError):
        for fn in os.listdir(osd_run):
            if re.fullmatch(r"osd\.\d+\.pid", fn):
                with contextlib.suppress(ValueError), open(os.path.join(osd_run, fn)) as f:
                    pids["osd"].append(int(f.read().strip()))
    return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        with contextlib.suppress(OSError), open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


@contextlib.contextmanager
def daemon_cpu(run_dir: str) -> Iterator[dict[str, float]]:
    """``with daemon_cpu(run) as cpu: ...`` fills ``cpu`` with the CPU seconds Glance and the OSDs used."""
    pids = daemon_pids(run_dir)
    before = {k: cpu_seconds(v) for k, v in pids.items()}
    out: dict[str, float] = {}
    yield out
    for k, v in pids.items():
        out[k] = round(cpu_seconds(v) - before[k], 2)


# -- work released at once --------------------------------------------------------------------------------------


def at_once(work: Callable[[int], Any], n: int) -> tuple[float, list[Any], list[float]]:
    """``work(0)`` ... ``work(n - 1)`` in threads released together by one event: (wall time from the release until
    the last returned, each call's result or the exception it raised, each call's seconds)."""
    results: list[Any] = [RuntimeError("not run")] * n
    times = [0.0] * n
    gate = threading.Event()

    def run_one(i: int) -> None:
        gate.wait()
        t = time.monotonic()
        try:
            results[i] = work(i)
        except BaseException as exc:  # the caller reports it
            results[i] = exc
        times[i] = time.monotonic() - t

    threads = [threading.Thread(target=run_one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    gate.set()
    for t in threads:
        t.join()
    return time.monotonic() - t0, results, times

"""``fastsnap`` command line: a thin shell over :class:`fastsnap.api.Fastsnap`.

Exit codes: 0 success, 2 bad input (nothing created), 1 any other failure. Errors go to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging as pylog
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from oslo_log import log as logging

from fastsnap import conf as fsconf
from fastsnap.api import Fastsnap
from fastsnap.auth import token_from_env
from fastsnap.errors import FastsnapError, exit_code
from fastsnap.request import SnapshotRequest
from fastsnap.states import ImageType, RecoverAction
from fastsnap.version import version_string


def _prop(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"property {text!r} is not KEY=VALUE")
    k, v = text.split("=", 1)
    return k, v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastsnap", description="Fast snapshots of RBD instance disks into Glance.")
    p.add_argument("--config-file", default=os.environ.get("FASTSNAP_CONFIG_FILE"),
                   help="fastsnap.conf (default: $FASTSNAP_CONFIG_FILE, else /etc/fastsnap/fastsnap.conf)")
    p.add_argument("--debug", action="store_true", help="log debug messages to stderr")
    p.add_argument("--version", action="version", version=version_string("fastsnap"),
                   help="print the installed fastsnap's version and exit")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("snapshot", help="snapshot an instance disk into Glance")
    s.add_argument("--disk", required=True, help="POOL/IMAGE of the instance disk")
    s.add_argument("--name", required=True, help="name of the Glance image")
    s.add_argument("--base-image", help="the instance's base image id (image_ref)")
    s.add_argument("--store", help="target Glance store id (default: [snapshot] default_store, else the base "
                   "image's rbd store on the disk's cluster, else Glance's default)")
    s.add_argument("--image-id", help="fill this queued Glance image instead of creating one")
    s.add_argument("--instance-uuid", help="the server whose root disk --disk is: recorded as the image's "
                   "instance_uuid property; required with --os-token and --user-from-env (fastsnap checks with "
                   "Nova that the user's project owns it)")
    s.add_argument("--property", action="append", type=_prop, default=[], metavar="K=V",
                   help="extra image property (repeatable)")
    s.add_argument("--keep-image-on-error", action="store_true",
                   help="with --image-id: leave that image (queued) on failure instead of deleting it")
    s.add_argument("--format", metavar="{raw,qcow2}",
                   help="disk format of the image on the stream path (default: [snapshot] stream_format); qcow2 "
                        "sends only the disk's allocated clusters. The clone, delta and copy paths make raw images")
    s.add_argument("--json", action="store_true", help="print the result as one JSON object")
    s.add_argument("--type", dest="image_type", choices=[t.value for t in ImageType], default=ImageType.SNAPSHOT,
                   help="the image_type Nova records (backup: with --backup-type and --instance-uuid)")
    s.add_argument("--backup-type", help="with --type backup: Nova's backup_type, e.g. daily")
    s.add_argument("--rotation", type=int,
                   help="with --type backup: keep the newest N backups of the instance and backup type, delete "
                        "older ones (Nova's createBackup rotation)")
    s.add_argument("--quiesce-domain", metavar="NAME",
                   help="libvirt domain of the running instance: freeze its filesystems (guest agent) around the "
                        "disk's snapshot")
    s.add_argument("--require-quiesce", action=argparse.BooleanOptionalAction, default=None,
                   help="fail (nothing created) when the guest cannot be frozen; default: as the base image's "
                        "os_require_quiesce says")
    who = s.add_mutually_exclusive_group()
    who.add_argument("--os-token", help="take the snapshot on behalf of the user of this Keystone token")
    who.add_argument("--user-from-env", action="store_true",
                     help="take it on behalf of the user of the standard OS_* variables (OS_AUTH_URL, ...)")

    st = sub.add_parser("stores", help="list Glance stores and whether this host can clone into them")
    st.add_argument("--json", action="store_true")

    f = sub.add_parser("flatten-status", help="show queued background flattens and parked disks (and drain them)")
    f.add_argument("--run", action="store_true",
                   help="flatten here the dependents of parked disks (first) and the clones the Ceph mgr could "
                        "not take; remove parked disks nothing depends on any more")
    f.add_argument("--json", action="store_true")

    c = sub.add_parser("status", help="the whole cluster: operations in flight by host, hosts whose lease lapsed, "
                       "operations waiting for a recover, flatten backlog, parked disks")
    c.add_argument("--json", action="store_true")

    sub.add_parser("serve", help="run the REST service (recovers first)")

    r = sub.add_parser("recover", help="finish or undo operations left by a killed fastsnap")
    r.add_argument("--json", action="store_true")
    return p


def _progress() -> Callable[[int, int], None] | None:
    if not sys.stderr.isatty():
        return None
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and done < total:
            return
        last[0] = now
        pct = 100.0 * done / total if total else 100.0
        bar = "#" * int(pct / 2.5)
        sys.stderr.write(f"\r[{bar:<40}] {pct:5.1f}% {done >> 20}/{total >> 20} MiB")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _print_table(rows: list[dict[str, Any]], cols: Sequence[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "") if r.get(c) is not None else "-").ljust(widths[c]) for c in cols))


def _snapshot(fs: Fastsnap, a: argparse.Namespace) -> int:
    req = SnapshotRequest(disk=a.disk, name=a.name, base_image=a.base_image, store=a.store,
                          image_id=a.image_id, properties=dict(a.property), instance_uuid=a.instance_uuid,
                          keep_image_on_error=a.keep_image_on_error, quiesce_domain=a.quiesce_domain,
                          require_quiesce=a.require_quiesce, image_type=a.image_type, backup_type=a.backup_type,
                          rotation=a.rotation, format=a.format)
    token = token_from_env() if a.user_from_env else a.os_token
    res = fs.snapshot(req, progress=None if a.json else _progress(), user_token=token)
    if a.json:
        print(json.dumps(res.to_dict(), sort_keys=True))
    elif res.already_done:
        print(f"image {res.image_id} in store {res.store} by {res.path}: already done by an earlier run "
              f"(returned as it is, not touched)")
    else:
        print(f"image {res.image_id} ({res.format}) in store {res.store} by {res.path} in {res.seconds:.2f}s")
        print(f"  reason:   {res.reason}")
        print(f"  acting as: {res.acting_as.get('mode')}"
              + (f" (project {res.acting_as['project_id']})" if res.acting_as.get("project_id") else ""))
        if res.location:
            print(f"  location: {res.location}")
        if res.quiesce.get("domain"):
            print(f"  quiesced: {'yes' if res.quiesced else 'no'} ({res.quiesce.get('reason')})"
                  + (f", frozen {res.quiesce['freeze_seconds']:.3f}s" if res.quiesce.get("freeze_seconds") else ""))
        if res.rotated:
            print(f"  rotated:  deleted older backups {', '.join(res.rotated)}")
        if res.path == "stream":
            print(f"  streamed: {res.bytes_streamed} bytes ({res.bytes_read} read from Ceph, rest holes)")
        elif res.path in ("delta", "copy", "incremental"):
            t = res.transfer
            print(f"  written:  {t.get('bytes_written', 0)} bytes to cluster B, {t.get('bytes_zeroed', 0)} zeroed, "
                  f"{t.get('bytes_read', 0)} read from the disk's cluster")
    return 0


def _stores(fs: Fastsnap, a: argparse.Namespace) -> int:
    rows = [s.to_dict() for s in fs.stores()]
    if a.json:
        print(json.dumps(rows, sort_keys=True))
    else:
        _print_table(rows, ("id", "type", "default", "pool", "fsid", "clone", "description"))
    return 0


def _recover(fs: Fastsnap, a: argparse.Namespace) -> int:
    actions = fs.recover()
    if a.json:
        print(json.dumps([x.to_dict() for x in actions], sort_keys=True))
    else:
        if not actions:
            print("nothing to recover")
        for act in actions:
            print(f"{act.op_id}: {act.action}: {'; '.join(act.did) or act.error or ''}")
    return 1 if any(x.action is RecoverAction.FAILED for x in actions) else 0


def _flatten_status(fs: Fastsnap, a: argparse.Namespace) -> int:
    parked = [p.to_dict() for p in fs.parked_disks(run=a.run)]  # first: ahead of the rest
    rows = [r.to_dict() for r in fs.flatten_status(run_local=a.run)]
    if a.json:
        print(json.dumps({"flattens": rows, "parked_disks": parked}, sort_keys=True))
    else:
        _print_table(rows, ("image_id", "disk", "policy", "state", "task", "why"))
        if parked:
            print("\nparked disks (in the RBD trash until their fastsnap clones are flattened):")
            _print_table(parked, ("pool", "id", "name", "parked_at", "snapshots", "state", "dependents"))
    return 0


def _when(at: float | None) -> str | None:
    return None if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _status(fs: Fastsnap, a: argparse.Namespace) -> int:
    status = fs.cluster_status()
    if a.json:
        print(json.dumps(status.to_dict(), sort_keys=True))
        return 0
    hosts = [{**h.to_dict(), "lease": "alive" if h.alive else "lapsed", "seen_at": _when(h.seen_at)}
             for h in status.hosts]
    _print_table(hosts, ("host", "lease", "seen_at", "in_flight", "unsettled"))
    cols = ("op_id", "host", "disk", "path", "step", "age")
    if status.in_flight:
        print("\noperations in flight:")
        _print_table([o.to_dict() for o in status.in_flight], cols)
    if status.unsettled:
        print("\nunsettled operations (their host's lease lapsed; 'fastsnap recover' on any host settles them):")
        _print_table([o.to_dict() for o in status.unsettled], cols)
    else:
        print("\nno unsettled operations")
    print(f"\nflatten backlog: {status.flatten_backlog}")
    print(f"parked disks: {status.parked_count}")
    if status.parked_disks:
        _print_table([p.to_dict() for p in status.parked_disks],
                     ("pool", "id", "name", "parked_at", "snapshots", "state", "dependents"))
    return 0


COMMANDS: dict[str, Callable[[Fastsnap, argparse.Namespace], int]] = {
    "snapshot": _snapshot, "stores": _stores, "recover": _recover, "flatten-status": _flatten_status,
    "status": _status,
}


# glibc malloc parameters (mallopt(3)) the CLI sets before it starts librados: the stream path's read buffers
# (at most 16 MiB in flight, in 4 MiB reads) are allocated in the main thread and in librados' threads. By
# default every thread gets its own malloc arena and glibc raises its mmap threshold to the largest buffer freed
# so far, so 4 MiB buffers end up in several arenas' heaps, fragmented: the peak RSS of one run varied from 117
# to 173 MiB. Two arenas and a fixed 1 MiB mmap threshold (buffers above it are mapped and unmapped, never kept)
# hold the peak near the imports' ~75 MiB plus the buffers in flight (bench/RESULTS.md, "cost").
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MALLOC_ARENAS = 2
MALLOC_MMAP_THRESHOLD = 1 << 20


def bound_malloc() -> bool:
    """Set the malloc parameters above; False when this libc has no ``mallopt`` (not glibc)."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS)) and bool(mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD))


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command == "snapshot" and not os.environ.get("FASTSNAP_DEFAULT_MALLOC"):
        bound_malloc()
    if a.command == "serve":
        # Flask and cheroot are loaded only to serve: the snapshot CLI stays small in memory and start-up.
        from fastsnap.service.server import serve

        try:
            return serve(a.config_file)
        except FastsnapError as exc:
            print(f"fastsnap: error: {exc}", file=sys.stderr)
            return exit_code(exc)
    try:
        conf = fsconf.load(a.config_file)
        conf.set_override("debug", a.debug)
        if conf.log_dir:
            os.makedirs(conf.log_dir, exist_ok=True)
        logging.setup(conf, "fastsnap")
        if not a.debug:
            pylog.getLogger().setLevel(pylog.WARNING)
        with Fastsnap(conf) as fs:
            return COMMANDS[a.command](fs, a)
    except FastsnapError as exc:
        print(f"fastsnap: error: {exc}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        print("fastsnap: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug or an error class fastsnap does not know yet: still say what happened
        print(f"fastsnap: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

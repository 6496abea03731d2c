"""``fastsnap`` command line: a thin shell over :class:`fastsnap.api.Fastsnap`.

Exit codes: 0 success, 2 bad input (nothing created), 1 any other failure. Errors go to stderr.
Each command turns its result into a :class:`fastsnap.cli_output.Listing` or ``Record`` (the ``*_output``
functions, pure: the unit tests draw them on fixed data); :mod:`fastsnap.cli_output` prints it with cliff's
formatters (``-f``, ``-c``). ``--json`` stays the compact, key-sorted JSON of the API's ``to_dict`` that scripts
and the tests read.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import logging as pylog
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from oslo_log import log as logging

from fastsnap import cli_output as out
from fastsnap import conf as fsconf
from fastsnap.api import Fastsnap
from fastsnap.auth import token_from_env
from fastsnap.caller import Caller
from fastsnap.errors import FastsnapError, exit_code
from fastsnap.parked import ParkedDisk
from fastsnap.request import SnapshotRequest
from fastsnap.result import FlattenRow, RecoverResult, SnapshotResult, StoreView
from fastsnap.states import ImageType, RecoverAction
from fastsnap.status import ClusterStatus
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
    # --format is the image's disk format here (the request's): the output format is -f or --output-format
    out.add_output_options(s, SNAPSHOT_FIELDS, record=True, json_help="print the result as one JSON object",
                           format_flags=("-f", "--output-format"))

    st = sub.add_parser("stores", help="list Glance stores and whether this host can clone into them")
    out.add_output_options(st, STORE_COLUMNS, record=False)

    f = sub.add_parser("flatten-status", help="show queued background flattens and parked disks (and drain them)")
    f.add_argument("--run", action="store_true",
                   help="flatten here the dependents of parked disks (first) and the clones the Ceph mgr could "
                        "not take; remove parked disks nothing depends on any more")
    out.add_output_options(f, FLATTEN_STATUS_FIELDS, record=True)

    c = sub.add_parser("status", help="the whole cluster: operations in flight by host, hosts whose lease lapsed, "
                       "operations waiting for a recover, flatten backlog, parked disks")
    out.add_output_options(c, STATUS_FIELDS, record=True)

    sub.add_parser("serve", help="run the REST service (recovers first)")

    r = sub.add_parser("recover", help="finish or undo operations left by a killed fastsnap")
    out.add_output_options(r, RECOVER_COLUMNS, record=False)
    return p


def _plain(doc: Any) -> Any:
    """The API's ``to_dict`` in JSON's own types (its enums as strings), as every formatter takes it."""
    return json.loads(json.dumps(doc))


def _print(a: argparse.Namespace, doc: Any, output: Callable[[], out.Output]) -> None:
    """``--json``: ``doc`` (the API's ``to_dict``) as one line of key-sorted JSON; else ``output()`` drawn by
    cliff's formatters as ``-f``/``-c`` ask."""
    if a.json:
        print(json.dumps(doc, sort_keys=True))
    else:
        out.emit(output(), a)


# What each command prints: the columns of a listing, the fields of a record (``-c`` names them), in print order.
SNAPSHOT_FIELDS = tuple(f.name for f in dataclasses.fields(SnapshotResult))
STORE_COLUMNS = ("id", "type", "default", "pool", "fsid", "clone", "description")
RECOVER_COLUMNS = ("op_id", "disk", "action", "did", "error")
FLATTEN_COLUMNS = ("image_id", "disk", "pool", "policy", "state", "task", "depth", "why", "error")
PARKED_COLUMNS = ("pool", "id", "name", "parked_at", "snapshots", "state", "dependents", "error")
HOST_COLUMNS = ("host", "alive", "seen_at", "in_flight", "unsettled")
OPERATION_COLUMNS = ("op_id", "host", "disk", "path", "step", "age", "idle")
FLATTEN_STATUS_FIELDS = ("flattens", "parked_disks")
STATUS_FIELDS = ("at", "hosts", "in_flight", "in_flight_operations", "lapsed_hosts", "unsettled", "flatten_backlog",
                 "parked_count", "parked_disks")
PARKED_TITLE = "parked disks (in the RBD trash until their fastsnap clones are flattened)"


def snapshot_output(res: SnapshotResult) -> out.Record:
    doc = _plain(res.to_dict())
    return out.Record({k: doc[k] for k in SNAPSHOT_FIELDS})


def stores_output(stores: Sequence[StoreView]) -> out.Listing:
    return out.Listing(STORE_COLUMNS, [_plain(s.to_dict()) for s in stores], empty="no stores")


def recover_output(actions: Sequence[RecoverResult]) -> out.Listing:
    return out.Listing(RECOVER_COLUMNS, [_plain(x.to_dict()) for x in actions], empty="nothing to recover")


def _parked_rows(parked: Sequence[ParkedDisk]) -> out.Rows:
    return out.Rows(PARKED_COLUMNS, [_plain(p.to_dict()) for p in parked], title=PARKED_TITLE)


def flatten_status_output(rows: Sequence[FlattenRow], parked: Sequence[ParkedDisk]) -> out.Record:
    return out.Record({
        "flattens": out.Rows(FLATTEN_COLUMNS, [_plain(r.to_dict()) for r in rows],
                             title="flattens (clone-path snapshots whose flatten was pending)"),
        "parked_disks": _parked_rows(parked)})


def status_output(status: ClusterStatus) -> out.Record:
    doc = _plain(status.to_dict())
    fields: dict[str, Any] = {
        **doc,
        "hosts": out.Rows(HOST_COLUMNS, doc["hosts"], title="hosts (alive: its lease lives)",
                          cells={"seen_at": out.Time}),
        "in_flight_operations": out.Rows(OPERATION_COLUMNS, doc["in_flight_operations"],
                                         title="operations in flight"),
        "unsettled": out.Rows(OPERATION_COLUMNS, doc["unsettled"],
                              title="unsettled operations (their host's lease lapsed; 'fastsnap recover' on any host "
                                    "settles them)"),
        "parked_disks": _parked_rows(status.parked_disks)}
    return out.Record({k: fields[k] for k in STATUS_FIELDS}, cells={"at": out.Time})


def _snapshot(fs: Fastsnap, a: argparse.Namespace) -> int:
    req = SnapshotRequest(disk=a.disk, name=a.name, base_image=a.base_image, store=a.store,
                          image_id=a.image_id, properties=dict(a.property), instance_uuid=a.instance_uuid,
                          keep_image_on_error=a.keep_image_on_error, quiesce_domain=a.quiesce_domain,
                          require_quiesce=a.require_quiesce, image_type=a.image_type, backup_type=a.backup_type,
                          rotation=a.rotation, format=a.format)
    token = token_from_env() if a.user_from_env else a.os_token
    with out.progress_bar(out.human_output(a)) as progress:
        res = fs.snapshot(req, caller=Caller(user_token=token), progress=progress)
    _print(a, res.to_dict(), lambda: snapshot_output(res))
    return 0


def _stores(fs: Fastsnap, a: argparse.Namespace) -> int:
    stores = fs.stores()
    _print(a, [s.to_dict() for s in stores], lambda: stores_output(stores))
    return 0


def _recover(fs: Fastsnap, a: argparse.Namespace) -> int:
    actions = fs.recover()
    _print(a, [x.to_dict() for x in actions], lambda: recover_output(actions))
    return 1 if any(x.action is RecoverAction.FAILED for x in actions) else 0


def _flatten_status(fs: Fastsnap, a: argparse.Namespace) -> int:
    parked = fs.parked_disks(run=a.run)  # first: ahead of the rest
    rows = fs.flatten_status(run_local=a.run)
    _print(a, {"flattens": [r.to_dict() for r in rows], "parked_disks": [p.to_dict() for p in parked]},
           lambda: flatten_status_output(rows, parked))
    return 0


def _status(fs: Fastsnap, a: argparse.Namespace) -> int:
    status = fs.cluster_status()
    _print(a, status.to_dict(), lambda: status_output(status))
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
    parser = build_parser()
    a = parser.parse_args(argv)
    out.check_output_options(parser, a)
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

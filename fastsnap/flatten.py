"""Flattening clones off the request path, with ceph-csi-like clone-depth limits.

Policies (``[snapshot] flatten``, per store ``[snapshot] store_flatten``):
  never       leave the clone depending on the disk's snapshot (kept in the RBD snapshot trash)
  background  queue Ceph's own mgr task ``rbd task add flatten`` right after registration (persistent,
              de-duplicated, survives mgr restarts); when the mgr cannot take it, flatten in-process later
  sync        flatten before registering, as Nova does (cost grows with the data)
Clone depth (parents followed through the trash too): above ``clone_depth_soft`` a ``never`` becomes
``background``; above ``clone_depth_hard`` any policy becomes ``sync``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import journal as jr
from fastsnap.ceph import Cluster
from fastsnap.errors import CephError, ConfigError, FastsnapError, NotFound
from fastsnap.location import ImageSpec
from fastsnap.result import FlattenRow
from fastsnap.states import PENDING_FLATTEN, FlattenPolicy, FlattenState, OpState

LOG = logging.getLogger(__name__)

NEVER, BACKGROUND, SYNC = FlattenPolicy.NEVER, FlattenPolicy.BACKGROUND, FlattenPolicy.SYNC


def policy_for(conf: cfg.ConfigOpts, store: str, depth: int) -> tuple[FlattenPolicy, str]:
    """The effective policy for a new clone of the given depth in ``store`` and why."""
    s = conf.snapshot
    name = s.store_flatten.get(store, s.flatten)
    try:
        policy = FlattenPolicy(name)
    except ValueError:
        raise ConfigError(f"[snapshot] store_flatten: unknown policy {name!r} for store {store!r}") from None
    if depth > s.clone_depth_hard:
        return SYNC, f"clone depth {depth} > hard limit {s.clone_depth_hard}"
    if depth > s.clone_depth_soft and policy == NEVER:
        return BACKGROUND, f"clone depth {depth} > soft limit {s.clone_depth_soft}"
    return policy, f"policy {policy}"


def depth(cluster: Cluster, spec: ImageSpec, limit: int = 64) -> int:
    """Number of ancestors of an image (0 for an image without parent)."""
    n = 0
    cur: ImageSpec | None = spec
    while cur is not None and n < limit:
        try:
            parent = cluster.parent(cur)
        except NotFound:
            return n
        if parent is None:
            return n
        n += 1
        cur = ImageSpec(parent.pool, parent.image)
    return n


def is_flat(cluster: Cluster, spec: ImageSpec) -> bool:
    return cluster.parent(spec) is None


def _task_command(conf: cfg.ConfigOpts, spec: ImageSpec, timeout: int,
                  cli: tuple[str, str, str | None] | None = None) -> list[str]:
    conffile, user, keyring = cli or (conf.ceph.conf, conf.ceph.user, conf.ceph.keyring)
    cmd = ["timeout", str(timeout), "ceph", "-c", conffile, "--id", user, "--connect-timeout", str(timeout)]
    if keyring:
        cmd += ["--keyring", keyring]
    return [*cmd, "rbd", "task", "add", "flatten", str(spec), "--format", "json"]


def queue_background(cluster: Cluster, conf: cfg.ConfigOpts, spec: ImageSpec, timeout: int,
                     wait: bool = False, cli: tuple[str, str, str | None] | None = None) -> str:
    """Queue ``rbd task add flatten`` with Ceph's mgr. Returns the task id ("" when not waited for).

    The command runs in a child ``ceph`` process, not through this process's librados: librados (16.2)
    frees a timed-out mgr command's buffers and crashes when the reply arrives later (e.g. once a restarted
    mgr answers). Identical tasks are de-duplicated by the mgr, so queueing again is always safe.
    Raises CephError when no mgr is active or (``wait``) the mgr refused or did not answer in time.
    ``cli``: (ceph.conf, user, keyring) of ``cluster`` when it is not ``[ceph]``'s (another cluster's mgr).
    """
    if not mgr_available(cluster, timeout):
        raise CephError(f"no Ceph mgr is active: flatten task for {spec} not queued")
    cmd = _task_command(conf, spec, timeout, cli)
    if not wait:
        subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        return ""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CephError(f"Ceph mgr did not take the flatten task for {spec}: {exc}") from exc
    return accepted_task(spec, done.returncode, done.stdout, done.stderr, timeout)


def accepted_task(spec: ImageSpec, returncode: int, stdout: str, stderr: str, timeout: int) -> str:
    """The task id from the output of ``ceph rbd task add flatten``; CephError (with the reason) unless the mgr
    accepted the task: exit 0 and a JSON task with an id."""
    if returncode == 124:  # timeout(1): the command did not finish
        raise CephError(f"Ceph mgr did not answer the flatten task for {spec} within {timeout}s")
    if returncode != 0:
        raise CephError(f"Ceph mgr did not take the flatten task for {spec}: "
                        f"{(stderr or '').strip() or 'exit ' + str(returncode)}")
    try:
        task = json.loads(stdout)
    except ValueError:
        task = None
    if not isinstance(task, dict) or not task.get("id"):
        raise CephError(f"Ceph mgr answered the flatten task for {spec} without a task id: "
                        f"{(stdout or '').strip()[:200]!r}")
    return str(task["id"])


def mgr_available(cluster: Cluster, timeout: int) -> bool:
    """Ask the monitors whether a mgr is active (needs mon cap ``allow command "mgr stat"``): without one, a mgr
    command would block for the whole monitor op timeout. Unknown (cap missing) counts as available."""
    try:
        ret, out, _ = cluster.mon_command({"prefix": "mgr stat", "format": "json"}, timeout)
    except CephError:
        return False
    if ret != 0:
        return True
    try:
        return bool(json.loads(out).get("available"))
    except ValueError:
        return True


def _pending_ops(journal: jr.Journal) -> Iterator[tuple[jr.Operation, jr.FlattenInfo, str]]:
    """Done clone-path operations (every host's) whose flatten is pending, as journaled, with that flatten and the
    clone's pool: the directory says which records to read, so the others are never read."""
    for entry in journal.entries():
        if entry.flatten is None or FlattenState(entry.flatten) not in PENDING_FLATTEN:
            continue
        op = journal.get(entry.op_id)
        if op is not None and op.state == OpState.DONE and op.flatten and op.pool \
                and op.flatten.state in PENDING_FLATTEN:
            yield op, op.flatten, op.pool


def pending(journal: jr.Journal) -> list[FlattenRow]:
    """Clone-path snapshots (every host's) whose flatten is pending, as journaled: read only (no Ceph call, no
    write)."""
    return [FlattenRow(op.op_id, op.disk, pool, info) for op, info, pool in _pending_ops(journal)]


def status(cluster: Cluster, conf: cfg.ConfigOpts, journal: jr.Journal, run_local: bool = False) -> list[FlattenRow]:
    """Clone-path snapshots whose flatten is pending; completion is decided by the image having no parent.

    Pending tasks are queued with the mgr again (it de-duplicates), so a task lost with a mgr is not lost for
    good; those the mgr cannot take become ``local`` and, with ``run_local``, are flattened in this process, under
    the operation's cluster-wide claim (a clone another host is flattening is left to it)."""
    rows: list[FlattenRow] = []
    timeout = conf.snapshot.mgr_timeout
    for op, info, pool in _pending_ops(journal):
        spec = ImageSpec(pool, op.op_id)
        try:
            if not cluster.exists(spec):
                info.state = FlattenState.GONE
            elif is_flat(cluster, spec):
                info.state = FlattenState.DONE
            else:
                try:
                    info.task = queue_background(cluster, conf, spec, timeout, wait=True)
                    info.state, info.error = FlattenState.QUEUED, None
                except FastsnapError as exc:
                    info.state, info.error = FlattenState.LOCAL, str(exc)
                if info.state == FlattenState.LOCAL and run_local:
                    # under the operation's cluster-wide claim: two hosts draining at once flatten it once
                    with journal.ops.claim(op.op_id) as won:
                        if won:
                            cluster.flatten(spec)
                            info.state = FlattenState.DONE
                        else:
                            info.error = "another fastsnap (on some host) holds this operation: it flattens it"
        except FastsnapError as exc:  # one image that cannot be checked or flattened: report, go on
            info.error = str(exc)
        op.flatten = info
        journal.save(op)
        rows.append(FlattenRow(op.op_id, op.disk, pool, info))
    return rows

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

import rados
import rbd
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.ceph import Cluster, ImageSpec
from fastsnap.errors import BadRequest, CephError

LOG = logging.getLogger(__name__)

NEVER, BACKGROUND, SYNC = "never", "background", "sync"
POLICIES = (NEVER, BACKGROUND, SYNC)

flatten_opts = [
    cfg.StrOpt("flatten", default=BACKGROUND, choices=POLICIES,
               help="When clone-path snapshots are flattened: never, background (Ceph mgr task queue, "
                    "default) or sync (before the snapshot is registered, like Nova)."),
    cfg.DictOpt("store_flatten", default={},
                help="Per-store flatten policy overriding 'flatten', e.g. fast:sync,archive:never."),
    cfg.IntOpt("clone_depth_soft", default=4, min=1,
               help="A clone deeper than this (counting every parent, also through the snapshot trash) is "
                    "flattened in the background even with policy 'never'."),
    cfg.IntOpt("clone_depth_hard", default=8, min=1,
               help="A clone deeper than this is flattened before the snapshot is registered, whatever the "
                    "policy."),
    cfg.IntOpt("mgr_timeout", default=10, min=1,
               help="Seconds to wait for the Ceph mgr to accept a flatten task before falling back to an "
                    "in-process flatten."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(flatten_opts, group="snapshot")


def policy_for(conf: cfg.ConfigOpts, store: str, depth: int) -> tuple[str, str]:
    """The effective policy for a new clone of the given depth in ``store`` and why."""
    s = conf.snapshot
    policy = s.store_flatten.get(store, s.flatten)
    if policy not in POLICIES:
        from fastsnap.errors import ConfigError

        raise ConfigError(f"[snapshot] store_flatten: unknown policy {policy!r} for store {store!r}")
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
        except BadRequest:
            return n
        if parent is None:
            return n
        n += 1
        cur = ImageSpec(parent.pool, parent.image)
    return n


def is_flat(cluster: Cluster, spec: ImageSpec) -> bool:
    return cluster.parent(spec) is None


def _task_command(conf: cfg.ConfigOpts, spec: ImageSpec, timeout: int) -> list[str]:
    c = conf.ceph
    cmd = ["timeout", str(timeout), "ceph", "-c", c.conf, "--id", c.user, "--connect-timeout", str(timeout)]
    if c.keyring:
        cmd += ["--keyring", c.keyring]
    return [*cmd, "rbd", "task", "add", "flatten", str(spec), "--format", "json"]


def queue_background(cluster: Cluster, conf: cfg.ConfigOpts, spec: ImageSpec, timeout: int,
                     wait: bool = False) -> str:
    """Queue ``rbd task add flatten`` with Ceph's mgr. Returns the task id ("" when not waited for).

    The command runs in a child ``ceph`` process, not through this process's librados: librados (16.2)
    frees a timed-out mgr command's buffers and crashes when the reply arrives later (e.g. once a restarted
    mgr answers). Identical tasks are de-duplicated by the mgr, so queueing again is always safe.
    Raises CephError when no mgr is active or (``wait``) the mgr refused or did not answer in time.
    """
    if not mgr_available(cluster, timeout):
        raise CephError(f"no Ceph mgr is active: flatten task for {spec} not queued")
    cmd = _task_command(conf, spec, timeout)
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
        ret, out, _ = cluster.rados.mon_command(json.dumps({"prefix": "mgr stat", "format": "json"}), b"",
                                                timeout=timeout)
    except rados.Error:
        return False
    if ret != 0:
        return True
    try:
        return bool(json.loads(out).get("available"))
    except ValueError:
        return True


def flatten_now(cluster: Cluster, spec: ImageSpec) -> None:
    """Flatten in this process (blocks for a time that grows with the data)."""
    with cluster.image(spec) as img:
        try:
            img.flatten()
        except rbd.InvalidArgument:
            pass  # not a clone (any more)
        except Exception as exc:
            raise CephError(f"flattening {spec} failed: {exc}") from exc

"""Prometheus metrics of the service."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fastsnap.errors import FastsnapError
from fastsnap.plan import SnapshotPath

if TYPE_CHECKING:
    from fastsnap.status import ClusterStatus

REGISTRY = CollectorRegistry()

LATENCY = Histogram("fastsnap_snapshot_seconds", "Snapshot latency by path", ["path"], registry=REGISTRY,
                    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800))
FALLBACKS = Counter("fastsnap_stream_fallbacks_total", "Snapshots that streamed instead of cloning, by reason",
                    ["reason"], registry=REGISTRY)
BYTES = Counter("fastsnap_bytes_streamed_total", "Bytes streamed into Glance", registry=REGISTRY)
IN_FLIGHT = Gauge("fastsnap_jobs_in_flight", "Snapshot jobs running now", registry=REGISTRY)
FLATTEN_BACKLOG = Gauge("fastsnap_flatten_backlog", "Clones waiting to be flattened", registry=REGISTRY)
PARKED_DISKS = Gauge("fastsnap_parked_disks", "Deleted instance disks parked in the RBD trash until the fastsnap "
                     "clones that depend on them are flattened", registry=REGISTRY)
RECOVER_PENDING = Gauge("fastsnap_recover_pending", "Interrupted operations the last recover could not settle "
                        "(left running for the next one; the log says why)", registry=REGISTRY)
# The cluster-wide view (fastsnap.status): the journal's part is refreshed on each scrape of /metrics (cheap), the
# flatten backlog and the parked disks by the flatten poller and by each GET /v1/status.
OPERATIONS_IN_FLIGHT = Gauge("fastsnap_operations_in_flight", "Running snapshot operations by host, the host's "
                             "lease living (every fastsnap of the cluster, from the journal in RADOS)", ["host"],
                             registry=REGISTRY)
HOSTS_LAPSED = Gauge("fastsnap_hosts_lapsed", "Hosts whose journal lease lapsed (an idle CLI-only host too; see "
                     "fastsnap_operations_unsettled for what needs a recover)", registry=REGISTRY)
OPERATIONS_UNSETTLED = Gauge("fastsnap_operations_unsettled", "Running operations whose host's lease lapsed: "
                             "waiting for a recover on any host", registry=REGISTRY)
ERRORS = Counter("fastsnap_errors_total", "Failed snapshots by kind", ["kind"], registry=REGISTRY)
FREEZE = Histogram("fastsnap_freeze_seconds", "How long guests were frozen around the disk snapshot",
                   registry=REGISTRY, buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
QUIESCE = Counter("fastsnap_quiesce_total", "Snapshots by consistency (quiesced or crash-consistent)",
                  ["consistency"], registry=REGISTRY)
REJECTED = Counter("fastsnap_rejected_total", "Requests refused with 429, by the limit that was full: host "
                   "([snapshot] max_concurrent) or project ([service] max_concurrent_per_project)", ["limit"],
                   registry=REGISTRY)

_PUBLISH = threading.Lock()

# The label values fastsnap knows in advance (fallback_reason's answers, the 429 limits, the consistencies).
FALLBACK_REASONS = ("no_base_image", "base_on_other_cluster", "explicit_store", "configured_store",
                    "base_not_in_rbd", "other")
LIMITS = ("host", "project")
CONSISTENCIES = ("quiesced", "crash_consistent")


def _kinds(cls: type[FastsnapError] = FastsnapError) -> set[str]:
    out = {cls.kind}
    for sub in cls.__subclasses__():
        out |= _kinds(sub)
    return out


def initialise_series() -> None:
    """Create every labelled series fastsnap knows of at 0, at start: Prometheus's ``increase()`` and ``rate()``
    never count a series' first sample, so a series born with its first event (the first snapshot of a path, the
    first error of a kind) would go uncounted once, after every start of the service."""
    for path in SnapshotPath:
        LATENCY.labels(path.value)
    for reason in FALLBACK_REASONS:
        FALLBACKS.labels(reason)
    for kind in sorted(_kinds() | {"cancelled"}):
        ERRORS.labels(kind)
    for consistency in CONSISTENCIES:
        QUIESCE.labels(consistency)
    for limit in LIMITS:
        REJECTED.labels(limit)


def publish_operations(status: ClusterStatus) -> None:
    """Set the journal's gauges (in flight by host, lapsed hosts, unsettled) from a status: hosts no longer
    reported lose their series."""
    with _PUBLISH:
        OPERATIONS_IN_FLIGHT.clear()
        for host, n in status.in_flight_by_host.items():
            OPERATIONS_IN_FLIGHT.labels(host).set(n)
        HOSTS_LAPSED.set(len(status.lapsed_hosts))
        OPERATIONS_UNSETTLED.set(len(status.unsettled))


def publish(status: ClusterStatus) -> None:
    """Set every gauge of the cluster-wide view from a whole status (:func:`fastsnap.status.gather`)."""
    publish_operations(status)
    FLATTEN_BACKLOG.set(status.flatten_backlog)
    PARKED_DISKS.set(status.parked_count)


def fallback_reason(reason: str) -> str:
    """A short label for why a snapshot streamed (from the planner's reason text)."""
    r = reason.lower()
    if "no base image" in r:
        return "no_base_image"
    if "another cluster" in r:
        return "base_on_other_cluster"
    if "requested" in r or "explicit" in r:
        return "explicit_store"
    if "configured" in r or "default_store" in r:
        return "configured_store"
    if "not rbd" in r:
        return "base_not_in_rbd"
    return "other"

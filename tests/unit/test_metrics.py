"""The service's metrics: every labelled series fastsnap knows of exists at 0 from the start (pure, no service)."""

from __future__ import annotations

from prometheus_client import generate_latest

from fastsnap import errors
from fastsnap.plan import SnapshotPath
from fastsnap.service import metrics as m


def test_every_known_series_exists_at_zero_after_start() -> None:
    m.initialise_series()
    text = generate_latest(m.REGISTRY).decode()
    for path in SnapshotPath:
        assert f'fastsnap_snapshot_seconds_count{{path="{path.value}"}} 0.0' in text, path
    for kind in ("glance", "ceph", "lease", "bad_request", "cancelled", "error"):
        assert f'fastsnap_errors_total{{kind="{kind}"}} 0.0' in text, kind
    assert {c.kind for c in vars(errors).values()
            if isinstance(c, type) and issubclass(c, errors.FastsnapError)} <= m._kinds()
    for reason in m.FALLBACK_REASONS:
        assert f'fastsnap_stream_fallbacks_total{{reason="{reason}"}} 0.0' in text, reason
    for limit in m.LIMITS:
        assert f'fastsnap_rejected_total{{limit="{limit}"}} 0.0' in text, limit
    for consistency in m.CONSISTENCIES:
        assert f'fastsnap_quiesce_total{{consistency="{consistency}"}} 0.0' in text, consistency


def test_fallback_reasons_are_the_known_labels() -> None:
    for reason in ("no base image given", "base image is on another cluster", "store requested by the caller",
                   "the configured default_store", "base image not rbd", "something else"):
        assert m.fallback_reason(reason) in m.FALLBACK_REASONS, reason

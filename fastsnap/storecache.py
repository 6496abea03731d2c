"""Glance's store catalogue, cached so that a snapshot does not ask Glance for it every time.

Glance answers ``GET /v2/info/stores/detail`` by connecting to every Ceph cluster of its rbd stores (for their
fsids): the most expensive request fastsnap makes, and the CLI used to make it on every run.

The rule, for the service and the CLI alike:

- A catalogue is reused for ``[glance] store_cache_seconds`` (default 30; 0 turns caching off) after Glance gave
  it: in the process's memory, and in ``<[journal] state_dir>/stores-cache.json`` so that short-lived CLI runs
  on the host share it. The file is keyed by the Glance endpoint and fastsnap's identity (another
  configuration sharing the state directory never reads it) and written atomically.
- A catalogue in which an rbd store has no fsid is never cached (the planner refuses to guess).
- It is dropped, and Glance asked again, when planning with it fails (an unknown store, a store without its
  type, pool or fsid) — the request is then planned once more with the fresh catalogue — and when Glance refuses
  a location fastsnap registers into a store (the store may have changed).
- ``fastsnap stores`` and ``GET /v1/stores`` always ask Glance, and refresh the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from dataclasses import asdict

from oslo_log import log as logging

from fastsnap.plan import StoreInfo

LOG = logging.getLogger(__name__)

FILE_NAME = "stores-cache.json"


def complete(stores: tuple[StoreInfo, ...]) -> bool:
    """True when every rbd store has its fsid (only such a catalogue is cached)."""
    return all(s.fsid for s in stores if s.type == "rbd")


class StoreCache:
    """The catalogue of one Glance as one identity sees it, in memory and in a file (see the module's rule)."""

    def __init__(self, state_dir: str | None, key: str, ttl: float) -> None:
        self.path = os.path.join(state_dir, FILE_NAME) if state_dir else None
        self.key = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.ttl = ttl
        self._lock = threading.Lock()
        self._mem: tuple[float, tuple[StoreInfo, ...]] | None = None  # (wall time fetched, catalogue)

    def get(self) -> tuple[StoreInfo, ...] | None:
        """A fresh cached catalogue, or None."""
        if self.ttl <= 0:
            return None
        now = time.time()
        with self._lock:
            if self._mem is not None and 0 <= now - self._mem[0] < self.ttl:
                return self._mem[1]
        got = self._read()
        if got is not None and 0 <= now - got[0] < self.ttl:
            with self._lock:
                self._mem = got
            return got[1]
        return None

    def put(self, stores: tuple[StoreInfo, ...]) -> None:
        if self.ttl <= 0 or not complete(stores):
            return
        entry = (time.time(), stores)
        with self._lock:
            self._mem = entry
        self._write(entry)

    def invalidate(self, why: str) -> None:
        LOG.info("store catalogue cache dropped: %s", why)
        with self._lock:
            self._mem = None
        if self.path:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    # -- the file ----------------------------------------------------------------------------------------

    def _read(self) -> tuple[float, tuple[StoreInfo, ...]] | None:
        if not self.path:
            return None
        try:
            with open(self.path) as f:
                raw = json.load(f)
            if raw.get("key") != self.key:
                return None
            stores = tuple(StoreInfo(**s) for s in raw["stores"])
            return float(raw["fetched_at"]), stores
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, entry: tuple[float, tuple[StoreInfo, ...]]) -> None:
        if not self.path:
            return
        body = {"key": self.key, "fetched_at": entry[0], "stores": [asdict(s) for s in entry[1]]}
        try:
            fd, tmp = tempfile.mkstemp(prefix=".stores-", dir=os.path.dirname(self.path))
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(body, f)
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:  # a cache that cannot be written only costs a request next time
            LOG.debug("cannot write the store cache %s: %s", self.path, exc)

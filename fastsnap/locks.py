"""Host-local inter-process locks (oslo.concurrency / fasteners files under ``[journal] state_dir/locks``).

- one lock per disk: two snapshots of the same disk serialise, different disks run in parallel;
- one lock per operation, held while its process works on it: ``recover`` only touches operations whose lock
  it can take, so it is safe to run beside live snapshots;
- ``max_concurrent`` slot locks cap the snapshots running on the host at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator

import fasteners
from oslo_concurrency import lockutils

from fastsnap.errors import Busy

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


class _HostLock:
    """A file lock that also excludes the other threads of this process (fcntl locks are per process)."""

    def __init__(self, path: str) -> None:
        with _GUARD:
            self._thread = _THREAD_LOCKS.setdefault(path, threading.Lock())
        self._file = fasteners.InterProcessLock(path)

    def acquire(self, blocking: bool = True) -> bool:
        if not self._thread.acquire(blocking):
            return False
        if self._file.acquire(blocking=blocking):
            return True
        self._thread.release()
        return False

    def release(self) -> None:
        self._file.release()
        self._thread.release()


class Locks:
    def __init__(self, state_dir: str) -> None:
        self.dir = os.path.join(state_dir, "locks")
        os.makedirs(self.dir, exist_ok=True)

    def disk(self, disk: str) -> contextlib.AbstractContextManager[object]:
        name = "disk-" + disk.replace("/", "--")
        return lockutils.lock(name, lock_file_prefix="fastsnap-", external=True, lock_path=self.dir)

    def _file(self, name: str) -> _HostLock:
        return _HostLock(os.path.join(self.dir, name))

    @contextlib.contextmanager
    def operation(self, op_id: str) -> Iterator[None]:
        lock = self._file(f"op-{op_id}")
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    @contextlib.contextmanager
    def try_operation(self, op_id: str) -> Iterator[bool]:
        """Yields True when nobody holds the operation (its process is gone), holding it meanwhile."""
        lock = self._file(f"op-{op_id}")
        got = lock.acquire(blocking=False)
        try:
            yield bool(got)
        finally:
            if got:
                # The lock file stays: unlinking it would let a process still waiting on the old inode and a
                # new one opening a fresh file both "hold" the operation.
                lock.release()

    @contextlib.contextmanager
    def slot(self, slots: int, wait: float | None) -> Iterator[int]:
        """Take one of ``slots`` host-wide slots; wait up to ``wait`` seconds (None: forever, 0: not at all)."""
        deadline = None if wait is None else time.monotonic() + wait
        while True:
            for i in range(slots):
                lock = self._file(f"slot-{i}")
                if lock.acquire(blocking=False):
                    try:
                        yield i
                    finally:
                        lock.release()
                    return
            if deadline is not None and time.monotonic() >= deadline:
                raise Busy(f"this host already runs {slots} snapshots ([snapshot] max_concurrent)")
            time.sleep(0.1)

"""Host locks (``fastsnap.locks``) between real processes: the operation lock that tells ``recover`` whether an
operation's process is alive, the per-disk lock, the ``max_concurrent`` slots and their wait, and the lock files
that stay (never unlinked, so two processes can never hold one operation through two files)."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastsnap.errors import Busy
from fastsnap.locks import Locks

# A process holding locks on command, one command a line: "<key> <state dir> op|try|disk NAME",
# "<key> <state dir> slot N WAIT", "release <key>". Prints "<key> held", "<key> free False", "<key> slot I" or
# "<key> refused Busy".
HOLDER = r"""
import contextlib, sys
from fastsnap.errors import FastsnapError
from fastsnap.locks import Locks

held = {}
print("ready", flush=True)
for line in sys.stdin:
    key, *args = line.split()
    if key == "release":
        held.pop(args[0]).close()
        print(args[0], "released", flush=True)
        continue
    state_dir, cmd, *args = args
    locks = Locks(state_dir)
    stack = contextlib.ExitStack()
    try:
        if cmd == "op":
            stack.enter_context(locks.operation(args[0]))
            print(key, "held", flush=True)
        elif cmd == "try":
            print(key, "free", stack.enter_context(locks.try_operation(args[0])), flush=True)
        elif cmd == "disk":
            stack.enter_context(locks.disk(args[0]))
            print(key, "held", flush=True)
        elif cmd == "slot":
            print(key, "slot", stack.enter_context(locks.slot(int(args[0]), float(args[1]))), flush=True)
    except FastsnapError as exc:
        print(key, "refused", type(exc).__name__, flush=True)
    held[key] = stack
"""


class Holder:
    """Another process (a fresh interpreter) that takes and releases fastsnap's locks when told. Started once for
    the module (an interpreter importing fastsnap costs about a CPU second on a busy machine); each test gives
    its own state directory and releases what it took."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.state = ""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def ready(self) -> Holder:
        assert self.expect(timeout=120) == "ready"
        return self

    def take(self, key: str, what: str) -> None:
        self.send(f"{key} {self.state} {what}")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, timeout: float = 30) -> str:
        return self.lines.get(timeout=timeout)

    def silent_for(self, seconds: float) -> bool:
        try:
            line = self.lines.get(timeout=seconds)
        except queue.Empty:
            return True
        self.lines.put(line)
        return False

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[Holder, Holder]]:
    a, b = Holder(), Holder()  # started side by side
    try:
        yield a.ready(), b.ready()
    finally:
        a.close()
        b.close()


@pytest.fixture
def ab(pair: tuple[Holder, Holder], tmp_path: Path) -> tuple[Holder, Holder]:
    for h in pair:
        h.state = str(tmp_path)
        assert h.silent_for(0), "a line left over from an earlier test"
    return pair


def _free(locks: Locks, op_id: str) -> bool:
    with locks.try_operation(op_id) as free:
        return free


def test_an_operation_is_held_by_one_process_until_it_lets_go(tmp_path: Path, ab: tuple[Holder, Holder]) -> None:
    a, _ = ab
    locks = Locks(str(tmp_path))
    a.take("k", "op img-1")
    assert a.expect() == "k held"
    assert not _free(locks, "img-1")      # recover must leave it alone: its process is alive
    assert _free(locks, "img-2")          # other operations are independent
    a.send("release k")
    assert a.expect() == "k released"
    assert _free(locks, "img-1")
    with locks.try_operation("img-1") as free:  # held here: the other process finds it taken
        assert free
        a.take("t", "try img-1")
        assert a.expect() == "t free False"
    a.send("release t")
    assert a.expect() == "t released"


def test_a_killed_process_holds_nothing(tmp_path: Path) -> None:
    locks = Locks(str(tmp_path))
    h = Holder()
    try:
        h.ready().state = str(tmp_path)
        h.take("k", "op img-1")
        assert h.expect() == "k held"
        assert not _free(locks, "img-1")
        os.kill(h.proc.pid, signal.SIGKILL)  # no cleanup runs: the kernel drops its lock with the process
        h.proc.wait(10)
    finally:
        h.close()
    assert _free(locks, "img-1")          # recover may now take the operation over
    assert (tmp_path / "locks" / "op-img-1").exists()


def test_the_operation_lock_also_excludes_other_threads(tmp_path: Path) -> None:
    locks = Locks(str(tmp_path))
    seen: list[bool] = []
    with locks.operation("img-1"):
        t = threading.Thread(target=lambda: seen.append(_free(Locks(str(tmp_path)), "img-1")))
        t.start()
        t.join(10)
    assert seen == [False]
    assert _free(locks, "img-1")


def test_a_lock_file_is_never_unlinked_so_a_waiter_and_a_newcomer_cannot_both_hold(
        tmp_path: Path, ab: tuple[Holder, Holder]) -> None:
    a, b = ab
    locks = Locks(str(tmp_path))
    a.take("k", "op img-1")
    assert a.expect() == "k held"
    path = tmp_path / "locks" / "op-img-1"
    inode = path.stat().st_ino
    b.take("w", "op img-1")               # waits on the file a holds
    assert b.silent_for(0.5)
    a.send("release k")
    assert a.expect() == "k released"
    assert b.expect() == "w held"
    assert not _free(locks, "img-1")      # a newcomer opens the same file, and finds it taken
    assert path.stat().st_ino == inode
    b.send("release w")
    assert b.expect() == "w released"
    assert _free(locks, "img-1") and path.stat().st_ino == inode


def test_snapshots_of_one_disk_serialise_across_processes(tmp_path: Path, ab: tuple[Holder, Holder]) -> None:
    a, b = ab
    locks = Locks(str(tmp_path))
    a.take("k", "disk vms/d1")
    assert a.expect() == "k held"
    b.take("w", "disk vms/d1")
    assert b.silent_for(0.5)              # the same disk waits
    with locks.disk("vms/d2"):            # another disk does not
        pass
    a.send("release k")
    assert a.expect() == "k released"
    assert b.expect() == "w held"
    got = threading.Event()

    def take() -> None:
        with locks.disk("vms/d1"):
            got.set()

    t = threading.Thread(target=take)
    t.start()
    assert not got.wait(0.5)              # held by b, in another process
    b.send("release w")
    assert b.expect() == "w released"
    assert got.wait(30)
    t.join(10)
    assert sorted(os.listdir(tmp_path / "locks")) == ["fastsnap-disk-vms--d1", "fastsnap-disk-vms--d2"]


def test_slots_cap_the_host_and_wait_their_bound(tmp_path: Path, ab: tuple[Holder, Holder]) -> None:
    a, b = ab
    locks = Locks(str(tmp_path))
    a.take("k", "slot 2 0")
    assert a.expect() == "k slot 0"
    b.take("k", "slot 2 0")
    assert b.expect() == "k slot 1"
    b.take("k2", "slot 2 0")              # full, and told so at once
    assert b.expect() == "k2 refused Busy"
    t0 = time.monotonic()
    with pytest.raises(Busy), locks.slot(2, 0):
        pass
    assert time.monotonic() - t0 < 2      # wait 0: refused at once (no wait loop)
    t0 = time.monotonic()
    with pytest.raises(Busy, match="max_concurrent"), locks.slot(2, 0.5):
        pass
    assert 0.5 <= time.monotonic() - t0 < 5
    with locks.slot(3, 0) as i:           # a larger cap has room
        assert i == 2
    got: list[int] = []

    def wait_for_a_slot() -> None:
        with locks.slot(2, 30) as i:
            got.append(i)

    t = threading.Thread(target=wait_for_a_slot)
    t.start()
    time.sleep(0.3)
    assert got == []
    b.send("release k")                   # one frees up during the wait: taken
    assert b.expect() == "k released"
    t.join(30)
    assert got == [1]
    a.take("k2", "slot 2 0")              # and released again after use
    assert a.expect() == "k2 slot 1"
    for key in ("k", "k2"):
        a.send(f"release {key}")
        assert a.expect() == f"{key} released"
    b.send("release k2")
    assert b.expect() == "k2 released"

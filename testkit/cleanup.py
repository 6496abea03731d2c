"""Removing what a test or a benchmark made: its RBD disks with their snapshots, its Glance images, the processes
it started. Gone already counts as removed; what is still busy is tried again where the caller says so."""

from __future__ import annotations

import contextlib
import subprocess
import time
from typing import Any

import rbd


def stop_process(proc: subprocess.Popen[Any] | None, term_wait: float = 30, kill_wait: float = 30) -> None:
    """Stop a process this test or bench started: SIGTERM, then SIGKILL if it is still there after ``term_wait`` s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(term_wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(kill_wait)


def glance_image(glance: Any, image_id: str) -> dict[str, Any] | None:
    """The image as ``glance`` (a glanceclient v2 client) sees it; None when it answers 404 (or fails)."""
    try:
        return dict(glance.images.get(image_id))
    except Exception:  # 404
        return None


def delete_image(glance: Any, image_id: str, timeout: float, poll: float) -> None:
    """Delete a Glance image, tried again every ``poll`` seconds while it is still there (its RBD image busy: a
    flatten still holds it; Glance's hashing task racing the delete) until ``timeout``; gone counts as deleted."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            glance.images.delete(image_id)
            return
        except Exception as exc:
            if glance_image(glance, image_id) is None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot delete image {image_id}: {exc}") from exc
            time.sleep(poll)


def remove_snaps(io: Any, name: str) -> None:
    """Remove an image's user snapshots (those in the trash namespace stay: purged with their last clone)."""
    with rbd.Image(io, name) as img:
        for s in list(img.list_snaps()):
            if int(s.get("namespace", 0)) == 0:
                with contextlib.suppress(rbd.ImageNotFound):
                    img.remove_snap2(s["name"], rbd.RBD_SNAP_REMOVE_UNPROTECT)


def remove_disk(io: Any, name: str, *, wait: float = 0) -> None:
    """Remove a disk from the pool ``io`` with its snapshots (those in the trash namespace stay: purged with their
    last clone); gone already is fine.

    Without ``wait`` a disk that still has clones (a test's Glance image) is left: the stack's teardown removes
    those. With ``wait`` seconds (the benchmarks, whose flattens may still hold a disk) it is tried again every
    second until then, and not removed by then is an error."""
    deadline = time.monotonic() + wait
    while True:
        try:
            remove_snaps(io, name)
            rbd.RBD().remove(io, name)
            return
        except rbd.ImageNotFound:
            return
        except (rbd.ImageBusy, rbd.ImageHasSnapshots, rbd.InvalidArgument) as exc:
            if not wait:
                if isinstance(exc, rbd.InvalidArgument):
                    raise
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot remove {name}: {exc}") from exc
            time.sleep(1)

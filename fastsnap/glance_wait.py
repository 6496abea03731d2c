"""How fastsnap waits for Glance to activate images: the poll scheduler, apart from the Glance adapter.

Three parts, each with its reason:

- :func:`backoff`: the plain wait for a state change (an upload, a delete): quick at first, 2 s at most.
- :class:`ActivationTimes` (one per process, :data:`ACTIVATION`): how long Glance took to activate recent
  location registrations, so the first poll comes about when the image is likely active, and a busy Glance is
  polled less, not more.
- :class:`StatusBoard` (one per Glance client): the images waited for at once through that client, polled
  together in one list request.

:func:`wait_status` puts them together; :meth:`fastsnap.glance.Glance.wait_status` calls it with itself as the
:class:`ImageLookup`, so this module makes no HTTP call and translates no error of its own.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Protocol

from fastsnap.errors import GlanceError, GlanceUnavailable


class ImageLookup(Protocol):
    """The two Glance reads the scheduler makes (fastsnap.glance.Glance has both)."""

    def get(self, image_id: str) -> dict[str, Any]: ...

    def images_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]: ...


MAX_POLL_INTERVAL = 2.0


def backoff(first: float, factor: float = 1.5, cap: float = MAX_POLL_INTERVAL) -> Any:
    """first, first * factor, ... up to ``cap``, forever."""
    d = first
    while True:
        yield min(d, cap)
        d *= factor


class ActivationTimes:
    """How long recent location registrations took to become active, seen by this process.

    The first poll comes at 0.8 x the estimate: the shortest of the last three observations, each the middle of
    the interval in which the image became active (between the last look that found it pending, or the
    registration, and the look that found it active). An image found active at the first poll so records 0.4 x
    the estimate, and the estimate follows Glance down at once (a storm's long waits do not delay the next lone
    snapshot) and up within three snapshots. After the first poll each wait is 30 % of the time waited so far
    (at least ``floor``, at most 2 s), so a poll finds the image at most ~30 % later than it became active, and
    a slower Glance is polled less often, not more. Starts from ``initial`` seconds (an idle Glance activates in
    0.1-0.3 s here; a busy one in seconds)."""

    def __init__(self, initial: float = 0.4, keep: int = 3, floor: float = 0.05, step: float = 0.3) -> None:
        self._seen: deque[float] = deque([initial], maxlen=keep)
        self._lock = threading.Lock()
        self.floor = floor
        self.step = step

    def estimate(self) -> float:
        with self._lock:
            return min(self._seen)

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._seen.append(max(self.floor, seconds))

    def delays(self) -> Any:
        waited = max(self.floor, min(0.8 * self.estimate(), MAX_POLL_INTERVAL))
        yield waited
        while True:
            d = max(self.floor, min(self.step * waited, MAX_POLL_INTERVAL))
            waited += d
            yield d


ACTIVATION = ActivationTimes()

BATCH_MAX = 50  # images per list request
PENDING = frozenset({"queued", "saving", "importing", "uploading"})  # states an image waited for leaves


class StatusBoard:
    """The images one Glance client waits for, polled together.

    A waiter whose poll is due takes a result at least as fresh as it needs (``fresh_after``) from an earlier or
    running poll; otherwise it polls for every image waited for: one ``GET /v2/images?id=in:...`` (a plain
    ``GET`` when it waits alone). So N snapshots waiting at once through one client (the service, operator mode)
    cost about one request per poll interval, not N. A waiter dozes between its polls (:meth:`doze`) and is woken
    as soon as any waiter's poll finds its image out of a pending state, so it does not sleep past the activation
    others already saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: set[str] = set()
        self._seen: dict[str, tuple[float, dict[str, Any]]] = {}
        self._inflight: tuple[float, threading.Event, frozenset[str]] | None = None
        self._news: dict[str, threading.Event] = {}

    def add(self, image_id: str) -> None:
        with self._lock:
            self._waiting.add(image_id)
            self._news[image_id] = threading.Event()

    def remove(self, image_id: str) -> None:
        with self._lock:
            self._waiting.discard(image_id)
            self._seen.pop(image_id, None)
            self._news.pop(image_id, None)

    def doze(self, image_id: str, seconds: float) -> dict[str, Any] | None:
        """Sleep up to ``seconds``; the image as a poll saw it, when one found it no longer pending meanwhile."""
        with self._lock:
            news = self._news.get(image_id)
        if news is None:
            time.sleep(seconds)
            return None
        if not news.wait(seconds):
            return None
        with self._lock:
            news.clear()
            hit = self._seen.get(image_id)
        return hit[1] if hit is not None else None

    def poll(self, glance: ImageLookup, image_id: str, fresh_after: float) -> dict[str, Any]:
        while True:
            with self._lock:
                hit = self._seen.get(image_id)
                if hit is not None and hit[0] >= fresh_after:
                    return hit[1]
                running = self._inflight
                if running is not None and running[0] >= fresh_after and image_id in running[2]:
                    event = running[1]
                    mine = False
                else:
                    others = sorted(self._waiting - {image_id})[:BATCH_MAX - 1]
                    ids = frozenset([image_id, *others])
                    started = time.monotonic()
                    event = threading.Event()
                    self._inflight = (started, event, ids)
                    mine = True
            if not mine:
                event.wait(60)
                continue  # its result is in _seen, or it failed: poll ourselves
            try:
                found = glance.images_by_id(sorted(ids)) if len(ids) > 1 else {image_id: glance.get(image_id)}
                with self._lock:
                    for k, v in found.items():
                        if k in self._waiting:
                            self._seen[k] = (started, v)
                            if k != image_id and v.get("status") not in PENDING:
                                self._news[k].set()
            finally:
                with self._lock:
                    if self._inflight is not None and self._inflight[1] is event:
                        self._inflight = None
                event.set()
            if image_id in found:
                return found[image_id]
            return glance.get(image_id)  # not listed (gone, or hidden from lists): ask for it alone


def wait_status(glance: ImageLookup, board: StatusBoard, image_id: str, want: str, timeout: float,
                registered: bool = False) -> dict[str, Any]:
    """Poll the image until it has ``want`` (GlanceError when it reaches a final other state, GlanceUnavailable
    after ``timeout`` seconds).

    ``registered``: a location was just registered; Glance activates it in a background task whose duration
    depends on its load, so the first poll comes when this process saw recent activations take
    (:data:`ACTIVATION`) and the next ones back off from there: under load fastsnap polls less, not more.
    Images waited for at once through one ``board`` are polled together, one list request for all of them."""
    start = time.monotonic()
    deadline = start + timeout
    delays = ACTIVATION.delays() if registered else backoff(0.05)
    delay: float | None = next(delays) if registered else None  # a registration is first waited for
    pending = 0.0  # seconds into the wait of the last look that still found the image pending

    def found(img: dict[str, Any]) -> dict[str, Any]:
        if registered:  # it became active between the last pending look and now
            ACTIVATION.observe((pending + time.monotonic() - start) / 2)
        return img

    board.add(image_id)
    try:
        while True:
            if delay is not None:
                news = board.doze(image_id, delay)
                if news is not None and news.get("status") == want:
                    return found(news)
            asked = time.monotonic()
            img = board.poll(glance, image_id, asked - max(0.02, 0.5 * (delay or 0.0)))
            status = img.get("status")
            if status == want:
                return found(img)
            if status in ("killed", "deleted", "pending_delete", "deactivated"):
                raise GlanceError(f"image {image_id} became {status} while waiting for {want}")
            pending = asked - start
            now = time.monotonic()
            if now > deadline:
                raise GlanceUnavailable(f"image {image_id} still {status} after waiting for {want}")
            delay = max(0.0, min(next(delays), deadline - now + 0.01))
    finally:
        board.remove(image_id)

"""How fastsnap waits for Glance to activate images (fastsnap.glance_wait: ActivationTimes, StatusBoard, wait_status).

Pure logic: Glance's two read calls (image GET, list by ids) are answered by :class:`Board`, a recording stand-in
whose images change status on a clock; what the real Glance does is shown by the integration tests (every
snapshot waits through this code)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from keystoneauth1 import session as ks_session

from fastsnap import glance as gl
from fastsnap import glance_wait as gw
from fastsnap.errors import GlanceError


class Board:
    """Image statuses that turn ``active`` at given times; records each request."""

    def __init__(self, active_at: dict[str, float]) -> None:
        self.t0 = time.monotonic()
        self.active_at = active_at
        self.requests: list[tuple[str, tuple[str, ...], float]] = []
        self.lock = threading.Lock()

    def status(self, image_id: str) -> dict[str, Any]:
        now = time.monotonic() - self.t0
        return {"id": image_id, "status": "active" if now >= self.active_at[image_id] else "queued"}

    def get(self, image_id: str) -> dict[str, Any]:
        with self.lock:
            self.requests.append(("get", (image_id,), time.monotonic() - self.t0))
        return self.status(image_id)

    def images_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        with self.lock:
            self.requests.append(("list", tuple(ids), time.monotonic() - self.t0))
        return {i: self.status(i) for i in ids}


def _glance(board: Board) -> gl.Glance:
    g = gl.Glance(ks_session.Session(), endpoint_override="http://glance.invalid")
    g.get = board.get  # type: ignore[method-assign]
    g.images_by_id = board.images_by_id  # type: ignore[method-assign]
    return g


def test_activation_estimate_learns_and_backs_off() -> None:
    t = gw.ActivationTimes(initial=0.4)
    delays = t.delays()
    first = next(delays)
    assert first == pytest.approx(0.32)
    # each later wait is 30 % of the time waited so far: the image is seen at most ~30 % after it became active
    waited, d = first, next(delays)
    assert d == pytest.approx(0.3 * waited)
    for _ in range(40):
        waited += d
        d = next(delays)
    assert d == gw.MAX_POLL_INTERVAL
    t.observe(3.0)  # a storm's long wait ...
    t.observe(0.1)  # ... does not hold back the next lone snapshot
    assert t.estimate() == pytest.approx(0.1)
    for _ in range(3):
        t.observe(1.5)
    assert t.estimate() == pytest.approx(1.5)  # a slower Glance: followed within three observations


def test_estimate_comes_down_after_a_slow_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """After long activations (a storm), a lone image Glance activates at once is found within ~half a second:
    an image found at the first poll records the middle of the interval, so the estimate falls quickly."""
    monkeypatch.setattr(gw, "ACTIVATION", gw.ActivationTimes(initial=0.5))
    board = Board({})
    g = _glance(board)
    for i in range(4):
        board.active_at[f"i{i}"] = 0.0
    seen = []
    for i in range(4):
        t = time.monotonic()
        g.wait_status(f"i{i}", "active", timeout=5, registered=True)
        seen.append(time.monotonic() - t)
    assert seen[0] == pytest.approx(0.4, abs=0.1)
    assert seen[-1] < 0.1, seen


def test_waiter_woken_by_another_waiters_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """A waits for an image Glance activates at 0.2 s, but A's own first poll is due only at 1.6 s. B, waiting
    through the same client, polls at ~0.35 s for both images: A must return then, without a request of its own,
    not at 1.6 s."""
    monkeypatch.setattr(gw, "ACTIVATION", gw.ActivationTimes(initial=2.0))
    board = Board({"a": 0.2, "b": 0.5})
    g = _glance(board)
    took: dict[str, float] = {}

    def wait(image_id: str, registered: bool) -> None:
        assert g.wait_status(image_id, "active", timeout=10, registered=registered)["status"] == "active"
        took[image_id] = time.monotonic() - board.t0

    a = threading.Thread(target=wait, args=("a", True))
    a.start()
    time.sleep(0.3)
    b = threading.Thread(target=wait, args=("b", False))  # polls from 0.05 s on, backing off
    b.start()
    a.join(5)
    b.join(5)
    assert 0.3 < took["a"] < 1.0, took
    assert took["b"] >= 0.5, took
    assert all("b" in ids for _, ids, _ in board.requests), board.requests  # every request was B's poll
    assert any(kind == "list" and set(ids) == {"a", "b"} for kind, ids, _ in board.requests)


def test_lone_waiter_polls_alone_until_active() -> None:
    board = Board({"x": 0.25})
    g = _glance(board)
    img = g.wait_status("x", "active", timeout=5)
    assert img["status"] == "active"
    assert {kind for kind, _, _ in board.requests} == {"get"}
    assert board.requests[-1][2] >= 0.25


def test_wait_fails_on_a_final_state() -> None:
    board = Board({"k": 99.0})
    g = _glance(board)
    board.status = lambda image_id: {"id": image_id, "status": "killed"}  # type: ignore[method-assign]
    with pytest.raises(GlanceError, match="became killed"):
        g.wait_status("k", "active", timeout=5)

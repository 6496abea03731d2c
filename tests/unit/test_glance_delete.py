"""``Glance.delete``'s retries, as control flow: which answers are tried again, how often, after which waits.

The client below is a **recording stub** that raises the glanceclient exceptions it is given, in order, and counts
the calls; it proves nothing about Glance. That a delete racing Glance's hashing task answers 500 or 409 and
succeeds a little later is what tests/integration/test_nova.py's ``delete_images`` helper works around on the
real stack.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from glanceclient import exc as gexc
from keystoneauth1 import session as ks_session

from fastsnap import glance as gl
from fastsnap.errors import Forbidden, GlanceError


class Images:
    def __init__(self, answers: list[Exception | None]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def delete(self, image_id: str) -> None:
        self.calls.append(image_id)
        answer = self.answers.pop(0) if self.answers else None
        if answer is not None:
            raise answer


class Client:
    def __init__(self, answers: list[Exception | None]) -> None:
        self.images = Images(answers)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # fastsnap.glance calls time.sleep
    return slept


def _glance(answers: list[Exception | None]) -> tuple[gl.Glance, Images]:
    g = gl.Glance(ks_session.Session(), endpoint_override="http://glance.invalid")
    client = Client(answers)
    g.client = client
    return g, client.images


def test_500_and_409_are_tried_again_until_the_delete_succeeds(sleeps: list[float]) -> None:
    g, images = _glance([gexc.HTTPInternalServerError(), gexc.HTTPConflict(), None])
    g.delete("img")
    assert images.calls == ["img"] * 3
    assert sleeps == list(gl.DELETE_WAITS[:2])


def test_a_race_that_outlasts_the_waits_raises_glance_error(sleeps: list[float]) -> None:
    g, images = _glance([gexc.HTTPInternalServerError() for _ in range(10)])
    with pytest.raises(GlanceError, match="deleting image img failed: HTTPInternalServerError"):
        g.delete("img", waits=(0.5, 1.5))
    assert images.calls == ["img"] * 3
    assert sleeps == [0.5, 1.5]


def test_gone_counts_as_deleted_also_after_a_retry(sleeps: list[float]) -> None:
    g, images = _glance([gexc.HTTPNotFound()])
    g.delete("img")
    assert images.calls == ["img"] and sleeps == []
    g, images = _glance([gexc.HTTPInternalServerError(), gexc.HTTPNotFound()])
    g.delete("img")
    assert images.calls == ["img"] * 2 and sleeps == [gl.DELETE_WAITS[0]]


@pytest.mark.parametrize(("error", "raised"), [(gexc.HTTPForbidden(), Forbidden),
                                               (gexc.HTTPBadRequest(), GlanceError),
                                               (gexc.HTTPServiceUnavailable(), GlanceError)])
def test_other_errors_are_not_tried_again(sleeps: list[float], error: Exception, raised: Any) -> None:
    g, images = _glance([error, None])
    with pytest.raises(raised):
        g.delete("img")
    assert images.calls == ["img"] and sleeps == []


def test_the_client_repeats_a_500_itself() -> None:
    """The first line of retries: keystoneauth1 repeats a 500 (not a 409) of ``self.client``'s requests, image
    deletes included (glanceclient's images controller sends through that client's adapter)."""
    g = gl.Glance(ks_session.Session(), endpoint_override="http://glance.invalid", retries=3)
    http = g.client.http_client
    assert g.client.images.http_client is http
    assert http.status_code_retries == 3
    assert 500 in (http.retriable_status_codes or []) and 409 not in (http.retriable_status_codes or [])

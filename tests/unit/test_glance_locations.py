"""``Glance.base_image``'s location lookup when the image hides its locations, as control flow.

The HTTP client below is a **recording stub** that answers like Glance's location API (``GET
/v2/images/{id}/locations``: 403 for a user's token, the list for the service role); it proves nothing about
Glance. That Glance does answer so, with ``show_multiple_locations`` and ``show_image_direct_url`` off and on, is
tests/integration/test_glance_shapes.py and test_nova_glance_shapes.py on the real stack.
"""

from __future__ import annotations

from typing import Any

import pytest
from glanceclient import exc as gexc
from keystoneauth1 import service_token
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from fastsnap import glance as gl
from fastsnap.errors import ConfigError
from fastsnap.planning import refuse_patch_without_locations

IMAGE = "11111111-2222-3333-4444-555555555555"
A = f"rbd://fsid-a/images/{IMAGE}/snap"
B = f"rbd://fsid-b/images/{IMAGE}/snap"


class Http:
    def __init__(self, view: dict[str, Any], service: Any) -> None:
        self.view = view
        self.service = service
        self.calls: list[tuple[str, str]] = []

    def get(self, url: str, auth: Any = None) -> tuple[None, Any]:
        who = "service" if auth is not None and auth is self.service else "caller"
        self.calls.append((url, who))
        if url == "/versions":
            return None, {"versions": [{"id": "v2.17", "status": "CURRENT"}]}
        if url == f"/v2/images/{IMAGE}":
            return None, dict(self.view)
        if url.endswith("/locations"):
            if who != "service":
                raise gexc.HTTPForbidden("fetch_image_location")
            return None, [{"url": A, "metadata": {"store": "fast"}}, {"url": B, "metadata": {"store": "remote"}}]
        raise AssertionError(url)


class Client:
    def __init__(self, http: Http) -> None:
        self.http_client = http


def _glance(view: dict[str, Any], user: bool) -> tuple[gl.Glance, Http]:
    service = v3.Token(auth_url="http://keystone.invalid/v3", token="service")
    auth: Any = service_token.ServiceTokenAuthWrapper(
        user_auth=v3.Token(auth_url="http://keystone.invalid/v3", token="user"), service_auth=service) \
        if user else service
    g = gl.Glance(ks_session.Session(auth=auth), endpoint_override=f"http://glance.invalid/{id(view)}")
    http = Http(view, service)
    g.client = Client(http)
    return g, http


def test_user_view_hiding_locations_asks_as_the_service_user() -> None:
    """Kolla's shape, a user's session: the location API refuses the user, fastsnap's service user gets them."""
    g, http = _glance({"id": IMAGE, "status": "active", "stores": "fast,remote"}, user=True)
    base, _ = g.base_image(IMAGE)
    assert base.locations == ((A, "fast"), (B, "remote"))
    assert http.calls[-2:] == [(f"/v2/images/{IMAGE}/locations", "caller"),
                               (f"/v2/images/{IMAGE}/locations", "service")]


def test_direct_url_of_a_multistore_image_is_not_enough() -> None:
    """Only show_image_direct_url: one location shown for an image in two stores; the rest from the API."""
    g, _ = _glance({"id": IMAGE, "status": "active", "stores": "fast,remote", "direct_url": A}, user=True)
    base, _ = g.base_image(IMAGE)
    assert base.locations == ((A, "fast"), (B, "remote")) and base.direct_url == A


def test_locations_shown_need_no_second_request() -> None:
    """OpenStack-Ansible's shape: the image carries its locations."""
    view = {"id": IMAGE, "status": "active", "stores": "fast", "direct_url": A,
            "locations": [{"url": A, "metadata": {"store": "fast"}}]}
    g, http = _glance(view, user=True)
    base, _ = g.base_image(IMAGE)
    assert base.locations == ((A, "fast"),)
    assert http.calls == [(f"/v2/images/{IMAGE}", "caller")]


def test_service_session_refused_gives_no_locations() -> None:
    """fastsnap's own session refused too (no service role): no locations; the planner works from ``stores``."""
    g, http = _glance({"id": IMAGE, "status": "active", "stores": "fast,remote"}, user=False)
    http.service = object()  # the stub now refuses every caller
    base, _ = g.base_image(IMAGE)
    assert base.locations == () and base.stores == ("fast", "remote")


def test_registration_api_is_the_configured_one_or_what_glance_has() -> None:
    g, _ = _glance({}, user=False)
    assert g.registration_api() == "v2.17"          # auto, and the stub's Glance lists v2.17
    for configured, api in (("patch", "patch"), ("locations", "v2.17")):
        g.location_api = configured
        assert g.registration_api() == api


def test_a_patch_registration_against_a_glance_that_hides_locations_is_refused_while_planning() -> None:
    """``[glance] location_api = patch`` with a base image viewed without ``locations`` (Glance's
    show_multiple_locations off): refused before anything is created, naming both settings; with ``locations``
    in the view (even empty: a caller who may not see them), or with the location API, planning goes on."""
    g, _ = _glance({}, user=False)
    g.location_api = "patch"
    with pytest.raises(ConfigError) as err:
        refuse_patch_without_locations(g, {"id": IMAGE, "status": "active", "direct_url": A})
    assert str(err.value).startswith("Glance has show_multiple_locations = False")
    assert "location_api = patch" in str(err.value)
    refuse_patch_without_locations(g, {"id": IMAGE, "locations": []})
    g.location_api = "auto"
    refuse_patch_without_locations(g, {"id": IMAGE, "status": "active"})

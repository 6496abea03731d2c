"""Thin typed adapter over python-glanceclient (v2) on a keystoneauth1 session.

Errors come back as fastsnap errors: 401/403 → Forbidden, 404 → GlanceNotFound, 400 on input → BadRequest,
others → GlanceError.

The HTTP door and its error translation only. What is not a Glance call lives apart: which base image
properties a snapshot inherits (fastsnap.inheritance), the API versions cache (fastsnap.glance_versions), and
the schedule of waiting for an image's status (fastsnap.glance_wait).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import glanceclient
from glanceclient import exc as gexc
from keystoneauth1 import exceptions as ksexc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap import glance_wait
from fastsnap.errors import (
    BadRequest,
    FastsnapError,
    Forbidden,
    GlanceError,
    GlanceNotFound,
    GlanceUnavailable,
    NotFound,
)
from fastsnap.glance_versions import VERSIONS
from fastsnap.plan import BaseImage, StoreInfo

LOG = logging.getLogger(__name__)

T = TypeVar("T")


POOL_SIZE = 64  # HTTP connections kept per host: the service's concurrent snapshots reuse theirs

# Seconds between the attempts of an image delete that raced Glance's own hashing task (Glance.delete).
DELETE_WAITS = (1.0, 2.0, 4.0, 8.0)


def session_from_conf(conf: cfg.ConfigOpts) -> ks_session.Session:
    """fastsnap's keystoneauth1 session: one token for the process's life (renewed when it expires), one pool of
    keep-alive connections shared by every Glance client made from it (user sessions included)."""
    auth = ks_loading.load_auth_from_conf_options(conf, "glance")
    sess = ks_loading.load_session_from_conf_options(conf, "glance", auth=auth)
    adapter = ks_session.TCPKeepAliveAdapter(pool_maxsize=POOL_SIZE)
    for scheme in ("http://", "https://"):
        sess.session.mount(scheme, adapter)
    return sess


class Glance:
    """The Glance calls fastsnap makes, with uniform errors."""

    def __init__(self, session: ks_session.Session, endpoint_override: str | None = None,
                 interface: str = "internal", region_name: str | None = None, retries: int = 3,
                 status_timeout: int = 300, location_api: str = "auto") -> None:
        self.session = session
        self.status_timeout = status_timeout
        self.location_api = location_api
        self.client = glanceclient.Client(
            "2", session=session, endpoint_override=endpoint_override, interface=interface,
            region_name=region_name, connect_retries=retries, status_code_retries=retries,
            retriable_status_codes=[500, 502, 503, 504])
        self.board = glance_wait.StatusBoard()  # the images waited for through this client
        # Non-idempotent calls (create, upload) must not be retried blindly.
        self.once = glanceclient.Client(
            "2", session=session, endpoint_override=endpoint_override, interface=interface,
            region_name=region_name)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, session: ks_session.Session | None = None) -> Glance:
        g = conf.glance
        return cls(session or session_from_conf(conf), g.endpoint_override, g.interface, g.region_name,
                   g.connect_retries, g.status_timeout, g.location_api)

    # -- error mapping ---------------------------------------------------------------------------------

    @staticmethod
    def call(what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            raise map_error(what, exc) from exc

    def supports(self, version: str) -> bool:
        """Whether Glance supports an API version; asked once per process and endpoint (``GET /versions``)."""
        def ask() -> set[str]:
            _, body = self.call("listing API versions", lambda: self.client.http_client.get("/versions"))
            return {str(v.get("id")) for v in (body or {}).get("versions", [])
                    if v.get("status") in ("SUPPORTED", "CURRENT", "EXPERIMENTAL")}

        return version in VERSIONS.get(self._endpoint_key(), ask)

    def _endpoint_key(self) -> str:
        http = self.client.http_client
        return str(getattr(http, "endpoint_override", None) or getattr(http, "endpoint", None) or
                   (getattr(http, "interface", None), getattr(http, "region_name", None)))

    # -- stores ----------------------------------------------------------------------------------------

    def stores(self, fsid_retries: int = 3) -> tuple[StoreInfo, ...]:
        """The store catalogue. Uses the detail call (admin/service role) when allowed.

        Glance builds each rbd store's fsid by connecting to its cluster per request; a failed connection just
        omits it. Retry a few times so that an unknown fsid is rare; the planner refuses to guess.
        """
        try:
            for attempt in range(fsid_retries + 1):
                detail = self.call("listing store details", self.client.images.get_stores_info_detail)
                stores = tuple(_store(s, detailed=True) for s in detail.get("stores", []))
                if all(s.fsid for s in stores if s.type == "rbd") or attempt == fsid_retries:
                    return stores
                time.sleep(0.5 * (attempt + 1))
        except Forbidden:
            LOG.info("no access to /v2/info/stores/detail; store types and pools unknown")
        except NotFound as exc:
            raise GlanceError("Glance multistore is not enabled (no /v2/info/stores)") from exc
        basic = self.call("listing stores", self.client.images.get_stores_info)
        return tuple(_store(s, detailed=False) for s in basic.get("stores", []))

    # -- images ----------------------------------------------------------------------------------------

    def get(self, image_id: str) -> dict[str, Any]:
        """The image as Glance shows it (one ``GET``; glanceclient's model would fetch its schema first)."""
        _, body = self.call(f"getting image {image_id}",
                            lambda: self.client.http_client.get(f"/v2/images/{image_id}"))
        if not isinstance(body, dict):
            raise GlanceError(f"Glance: getting image {image_id}: unexpected answer {body!r:.200}")
        body.pop("self", None)
        return body

    def find(self, image_id: str) -> dict[str, Any] | None:
        try:
            return self.get(image_id)
        except NotFound:
            return None

    def base_image(self, image_id: str) -> tuple[BaseImage, dict[str, Any]]:
        img = self.get(image_id)
        if img.get("status") != "active":
            raise BadRequest(f"base image {image_id} is {img.get('status')}, not active")
        locs: list[tuple[str, str | None]] = []
        raw = img.get("locations") or []
        stores = tuple(s for s in str(img.get("stores") or "").split(",") if s)
        # direct_url names one location only: a multistore image (e.g. after copy-image) needs the whole list,
        # or its copy in another store (the delta path's base) is never seen.
        if not raw and (img.get("direct_url") is None or len(stores) > 1):
            raw = self._locations(image_id)
        for loc in raw:
            if isinstance(loc, dict) and loc.get("url"):
                locs.append((loc["url"], (loc.get("metadata") or {}).get("store")))
        return BaseImage(id=image_id, stores=stores, locations=tuple(locs),
                         direct_url=img.get("direct_url")), img

    def _locations(self, image_id: str) -> list[Any]:
        """The image's locations from the location API (2.17), for an image the caller just read; [] when Glance has
        no such API or does not show them (then the planner works from ``stores``).

        Glance shows them only to the service (or admin) role, whatever ``show_multiple_locations`` and
        ``show_image_direct_url`` say; a user's token has neither, and the service token beside it does not count
        for that policy (``fetch_image_location``). So a user's session asks again as fastsnap's own service user
        (its ``service_auth``): the image is one the user can see, and the URLs stay fastsnap's (planned with and
        journaled; the result names only the new image's own location). Without this, a base image copied into an
        rbd store on another cluster is not seen there on behalf of a user, with Glance as Kolla configures it
        (both options off) or with only ``show_image_direct_url`` on: the copy path instead of the delta path."""
        url = f"/v2/images/{image_id}/locations"
        raw: Any = []
        try:
            if self.supports("v2.17"):
                _, raw = self.client.http_client.get(url)
        except gexc.HTTPForbidden:
            service = getattr(self.session.auth, "service_auth", None)
            try:
                raw = self.client.http_client.get(url, auth=service)[1] if service is not None else []
            except Exception:
                raw = []
        except Exception:
            raw = []
        return raw if isinstance(raw, list) else []

    def create(self, image_id: str, name: str, properties: dict[str, str], disk_format: str = "raw"
               ) -> dict[str, Any]:
        """Create a queued image with a client-chosen id; an existing image of that id counts as created."""
        body = {**properties, "id": image_id, "name": name, "disk_format": disk_format, "container_format": "bare"}
        try:  # one POST (glanceclient's model would fetch the image schema first); never retried blindly
            _, img = self.once.http_client.post("/v2/images", data=body)
            if not isinstance(img, dict):
                raise GlanceError(f"Glance: creating image {image_id}: unexpected answer {img!r:.200}")
            img.pop("self", None)
            return img
        except gexc.HTTPConflict:
            existing = self.get(image_id)
            LOG.info("image %s already exists (%s)", image_id, existing.get("status"))
            return existing
        except gexc.HTTPBadRequest as exc:
            raise BadRequest(f"Glance rejected the image: {exc.details or exc}") from exc
        except Exception as exc:
            raise map_error(f"creating image {image_id}", exc) from exc

    def update_queued(self, image_id: str, queued: dict[str, Any], changes: dict[str, Any]) -> None:
        """Set ``changes`` on a queued image whose current view is ``queued``: one JSON-patch ``PATCH``
        (glanceclient's ``update`` would read the image and its schema first)."""
        ops = [{"op": "replace" if k in queued else "add", "path": f"/{k}", "value": v} for k, v in changes.items()]
        if not ops:
            return
        headers = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
        try:
            self.call(f"updating image {image_id}",
                      lambda: self.client.http_client.patch(f"/v2/images/{image_id}", headers=headers,
                                                            data=json.dumps(ops)))  # a str keeps the type
        except GlanceError as exc:
            cause = exc.__cause__
            if isinstance(cause, gexc.HTTPBadRequest):
                raise BadRequest(f"Glance rejected the image: {cause.details or cause}") from exc
            raise

    def upload(self, image_id: str, data: Any, size: int, store: str | None) -> None:
        def go() -> None:
            self.once.images.upload(image_id, data, image_size=size, backend=store)

        try:
            go()
        except gexc.HTTPBadRequest as exc:
            raise BadRequest(f"Glance refused the upload to store {store!r}: {exc.details or exc}") from exc
        except Exception as exc:
            raise map_error(f"uploading image {image_id} to store {store}", exc) from exc

    def registration_api(self) -> str:
        """How :meth:`add_location` registers: ``v2.17`` (the location API) or ``patch`` (``[glance]
        location_api``; ``auto``: the location API where Glance has it)."""
        if self.location_api == "auto":
            return "v2.17" if self.supports("v2.17") else "patch"
        return "v2.17" if self.location_api == "locations" else self.location_api

    @staticmethod
    def hides_locations(image: dict[str, Any]) -> bool:
        """Whether an image view comes from a Glance with ``show_multiple_locations = False``: only such a Glance
        leaves the ``locations`` key out (with it on, a caller who may not see them gets ``[]``)."""
        return "locations" not in image

    def add_location(self, image_id: str, url: str) -> tuple[str, dict[str, Any] | None]:
        """Register a location on a queued image: (the API used, the image when Glance answered with it active).

        ``[glance] location_api``: the 2.17 location API (one POST; Glance activates the image in a background
        task: poll it) or the JSON-patch ``add /locations/-`` (synchronous: the answer is the active image)."""
        api = self.registration_api()
        if api == "v2.17":  # one POST (glanceclient's call adds GET /versions and GET image)
            self.call(f"adding location to {image_id}", lambda: self.client.http_client.post(
                f"/v2/images/{image_id}/locations", data={"url": url, "validation_data": {}}))
            return api, None
        patch = json.dumps([{"op": "add", "path": "/locations/-", "value": {"url": url, "metadata": {}}}])
        try:
            _, body = self.once.http_client.patch(
                f"/v2/images/{image_id}", data=patch,
                headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
        except gexc.HTTPForbidden as exc:
            raise Forbidden(f"Glance refused to add a location to {image_id}: the image PATCH API ([glance] "
                            f"location_api = {self.location_api}) needs show_multiple_locations = True in Glance, "
                            f"or set [glance] location_api = auto: {exc.details or exc}") from exc
        except Exception as exc:
            raise map_error(f"adding location to {image_id} (image PATCH)", exc) from exc
        img = body if isinstance(body, dict) else None
        return api, (img if img and img.get("status") == "active" else None)

    def wait_status(self, image_id: str, want: str = "active", timeout: float | None = None,
                    registered: bool = False) -> dict[str, Any]:
        """Poll the image until it has ``want``, within ``timeout`` (default ``[glance] status_timeout``)
        seconds; the schedule, and polling the images waited for at once together, are
        :func:`fastsnap.glance_wait.wait_status`'s."""
        return glance_wait.wait_status(self, self.board, image_id, want, timeout or self.status_timeout,
                                       registered)

    def images_by_id(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Several images in one list request (``id=in:...``); those Glance does not list are missing."""
        query = f"/v2/images?id=in:{','.join(ids)}&limit={len(ids)}"
        _, body = self.call(f"listing images {', '.join(ids)}", lambda: self.client.http_client.get(query))
        out: dict[str, dict[str, Any]] = {}
        for img in (body or {}).get("images", []) if isinstance(body, dict) else []:
            if isinstance(img, dict) and img.get("id") in ids:
                img.pop("self", None)
                out[str(img["id"])] = img
        return out

    def delete(self, image_id: str, waits: Sequence[float] = DELETE_WAITS) -> None:
        """Delete an image; already gone counts as success.

        Glance answers 500 to a delete that races the end of its own background hash calculation of the image
        (``do_secure_hash`` after a location was registered: "Operation file ... does not exist, cannot cancel"),
        or 409 while that task still has the RBD image open (the rbd store cannot remove it); the same delete a
        little later succeeds. ``self.client`` repeats a 500 by itself (keystoneauth1's ``status_code_retries``:
        ``[glance] connect_retries`` times within a few seconds), not a 409; a 500 or 409 that outlasts that is
        tried again after each of ``waits`` seconds. Any other error, or the last one, is raised."""
        what = f"deleting image {image_id}"
        for wait in (*waits, None):
            try:
                self.client.images.delete(image_id)
                return
            except Exception as exc:
                err = map_error(what, exc)
                if isinstance(err, NotFound):
                    return
                if wait is None or not isinstance(exc, gexc.HTTPInternalServerError | gexc.HTTPConflict):
                    raise err from exc
                LOG.info("%s: %s; trying again in %.1f s", what, exc, wait)
                time.sleep(wait)


def map_error(what: str, exc: Exception) -> Exception:
    """A fastsnap error for a glanceclient/keystoneauth1 exception; other exceptions come back unchanged."""
    if isinstance(exc, FastsnapError):
        return exc
    if isinstance(exc, gexc.HTTPUnauthorized | ksexc.Unauthorized):
        return Forbidden(f"Glance: {what}: not authenticated ({exc})")
    if isinstance(exc, gexc.HTTPForbidden | ksexc.Forbidden):
        return Forbidden(f"Glance: {what}: forbidden ({exc})")
    if isinstance(exc, gexc.HTTPNotFound | ksexc.NotFound):
        return GlanceNotFound(f"Glance: {what}: not found")
    if _unavailable(exc):
        return GlanceUnavailable(f"Glance: {what} failed: {type(exc).__name__}: {exc}")
    if isinstance(exc, gexc.BaseException | gexc.HTTPException | ksexc.ClientException | OSError):
        return GlanceError(f"Glance: {what} failed: {type(exc).__name__}: {exc}")
    return exc


def _unavailable(exc: Exception) -> bool:
    """Glance (or Keystone on the way) not reached, 5xx, or no answer in time: a later try may succeed."""
    if isinstance(exc, ksexc.ConnectionError | ksexc.RequestTimeout | ksexc.HttpServerError | OSError):
        return True
    if isinstance(exc, gexc.CommunicationError):
        return True
    code = getattr(exc, "code", None) if isinstance(exc, gexc.HTTPException) else None
    return isinstance(code, int) and code >= 500


def _store(raw: dict[str, Any], detailed: bool) -> StoreInfo:
    props = raw.get("properties") or {}
    return StoreInfo(
        id=raw["id"],
        type=raw.get("type") if detailed else None,
        is_default=str(raw.get("default", "")).lower() == "true",
        description=raw.get("description") or "",
        pool=props.get("pool"),
        fsid=props.get("fsid"),
    )

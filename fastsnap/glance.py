"""Thin typed adapter over python-glanceclient (v2) on a keystoneauth1 session.

Errors come back as fastsnap errors: 401/403 → Forbidden, 404 → GlanceNotFound, 400 on input → BadRequest,
others → GlanceError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import glanceclient
from glanceclient import exc as gexc
from keystoneauth1 import exceptions as ksexc
from keystoneauth1 import loading as ks_loading
from keystoneauth1 import session as ks_session
from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.errors import BadRequest, FastsnapError, Forbidden, GlanceError, GlanceNotFound, NotFound
from fastsnap.plan import BaseImage, StoreInfo

LOG = logging.getLogger(__name__)

# Image properties never copied from the base image (Nova's non-inheritable ones and Glance's own).
NON_INHERITABLE = frozenset({
    "id", "name", "status", "visibility", "protected", "checksum", "owner", "size", "virtual_size",
    "created_at", "updated_at", "file", "schema", "self", "tags", "direct_url", "locations", "stores",
    "disk_format", "container_format", "os_hash_algo", "os_hash_value", "os_hidden", "os_glance_import_task",
    "image_type", "instance_uuid", "base_image_ref", "image_location", "image_state", "owner_id", "user_id",
    "cache_in_nova", "bittorrent", "img_signature", "img_signature_hash_method",
    "img_signature_certificate_uuid", "img_signature_key_type", "block_device_mapping", "bdm_v2",
    "root_device_name", "backup_type",
})
NON_INHERITABLE_PREFIXES = ("os_glance", "cinder_encryption_key", "img_signature")


def inheritable(props: dict[str, Any]) -> dict[str, str]:
    """The base image's properties a snapshot inherits, the way Nova copies them."""
    out: dict[str, str] = {}
    for k, v in props.items():
        if k in NON_INHERITABLE or k.startswith(NON_INHERITABLE_PREFIXES) or v is None:
            continue
        if isinstance(v, str):
            out[k] = v
    return out


T = TypeVar("T")


def session_from_conf(conf: cfg.ConfigOpts) -> ks_session.Session:
    auth = ks_loading.load_auth_from_conf_options(conf, "glance")
    return ks_loading.load_session_from_conf_options(conf, "glance", auth=auth)


class Glance:
    """The Glance calls fastsnap makes, with uniform errors."""

    def __init__(self, session: ks_session.Session, endpoint_override: str | None = None,
                 interface: str = "internal", region_name: str | None = None, retries: int = 3,
                 status_timeout: int = 300) -> None:
        self.session = session
        self.status_timeout = status_timeout
        self.client = glanceclient.Client(
            "2", session=session, endpoint_override=endpoint_override, interface=interface,
            region_name=region_name, connect_retries=retries, status_code_retries=retries,
            retriable_status_codes=[500, 502, 503, 504])
        # Non-idempotent calls (create, upload) must not be retried blindly.
        self.once = glanceclient.Client(
            "2", session=session, endpoint_override=endpoint_override, interface=interface,
            region_name=region_name)

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts, session: ks_session.Session | None = None) -> Glance:
        g = conf.glance
        return cls(session or session_from_conf(conf), g.endpoint_override, g.interface, g.region_name,
                   g.connect_retries, g.status_timeout)

    # -- error mapping ---------------------------------------------------------------------------------

    @staticmethod
    def call(what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as exc:
            raise map_error(what, exc) from exc

    def supports(self, version: str) -> bool:
        return bool(glanceclient.common.utils.has_version(self.client.http_client, version))

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
        img = self.call(f"getting image {image_id}", lambda: self.client.images.get(image_id))
        return dict(img)

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
        if not raw:
            try:
                raw = self.client.images.get_image_locations(image_id)
            except Exception:  # hidden unless we have the service role: fall back to `stores`
                raw = []
        for loc in raw:
            if isinstance(loc, dict) and loc.get("url"):
                locs.append((loc["url"], (loc.get("metadata") or {}).get("store")))
        stores = tuple(s for s in str(img.get("stores") or "").split(",") if s)
        return BaseImage(id=image_id, stores=stores, locations=tuple(locs),
                         direct_url=img.get("direct_url")), img

    def create(self, image_id: str, name: str, properties: dict[str, str]) -> dict[str, Any]:
        """Create a queued image with a client-chosen id; an existing image of that id counts as created."""
        try:
            img = self.once.images.create(id=image_id, name=name, disk_format="raw", container_format="bare",
                                          **properties)
            return dict(img)
        except gexc.HTTPConflict:
            existing = self.get(image_id)
            LOG.info("image %s already exists (%s)", image_id, existing.get("status"))
            return existing
        except gexc.HTTPBadRequest as exc:
            raise BadRequest(f"Glance rejected the image: {exc.details or exc}") from exc
        except Exception as exc:
            raise map_error(f"creating image {image_id}", exc) from exc

    def upload(self, image_id: str, data: Any, size: int, store: str | None) -> None:
        def go() -> None:
            self.once.images.upload(image_id, data, image_size=size, backend=store)

        try:
            go()
        except gexc.HTTPBadRequest as exc:
            raise BadRequest(f"Glance refused the upload to store {store!r}: {exc.details or exc}") from exc
        except Exception as exc:
            raise map_error(f"uploading image {image_id} to store {store}", exc) from exc

    def add_location(self, image_id: str, url: str) -> str:
        """Register a location on a queued image; returns the API used."""
        if self.supports("v2.17"):
            self.call(f"adding location to {image_id}",
                      lambda: self.client.images.add_image_location(image_id, url, validation_data={}))
            return "v2.17"
        self.call(f"adding location to {image_id} (legacy)",
                  lambda: self.client.images.add_location(image_id, url, {}))
        return "legacy"

    def wait_status(self, image_id: str, want: str = "active", timeout: float | None = None) -> dict[str, Any]:
        start = time.monotonic()
        deadline = start + (timeout or self.status_timeout)
        while True:
            img = self.get(image_id)
            status = img.get("status")
            if status == want:
                return img
            if status in ("killed", "deleted", "pending_delete", "deactivated"):
                raise GlanceError(f"image {image_id} became {status} while waiting for {want}")
            if time.monotonic() > deadline:
                raise GlanceError(f"image {image_id} still {status} after waiting for {want}")
            # Glance activates a registered location within tens of ms: poll closely first, then back off.
            waited = time.monotonic() - start
            time.sleep(0.02 if waited < 2 else 0.2 if waited < 10 else 1.0)

    def delete(self, image_id: str) -> None:
        """Delete an image; already gone counts as success."""
        try:
            self.call(f"deleting image {image_id}", lambda: self.client.images.delete(image_id))
        except NotFound:
            return


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
    if isinstance(exc, gexc.BaseException | gexc.HTTPException | ksexc.ClientException | OSError):
        return GlanceError(f"Glance: {what} failed: {type(exc).__name__}: {exc}")
    return exc


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

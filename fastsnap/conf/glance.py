"""``[glance]``: how fastsnap reaches Glance (keystoneauth1 session and auth options included)."""

from __future__ import annotations

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

GROUP = "glance"
glance_opts = [
    cfg.StrOpt("endpoint_override",
               help="Glance API URL; default: the 'image' endpoint of the Keystone catalogue."),
    cfg.StrOpt("interface", default="internal", help="Catalogue interface used to find Glance."),
    cfg.StrOpt("region_name", help="Catalogue region used to find Glance."),
    cfg.IntOpt("status_timeout", default=300, min=1,
               help="Seconds to wait for an image to become active after its location is registered."),
    cfg.StrOpt("location_api", default="auto", choices=[
                   ("auto", "the location API when Glance offers it (2.17), otherwise the image PATCH"),
                   ("locations", "POST /v2/images/{id}/locations (Glance 2.17): Glance activates the image in a "
                                 "background task, then hashes it when do_secure_hash is on; fastsnap polls"),
                   ("patch", "JSON-patch 'add /locations/-': one synchronous request, no Glance task, no polling, "
                             "never hashed; needs Glance's deprecated show_multiple_locations = True")],
               help="How fastsnap registers a clone's rbd:// location with Glance. 'patch' costs Glance about a "
                    "third less CPU per clone snapshot and activates it within the request (the way Nova's rbd "
                    "snapshots did before 2025.2); it needs show_multiple_locations = True in Glance, which shows "
                    "every image's locations to its users (Glance calls that a security risk), and images it "
                    "registers get no checksum or os_hash_value even when Glance's do_secure_hash is on. With "
                    "show_multiple_locations off Glance refuses it: a snapshot with a base image is refused while "
                    "planning (the Nova hook then declines to Nova's own snapshot with one WARNING line naming the "
                    "setting), one without fails cleanly at registration, telling so."),
    cfg.IntOpt("store_cache_seconds", default=30, min=0,
               help="Seconds fastsnap reuses Glance's store catalogue (GET /v2/info/stores/detail, for which "
                    "Glance connects to every Ceph cluster) before asking again, in memory and in "
                    "<[journal] state_dir>/stores-cache.json, which CLI runs on the host share; 0 asks for every "
                    "snapshot. A catalogue with an rbd store of unknown fsid is never cached; the cache is "
                    "dropped when planning with it fails (the request is planned again with a fresh catalogue) or "
                    "Glance refuses a location."),
    cfg.IntOpt("connect_retries", default=3, min=0,
               help="Retries of an idempotent Glance call on connection errors and 5xx answers "
                    "(keystoneauth1's retries, with back-off)."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(glance_opts, group=GROUP)
    ks_loading.register_session_conf_options(conf, GROUP)
    ks_loading.register_auth_conf_options(conf, GROUP)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    opts: list[cfg.Opt] = list(glance_opts)
    opts += ks_loading.get_session_conf_options()
    opts += ks_loading.get_auth_common_conf_options()
    opts += ks_loading.get_auth_plugin_conf_options("password")
    return [(GROUP, opts)]

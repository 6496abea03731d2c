"""Which of the base image's properties a snapshot inherits: Nova's policy, written down once.

A snapshot of a server made by Nova copies the base image's properties except Nova's non-inheritable ones and
Glance's own (its identity, status, checksums, locations, signatures); fastsnap's snapshots do the same, so an
image made by fastsnap looks like the one Nova would have made. This is a rule about image metadata, not a Glance
call: it lives apart from the Glance adapter (fastsnap.glance), which only moves it over HTTP.
"""

from __future__ import annotations

from typing import Any

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

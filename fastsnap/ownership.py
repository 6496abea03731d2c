"""Who may snapshot which disk: a snapshot taken on behalf of a user is of a disk the user's project owns.

The rule (checked before anything is created, for the REST service, the CLI's ``--os-token``/``--user-from-env``
and the Python API alike):

1. The request names the server (``instance_uuid``).
2. Nova shows that server to the user (:meth:`fastsnap.nova.Nova.server`, as the user: Nova's policy decides).
3. The disk is that server's root disk on this cluster, where Nova's libvirt driver names it:
   ``<[libvirt] images_rbd_pool>/<instance uuid>_disk`` (``nova.virt.libvirt.imagebackend.Rbd``: the disk name is
   ``instance.uuid + '_' + 'disk'``). A server booted from a volume has no such disk (its root is Cinder's).

Operator snapshots (no user identity: fastsnap's own credentials, which already imply its Ceph keyring) are not
checked. Trusted callers acting for a user (Nova's hook) are checked unless ``[service] verify_trusted_callers``
is off. See doc/source/admin/security.rst.
"""

from __future__ import annotations

from typing import Any

from fastsnap.errors import Forbidden


def root_disk(pool: str, instance_uuid: str) -> str:
    """The RBD image spec of a server's root disk as Nova's libvirt driver creates it."""
    return f"{pool}/{instance_uuid}_disk"


def require_server(disk: str, instance_uuid: str | None) -> str:
    """The server a snapshot for a user names; Forbidden when it names none."""
    if not instance_uuid:
        raise Forbidden(f"a snapshot on behalf of a user must name the server whose disk {disk} is "
                        f"('instance_uuid'), so that fastsnap can check that the user's project owns it")
    return instance_uuid


def check_root_disk(disk: str, server: dict[str, Any], pool: str) -> None:
    """Forbidden unless ``disk`` is ``server``'s root disk in Nova's pool ``pool``."""
    sid = str(server.get("id", ""))
    if not server.get("image"):  # "" for a server booted from a volume (Nova shows no image)
        raise Forbidden(f"server {sid} boots from a volume: its root disk is not an RBD image in {pool}, so "
                        f"{disk} is not its disk")
    want = root_disk(pool, sid)
    if disk != want:
        raise Forbidden(f"disk {disk} is not the root disk of server {sid} (that is {want})")

"""Nova's backup rotation (``createBackup``'s ``rotation``): keep the newest N backups of an instance and backup
type, delete the older ones. Used by the API for every caller (CLI, service, Python)."""

from __future__ import annotations

from oslo_log import log as logging

from fastsnap.glance import Glance
from fastsnap.states import ImageType

LOG = logging.getLogger(__name__)


def rotate(glance: Glance, new_id: str, instance_uuid: str, backup_type: str, rotation: int) -> list[str]:
    """Delete all but the newest ``rotation`` active backups of ``instance_uuid`` and ``backup_type`` owned by
    the new backup's owner (the new one is never deleted). Returns the ids deleted."""
    if rotation < 1:
        return []
    new = glance.get(new_id)
    filters = {"instance_uuid": instance_uuid, "image_type": ImageType.BACKUP.value, "backup_type": backup_type,
               "status": "active"}
    images = glance.call("listing backups", lambda: list(glance.client.images.list(filters=filters)))
    mine = [dict(i) for i in images if i.get("owner") == new.get("owner")]
    mine.sort(key=lambda i: (str(i.get("created_at")), i["id"] == new_id), reverse=True)
    deleted = []
    for old in mine[rotation:]:
        if old["id"] == new_id:
            continue
        glance.delete(old["id"])
        deleted.append(old["id"])
    if deleted:
        LOG.info("backup rotation for instance %s (%s, keep %d): deleted %s", instance_uuid, backup_type,
                 rotation, ", ".join(deleted))
    return deleted

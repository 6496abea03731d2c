"""Nova's RBD driver whose disk removal parks, in the RBD trash, a disk that fastsnap snapshots still depend on.

Every removal of an instance's RBD disks that can meet such a disk reaches ``RBDDriver.cleanup_volumes`` through
``LibvirtDriver._cleanup_rbd``, which the driver (:mod:`nova.virt.fastsnap.driver`) points at
:class:`FastsnapRBDDriver`; the table per Nova release is in ``doc/source/admin/parked-disks.rst``.
"""

from __future__ import annotations

import time

from nova import utils
from nova.storage import rbd_utils
from nova.virt.fastsnap import client as fc
from nova.virt.fastsnap import conf
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
CONF = conf.CONF


def _trash_namespace():
    return getattr(rbd_utils.rbd, "RBD_SNAP_NAMESPACE_TYPE_TRASH", 2)


def _tpool_wrap(target):
    """librbd's blocking calls in a native thread, as Nova's own RBD code makes them: ``utils.tpool_wrap`` from
    Nova 33, eventlet's ``tpool.Proxy`` before (what Nova 31 and 32's rbd_utils use)."""
    if hasattr(utils, "tpool_wrap"):
        return utils.tpool_wrap(target)
    return rbd_utils.tpool.Proxy(target)


class FastsnapRBDDriver(rbd_utils.RBDDriver):
    """Nova's RBD driver whose disk removal parks a disk fastsnap snapshots depend on in the RBD trash.

    Nova's ``_destroy_volume`` retries ``rbd remove`` ``rbd_destroy_volume_retries`` times every
    ``rbd_destroy_volume_retry_interval`` seconds (12 x 5 s) and then gives up with a warning, leaving the disk
    under its name: a delete takes a minute and leaks the disk; a rebuild or unshelve onto the same host finds
    ``<uuid>_disk`` still there. A disk whose only snapshots are fastsnap's trashed ones (clone v2 parents of
    snapshot images not flattened yet) is instead moved to the RBD trash at once: the data stays as long as the
    clones need it, the name is free, and the local fastsnap service is told (best effort) so that it flattens
    those clones first and then removes the disk from the trash. Anything else is removed, and retried, as Nova
    does."""

    def _destroy_volume(self, client, volume, pool=None):
        if not CONF.fastsnap.park_disks:
            return super()._destroy_volume(client, volume, pool)
        retries = max(0, CONF.libvirt.rbd_destroy_volume_retries)
        for attempt in range(retries + 1):
            if self._remove_or_park(client.ioctx, volume, pool or self.pool):
                return
            if attempt < retries:
                time.sleep(CONF.libvirt.rbd_destroy_volume_retry_interval)
        LOG.warning("rbd remove %(volume)s in pool %(pool)s failed %(n)d times; left in place",
                    {"volume": volume, "pool": pool or self.pool, "n": retries + 1})

    def _remove_or_park(self, ioctx, volume, pool):
        """One attempt: True when the disk is gone (removed, parked in the trash, or not there)."""
        try:
            rbd_utils.RbdProxy().remove(ioctx, volume)
            return True
        except rbd_utils.rbd.ImageNotFound:
            return True
        except rbd_utils.rbd.ImageHasSnapshots:
            self.remove_snap(volume, rbd_utils.RESIZE_SNAPSHOT_NAME, ignore_errors=True, pool=pool)
            if self._drop_backup_sources(ioctx, volume, pool):
                return True
            if self._park(ioctx, volume, pool):
                return True
        except rbd_utils.rbd.ImageBusy:
            pass
        LOG.warning("rbd remove %(volume)s in pool %(pool)s failed", {"volume": volume, "pool": pool})
        return False

    def _drop_backup_sources(self, ioctx, volume, pool):
        """Remove the source snapshots fastsnap keeps for incremental backups (nothing depends on them), then try
        the removal again: True when the disk is gone."""
        try:
            img = _tpool_wrap(rbd_utils.rbd.Image(ioctx, volume, read_only=True))
        except rbd_utils.rbd.ImageNotFound:
            return True
        try:
            names = fc.backup_sources(list(img.list_snaps()), getattr(rbd_utils.rbd, "RBD_SNAP_NAMESPACE_TYPE_USER", 0))
        finally:
            img.close()
        if not names:
            return False
        for name in names:
            self.remove_snap(volume, name, ignore_errors=True, pool=pool)
        LOG.info("disk %(pool)s/%(volume)s: removed fastsnap's backup source snapshot(s) %(names)s with it",
                 {"pool": pool, "volume": volume, "names": ", ".join(names)})
        try:
            rbd_utils.RbdProxy().remove(ioctx, volume)
            return True
        except rbd_utils.rbd.ImageNotFound:
            return True
        except (rbd_utils.rbd.ImageHasSnapshots, rbd_utils.rbd.ImageBusy):
            return False

    def _park(self, ioctx, volume, pool):
        try:
            img = _tpool_wrap(rbd_utils.rbd.Image(ioctx, volume, read_only=True))
        except rbd_utils.rbd.ImageNotFound:
            return True
        try:
            image_id = img.id()
            dependents = fc.fastsnap_dependents(list(img.list_snaps()), _trash_namespace())
        finally:
            img.close()
        if not dependents:
            return False
        try:
            rbd_utils.RbdProxy().trash_move(ioctx, volume, 0)
        except rbd_utils.rbd.ImageNotFound:
            return True
        except rbd_utils.rbd.ImageBusy:
            return False  # still open somewhere (watchers): retried like a remove
        LOG.info("disk %(pool)s/%(volume)s (id %(id)s) moved to the RBD trash: fastsnap snapshot(s) %(deps)s "
                 "still depend on it until flattened; fastsnap removes it then",
                 {"pool": pool, "volume": volume, "id": image_id, "deps": ", ".join(dependents)})
        fc.FastsnapClient(CONF.fastsnap.unix_socket, timeout=5.0).parked(pool, volume, image_id)
        return True


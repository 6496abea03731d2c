"""Nova's libvirt driver with fastsnap taking the RBD snapshots (``compute_driver = fastsnap.FastsnapLibvirtDriver``).

The only behaviour that changes is the rbd image backend's ``direct_snapshot``, the step of
``LibvirtDriver.snapshot()`` that fills the queued image nova-api created. Everything around it (task states,
suspend/resume decisions, Nova's image update afterwards, its error handling, its own fallback) is Nova's.

* fastsnap takes the snapshot: the local fastsnap service fills the queued image on behalf of the user (the
  request context's token; fastsnap adds its own service token) and activates it; ``direct_snapshot`` returns
  ``None``, so Nova registers no location of its own and only updates the image's metadata.
* fastsnap declines or cannot be reached: one WARNING line says why, and Nova's own ``Rbd.direct_snapshot`` runs
  (which may itself fall back to Nova's cold snapshot, as without fastsnap).
* the user's request is wrong (an unknown store in the ``fastsnap_store`` property) or fastsnap fails after
  accepting: :class:`FastsnapSnapshotFailed` ends the action the way any snapshot error does in Nova (queued
  image deleted, task state reverted, instance fault), and the instance action gets a
  ``compute_fastsnap_snapshot`` event with the error.
"""

from __future__ import annotations

import contextlib
import sys
import time

from nova import exception, utils
from nova.compute import task_states
from nova.compute import utils as compute_utils
from nova.i18n import _
from nova.image import glance
from nova.storage import rbd_utils
from nova.virt.fastsnap import client as fc
from nova.virt.fastsnap import seams
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import imagebackend
from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

EVENT = "compute_fastsnap_snapshot"

fastsnap_opts = [
    cfg.BoolOpt("enabled", default=True,
                help="Ask the local fastsnap service to take RBD snapshots. False: Nova's own path, silently."),
    cfg.StrOpt("unix_socket", default="/run/fastsnap/api.sock",
               help="The fastsnap service's unix socket ([service] unix_socket in fastsnap.conf). The nova-compute "
                    "user must be allowed to connect (socket group and mode)."),
    cfg.FloatOpt("request_timeout", default=60.0, min=1.0,
                 help="Seconds to connect to fastsnap and for each answer."),
    cfg.FloatOpt("poll_interval", default=0.5, min=0.05, help="Seconds between polls of a snapshot job."),
    cfg.FloatOpt("job_timeout", default=3600.0, min=0.0,
                 help="Seconds a snapshot job may take before it is cancelled and the snapshot fails (0: no "
                      "limit)."),
    cfg.FloatOpt("unreachable_timeout", default=60.0, min=0.0,
                 help="Seconds fastsnap may stay unreachable while a job runs before the snapshot fails."),
    cfg.FloatOpt("busy_timeout", default=60.0, min=0.0,
                 help="Seconds to retry while fastsnap answers 429 (host busy) before leaving the snapshot to "
                      "Nova's own path."),
    cfg.BoolOpt("park_disks", default=True,
                help="When an instance disk cannot be removed only because fastsnap snapshots (not yet "
                     "flattened) still depend on it, move it to the RBD trash (the name is free at once; fastsnap "
                     "flattens its dependents first and then purges it) instead of retrying 'rbd remove' "
                     "[libvirt] rbd_destroy_volume_retries times and leaving it behind."),
]
CONF.register_opts(fastsnap_opts, group="fastsnap")


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [("fastsnap", fastsnap_opts)]


class FastsnapSnapshotFailed(exception.NovaException):
    msg_fmt = _("fastsnap could not snapshot the instance: %(reason)s")


IMAGE_API = glance.API()


class FastsnapRbd(imagebackend.Rbd):
    """Nova's rbd image backend whose ``direct_snapshot`` asks fastsnap first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance = kwargs.get("instance", args[0] if args else None)

    def direct_snapshot(self, context, snapshot_name, image_format, image_id, base_image_id):
        if CONF.fastsnap.enabled:
            try:
                self._fastsnap(context, image_format, image_id, base_image_id)
                return None  # image active, filled by fastsnap: no location for Nova to register
            except fc.Declined as exc:
                reason = exc.reason
            # (outside the except block: oslo.log would append the exception to the one line)
            LOG.warning("fastsnap did not take snapshot %(image)s, using Nova's own RBD snapshot: %(reason)s",
                        {"image": image_id, "reason": reason}, instance=self.instance)
        return super().direct_snapshot(context, snapshot_name, image_format, image_id, base_image_id)

    def _fastsnap(self, context, image_format, image_id, base_image_id):
        if image_format not in fc.FORMATS:
            raise fc.Declined(f"image format {image_format!r} requested ([libvirt] snapshot_image_format); "
                              f"fastsnap makes {' or '.join(fc.FORMATS)} images")
        if not context.auth_token:
            raise fc.Declined("the request context carries no user token")
        image = IMAGE_API.get(context, image_id)
        instance = self.instance
        meta = getattr(instance, "image_meta", None)
        container_format = None
        if meta is not None and meta.obj_attr_is_set("container_format"):
            container_format = meta.container_format
        try:
            order = fc.order_from_image(
                image, disk=f"{self.driver.pool}/{self.rbd_name}", user_token=context.auth_token,
                base_image=base_image_id, instance_uuid=getattr(instance, "uuid", None),
                container_format=container_format, quiesce_domain=getattr(instance, "name", None),
                image_format=image_format)
        except fc.Rejected as exc:
            with _event(context, instance):
                raise FastsnapSnapshotFailed(reason=exc.reason, code=400) from exc
        given = [p for p in fc.INSTRUCTION_PROPERTIES if p in (image.get("properties") or {})]
        if given:
            self._strip_instructions(context, image_id, given)
        client = fc.FastsnapClient(CONF.fastsnap.unix_socket, CONF.fastsnap.request_timeout)
        try:
            job = client.create(order, busy_timeout=CONF.fastsnap.busy_timeout)
        except fc.Rejected as exc:
            with _event(context, instance):
                raise FastsnapSnapshotFailed(reason=exc.reason, code=400) from exc
        LOG.info("fastsnap job %(job)s fills image %(image)s from %(disk)s",
                 {"job": job.get("id"), "image": image_id, "disk": order.disk}, instance=instance)
        with _event(context, instance):
            try:
                job = client.wait(job, poll_interval=CONF.fastsnap.poll_interval,
                                  job_timeout=CONF.fastsnap.job_timeout,
                                  unreachable_timeout=CONF.fastsnap.unreachable_timeout)
            except fc.JobFailed as exc:
                raise FastsnapSnapshotFailed(reason=exc.reason) from exc
        result = job.get("result") or {}
        LOG.info("fastsnap took snapshot %(image)s: %(path)s into store %(store)s in %(secs)ss (%(reason)s)",
                 {"image": image_id, "path": result.get("path"), "store": result.get("store"),
                  "secs": result.get("seconds"), "reason": result.get("reason")}, instance=instance)

    @staticmethod
    def _strip_instructions(context, image_id, props):
        """The store and format properties are instructions for this snapshot, not facts about the image: a
        server booted from the snapshot would inherit them and every snapshot of that server would silently go
        to that store."""
        try:
            glance.GlanceClientWrapper().call(context, 2, "update",
                                              kwargs={"image_id": image_id, "remove_props": list(props)})
        except Exception as exc:
            LOG.warning("could not remove the %(prop)s property from image %(image)s: %(exc)s",
                        {"prop": ", ".join(props), "image": image_id, "exc": exc})


@contextlib.contextmanager
def _event(context, instance):
    """Record a ``compute_fastsnap_snapshot`` instance action event around the block, best effort.

    Nova 34 runs ``snapshot_instance`` in a spawned task after its own ``compute_snapshot_instance`` event has
    ended, so without this a failed snapshot would show no error in the instance's action events."""
    reporter = None
    if instance is not None:
        try:
            reporter = compute_utils.EventReporter(context, EVENT, CONF.host, instance.uuid, graceful_exit=True)
            reporter.__enter__()
        except Exception as exc:
            LOG.debug("no instance action event for fastsnap: %s", exc)
            reporter = None
    try:
        yield
    except BaseException:
        exc_info = sys.exc_info()
        if reporter is not None:
            with contextlib.suppress(Exception):
                reporter.__exit__(*exc_info)
        raise
    else:
        if reporter is not None:
            with contextlib.suppress(Exception):
                reporter.__exit__(None, None, None)


class FastsnapBackend(imagebackend.Backend):
    """Nova's image backend table with the rbd entry replaced; every other type is Nova's class."""

    def __init__(self, use_cow):
        super().__init__(use_cow)
        self.BACKEND = {**self.BACKEND, "rbd": FastsnapRbd}


# -- instance disks that fastsnap snapshots still depend on ----------------------------------------------------

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


class FastsnapLibvirtDriver(libvirt_driver.LibvirtDriver):
    """``LibvirtDriver`` whose rbd disks are snapshotted by fastsnap (see the module's doc) and removed by
    :class:`FastsnapRBDDriver`.

    The hook switches itself on in :meth:`init_host`, once it has found every part of Nova it relies on
    (:data:`nova.virt.fastsnap.seams.SEAMS`). Until then, and for good when one is missing or changed (one ERROR
    line each), it is Nova's ``LibvirtDriver``: Nova's image backend, Nova's disk removal."""

    #: True once init_host found every seam and installed the hook's image backend.
    fastsnap_active = False

    def init_host(self, host):
        self.fastsnap_active = self._fastsnap_start()
        return super().init_host(host)

    def _fastsnap_start(self):
        """The seam check: True when the hook may run, its image backend in place. Never raises: whatever goes
        wrong leaves nova-compute with Nova's own behaviour."""
        try:
            problems = seams.check()
        except Exception as exc:  # a bug in the check must not stop nova-compute
            problems = [f"the seam check itself failed ({type(exc).__name__}: {exc})"]
        if not problems:
            try:
                self.image_backend = FastsnapBackend(CONF.use_cow_images)
                return True
            except Exception as exc:
                problems = [f"{seams.BACKEND}: the hook's image backend could not be made "
                            f"({type(exc).__name__}: {exc})"]
        # (outside the except blocks: oslo.log would append the exception to the line)
        version = _nova_version()
        for problem in problems:
            LOG.error("fastsnap's Nova hook is disabled, nova-compute runs Nova's own snapshots and disk removal "
                      "(Nova %(version)s): %(problem)s", {"version": version, "problem": problem})
        return False

    def _cleanup_rbd(self, instance):
        if not self.fastsnap_active:
            return super()._cleanup_rbd(instance)
        # Nova 34 builds its RBD driver inline here (there is no _get_rbd_driver seam): same disks as Nova
        # (on revert_resize only the ephemeral ones; the root disk is rolled back), through our driver.
        if instance.task_state == task_states.RESIZE_REVERTING:
            def wanted(disk):
                return disk.startswith(instance.uuid) and disk.endswith("disk.local")
        else:
            def wanted(disk):
                return disk.startswith(instance.uuid)
        FastsnapRBDDriver().cleanup_volumes(wanted)


def _nova_version():
    try:
        from nova import version

        return version.version_string()
    except Exception:
        return "(version unknown)"

"""Nova's rbd image backend with fastsnap taking the snapshots: ``FastsnapRbd`` in ``FastsnapBackend``'s table.

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

The driver (:mod:`nova.virt.fastsnap.driver`) puts ``FastsnapBackend`` in place once its seam check passed.
"""

from __future__ import annotations

import contextlib
import sys

from nova import exception
from nova.compute import utils as compute_utils
from nova.i18n import _
from nova.image import glance
from nova.virt.fastsnap import client as fc
from nova.virt.fastsnap import conf
from nova.virt.libvirt import imagebackend
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
CONF = conf.CONF

EVENT = "compute_fastsnap_snapshot"


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


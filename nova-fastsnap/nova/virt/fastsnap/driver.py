"""Nova's libvirt driver with fastsnap's parts (``compute_driver = fastsnap.FastsnapLibvirtDriver``).

The driver only switches the parts on, after the seam check (:mod:`nova.virt.fastsnap.seams`): the rbd image
backend whose snapshots fastsnap takes (:mod:`nova.virt.fastsnap.imagebackend`) and the RBD driver that parks
the disks fastsnap snapshots still depend on (:mod:`nova.virt.fastsnap.storage`). Its options are in
:mod:`nova.virt.fastsnap.conf`.
"""

from __future__ import annotations

from nova.compute import task_states
from nova.virt.fastsnap import conf, seams
from nova.virt.fastsnap import imagebackend as fs_imagebackend
from nova.virt.fastsnap import storage as fs_storage
from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
CONF = conf.CONF


class FastsnapLibvirtDriver(libvirt_driver.LibvirtDriver):
    """``LibvirtDriver`` whose rbd disks are snapshotted by fastsnap (:mod:`nova.virt.fastsnap.imagebackend`) and
    removed by :class:`~nova.virt.fastsnap.storage.FastsnapRBDDriver`.

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
                self.image_backend = fs_imagebackend.FastsnapBackend(CONF.use_cow_images)
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
        # Every removal of an instance's rbd disks a fastsnap snapshot can hold comes here (delete, shelve
        # offload, rebuild, evacuate clean-up, a failed spawn: doc/source/admin/parked-disks.rst has the table).
        # Nova 31 to 34 build the RBD driver inline (no seam hands it ours), so this is Nova's filter, the one line
        # copied: on revert_resize only the ephemeral disks (the root disk is rolled back), otherwise every disk of
        # the instance. The seam check makes sure Nova's still reads the task state and calls cleanup_volumes;
        # nova-fastsnap/tests compare the two filters on the running Nova.
        if instance.task_state == task_states.RESIZE_REVERTING:
            def wanted(disk):
                return disk.startswith(instance.uuid) and disk.endswith("disk.local")
        else:
            def wanted(disk):
                return disk.startswith(instance.uuid)
        fs_storage.FastsnapRBDDriver().cleanup_volumes(wanted)


def _nova_version():
    try:
        from nova import version

        return version.version_string()
    except Exception:
        return "(version unknown)"

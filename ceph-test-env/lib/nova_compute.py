"""nova-compute of the test stack, on a libvirtd that other stacks on the machine share.

Nova's libvirt driver counts every domain of the hypervisor as its own (``Host.list_instance_domains``). A
nova-compute that registers for the first time refuses to start when that list is not empty ("My hypervisor has
existing instances, but I appear to be a new service"), so a stack started while another stack's guest runs
never came up. Here the list holds only this stack's domains (named ``<FASTSNAP_NOVA_INSTANCE_PREFIX>-*`` by
``instance_name_template``), which is what a compute host that owns its hypervisor sees. Test stack only.
"""

import os
import sys

from nova.cmd import compute  # before nova.virt: it decides on eventlet before anything imports it
from nova.virt.libvirt import host

PREFIX = os.environ["FASTSNAP_NOVA_INSTANCE_PREFIX"] + "-"
_list_instance_domains = host.Host.list_instance_domains


def _own_domains(self, only_running=True):
    return [d for d in _list_instance_domains(self, only_running) if d.name().startswith(PREFIX)]


host.Host.list_instance_domains = _own_domains

if __name__ == "__main__":
    sys.argv[0] = "nova-compute"
    sys.exit(compute.main())

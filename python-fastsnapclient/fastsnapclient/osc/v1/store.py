"""``openstack fastsnap store list``: the Glance stores as the service's host sees them (``GET /v1/stores``):
which it can clone into (an rbd store on the disk's own cluster) and which it must copy or stream to."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from osc_lib import utils
from osc_lib.command import command

from fastsnapclient.osc.plugin import client

COLUMNS = ("ID", "Type", "Default", "Pool", "FSID", "Clone", "Description")


class ListStore(command.Lister):
    """List the Glance stores fastsnap can snapshot into"""

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        stores = client(self.app).list_stores()
        return COLUMNS, (utils.get_dict_properties(s, COLUMNS) for s in stores)

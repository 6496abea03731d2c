"""``openstack fastsnap status``: the whole cluster as the journal in RADOS has it (``GET /v1/status``; service
and admin callers): hosts and their leases, operations in flight, unsettled operations waiting for a recover, the
flatten backlog and the parked disks."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from osc_lib.command import command

from fastsnapclient.osc.plugin import client
from fastsnapclient.osc.v1.columns import DictColumn, ListColumn, ListDictColumn, TimeColumn

FIELDS = ("at", "hosts", "in_flight", "in_flight_operations", "lapsed_hosts", "unsettled", "flatten_backlog",
          "parked_count", "parked_disks")
FORMATTERS = {"at": TimeColumn, "hosts": ListDictColumn, "in_flight": DictColumn,
              "in_flight_operations": ListDictColumn, "lapsed_hosts": ListColumn, "unsettled": ListDictColumn,
              "parked_disks": ListDictColumn}


def status_columns(status: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    names = (*[f for f in FIELDS if f in status], *sorted(set(status) - set(FIELDS)))
    return names, tuple(FORMATTERS[n](status[n]) if n in FORMATTERS else status[n] for n in names)


class ShowStatus(command.ShowOne):
    """Show the cluster-wide status of fastsnap's operations"""

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        return status_columns(client(self.app).status())

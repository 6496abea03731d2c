"""``openstack fastsnap flatten status``: clone-path snapshots (every host's) whose flatten is pending, as the
journal in RADOS has them (``GET /v1/flattens``; service and admin callers). Read only: each service's flatten
poller checks them with Ceph and acts; ``fastsnap flatten-status --run`` on a host does it at once."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from osc_lib import utils
from osc_lib.command import command

from fastsnapclient.osc.plugin import client

COLUMNS = ("Image ID", "Disk", "Pool", "Policy", "State", "Task", "Why")


class FlattenStatus(command.Lister):
    """List clone-path snapshots whose background flatten is pending"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--long", action="store_true", default=False, help="List additional fields in output")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        rows = client(self.app).list_flattens()
        columns = (*COLUMNS, "Depth", "Error") if parsed_args.long else COLUMNS
        return columns, (utils.get_dict_properties(r, columns) for r in rows)

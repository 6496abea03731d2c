"""``openstack fastsnap parked list``: instance disks parked in the RBD trash until the fastsnap clones that read
through them are flattened (``GET /v1/parked``; service and admin callers)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from osc_lib import utils
from osc_lib.command import command

from fastsnapclient.osc.plugin import client
from fastsnapclient.osc.v1.columns import ListColumn

COLUMNS = ("Pool", "ID", "Name", "Parked At", "Snapshots", "State", "Dependents")
FORMATTERS = {"Dependents": ListColumn}


class ListParked(command.Lister):
    """List instance disks parked in the RBD trash"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--long", action="store_true", default=False, help="List additional fields in output")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        parked = client(self.app).list_parked()
        columns = (*COLUMNS, "Error") if parsed_args.long else COLUMNS
        return columns, (utils.get_dict_properties(p, columns, formatters=FORMATTERS) for p in parked)

"""``openstack fastsnap snapshot create|show|list|cancel``: the service's snapshot jobs (``/v1/snapshots``).

A job is what the service shows (``GET /v1/snapshots/<id>``); ``create`` asks for one with the fields of the
service's request (fastsnap's ``request.FIELDS``) that a person at a terminal gives. ``user_token`` is left out:
it is for trusted services acting for a user (Nova's hook), and a token on a command line is visible to every
process on the host."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from typing import Any

from osc_lib import utils
from osc_lib.cli import parseractions
from osc_lib.command import command

from fastsnapclient.osc.plugin import client
from fastsnapclient.osc.v1.columns import DictColumn, TimeColumn

# The service's job, field by field, as `show` prints it; the dict and time fields are formatted.
JOB_FIELDS = ("id", "state", "image_id", "path", "store", "reason", "bytes_done", "bytes_total", "result", "error",
              "request", "key", "project_id", "request_id", "created_at", "updated_at")
JOB_FORMATTERS = {"result": DictColumn, "error": DictColumn, "request": DictColumn, "created_at": TimeColumn,
                  "updated_at": TimeColumn}

LIST_COLUMNS = ("ID", "State", "Disk", "Name", "Image ID", "Path", "Store")
LONG_COLUMNS = (*LIST_COLUMNS, "Reason", "Bytes Done", "Bytes Total", "Project ID", "Created At", "Updated At")
LIST_FORMATTERS = {"Created At": TimeColumn, "Updated At": TimeColumn}


def job_columns(job: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """A job as ShowOne's (names, values): every field the service gave, the known ones first, in their order (a
    newer service's extra fields are shown too, after them)."""
    names = (*[f for f in JOB_FIELDS if f in job], *sorted(set(job) - set(JOB_FIELDS)))
    values = tuple(JOB_FORMATTERS[n](job[n]) if n in JOB_FORMATTERS and job[n] is not None else job[n]
                   for n in names)
    return names, values


def list_row(job: dict[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    """A job as one row of ``snapshot list``: the disk and the image name are the request's."""
    request = job.get("request") or {}
    item = {**job, "disk": request.get("disk"), "name": request.get("name")}
    return utils.get_dict_properties(item, columns, formatters=LIST_FORMATTERS)


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/snapshots body of ``snapshot create``'s arguments: only what was given (the service applies
    its own defaults and checks everything)."""
    given = {"disk": args.disk, "name": args.name, "store": args.store, "base_image": args.base_image,
             "image_id": args.image_id, "instance_uuid": args.instance, "properties": args.properties,
             "type": args.type, "backup_type": args.backup_type, "rotation": args.rotation,
             "container_format": args.container_format, "quiesce_domain": args.quiesce_domain,
             "require_quiesce": args.require_quiesce, "format": args.disk_format,
             "keep_image_on_error": True if args.keep_image_on_error else None}
    return {k: v for k, v in given.items() if v is not None}


class CreateSnapshot(command.ShowOne):
    """Snapshot an instance disk into a Glance image (the service chooses the path: clone, delta, copy, stream)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<name>", help="Name of the new Glance image")
        parser.add_argument("--disk", metavar="<disk>", required=True,
                            help="The instance disk in RBD, <pool>/<image> (e.g. vms/<instance uuid>_disk)")
        parser.add_argument("--store", metavar="<store>",
                            help="Glance store to snapshot into (default: the service's choice, see 'openstack "
                                 "fastsnap store list')")
        parser.add_argument("--base-image", metavar="<image>", help="The instance's image (its image_ref)")
        parser.add_argument("--image-id", metavar="<image-id>",
                            help="A queued Glance image to fill; also makes the request idempotent")
        parser.add_argument("--instance", metavar="<server-id>",
                            help="The server whose root disk --disk is (recorded as instance_uuid; required for a "
                                 "snapshot on behalf of a user)")
        parser.add_argument("--property", metavar="<key=value>", dest="properties",
                            action=parseractions.KeyValueAction,
                            help="Image property to set (repeat option to set multiple properties)")
        parser.add_argument("--type", choices=("snapshot", "backup"), help="Image type (default: snapshot)")
        parser.add_argument("--backup-type", metavar="<backup-type>", help="With --type backup, e.g. daily")
        parser.add_argument("--rotation", metavar="<count>", type=int,
                            help="With --type backup: keep this many backups of the server and backup type")
        parser.add_argument("--container-format", metavar="<format>", help="Container format (default: bare)")
        # the request's "format" (-f/--format is the output formatter's, as in every openstack command)
        parser.add_argument("--disk-format", choices=("raw", "qcow2"),
                            help="Disk format of a streamed image: qcow2 sends only the allocated clusters "
                                 "(default: the service's [snapshot] stream_format; clone, delta and copy make raw)")
        parser.add_argument("--quiesce-domain", metavar="<domain>",
                            help="libvirt domain of the running instance: freeze its filesystems around the snapshot")
        quiesce = parser.add_mutually_exclusive_group()
        quiesce.add_argument("--require-quiesce", dest="require_quiesce", action="store_true", default=None,
                             help="Fail when the guest cannot be frozen (default: the image's os_require_quiesce)")
        quiesce.add_argument("--no-require-quiesce", dest="require_quiesce", action="store_false",
                             help="Snapshot unfrozen when the guest cannot be frozen")
        parser.add_argument("--keep-image-on-error", action="store_true",
                            help="With --image-id: leave that image queued when the snapshot fails")
        parser.add_argument("--idempotency-key", metavar="<key>",
                            help="Send the request again with the same key to get the same job back")
        parser.add_argument("--wait", action="store_true", help="Wait for the snapshot to finish")
        parser.add_argument("--timeout", metavar="<seconds>", type=float, default=3600,
                            help="With --wait: give up waiting after this long (default: 3600; the job goes on)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        fastsnap = client(self.app)
        job = fastsnap.create_snapshot(request_body(parsed_args), idempotency_key=parsed_args.idempotency_key)
        if parsed_args.wait:
            job = fastsnap.wait_snapshot(job["id"], timeout=parsed_args.timeout)
        return job_columns(job)


class ShowSnapshot(command.ShowOne):
    """Show a snapshot job"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("job", metavar="<job-id>", help="Snapshot job to show (ID)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        return job_columns(client(self.app).get_snapshot(parsed_args.job))


class ListSnapshot(command.Lister):
    """List snapshot jobs (the caller's project's; every project's for service and admin callers)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--state", metavar="<state>",
                            help="Only jobs in this state (planning, running, registering, done, failed, cancelled)")
        parser.add_argument("--disk", metavar="<disk>", help="Only snapshots of this disk (<pool>/<image>)")
        parser.add_argument("--image", metavar="<image-id>", help="Only the job of this Glance image")
        parser.add_argument("--long", action="store_true", default=False, help="List additional fields in output")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        jobs = client(self.app).list_snapshots(state=parsed_args.state, disk=parsed_args.disk,
                                                               image_id=parsed_args.image)
        columns = LONG_COLUMNS if parsed_args.long else LIST_COLUMNS
        return columns, (list_row(j, columns) for j in jobs)


class CancelSnapshot(command.ShowOne):
    """Cancel a running snapshot job (it stops at its next step and undoes what it made)"""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("job", metavar="<job-id>", help="Snapshot job to cancel (ID)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[Sequence[str], Iterable[Any]]:
        return job_columns(client(self.app).cancel_snapshot(parsed_args.job))

"""python-fastsnapclient's pure parts (no service): the plugin's shape as OpenStackClient loads it, the request
body ``snapshot create`` sends, how jobs are shown, and how the service's errors are read. The commands against
the real service: tests/integration/test_osc.py."""

from __future__ import annotations

import argparse
import json
from importlib import metadata
from typing import Any, cast

import pytest
from cliff import columns as cliff_columns
from fastsnapclient import SERVICE_TYPE, exceptions
from fastsnapclient.osc import plugin
from fastsnapclient.osc.v1 import snapshot, status
from fastsnapclient.osc.v1.columns import TimeColumn
from fastsnapclient.v1.client import Client
from osc_lib.command import command

from fastsnap.request import FIELDS
from fastsnap.service.openapi import DOCUMENT

COMMANDS = {"fastsnap_snapshot_create", "fastsnap_snapshot_show", "fastsnap_snapshot_list",
            "fastsnap_snapshot_cancel", "fastsnap_store_list", "fastsnap_parked_list", "fastsnap_flatten_status",
            "fastsnap_status"}


def test_plugin_is_found_and_names_its_command_group() -> None:
    ext = {ep.name: ep.value for ep in metadata.entry_points(group="openstack.cli.extension")}
    assert ext["fastsnap"] == "fastsnapclient.osc.plugin"
    # osc loads the group openstack.<API_NAME>.v<major of the version>
    group = f"openstack.{plugin.API_NAME}.v{plugin.DEFAULT_API_VERSION}"
    eps = {ep.name: ep for ep in metadata.entry_points(group=group)}
    assert set(eps) == COMMANDS
    for ep in eps.values():
        cls = ep.load()
        assert issubclass(cls, command.Command) and cls.__doc__, ep.name
    assert plugin.DEFAULT_API_VERSION in plugin.API_VERSIONS
    assert f"os_{plugin.API_NAME}_api_version" == plugin.API_VERSION_OPTION
    assert SERVICE_TYPE == "fastsnap"


def test_every_route_the_client_calls_is_in_the_services_openapi_document() -> None:
    called = {("post", "/v1/snapshots"), ("get", "/v1/snapshots"), ("get", "/v1/snapshots/{job_id}"),
              ("delete", "/v1/snapshots/{job_id}"), ("get", "/v1/stores"), ("get", "/v1/parked"),
              ("get", "/v1/flattens"), ("get", "/v1/status")}
    for method, path in called:
        assert method in DOCUMENT["paths"][path], (method, path)


def _parse(cmd: type[command.Command], *argv: str) -> argparse.Namespace:
    return cmd(cast(Any, None), None).get_parser("openstack").parse_args(list(argv))  # no app: parsing only


def test_create_sends_only_what_was_given() -> None:
    args = _parse(snapshot.CreateSnapshot, "--disk", "vms/d", "img")
    assert snapshot.request_body(args) == {"disk": "vms/d", "name": "img"}


def test_create_can_say_every_field_of_a_request_but_the_user_token() -> None:
    args = _parse(snapshot.CreateSnapshot, "--disk", "vms/d", "--store", "cheap", "--base-image", "b",
                  "--image-id", "i", "--instance", "s", "--property", "a=1", "--property", "b=x=y",
                  "--type", "backup", "--backup-type", "daily", "--rotation", "2", "--container-format", "ovf",
                  "--quiesce-domain", "dom", "--no-require-quiesce", "--keep-image-on-error",
                  "--disk-format", "qcow2", "img")
    body = snapshot.request_body(args)
    assert set(body) == {f.name for f in FIELDS if not f.rest_only}
    assert body["properties"] == {"a": "1", "b": "x=y"} and body["rotation"] == 2
    assert body["require_quiesce"] is False and body["keep_image_on_error"] is True and body["type"] == "backup"
    assert snapshot.request_body(_parse(snapshot.CreateSnapshot, "--disk", "p/d", "--require-quiesce",
                                        "n"))["require_quiesce"] is True
    with pytest.raises(SystemExit):  # argparse refuses a disk-less request before anything is sent
        _parse(snapshot.CreateSnapshot, "img")


JOB: dict[str, Any] = {
    "id": "j1", "state": "done", "image_id": "i1", "path": "clone", "store": "fast", "reason": "r",
    "bytes_done": 0, "bytes_total": 0, "result": {"seconds": 1.5}, "error": None,
    "request": {"disk": "vms/d", "name": "n"}, "key": None, "project_id": "p", "request_id": "req-1",
    "created_at": 0.0, "updated_at": 1.0, "new_field": 7,
}


def test_a_job_shows_every_field_the_service_gave() -> None:
    names, values = snapshot.job_columns(JOB)
    assert names[:3] == ("id", "state", "image_id") and names[-1] == "new_field" and set(names) == set(JOB)
    shown = dict(zip(names, values, strict=True))
    # machine formats (-f json/yaml) get the service's values; tables get readable ones
    assert isinstance(shown["request"], cliff_columns.FormattableColumn)
    assert shown["request"].machine_readable() == {"disk": "vms/d", "name": "n"}
    assert shown["error"] is None
    assert shown["created_at"].human_readable() == "1970-01-01T00:00:00+00:00"
    assert shown["created_at"].machine_readable() == 0.0


def test_list_rows_take_disk_and_name_from_the_request() -> None:
    row = snapshot.list_row(JOB, snapshot.LIST_COLUMNS)
    assert row == ("j1", "done", "vms/d", "n", "i1", "clone", "fast")
    assert snapshot.list_row({"id": "j2"}, ("ID", "Disk", "Store")) == ("j2", None, "")
    long_row = dict(zip(snapshot.LONG_COLUMNS, snapshot.list_row(JOB, snapshot.LONG_COLUMNS), strict=True))
    assert long_row["Updated At"].machine_readable() == 1.0


def test_status_fields_keep_their_structure() -> None:
    names, values = status.status_columns({"at": 5.0, "hosts": [{"host": "a", "alive": True}], "in_flight": {"a": 0},
                                           "lapsed_hosts": [], "flatten_backlog": 2, "parked_count": 0})
    shown = dict(zip(names, values, strict=True))
    assert shown["hosts"].machine_readable() == [{"host": "a", "alive": True}]
    assert shown["in_flight"].machine_readable() == {"a": 0} and shown["flatten_backlog"] == 2
    assert TimeColumn("").human_readable() == ""


class _Resp:
    def __init__(self, code: int, body: Any, text: str | None = None, rid: str | None = "req-9") -> None:
        self.status_code, self._body = code, body
        self.text = text if text is not None else json.dumps(body)
        self.headers = {"x-openstack-request-id": rid} if rid else {}
        self.reason = "Bad Gateway"

    def json(self) -> Any:
        if self._body is None:
            raise ValueError("not JSON")
        return self._body


def test_the_services_error_message_is_what_is_printed() -> None:
    err = exceptions.from_response(_Resp(409, {"error": {"code": 409, "title": "Conflict", "message": "job j is done",
                                                         "kind": "conflict"}}))
    assert str(err) == "job j is done (HTTP 409) (Request-ID: req-9)"
    assert (err.code, err.kind, err.title) == (409, "conflict", "Conflict")
    proxy = exceptions.from_response(_Resp(502, None, text="<html>bad gateway</html>", rid=None))
    assert str(proxy) == "<html>bad gateway</html> (HTTP 502)"
    assert str(exceptions.from_response(_Resp(502, None, text=""))).startswith("Bad Gateway (HTTP 502)")


def test_wait_ends_with_the_job_or_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    client = Client.__new__(Client)
    states = iter([{"id": "j", "state": "running"}, {"id": "j", "state": "failed",
                                                      "error": {"message": "Glance said no"}}])
    monkeypatch.setattr(client, "get_snapshot", lambda job_id: next(states))
    with pytest.raises(exceptions.JobFailed, match="snapshot job j failed: Glance said no"):
        client.wait_snapshot("j", sleep=lambda s: None)
    monkeypatch.setattr(client, "get_snapshot", lambda job_id: {"id": "j", "state": "done"})
    assert client.wait_snapshot("j")["state"] == "done"
    monkeypatch.setattr(client, "get_snapshot", lambda job_id: {"id": "j", "state": "running"})
    with pytest.raises(TimeoutError, match="still running"):
        client.wait_snapshot("j", timeout=0, sleep=lambda s: None)

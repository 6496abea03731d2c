"""fastsnap's ``/v1`` REST API over a keystoneauth1 :class:`~keystoneauth1.adapter.Adapter`: the endpoint comes
from the catalogue (service type :data:`fastsnapclient.SERVICE_TYPE`, the interface and region given), the token
from the caller's session. Answers are the service's JSON as it is (see its ``/openapi.json``); an answer of 400
or more raises :class:`fastsnapclient.exceptions.HttpError` with the service's message."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from keystoneauth1 import adapter, session

from fastsnapclient import SERVICE_TYPE
from fastsnapclient.exceptions import JobFailed, from_response

FINISHED = ("done", "failed", "cancelled")   # the job states nothing follows


class Client:
    def __init__(self, session: session.Session, interface: str | None = None, region_name: str | None = None,
                 endpoint_override: str | None = None, service_type: str = SERVICE_TYPE,
                 user_agent: str = "python-fastsnapclient") -> None:
        self.adapter = adapter.Adapter(session, service_type=service_type, interface=interface,
                                       region_name=region_name, endpoint_override=endpoint_override,
                                       user_agent=user_agent)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.adapter.request(path, method, raise_exc=False, **kw)
        if resp.status_code >= 400:
            raise from_response(resp)
        return resp.json()

    # -- snapshot jobs ------------------------------------------------------------------------------------------

    def create_snapshot(self, body: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /v1/snapshots: the job (202 accepted, or 200: the job this key or image id already stands for)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        job: dict[str, Any] = self._call("POST", "/v1/snapshots", json=body, headers=headers)
        return job

    def get_snapshot(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._call("GET", f"/v1/snapshots/{job_id}")
        return job

    def list_snapshots(self, state: str | None = None, disk: str | None = None,
                       image_id: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("state", state), ("disk", disk), ("image_id", image_id)) if v}
        jobs: list[dict[str, Any]] = self._call("GET", "/v1/snapshots", params=params)["snapshots"]
        return jobs

    def cancel_snapshot(self, job_id: str) -> dict[str, Any]:
        """DELETE /v1/snapshots/<id>: the job being cancelled (409: it is not running here)."""
        job: dict[str, Any] = self._call("DELETE", f"/v1/snapshots/{job_id}")
        return job

    def wait_snapshot(self, job_id: str, timeout: float = 3600, interval: float = 1.0,
                      sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
        """The job once finished; :class:`JobFailed` when it failed or was cancelled, TimeoutError after
        ``timeout`` seconds (the job goes on)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_snapshot(job_id)
            if job.get("state") in FINISHED:
                if job["state"] != "done":
                    raise JobFailed(job)
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"snapshot job {job_id} is still {job.get('state')} after {timeout:g} s")
            sleep(interval)

    # -- the host's and the cluster's views ---------------------------------------------------------------------

    def list_stores(self) -> list[dict[str, Any]]:
        stores: list[dict[str, Any]] = self._call("GET", "/v1/stores")["stores"]
        return stores

    def list_parked(self) -> list[dict[str, Any]]:
        parked: list[dict[str, Any]] = self._call("GET", "/v1/parked")["parked_disks"]
        return parked

    def list_flattens(self) -> list[dict[str, Any]]:
        flattens: list[dict[str, Any]] = self._call("GET", "/v1/flattens")["flattens"]
        return flattens

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._call("GET", "/v1/status")
        return status

"""A small client of the local fastsnap service, for Nova's compute host. Standard library only.

fastsnap's REST service listens on a unix socket on the compute host (``[service] unix_socket``). This module
speaks HTTP/1.1 over that socket with :mod:`http.client` and classifies every answer into one of three outcomes
the Nova hook acts on:

* a job (``dict``): fastsnap took the snapshot on; poll it until ``done``;
* :class:`Declined`: fastsnap will not take this snapshot (not its kind of disk, not reachable, busy, ...):
  Nova's own snapshot path should run, the reason is logged;
* :class:`Rejected` / :class:`JobFailed`: the snapshot action fails (e.g. the user asked for a store that
  does not exist, or fastsnap failed midway and rolled back).

Nothing here imports Nova or fastsnap: Nova's environment has its own dependencies.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Image property that selects the Glance store: ``openstack server image create --property fastsnap_store=X``.
STORE_PROPERTY = "fastsnap_store"
#: Image property that states the disk format: ``--property fastsnap_format=qcow2``. Nova labels the image with its
#: own ``[libvirt] snapshot_image_format`` (raw when unset, for rbd disks), so the property may only agree with it.
FORMAT_PROPERTY = "fastsnap_format"
#: The image properties that are instructions for one snapshot (removed from the image: never inherited).
INSTRUCTION_PROPERTIES = (STORE_PROPERTY, FORMAT_PROPERTY)
#: The disk formats fastsnap makes (``format`` of the request): raw always, qcow2 on the stream path.
FORMATS = ("raw", "qcow2")

TERMINAL_STATES = ("done", "failed", "cancelled")
ACTIVE_STATES = ("planning", "running", "registering")


class FastsnapHookError(Exception):
    """Base class of the outcomes other than "a job"."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Declined(FastsnapHookError):
    """fastsnap will not take this snapshot; nothing was created, Nova's own path may run."""


class Rejected(FastsnapHookError):
    """The request is the user's error (e.g. an unknown store): the snapshot action must fail."""


class JobFailed(FastsnapHookError):
    """fastsnap accepted the snapshot and then failed, was cancelled or timed out (it rolls back its work)."""


class Unreachable(OSError):
    """No connection to the service could be made: nothing was sent."""


@dataclass(frozen=True)
class SnapshotOrder:
    """What the compute host knows about one snapshot Nova asked for."""

    disk: str                        # POOL/IMAGE of the instance's root disk
    image_id: str                    # the queued image nova-api created
    name: str                        # its name
    user_token: str                  # the user's token from Nova's request context
    base_image: str | None = None    # instance.image_ref
    instance_uuid: str | None = None
    image_type: str = "snapshot"     # snapshot | backup (from the queued image's image_type)
    backup_type: str | None = None   # with backups: daily, weekly, ...
    store: str | None = None         # the fastsnap_store property, when the user gave one
    container_format: str = "bare"   # what Nova writes into the image afterwards
    quiesce_domain: str | None = None  # libvirt domain name (instance.name)
    format: str = "raw"              # Nova's image_format ([libvirt] snapshot_image_format): the image's label


def order_from_image(image: dict[str, Any], *, disk: str, user_token: str, base_image: str | None,
                     instance_uuid: str | None, container_format: str | None,
                     quiesce_domain: str | None, image_format: str = "raw") -> SnapshotOrder:
    """The order for the queued image ``image`` (as Nova's image API returns it: ``properties`` nested), in
    ``image_format``, the format Nova labels the image with after the snapshot (``[libvirt]
    snapshot_image_format``; Glance refuses to relabel an active image, so fastsnap must make that format).

    Raises :class:`Rejected` when the store property is present but empty, or the format property names a format
    fastsnap does not make or another one than Nova's."""
    props = image.get("properties") or {}
    store = props.get(STORE_PROPERTY)
    if store is not None:
        store = str(store).strip()
        if not store:
            raise Rejected(f"the image property {STORE_PROPERTY} is empty; name a Glance store")
    asked = props.get(FORMAT_PROPERTY)
    if asked is not None:
        asked = str(asked).strip()
        if asked not in FORMATS:
            raise Rejected(f"the image property {FORMAT_PROPERTY}={asked[:40]!r} must be {' or '.join(FORMATS)}")
        if asked != image_format:
            raise Rejected(f"the image property {FORMAT_PROPERTY}={asked} disagrees with this compute host's "
                           f"[libvirt] snapshot_image_format, which makes the snapshot {image_format} (Nova labels "
                           f"the image with it); set snapshot_image_format = {asked} there")
    image_type = "backup" if props.get("image_type") == "backup" else "snapshot"
    backup_type = props.get("backup_type") if image_type == "backup" else None
    return SnapshotOrder(disk=disk, image_id=str(image["id"]), name=str(image.get("name") or image["id"]),
                         user_token=user_token, base_image=base_image or None, instance_uuid=instance_uuid,
                         image_type=image_type, backup_type=str(backup_type) if backup_type else None,
                         store=store, container_format=container_format or "bare", quiesce_domain=quiesce_domain,
                         format=image_format)


def build_request(order: SnapshotOrder) -> dict[str, Any]:
    """The body of ``POST /v1/snapshots``.

    No ``rotation``: Nova's compute manager rotates backups itself after the snapshot (fastsnap would rotate
    a second time). No ``keep_image_on_error``: when a job fails fastsnap deletes the queued image it was
    filling, as Nova would (Nova's own delete then finds nothing)."""
    body: dict[str, Any] = {
        "disk": order.disk,
        "name": order.name,
        "image_id": order.image_id,
        "user_token": order.user_token,
        "type": order.image_type,
        "container_format": order.container_format,
        "format": order.format,
    }
    optional = {"base_image": order.base_image, "instance_uuid": order.instance_uuid, "store": order.store,
                "quiesce_domain": order.quiesce_domain}
    if order.image_type == "backup":
        optional["backup_type"] = order.backup_type
    body.update({k: v for k, v in optional.items() if v})
    return body


def _error_of(body: Any) -> tuple[str | None, str]:
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return None, str(body)[:300] if body else "no details"
    kind = err.get("kind")
    return (str(kind) if kind else None), str(err.get("message") or err.get("title") or "no details")


def classify_create(status: int, body: Any, order: SnapshotOrder) -> dict[str, Any]:
    """Classify the answer to ``POST /v1/snapshots``: the job, or raise :class:`Declined` / :class:`Rejected`.

    Only an unknown store the user named is the user's error. Any other refusal (a disk fastsnap does not know,
    a base image it cannot read, a planning failure, a token Keystone refused, an older fastsnap that does not
    know a field, ...) means "not for me" and leaves the snapshot to Nova: nothing was created."""
    if status in (200, 202) and isinstance(body, dict) and body.get("id"):
        return body
    kind, message = _error_of(body)
    if status == 400 and kind == "unknown_store" and order.store:
        raise Rejected(f"store {order.store!r} (image property {STORE_PROPERTY}): {message}")
    if status == 429:
        raise Declined(f"fastsnap is busy (429): {message}")
    what = f"{kind}: {message}" if kind else message
    raise Declined(f"fastsnap refused the snapshot (HTTP {status}): {what}")


def classify_job(job: dict[str, Any]) -> bool:
    """True when the job is done, False while it runs; raises :class:`JobFailed` when it failed."""
    state = job.get("state")
    if state == "done":
        return True
    if state in ACTIVE_STATES:
        return False
    if state in ("failed", "cancelled"):
        _, message = _error_of({"error": job.get("error")}) if job.get("error") else (None, "no details")
        raise JobFailed(f"fastsnap job {job.get('id')} {state}: {message}")
    raise JobFailed(f"fastsnap job {job.get('id')} is in an unknown state {state!r}")


#: Prefix of the disk snapshots fastsnap takes (``<disk>@fastsnap-<image id>``); the clone path removes them at
#: once, so with clone v2 they wait in the RBD snapshot trash until the Glance image's clone is flattened.
SNAPSHOT_PREFIX = "fastsnap-"
# The source snapshot a disk keeps for its next incremental backup (fastsnap.chain): no clones depend on it (its
# backups are on another cluster), so it goes with the disk.
BACKUP_SOURCE_PREFIX = "fastsnap-backup-"


def backup_sources(snaps: list[dict[str, Any]], user_namespace: int = 0) -> list[str]:
    """The names of fastsnap's kept backup source snapshots among librbd's ``Image.list_snaps()``."""
    return [str(s.get("name")) for s in snaps if s.get("namespace", user_namespace) == user_namespace
            and str(s.get("name") or "").startswith(BACKUP_SOURCE_PREFIX)]


def fastsnap_dependents(snaps: list[dict[str, Any]], trash_namespace: int = 2) -> list[str] | None:
    """The fastsnap image ids that keep a disk alive when *only* fastsnap's trashed snapshots do; else None.

    ``snaps`` is librbd's ``Image.list_snaps()`` (every namespace; trashed ones carry ``trash.original_name``).
    Any other snapshot (a user-namespace one, e.g. a fastsnap snapshot still being taken or Nova's
    ``nova-resize``, or someone else's trashed snapshot) means the disk is not fastsnap's to park."""
    ids = []
    for snap in snaps:
        if snap.get("namespace") != trash_namespace:
            return None
        original = str((snap.get("trash") or {}).get("original_name") or "")
        if not original.startswith(SNAPSHOT_PREFIX) or len(original) == len(SNAPSHOT_PREFIX):
            return None
        ids.append(original[len(SNAPSHOT_PREFIX):])
    return ids or None


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a unix socket. ``timeout`` bounds the connect and each read."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except FileNotFoundError:
            sock.close()
            raise Unreachable(f"socket {self.socket_path} does not exist (is the fastsnap service running?)") \
                from None
        except ConnectionRefusedError:
            sock.close()
            raise Unreachable(f"connection refused on {self.socket_path} (fastsnap service stopped?)") from None
        except PermissionError:
            sock.close()
            raise Unreachable(f"no permission to connect to {self.socket_path} (socket mode/group)") from None
        except TimeoutError:
            sock.close()
            raise Unreachable(f"connecting to {self.socket_path} timed out after {self.timeout}s") from None
        except OSError as exc:
            sock.close()
            raise Unreachable(f"cannot connect to {self.socket_path}: {exc}") from None
        self.sock = sock


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any


class FastsnapClient:
    """The fastsnap REST service over its unix socket. One connection per call (calls are few)."""

    def __init__(self, socket_path: str, timeout: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self.sleep = sleep
        self.clock = clock

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> Answer:
        """One request. Raises :class:`Unreachable` (nothing sent) or OSError / http.client.HTTPException
        (sent, no complete answer)."""
        conn = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = {"Accept": "application/json", **(headers or {})}
            if data is not None:
                hdrs["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode("utf-8", "replace")[:300]
            return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed)
        finally:
            conn.close()

    # -- the three calls the hook makes ----------------------------------------------------------------

    def create(self, order: SnapshotOrder, busy_timeout: float = 60.0) -> dict[str, Any]:
        """``POST /v1/snapshots``; returns the job, or raises :class:`Declined` / :class:`Rejected`.

        The queued image id is fastsnap's idempotency key, so a POST whose answer was lost is sent again: a job
        the first one created comes back (200) instead of a second one. 429 (host busy) is retried after its
        Retry-After until ``busy_timeout``."""
        body = build_request(order)
        deadline = self.clock() + busy_timeout
        lost = 0
        while True:
            try:
                ans = self.call("POST", "/v1/snapshots", body)
            except Unreachable as exc:
                raise Declined(f"fastsnap unreachable: {exc}") from exc
            except (OSError, http.client.HTTPException) as exc:
                lost += 1
                if lost >= 2:
                    raise Declined(f"fastsnap did not answer ({type(exc).__name__}: {exc or 'timeout'})") from exc
                continue
            if ans.status == 429 and self.clock() < deadline:
                self.sleep(min(_retry_after(ans.headers), max(0.0, deadline - self.clock())) or 1.0)
                continue
            return classify_create(ans.status, ans.body, order)

    def job(self, job_id: str) -> dict[str, Any]:
        ans = self.call("GET", f"/v1/snapshots/{job_id}")
        if ans.status != 200 or not isinstance(ans.body, dict):
            _, message = _error_of(ans.body)
            raise JobFailed(f"fastsnap job {job_id}: HTTP {ans.status}: {message}")
        return ans.body

    def cancel(self, job_id: str) -> None:
        """Ask fastsnap to stop the job and roll it back; best effort."""
        with contextlib.suppress(OSError, http.client.HTTPException):
            self.call("DELETE", f"/v1/snapshots/{job_id}")

    def parked(self, pool: str, name: str, image_id: str) -> bool:
        """Tell fastsnap that disk ``pool/name`` (RBD image id ``image_id``) was moved to the RBD trash because
        its snapshots still have clones: it flattens those first and then removes the disk. Best effort (fastsnap
        also finds parked disks by itself): False when it could not be told."""
        try:
            ans = self.call("POST", "/v1/parked", {"pool": pool, "name": name, "id": image_id})
        except (OSError, http.client.HTTPException):
            return False
        return ans.status in (200, 202)

    def wait(self, job: dict[str, Any], poll_interval: float = 0.5, job_timeout: float = 3600.0,
             unreachable_timeout: float = 60.0) -> dict[str, Any]:
        """Poll the job until it is done; raises :class:`JobFailed` when it fails, is cancelled, takes longer
        than ``job_timeout`` (it is then cancelled) or the service stays unreachable for
        ``unreachable_timeout`` (a restarted service marks an interrupted job failed and rolls it back)."""
        job_id = str(job["id"])
        start = self.clock()
        lost_since: float | None = None
        while not classify_job(job):
            now = self.clock()
            if job_timeout and now - start > job_timeout:
                self.cancel(job_id)
                raise JobFailed(f"fastsnap job {job_id} did not finish in {job_timeout:.0f}s; cancelled")
            self.sleep(poll_interval)
            try:
                job = self.job(job_id)
                lost_since = None
            except (OSError, http.client.HTTPException) as exc:
                lost_since = lost_since if lost_since is not None else self.clock()
                if self.clock() - lost_since > unreachable_timeout:
                    raise JobFailed(f"fastsnap became unreachable during job {job_id}: {exc}") from exc
        return job


def _retry_after(headers: dict[str, str]) -> float:
    try:
        return max(0.1, float(headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


__all__ = [
    "ACTIVE_STATES",
    "BACKUP_SOURCE_PREFIX",
    "FORMATS",
    "FORMAT_PROPERTY",
    "INSTRUCTION_PROPERTIES",
    "SNAPSHOT_PREFIX",
    "STORE_PROPERTY",
    "TERMINAL_STATES",
    "Answer",
    "Declined",
    "FastsnapClient",
    "FastsnapHookError",
    "JobFailed",
    "Rejected",
    "SnapshotOrder",
    "UnixHTTPConnection",
    "Unreachable",
    "backup_sources",
    "build_request",
    "classify_create",
    "classify_job",
    "fastsnap_dependents",
    "order_from_image",
]

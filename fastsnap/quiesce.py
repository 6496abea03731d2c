"""Freezing a running guest's filesystems around the disk's RBD snapshot (application-consistent snapshots).

The only moment that matters for consistency is the RBD snapshot of the disk (tens of milliseconds), so the
guest is frozen right before it and thawed right after it — never around the clone, the Glance calls or the
stream. Freeze and thaw go through libvirt (``virDomainFSFreeze``/``virDomainFSThaw``) and the guest's
qemu-guest-agent, as Nova's ``_set_quiesced`` does.

Decision (:func:`decide`, pure):
  - no libvirt domain given                         → not quiesced ("no domain given")
  - the base image lacks ``hw_qemu_guest_agent=yes``  → not quiesced, or an error with ``os_require_quiesce``
  - otherwise freeze; a guest that cannot be frozen fails the snapshot when quiesce is required (before anything
    is created when the agent does not answer at planning), else the snapshot goes on crash-consistent and the
    result says why.

The guest is never left frozen: thaw on every error, a watchdog thaws after ``[snapshot] max_freeze_seconds``,
and the freeze is journaled so that ``recover`` (and the service at start) thaws a guest a killed fastsnap left
frozen.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg
from oslo_log import log as logging

from fastsnap.errors import ConfigError, NoDomain, QuiesceError, QuiesceRequired
from fastsnap.view import AsDict

try:  # Debian's python3-libvirt; only needed on hosts that quiesce guests
    import libvirt
    import libvirt_qemu
except ImportError:  # pragma: no cover - exercised on hosts without the bindings
    libvirt = None
    libvirt_qemu = None

LOG = logging.getLogger(__name__)

def _yes(value: Any) -> bool:
    return str(value).strip().lower() in ("yes", "true", "1", "on")


@dataclass(frozen=True)
class Decision:
    attempt: bool            # try to freeze the domain
    required: bool           # a failure to freeze fails the snapshot
    domain: str | None
    reason: str              # why not, when not attempted


def decide(domain: str | None, base_props: dict[str, Any] | None, require: bool | None) -> Decision:
    """Whether to freeze: pure, from the request and the base image's properties.

    ``require`` None means "as the base image says" (``os_require_quiesce``)."""
    props = base_props or {}
    required = _yes(props.get("os_require_quiesce")) if require is None else require
    if not domain:
        if required:
            raise QuiesceRequired("quiesce is required (os_require_quiesce) but no libvirt domain was given")
        return Decision(False, False, None, "no libvirt domain given")
    if base_props is not None and not _yes(props.get("hw_qemu_guest_agent")):
        if required:
            raise QuiesceRequired("quiesce is required (os_require_quiesce) but the image does not have "
                                  "hw_qemu_guest_agent=yes")
        return Decision(False, False, domain, "the image does not have hw_qemu_guest_agent=yes")
    return Decision(True, required, domain, "")


@dataclass
class Outcome(AsDict):
    """What the result reports: ``quiesced`` and why (not), and the freeze window."""

    quiesced: bool
    reason: str
    domain: str | None = None
    freeze_seconds: float | None = None


class Hypervisor:
    """The local libvirt: freeze and thaw the filesystems of a domain through its guest agent."""

    def __init__(self, uri: str, agent_timeout: int = 5) -> None:
        if libvirt is None:
            raise ConfigError("quiescing guests needs libvirt's Python bindings (Debian: python3-libvirt)")
        self.uri = uri
        self.agent_timeout = agent_timeout
        self._conn: Any = None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Hypervisor:
        return cls(conf.libvirt.connection_uri, conf.libvirt.agent_timeout)

    def _domain(self, name: str) -> Any:
        try:
            if self._conn is None:
                self._conn = libvirt.open(self.uri)
            return self._conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NoDomain(f"no libvirt domain {name!r} at {self.uri}") from None
            raise QuiesceError(f"libvirt domain {name!r} at {self.uri}: {exc.get_error_message()}") from None

    def ping(self, name: str) -> None:
        """Raise QuiesceError unless the domain runs and its guest agent answers."""
        dom = self._domain(name)
        try:
            libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-ping"}), self.agent_timeout, 0)
        except libvirt.libvirtError as exc:
            raise QuiesceError(f"the guest agent of {name!r} does not answer: {exc.get_error_message()}") from None

    def freeze(self, name: str) -> int:
        try:
            return int(self._domain(name).fsFreeze())
        except libvirt.libvirtError as exc:
            raise QuiesceError(f"freezing {name!r} failed: {exc.get_error_message()}") from None

    def thaw(self, name: str) -> int:
        """Thaw; thawing a guest that is not frozen is a no-op (the agent answers 0)."""
        try:
            return int(self._domain(name).fsThaw())
        except libvirt.libvirtError as exc:
            raise QuiesceError(f"thawing {name!r} failed: {exc.get_error_message()}") from None

    def close(self) -> None:
        if self._conn is not None:
            with suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None


@contextmanager
def frozen(hv: Hypervisor | None, decision: Decision, max_seconds: float, outcome: Outcome,
           before_freeze: Callable[[], None] | None = None,
           after_thaw: Callable[[], None] | None = None) -> Iterator[None]:
    """Freeze for the body when the decision says so; always thaw (also after ``max_seconds``, by a watchdog).

    Fills ``outcome``. A failure to freeze raises when quiesce is required, else the body runs unfrozen and
    ``outcome.reason`` says why. ``before_freeze`` journals the intent (so that ``recover`` can thaw),
    ``after_thaw`` clears it."""
    outcome.domain = decision.domain
    if not decision.attempt or decision.domain is None or hv is None:
        outcome.quiesced, outcome.reason = False, decision.reason
        yield
        return
    name, hyp = decision.domain, hv
    if before_freeze is not None:
        before_freeze()
    t0 = time.monotonic()
    try:
        hv.freeze(name)
    except QuiesceError as exc:
        _thaw_quietly(hv, name)  # a freeze that failed half-way may have frozen some filesystems
        if after_thaw is not None:
            after_thaw()
        if decision.required:
            raise
        outcome.quiesced, outcome.reason = False, str(exc)
        LOG.warning("%s; snapshot goes on crash-consistent", exc)
        yield
        return
    lock = threading.Lock()
    state = {"thawed": False, "watchdog": False}

    def thaw(by_watchdog: bool) -> None:
        with lock:
            if state["thawed"]:
                return
            state["thawed"], state["watchdog"] = True, by_watchdog
            hyp.thaw(name)
            outcome.freeze_seconds = round(time.monotonic() - t0, 4)

    def watchdog() -> None:
        try:
            thaw(True)
            LOG.error("guest %s thawed by the watchdog after %.1fs ([snapshot] max_freeze_seconds)", name,
                      max_seconds)
        except QuiesceError as exc:
            LOG.error("watchdog could not thaw %s: %s", name, exc)

    timer = threading.Timer(max_seconds, watchdog)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        thaw(False)
        if after_thaw is not None:
            after_thaw()
    if state["watchdog"]:
        why = (f"the disk snapshot took longer than max_freeze_seconds ({max_seconds}s): the guest was thawed "
               f"before it completed")
        if decision.required:
            raise QuiesceError(why)
        outcome.quiesced, outcome.reason = False, why
        return
    outcome.quiesced, outcome.reason = True, "filesystems frozen by the guest agent around the disk snapshot"


def _thaw_quietly(hv: Hypervisor, name: str) -> None:
    try:
        hv.thaw(name)
    except QuiesceError as exc:
        LOG.warning("thaw after a failed freeze of %s: %s", name, exc)

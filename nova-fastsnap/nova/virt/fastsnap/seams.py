"""The parts of Nova the hook relies on ("seams"), and the check nova-compute runs at start-up.

The hook (``driver.py``, ``imagebackend.py``, ``storage.py``) overrides methods of Nova's libvirt driver, of its
rbd image backend and of its RBD driver (some of them private), calls others, and reads attributes and
configuration options. A Nova upgrade may remove or change any of them. At ``init_host`` the driver checks
every entry of :data:`SEAMS` against the Nova that runs; when one is missing or changed it logs one ERROR line per
problem and disables itself: nova-compute then runs Nova's own behaviour (see ``FastsnapLibvirtDriver.init_host``).

One line per seam: where it lives (a dotted module, class or object), its name, what it is, the Nova major
versions it is a seam of (a seam that changed between supported releases has one line per shape), and for a method the
parameter names of its signature as :func:`inspect.signature` shows them (``self`` included, ``*args``,
``*`` before keyword-only ones, ``**kwargs``; ``None``: existence only, e.g. for librbd's C methods whose
signatures depend on how python3-rbd was built) and the names its code must still refer to (e.g. that Nova's
``RBDDriver.cleanup_volumes`` still calls ``_destroy_volume``, which the hook replaces). Adding a seam to the hook
means adding its line here; ``nova-fastsnap/tests/test_seams.py`` finds the Nova names the hook's modules use
that have none.

Standard library only: this module imports (and mypy checks it) without Nova; :func:`check` imports Nova.
"""

from __future__ import annotations

import dis
import importlib
import inspect
import pkgutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import CodeType
from typing import Any, Literal

Kind = Literal["method", "attribute", "class", "field", "instance attribute", "option"]

METHOD: Kind = "method"                # a callable (method or function); ``params`` and ``uses`` apply
ATTRIBUTE: Kind = "attribute"          # anything found by getattr (constant, property, class attribute), not None
CLASS: Kind = "class"
FIELD: Kind = "field"                  # a field of an oslo.versionedobjects class (``fields``)
INSTANCE_ATTRIBUTE: Kind = "instance attribute"  # assigned on the instance by ``__init__`` (the class's or a base's)
OPTION: Kind = "option"                # an oslo.config option; the owner is ``nova.conf.CONF`` or a group of it


#: The oldest Nova the hook supports: 31 (OpenStack 2025.1). Releases: 31 = 2025.1, 32 = 2025.2, 33 = 2026.1,
#: 34 = 2026.2.
FIRST_NOVA = 31


@dataclass(frozen=True)
class Seam:
    owner: str                         # dotted: a module, or an object in one (class, ``nova.conf.CONF.libvirt``)
    name: str
    kind: Kind
    params: str | None = None          # METHOD: the signature's parameter names, ", "-separated
    uses: tuple[str, ...] = ()         # METHOD: names its code (nested functions included) must refer to
    nova: tuple[int, int | None] = (FIRST_NOVA, None)  # the Nova major versions it is a seam of (None: and later)

    def __str__(self) -> str:
        return f"{self.owner}.{self.name}"

    def applies(self, major: int | None) -> bool:
        """Whether the seam is one in Nova ``major`` (``None``: a version that cannot be read, taken as newer
        than any the table knows)."""
        first, last = self.nova
        if major is None:
            return last is None
        return first <= major and (last is None or major <= last)


LIBVIRT = "nova.virt.libvirt.driver.LibvirtDriver"
BACKEND = "nova.virt.libvirt.imagebackend.Backend"
RBD_BACKEND = "nova.virt.libvirt.imagebackend.Rbd"
RBD_DRIVER = "nova.storage.rbd_utils.RBDDriver"
LIBRBD = "nova.storage.rbd_utils.rbd"  # python3-rbd, as Nova imports it
REPORTER = "nova.compute.utils.EventReporter"

SEAMS: tuple[Seam, ...] = (
    # The compute driver: FastsnapLibvirtDriver overrides these.
    Seam(LIBVIRT, "init_host", METHOD, "self, host"),
    Seam(LIBVIRT, "image_backend", INSTANCE_ATTRIBUTE),  # replaced by FastsnapBackend
    Seam(LIBVIRT, "snapshot", METHOD, "self, context, instance, image_id, update_task_state",
         uses=("image_backend", "by_libvirt_path", "direct_snapshot")),
    # Where Nova removes an instance's rbd disks: every removal that can meet a disk fastsnap snapshots hold
    # (delete, shelve offload, rebuild, evacuation clean-up, failed spawn; doc/source/admin/parked-disks.rst) goes
    # destroy -> cleanup -> _cleanup -> _cleanup_rbd, which the hook overrides (a spawn whose guest fails to
    # start: _create_guest_with_network -> _cleanup).
    Seam(LIBVIRT, "destroy", METHOD, uses=("cleanup",)),
    Seam(LIBVIRT, "cleanup", METHOD, uses=("_cleanup",)),
    Seam(LIBVIRT, "_create_guest_with_network", METHOD, uses=("_cleanup",)),
    Seam(LIBVIRT, "_cleanup", METHOD, uses=("_cleanup_rbd",)),
    # ... with Nova's own disk filter, which the override repeats (it builds its RBDDriver inline).
    Seam(LIBVIRT, "_cleanup_rbd", METHOD, "self, instance",
         uses=("task_state", "RESIZE_REVERTING", "startswith", "endswith", "RBDDriver", "cleanup_volumes")),
    # The image backend table and its rbd entry (FastsnapBackend, FastsnapRbd).
    Seam(BACKEND, "__init__", METHOD, "self, use_cow"),
    Seam(BACKEND, "BACKEND", INSTANCE_ATTRIBUTE),
    Seam(BACKEND, "backend", METHOD, "self, image_type", uses=("BACKEND",)),
    Seam(BACKEND, "by_libvirt_path", METHOD, uses=("backend",)),
    Seam(BACKEND, "by_name", METHOD, uses=("backend",)),
    Seam(RBD_BACKEND, "__init__", METHOD, "self, instance, disk_name, path, disk_info_mapping"),
    Seam(RBD_BACKEND, "direct_snapshot", METHOD, "self, context, snapshot_name, image_format, image_id, base_image_id"),
    Seam(RBD_BACKEND, "driver", INSTANCE_ATTRIBUTE),
    Seam(RBD_BACKEND, "rbd_name", INSTANCE_ATTRIBUTE),
    # Disk removal (FastsnapRBDDriver).
    Seam(RBD_DRIVER, "pool", INSTANCE_ATTRIBUTE),
    Seam(RBD_DRIVER, "cleanup_volumes", METHOD, "self, filter_fn", uses=("_destroy_volume",)),
    Seam(RBD_DRIVER, "_destroy_volume", METHOD, "self, client, volume, pool"),
    Seam(RBD_DRIVER, "remove_snap", METHOD, "self, volume, name, ignore_errors, pool, force"),
    Seam("nova.storage.rbd_utils.RADOSClient", "ioctx", INSTANCE_ATTRIBUTE),  # the `client` of _destroy_volume
    Seam("nova.storage.rbd_utils", "RESIZE_SNAPSHOT_NAME", ATTRIBUTE),
    Seam("nova.storage.rbd_utils.RbdProxy", "__getattr__", METHOD),  # forwards remove, trash_move to rbd.RBD
    Seam(f"{LIBRBD}.RBD", "remove", METHOD),
    Seam(f"{LIBRBD}.RBD", "trash_move", METHOD),
    Seam(LIBRBD, "Image", CLASS),
    Seam(f"{LIBRBD}.Image", "id", METHOD),
    Seam(f"{LIBRBD}.Image", "list_snaps", METHOD),
    Seam(f"{LIBRBD}.Image", "close", METHOD),
    Seam(LIBRBD, "ImageNotFound", CLASS),
    Seam(LIBRBD, "ImageHasSnapshots", CLASS),
    Seam(LIBRBD, "ImageBusy", CLASS),
    # librbd calls off the event loop: Nova 33 added utils.tpool_wrap (threading mode too); 31 and 32 wrap in
    # eventlet's tpool.Proxy themselves (rbd_utils.RBDVolumeProxy), and so does the hook there.
    Seam("nova.utils", "tpool_wrap", METHOD, "target, autowrap", nova=(33, None)),
    Seam("nova.storage.rbd_utils.tpool", "Proxy", CLASS, nova=(FIRST_NOVA, 32)),
    # Snapshots: the failure, the instance action event, Glance.
    Seam("nova.exception.NovaException", "__init__", METHOD, "self, message, **kwargs"),
    Seam("nova.exception.NovaException", "msg_fmt", ATTRIBUTE),
    Seam("nova.i18n", "_", ATTRIBUTE),
    Seam(REPORTER, "__init__", METHOD, "self, context, event_name, host, *instance_uuids, graceful_exit"),
    Seam(REPORTER, "__enter__", METHOD, "self"),
    Seam(REPORTER, "__exit__", METHOD, "self, exc_type, exc_val, exc_tb"),
    Seam("nova.image.glance.API", "get", METHOD, "self, context, id_or_uri, include_locations, show_deleted"),
    Seam("nova.image.glance.GlanceClientWrapper", "call", METHOD,
         "self, context, version, method, controller, args, kwargs"),
    Seam("glanceclient.v2.images.Controller", "update", METHOD, "self, image_id, remove_props, **kwargs"),
    # What the hook reads of the request context, the instance and its image metadata.
    Seam("nova.context.RequestContext", "auth_token", INSTANCE_ATTRIBUTE),
    Seam("nova.objects.instance.Instance", "uuid", FIELD),
    Seam("nova.objects.instance.Instance", "task_state", FIELD),
    Seam("nova.objects.instance.Instance", "name", ATTRIBUTE),
    Seam("nova.objects.instance.Instance", "image_meta", ATTRIBUTE),
    Seam("nova.objects.image_meta.ImageMeta", "container_format", FIELD),
    Seam("nova.objects.image_meta.ImageMeta", "obj_attr_is_set", METHOD, "self, attrname"),
    Seam("nova.compute.task_states", "RESIZE_REVERTING", ATTRIBUTE),
    # Nova's configuration options the hook reads.
    Seam("nova.conf.CONF", "use_cow_images", OPTION),
    Seam("nova.conf.CONF", "host", OPTION),
    Seam("nova.conf.CONF.libvirt", "rbd_destroy_volume_retries", OPTION),
    Seam("nova.conf.CONF.libvirt", "rbd_destroy_volume_retry_interval", OPTION),
)


def nova_major() -> int | None:
    """The major version of the Nova that runs (31 for 31.3.1), or None when it cannot be read."""
    try:
        version = importlib.import_module("nova.version")
        return int(version.version_string().split(".")[0])
    except Exception:
        return None


def check(seams: Iterable[Seam] = SEAMS, major: int | Literal["running"] | None = "running") -> list[str]:
    """One line per seam of Nova ``major`` (default: the Nova that runs) that is missing or changed in the Nova
    that runs (empty: all there). Never raises."""
    if major == "running":
        major = nova_major()
    problems = []
    for seam in seams:
        if not seam.applies(major):
            continue
        try:
            problem = _check(seam)
        except Exception as exc:
            problem = f"could not be checked ({type(exc).__name__}: {exc})"
        if problem:
            problems.append(f"{seam} ({seam.kind}): {problem}")
    return problems


def _check(seam: Seam) -> str | None:
    try:
        owner = pkgutil.resolve_name(seam.owner)
    except (ImportError, AttributeError, ValueError) as exc:
        return f"{seam.owner} not found ({type(exc).__name__}: {exc})"
    if owner is None:
        return f"{seam.owner} is None"
    if seam.kind == OPTION:
        return None if seam.name in owner else "no such option"
    if seam.kind == FIELD:
        fields = getattr(owner, "fields", None)
        return None if isinstance(fields, dict) and seam.name in fields else "no such field"
    if seam.kind == INSTANCE_ATTRIBUTE:
        if hasattr(owner, seam.name) or any(_assigns(init, seam.name) for init in _inits(owner)):
            return None
        return "not assigned by __init__ any more"
    value = getattr(owner, seam.name, None)
    if value is None:
        return "missing"
    if seam.kind == CLASS:
        return None if isinstance(value, type) else f"not a class but {type(value).__name__}"
    if seam.kind == ATTRIBUTE:
        return None
    if not callable(value):
        return f"not callable but {type(value).__name__}"
    if seam.params is not None:
        try:
            found = params_of(value)
        except (TypeError, ValueError) as exc:
            return f"signature cannot be read ({exc})"
        if found != seam.params:
            return f"signature changed: ({seam.params}) expected, found ({found})"
    if seam.uses:
        names = _names(value)
        if names is None:
            return "its code cannot be read"
        lost = [name for name in seam.uses if name not in names]
        if lost:
            return f"no longer refers to {', '.join(lost)}"
    return None


def params_of(func: Any) -> str:
    """The parameter names of ``func``'s signature, as written in a ``def``: ``self, a, *args, b, **kwargs``."""
    out: list[str] = []
    star = False
    slash = False
    for p in inspect.signature(func).parameters.values():
        if p.kind is p.POSITIONAL_ONLY:
            slash = True
        elif slash:
            out.append("/")
            slash = False
        if p.kind is p.VAR_POSITIONAL:
            out.append(f"*{p.name}")
            star = True
        elif p.kind is p.VAR_KEYWORD:
            out.append(f"**{p.name}")
        else:
            if p.kind is p.KEYWORD_ONLY and not star:
                out.append("*")
                star = True
            out.append(p.name)
    if slash:
        out.append("/")
    return ", ".join(out)


def _codes(code: CodeType) -> Iterator[CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _codes(const)


def _code_of(func: Any) -> CodeType | None:
    code = getattr(inspect.unwrap(func), "__code__", None)
    return code if isinstance(code, CodeType) else None


def _names(func: Any) -> set[str] | None:
    """Every name the function's code (nested functions and lambdas included) refers to."""
    code = _code_of(func)
    if code is None:
        return None
    return {name for c in _codes(code) for name in c.co_names}


def _inits(cls: Any) -> Iterator[Any]:
    for klass in getattr(cls, "__mro__", ()):
        init = vars(klass).get("__init__")
        if init is not None:
            yield init


def _assigns(func: Any, name: str) -> bool:
    """Whether the function's code assigns an attribute ``name`` (``self.name = ...``)."""
    code = _code_of(func)
    if code is None:
        return False
    return any(ins.opname == "STORE_ATTR" and ins.argval == name for c in _codes(code)
               for ins in dis.get_instructions(c))


__all__ = ["ATTRIBUTE", "CLASS", "FIELD", "FIRST_NOVA", "INSTANCE_ATTRIBUTE", "METHOD", "OPTION", "SEAMS", "Seam",
           "check", "nova_major", "params_of"]

"""What a snapshot request may say, defined once.

:data:`FIELDS` is the one definition of a request: the REST body is parsed and type-checked from it
(:func:`from_body`), the service's OpenAPI document takes its schema from it (:func:`json_schema`), and a
:class:`SnapshotRequest` built in Python is checked against the same table (:func:`validate_request`) before the
rules no schema can say (printable UTF-8, UUIDs, reserved property names, Glance's limits).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastsnap.errors import BadRequest
from fastsnap.location import ImageSpec
from fastsnap.states import ImageType, StreamFormat

GLANCE_NAME_MAX = 255      # Glance's limit on image names and property names
PROPERTY_VALUE_MAX = 255   # as Nova's metadata values
MAX_PROPERTIES = 128       # Glance's default image_property_quota
# Glance's default container formats; the data is a raw disk image, or a qcow2 one (``format``).
CONTAINER_FORMATS = ("bare", "ovf", "aki", "ari", "ami", "ova", "docker", "compressed")
RESERVED_PROPERTIES = frozenset({
    "id", "name", "status", "visibility", "protected", "checksum", "owner", "size", "virtual_size",
    "created_at", "updated_at", "file", "schema", "self", "tags", "direct_url", "locations", "stores",
    "disk_format", "container_format", "os_hash_algo", "os_hash_value", "min_disk", "min_ram",
})
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 control characters


@dataclass(frozen=True)
class Field:
    """One request field: its JSON type, whether it is required or may be null, and its JSON-schema keywords."""

    name: str
    type: str                      # JSON type: string | boolean | integer | object
    description: str = ""
    required: bool = False
    nullable: bool = True
    schema: Mapping[str, Any] = field(default_factory=dict)   # enum, minimum, maxLength, default, ...
    rest_only: bool = False        # not part of SnapshotRequest (e.g. the caller's user token)


FIELDS: tuple[Field, ...] = (
    Field("disk", "string", "POOL/IMAGE of the instance disk", required=True, nullable=False,
          schema={"minLength": 1}),
    Field("name", "string", "name of the Glance image", required=True, nullable=False,
          schema={"minLength": 1, "maxLength": GLANCE_NAME_MAX}),
    Field("base_image", "string", "the instance's image_ref"),
    Field("store", "string", "target Glance store id"),
    Field("image_id", "string", "a queued image to fill; also an idempotency key"),
    Field("instance_uuid", "string", "the server whose root disk `disk` is (a UUID), recorded as the image's "
          "instance_uuid; required for a snapshot on behalf of a user (ownership is checked with Nova)"),
    Field("properties", "object", "extra image properties (strings)",
          schema={"maxProperties": MAX_PROPERTIES,
                  "additionalProperties": {"type": "string", "maxLength": PROPERTY_VALUE_MAX}}),
    Field("type", "string", "what Nova calls image_type", nullable=False,
          schema={"enum": [t.value for t in ImageType], "default": ImageType.SNAPSHOT.value}),
    Field("backup_type", "string", "with type=backup, e.g. daily"),
    Field("rotation", "integer", "with type=backup: keep this many backups of the instance and backup type",
          schema={"minimum": 1}),
    Field("user_token", "string", "trusted service callers (e.g. Nova): act on behalf of this user token",
          rest_only=True),
    Field("keep_image_on_error", "boolean", "with image_id: leave that image queued on failure",
          nullable=False, schema={"default": False}),
    Field("container_format", "string", "container format of the result (Nova keeps the base image's)",
          schema={"enum": [*CONTAINER_FORMATS, None], "default": "bare"}),
    Field("quiesce_domain", "string", "libvirt domain of the running instance: freeze it around the snapshot",
          schema={"minLength": 1, "maxLength": GLANCE_NAME_MAX}),
    Field("require_quiesce", "boolean", "fail when the guest cannot be frozen (default: os_require_quiesce)"),
    Field("format", "string", "disk format of the image on the stream path: raw, or qcow2 (only the allocated "
          "clusters are sent); default: [snapshot] stream_format. The clone, delta and copy paths make raw images: "
          "qcow2 asked of them is refused", schema={"enum": [*(f.value for f in StreamFormat), None]}),
)
_BY_NAME = {f.name: f for f in FIELDS}


@dataclass(frozen=True)
class SnapshotRequest:
    disk: str                                   # POOL/IMAGE of the instance disk on the local cluster
    name: str                                   # Glance image name
    base_image: str | None = None               # the instance's image_ref
    store: str | None = None                    # explicit target store
    image_id: str | None = None                 # a queued image to fill (as nova-api creates)
    properties: Mapping[str, str] = field(default_factory=dict)
    instance_uuid: str | None = None
    image_type: str = ImageType.SNAPSHOT        # snapshot | backup (REST: "type")
    keep_image_on_error: bool = False
    container_format: str = "bare"              # what the caller will keep calling it (Nova: the base's)
    quiesce_domain: str | None = None           # libvirt domain of the running instance: freeze it (issue 14)
    require_quiesce: bool | None = None         # None: as the base image's os_require_quiesce says
    backup_type: str | None = None              # with image_type backup: Nova's backup_type (daily, weekly...)
    rotation: int | None = None                 # with image_type backup: keep the newest N, delete older ones
    format: str | None = None                   # stream path: raw | qcow2; None: [snapshot] stream_format

    def fields(self) -> dict[str, Any]:
        """The request as :data:`FIELDS` names it (the REST body's shape)."""
        return {"disk": self.disk, "name": self.name, "base_image": self.base_image, "store": self.store,
                "image_id": self.image_id, "instance_uuid": self.instance_uuid,
                "properties": dict(self.properties) if isinstance(self.properties, Mapping) else self.properties,
                "type": self.image_type, "backup_type": self.backup_type, "rotation": self.rotation,
                "keep_image_on_error": self.keep_image_on_error, "container_format": self.container_format,
                "quiesce_domain": self.quiesce_domain, "require_quiesce": self.require_quiesce,
                "format": self.format}


def json_schema() -> dict[str, Any]:
    """The JSON schema of a request body (the OpenAPI document's ``SnapshotRequest``)."""
    props: dict[str, Any] = {}
    for f in FIELDS:
        typ: Any = [f.type, "null"] if f.nullable else f.type
        props[f.name] = {"type": typ, **({"description": f.description} if f.description else {}), **f.schema}
    return {"type": "object", "required": [f.name for f in FIELDS if f.required], "additionalProperties": False,
            "properties": props}


def _check_type(f: Field, value: Any) -> None:
    """BadRequest unless ``value`` has the field's JSON type (None only where the field may be null)."""
    if value is None and f.nullable and not f.required:
        return
    if f.type == "string" and not isinstance(value, str):
        raise BadRequest(f"'{f.name}' is required and must be a string" if f.required
                         else f"'{f.name}' must be a string")
    if f.type == "boolean" and not isinstance(value, bool):
        raise BadRequest(f"'{f.name}' must be a boolean" + (" or null" if f.nullable else ""))
    if f.type == "integer" and (not isinstance(value, int) or isinstance(value, bool)
                                or value < f.schema.get("minimum", value)):
        raise BadRequest(f"'{f.name}' must be a positive integer" if f.schema.get("minimum") == 1
                         else f"'{f.name}' must be an integer")
    if f.type == "object":
        if not isinstance(value, Mapping):
            raise BadRequest(f"'{f.name}' must be an object of strings, not {type(value).__name__}")
        for k, v in value.items():
            if not isinstance(v, str):
                raise BadRequest(f"property {k!r} must be a string, not {type(v).__name__}")
    enum = [e for e in f.schema.get("enum", ()) if e is not None]
    if enum and f.name == "type" and value not in enum:
        raise BadRequest(f"'{f.name}' must be {' or '.join(enum)}")


def check_fields(values: Mapping[str, Any]) -> None:
    """Type-check request fields against :data:`FIELDS`; unknown names are refused."""
    unknown = set(values) - set(_BY_NAME)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(repr(u)[:80] for u in sorted(unknown))}")
    for f in FIELDS:
        if f.name in values or f.required:
            _check_type(f, values.get(f.name))


def from_body(body: Any) -> tuple[SnapshotRequest, dict[str, Any]]:
    """The request a REST body asks for (validated like any request), and the body itself."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    check_fields(body)
    props = dict(body.get("properties") or {})
    kind = body.get("type") or ImageType.SNAPSHOT
    req = SnapshotRequest(disk=body["disk"], name=body["name"], base_image=body.get("base_image"),
                          store=body.get("store"), image_id=body.get("image_id"), properties=props,
                          instance_uuid=body.get("instance_uuid"), image_type=kind,
                          keep_image_on_error=body.get("keep_image_on_error", False),
                          container_format=body.get("container_format") or "bare",
                          quiesce_domain=body.get("quiesce_domain"),
                          require_quiesce=body.get("require_quiesce"), backup_type=body.get("backup_type"),
                          rotation=body.get("rotation"), format=body.get("format"))
    validate_request(req)
    return req, body


def check_text(what: str, value: object, max_len: int = 255) -> str:
    """A non-empty, printable UTF-8 string of at most ``max_len`` characters, else BadRequest saying which rule
    ``what`` breaks and where."""
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string, not {type(value).__name__}")
    for i, ch in enumerate(value):
        if 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that was not UTF-8 (the CLI decodes argv with surrogateescape)
            raise BadRequest(f"{what} is not valid UTF-8 (byte 0x{ord(ch) - 0xDC00:02x} at position {i})")
        if 0xD800 <= ord(ch) <= 0xDFFF:
            raise BadRequest(f"{what} is not valid UTF-8 (lone surrogate U+{ord(ch):04X} at position {i})")
        if _CONTROL.match(ch):
            raise BadRequest(f"{what} contains the control character U+{ord(ch):04X} at position {i}")
    if not value.strip():
        raise BadRequest(f"{what} must not be empty")
    if len(value) > max_len:
        raise BadRequest(f"{what} is {len(value)} characters long; at most {max_len} are allowed")
    return value


def validate_request(req: SnapshotRequest) -> ImageSpec:
    """Checks that need no service, for every caller (CLI, REST, Python). Raises BadRequest naming the
    problem."""
    check_fields(req.fields())
    disk = ImageSpec.parse(check_text("disk", req.disk, 512))
    check_text("image name", req.name, GLANCE_NAME_MAX)
    if req.image_id is not None:
        check_text("image id", req.image_id, 64)
        try:
            uuid.UUID(req.image_id)
        except ValueError:
            raise BadRequest(f"image id {req.image_id!r} is not a UUID") from None
    if req.base_image is not None:
        check_text("base image id", req.base_image, 64)
    if req.store is not None:
        check_text("store", req.store)
    if req.instance_uuid is not None:  # a Nova server id: it becomes part of the URL of the ownership check
        check_text("instance uuid", req.instance_uuid, 64)
        try:
            uuid.UUID(req.instance_uuid)
        except ValueError:
            raise BadRequest(f"instance uuid {req.instance_uuid!r} is not a UUID") from None
    if len(req.properties) > MAX_PROPERTIES:
        raise BadRequest(f"{len(req.properties)} properties given; at most {MAX_PROPERTIES} are allowed "
                         f"(Glance's default image_property_quota)")
    if req.quiesce_domain is not None:
        check_text("quiesce domain (a libvirt domain name)", req.quiesce_domain)
    if req.container_format not in CONTAINER_FORMATS:
        raise BadRequest(f"container format must be one of {', '.join(CONTAINER_FORMATS)}, "
                         f"not {req.container_format!r}")
    if req.format is not None and req.format not in tuple(StreamFormat):
        raise BadRequest(f"format must be {' or '.join(StreamFormat)}, not {req.format!r:.80}")
    if req.image_type == ImageType.BACKUP:
        if not req.backup_type or not req.instance_uuid:
            raise BadRequest("a backup needs 'backup_type' and 'instance_uuid'")
        check_text("backup type", req.backup_type)
    for k, v in req.properties.items():
        check_text("property name", k, GLANCE_NAME_MAX)
        if "=" in k:
            raise BadRequest(f"property name {k!r} must not contain '='")
        if k in RESERVED_PROPERTIES:
            raise BadRequest(f"property {k!r} is reserved by Glance")
        if v:  # an empty value is allowed
            check_text(f"property {k!r}", v, PROPERTY_VALUE_MAX)
    return disk

"""The service's OpenAPI 3 document (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from fastsnap.request import json_schema
from fastsnap.states import FlattenPolicy, FlattenState, JobState

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "title", "message"], "properties": {
        "code": {"type": "integer"}, "title": {"type": "string"}, "message": {"type": "string"},
        "kind": {"type": "string", "description": "machine-readable cause, e.g. unknown_store, bad_request"}}}},
}

_REQUEST = json_schema()

_JOB = {
    "type": "object",
    "properties": {
        "id": {"type": "string"}, "key": {"type": ["string", "null"]},
        "state": {"type": "string", "enum": [s.value for s in JobState]},
        "image_id": {"type": ["string", "null"]}, "path": {"type": ["string", "null"]},
        "store": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
        "bytes_done": {"type": "integer"}, "bytes_total": {"type": "integer"},
        "result": {"type": ["object", "null"]}, "error": {"type": ["object", "null"]},
        "request": {"type": "object"},
        "project_id": {"type": ["string", "null"], "description": "the project the job belongs to (visible to it "
                                                                    "and to service/admin callers only)"},
        "request_id": {"type": ["string", "null"]},
        "created_at": {"type": "number"}, "updated_at": {"type": "number"},
    },
}


_OPERATION = {
    "type": "object",
    "properties": {
        "op_id": {"type": "string", "description": "the Glance image id"}, "host": {"type": "string"},
        "disk": {"type": "string"}, "path": {"type": "string"},
        "step": {"type": ["string", "null"], "description": "the last step journaled"},
        "age": {"type": "number", "description": "seconds since it was reserved"},
        "idle": {"type": "number", "description": "seconds since its journal record was last written"},
    },
}

_STATUS = {
    "type": "object",
    "required": ["at", "hosts", "in_flight", "in_flight_operations", "lapsed_hosts", "unsettled", "flatten_backlog",
                 "parked_count", "parked_disks"],
    "properties": {
        "at": {"type": "number", "description": "when it was read (seconds since the epoch)"},
        "hosts": {"type": "array", "items": {"type": "object", "properties": {
            "host": {"type": "string"}, "alive": {"type": "boolean", "description": "its lease lives"},
            "seen_at": {"type": ["number", "null"], "description": "when it last took its lease (null: no lease "
                                                                   "record names it)"},
            "in_flight": {"type": "integer"}, "unsettled": {"type": "integer"}}}},
        "in_flight": {"type": "object", "additionalProperties": {"type": "integer"},
                      "description": "running operations by host, for every host whose lease lives"},
        "in_flight_operations": {"type": "array", "items": {"$ref": "#/components/schemas/StatusOperation"}},
        "lapsed_hosts": {"type": "array", "items": {"type": "string"},
                         "description": "hosts whose lease lapsed (an idle host that only runs the CLI too)"},
        "unsettled": {"type": "array", "items": {"$ref": "#/components/schemas/StatusOperation"},
                      "description": "running operations whose host's lease lapsed: waiting for a recover"},
        "flatten_backlog": {"type": "integer", "description": "clone-path snapshots whose flatten is pending"},
        "parked_count": {"type": "integer"},
        "parked_disks": {"type": "array", "items": {"type": "object"}},
    },
}

_FLATTEN = {
    "type": "object",
    "required": ["image_id", "disk", "pool", "policy", "why"],
    "properties": {
        "image_id": {"type": "string", "description": "the Glance image id (the clone's RBD name)"},
        "disk": {"type": "string", "description": "POOL/IMAGE of the instance disk it was cloned from"},
        "pool": {"type": "string", "description": "the clone's pool"},
        "policy": {"type": "string", "enum": [p.value for p in FlattenPolicy]},
        "why": {"type": "string"}, "depth": {"type": "integer", "description": "the clone chain's depth"},
        "state": {"type": "string", "enum": [s.value for s in FlattenState]},
        "task": {"type": "string", "description": "the Ceph mgr's task id"},
        "error": {"type": "string", "description": "why the mgr could not take it"},
    },
}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _job_resp(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}


COMMON = {"401": _err("no or invalid token"), "403": _err("role not allowed")}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "fastsnap", "version": "1.0",
             "description": "Fast snapshots of Ceph RBD instance disks into Glance, for compute hosts."},
    "components": {
        "securitySchemes": {"keystone": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
        "schemas": {"Error": _ERROR, "SnapshotRequest": _REQUEST, "Job": _JOB, "Status": _STATUS,
                    "StatusOperation": _OPERATION, "Flatten": _FLATTEN},
    },
    "security": [{"keystone": []}],
    "paths": {
        "/v1/snapshots": {
            "post": {
                "operationId": "createSnapshot",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 255}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/SnapshotRequest"}}}},
                "responses": {"202": _job_resp("accepted; see Location"),
                              "200": _job_resp("the same request again, or the job of the operation that already "
                                               "holds image_id (done or running, also one the CLI started)"),
                              "400": _err("bad input; nothing created"),
                              "409": _err("image_id or Idempotency-Key already used for another disk"),
                              "413": _err("body over 1 MiB"), "415": _err("not application/json"),
                              "429": _err("host busy; retry later"),
                              "503": _err("Glance or Ceph unavailable; nothing created"), **COMMON},
            },
            "get": {
                "operationId": "listSnapshots",
                "parameters": [{"name": "state", "in": "query", "required": False, "schema": {"type": "string"}},
                               {"name": "disk", "in": "query", "required": False, "schema": {"type": "string"}},
                               {"name": "image_id", "in": "query", "required": False,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "jobs", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"snapshots": {"type": "array", "items": {
                        "$ref": "#/components/schemas/Job"}}}}}}}, **COMMON},
            },
        },
        "/v1/snapshots/{job_id}": {
            "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"operationId": "getSnapshot",
                    "responses": {"200": _job_resp("the job"), "404": _err("no such job"), **COMMON}},
            "delete": {"operationId": "cancelSnapshot",
                       "responses": {"202": _job_resp("cancelling"), "404": _err("no such job"),
                                     "409": _err("job already finished"), **COMMON}},
        },
        "/v1/parked": {
            "get": {"operationId": "listParkedDisks", "responses": {"200": {
                "description": "instance disks parked in the RBD trash until fastsnap clones are flattened",
                "content": {"application/json": {"schema": {"type": "object", "properties": {
                    "parked_disks": {"type": "array", "items": {"type": "object"}}}}}}},
                "503": _err("Ceph unreachable"), **COMMON}},
            "post": {"operationId": "reportParkedDisk",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["pool", "name", "id"], "properties": {
                             "pool": {"type": "string", "minLength": 1}, "name": {"type": "string", "minLength": 1},
                             "id": {"type": "string", "minLength": 1, "description": "RBD image id"}}}}}},
                     "responses": {"202": {"description": "the flatten poller drains parked disks now",
                                           "content": {"application/json": {"schema": {"type": "object"}}}},
                                   "400": _err("bad body"), **COMMON}},
        },
        "/v1/status": {"get": {"operationId": "clusterStatus", "responses": {"200": {
            "description": "the whole cluster (every host's operations, from the journal in RADOS): operations in "
                           "flight by host, hosts whose lease lapsed, unsettled operations, flatten backlog, parked "
                           "disks; for service and admin callers",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}},
            "503": _err("Ceph unreachable"), **COMMON}}},
        "/v1/flattens": {"get": {"operationId": "listPendingFlattens", "responses": {"200": {
            "description": "clone-path snapshots (every host's) whose flatten is pending, as journaled (read only); "
                           "for service and admin callers",
            "content": {"application/json": {"schema": {"type": "object", "properties": {"flattens": {
                "type": "array", "items": {"$ref": "#/components/schemas/Flatten"}}}}}}},
            "503": _err("Ceph unreachable"), **COMMON}}},
        "/v1/stores": {"get": {"operationId": "listStores", "responses": {"200": {
            "description": "the store catalogue as this host sees it", "content": {"application/json": {
                "schema": {"type": "object", "properties": {"stores": {"type": "array",
                                                                       "items": {"type": "object"}}}}}}},
            **COMMON}}},
        "/metrics": {"get": {"operationId": "metrics", "responses": {"200": {
            "description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **COMMON}}},
        "/openapi.json": {"get": {"operationId": "openapi", "responses": {"200": {
            "description": "this document", "content": {"application/json": {"schema": {"type": "object"}}}},
            **COMMON}}},
    },
}

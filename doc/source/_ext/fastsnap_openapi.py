"""Sphinx extension: the REST API reference, generated from the OpenAPI document the service serves.

``.. fastsnap-openapi::`` renders :data:`fastsnap.service.openapi.DOCUMENT` (what ``GET /openapi.json`` answers)
into one section per call (its parameters, request body and responses) and one per schema of
``components/schemas``, so the reference cannot drift from the service. The HTML build also writes the document
itself as ``openapi.json`` at the root of the output, for tools that read OpenAPI.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any, ClassVar

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

METHODS = ("get", "post", "put", "patch", "delete")
REF = "#/components/schemas/"


def _document() -> dict[str, Any]:
    from fastsnap.service.openapi import DOCUMENT

    return DOCUMENT


def _label(name: str) -> str:
    return f"api-schema-{name.lower()}"


def _op_label(op_id: str) -> str:
    return f"api-{op_id.lower()}"


def text(value: str) -> str:
    """Prose from the document as reST: `x` becomes a literal, and reST's markup characters are escaped."""
    parts = re.split(r"(`[^`]+`)", value)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 2:
            out.append(f"``{part[1:-1]}``")
        else:
            part = part.replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")
            part = re.sub(r"_(?=\W|$)", r"\\_", part)
            out.append(part)
    return "".join(out).replace("\n", " ")


def literal(value: Any) -> str:
    return "``null``" if value is None else f"``{json.dumps(value) if not isinstance(value, str) else value}``"


def type_of(schema: dict[str, Any], depth: int = 0) -> str:
    """A schema's type in a few words, with links to the named schemas."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(REF)
        return f":ref:`{name} <{_label(name)}>`"
    kinds = schema.get("type", "any")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    words = []
    for kind in kinds:
        if kind == "array" and "items" in schema:
            words.append(f"array of {type_of(schema['items'], depth + 1)}")
        elif kind == "object" and schema.get("properties") and depth < 2:
            fields = ", ".join(f"``{k}`` ({type_of(v, depth + 1)})" for k, v in schema["properties"].items())
            words.append(f"object: {fields}")
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            words.append(f"object with {type_of(schema['additionalProperties'], depth + 1)} values")
        else:
            words.append(str(kind))
    return " or ".join(words)


def constraints(schema: dict[str, Any]) -> str:
    notes = []
    if "enum" in schema:
        notes.append("one of " + ", ".join(literal(v) for v in schema["enum"]))
    if "default" in schema:
        notes.append(f"default {literal(schema['default'])}")
    if schema.get("minLength") == 1:
        notes.append("not empty")
    elif "minLength" in schema:
        notes.append(f"at least {schema['minLength']} characters")
    for key, word in (("maxLength", "at most {} characters"), ("minimum", "at least {}"),
                      ("maximum", "at most {}"), ("maxProperties", "at most {} entries")):
        if key in schema:
            notes.append(word.format(schema[key]))
    return "; ".join(notes)


def _table(header: list[str], rows: list[list[str]], widths: str) -> list[str]:
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}", ""]
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            lines.append(f"   {'*' if i == 0 else ' '} - {cell or ' '}")
    return [*lines, ""]


def schema_lines(name: str, schema: dict[str, Any], adornment: str) -> list[str]:
    title = name
    lines = [f".. _{_label(name)}:", "", title, adornment * len(title), ""]
    if schema.get("description"):
        lines += [text(schema["description"]), ""]
    props = schema.get("properties", {})
    if not props:
        return [*lines, f"Type: {type_of(schema)}.", ""]
    required = set(schema.get("required", []))
    rows = []
    for field, spec in props.items():
        desc = text(spec.get("description", ""))
        extra = constraints(spec)
        rows.append([f"``{field}``", type_of(spec), "yes" if field in required else "no",
                     "; ".join(p for p in (desc, extra) if p)])
    lines += _table(["Field", "Type", "Required", "Description"], rows, "18 22 8 52")
    if schema.get("additionalProperties") is False:
        lines += ["Any other field is refused (400).", ""]
    return lines


def body_type(content: dict[str, Any]) -> str:
    parts = []
    for media, spec in content.items():
        schema = spec.get("schema")
        parts.append(f"``{media}``" + (f": {type_of(schema)}" if schema else ""))
    return "; ".join(parts)


def operation_lines(path: str, method: str, op: dict[str, Any], shared: list[dict[str, Any]],
                    adornment: str) -> list[str]:
    title = f"{method.upper()} {path}"
    lines = [f".. _{_op_label(op['operationId'])}:", "", title, adornment * len(title), ""]
    if op.get("summary"):
        lines += [text(op["summary"]), ""]
    if op.get("description"):
        lines += [text(op["description"]), ""]
    lines += [f"Operation id: ``{op['operationId']}``.", ""]
    params = [*shared, *op.get("parameters", [])]
    if params:
        rows = [[f"``{p['name']}``", p["in"], type_of(p.get("schema", {})), "yes" if p.get("required") else "no",
                 "; ".join(x for x in (text(p.get("description", "")), constraints(p.get("schema", {}))) if x)]
                for p in params]
        lines += ["**Parameters**", ""]
        lines += _table(["Name", "In", "Type", "Required", "Description"], rows, "18 10 14 8 50")
    body = op.get("requestBody")
    if body:
        lines += ["**Request body**" + (" (required)" if body.get("required") else ""), "",
                  body_type(body.get("content", {})), ""]
    rows = []
    for code, resp in sorted(op.get("responses", {}).items()):
        rows.append([f"``{code}``", text(resp.get("description", "")), body_type(resp.get("content", {}))])
    lines += ["**Responses**", ""]
    lines += _table(["Code", "Meaning", "Body"], rows, "8 52 40")
    return lines


def document_lines(doc: dict[str, Any], adornments: str = "-~") -> list[str]:
    calls, schemas = adornments[0], adornments[1]
    lines: list[str] = []
    for path, item in doc["paths"].items():
        shared = item.get("parameters", [])
        for method, op in item.items():  # in the document's order
            if method in METHODS:
                lines += operation_lines(path, method, op, shared, calls)
    title = "Schemas"
    lines += [".. _api-schemas:", "", title, calls * len(title), ""]
    for name, schema in doc["components"]["schemas"].items():
        lines += schema_lines(name, schema, schemas)
    return lines


class OpenAPIDirective(SphinxDirective):
    """Render the service's OpenAPI document. Option ``:adornments:`` names the section characters of the
    calls and of the schemas (default ``-~``: below the page's ``=`` title)."""

    has_content = False
    option_spec: ClassVar[dict[str, Callable[[str], Any]]] = {"adornments": str}

    def run(self) -> list[nodes.Node]:
        for path in _module_files():
            self.env.note_dependency(path)
        lines = document_lines(_document(), self.options.get("adornments", "-~"))
        node = nodes.section()
        node.document = self.state.document
        nested_parse_with_titles(self.state, StringList(lines, source="fastsnap.service.openapi.DOCUMENT"), node)
        return node.children


def _module_files() -> list[str]:
    """The modules the document is made of, and this extension: a change to one rebuilds the page."""
    import fastsnap.request
    import fastsnap.service.openapi
    import fastsnap.states

    modules = (fastsnap.service.openapi, fastsnap.request, fastsnap.states)
    return [os.path.abspath(__file__), *(os.path.abspath(str(m.__file__)) for m in modules)]


def _write_json(app: Sphinx, exception: Exception | None) -> None:
    if exception is None and app.builder.format == "html":
        with open(os.path.join(app.outdir, "openapi.json"), "w", encoding="utf-8") as f:
            json.dump(_document(), f, indent=2, sort_keys=False)
            f.write("\n")


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("fastsnap-openapi", OpenAPIDirective)
    app.connect("build-finished", _write_json)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}

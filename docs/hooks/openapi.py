"""MkDocs hook: the serving reference (docs/reference/api.md) rendered from the service's own OpenAPI document,
docs/reference/openapi.json, which tests/pipeline/test_service.py checks against the served /docs.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MARKER = "<!-- openapi -->"
METHODS = ("get", "post", "put", "patch", "delete")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 (MkDocs' hook signature)
    if MARKER not in markdown:
        return markdown
    doc = json.loads((Path(config["docs_dir"]) / "reference" / "openapi.json").read_text())
    return markdown.replace(MARKER, render(doc))


def _anchor(name: str) -> str:
    return "schema-" + name.lower()


def _type(schema: dict[str, Any] | None) -> str:
    """A schema in a few words: its type, items, choices and limits; references link to their section."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{_anchor(name)})"
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return " or ".join(dict.fromkeys(_type(s) for s in schema[key]))
    if "enum" in schema:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        text = f"array of {_type(schema.get('items'))}"
    elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        text = f"object of {_type(schema['additionalProperties'])}"
    else:
        text = kind
    limits = []
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"),
                      ("minItems", "items >="), ("maxItems", "items <="), ("minLength", "length >="),
                      ("maxLength", "length <=")):
        if key in schema and not isinstance(schema[key], bool):
            limits.append(f"{word} {schema[key]}")
    if "pattern" in schema:
        limits.append(f"pattern `{schema['pattern']}`")
    return text + (f" ({', '.join(limits)})" if limits else "")


def _prose(text: str) -> str:
    """A docstring's paragraphs, each on one line (its indentation would make a code block)."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


def _cell(text: Any) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _body(content: dict[str, Any]) -> str:
    return "; ".join(f"`{kind}`: {_type(c.get('schema'))}" for kind, c in content.items())


def render(doc: dict[str, Any]) -> str:
    out: list[str] = []
    info = doc.get("info", {})
    if info.get("title"):
        out += [f"The document's title: **{info['title']}** (OpenAPI {doc.get('openapi', '?')}).", ""]
    out += ["| method | path | summary | credential |", "|---|---|---|---|"]
    operations = [(path, method, op) for path, item in sorted(doc.get("paths", {}).items())
                  for method, op in item.items() if method in METHODS]
    for path, method, op in operations:
        roles = _roles(op)
        out.append(f"| {method.upper()} | [`{path}`](#{_op_anchor(method, path)}) | {_cell(_summary(op))} "
                   f"| {roles} |")
    out.append("")
    for path, method, op in operations:
        out += [f"## {method.upper()} `{path}` {{ #{_op_anchor(method, path)} }}", ""]
        if op.get("description"):
            out += [_prose(op["description"]), ""]
        params = op.get("parameters") or []
        if params:
            out += ["| parameter | in | required | type | description |", "|---|---|---|---|---|"]
            out += [f"| `{p['name']}` | {p.get('in', '')} | {'yes' if p.get('required') else 'no'} | "
                    f"{_cell(_type(p.get('schema')))} | {_cell(p.get('description'))} |" for p in params]
            out.append("")
        body = op.get("requestBody")
        if body:
            content = body.get("content", {})
            inline = [c.get("schema") or {} for c in content.values() if (c.get("schema") or {}).get("properties")]
            if inline:  # a body declared in place (BentoML's APIs): its fields here
                out += [f"**Request body** ({', '.join(f'`{k}`' for k in content)}):", "", *_fields(inline[0]), ""]
            else:
                out += [f"**Request body**: {_body(content)}", ""]
        responses = op.get("responses") or {}
        if responses:
            out += ["| status | meaning | body |", "|---|---|---|"]
            out += [f"| {code} | {_cell(r.get('description'))} | {_cell(_body(r.get('content') or {}))} |"
                    for code, r in sorted(responses.items())]
            out.append("")
    schemas = doc.get("components", {}).get("schemas", {})
    if schemas:
        out += ["## Schemas", ""]
    for name, schema in sorted(schemas.items()):
        out += [f"### {name} {{ #{_anchor(name)} }}", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        out += [*(_fields(schema) if schema.get("properties") else [_type(schema)]), ""]
    return "\n".join(out)


def _fields(schema: dict[str, Any]) -> list[str]:
    required = set(schema.get("required") or [])
    return ["| field | type | required | description |", "|---|---|---|---|",
            *(f"| `{field}` | {_cell(_type(s))} | {'yes' if field in required else 'no'} | "
              f"{_cell(s.get('description') or s.get('title'))} |" for field, s in schema["properties"].items())]


def _summary(op: dict[str, Any]) -> str:
    """The operation's summary, else the first sentence of its description (BentoML's APIs have only that)."""
    if op.get("summary"):
        return op["summary"]
    text = " ".join((op.get("description") or "").split("Needs a key with the role")[0].split())
    return text.split(". ")[0].rstrip(".") if text else ""


def _roles(op: dict[str, Any]) -> str:
    if op.get("security") == []:
        return "none"
    said = op.get("description") or ""
    marker = "Needs a key with the role "
    return said.split(marker, 1)[1].rstrip(". \n") if marker in said else "a key"


def _op_anchor(method: str, path: str) -> str:
    return "op-" + method + "-" + "".join(c if c.isalnum() else "-" for c in path).strip("-").lower()

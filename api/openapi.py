"""The OpenAPI 3 document and a self-contained documentation page, built from the routes."""

from __future__ import annotations

import html
import json
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api.routes import ENDPOINTS, Endpoint
from shared.requests import ObjectRequest

REF_TEMPLATE = "#/components/schemas/{model}"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ERROR"]},
        "responseObject": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "violations": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "fieldName": {"type": "string"},
                            "invalidValue": {},
                            "hint": {"type": "string"},
                        },
                    },
                },
            },
        },
    },
}

OK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"status": {"type": "string", "enum": ["OK"]}, "responseObject": {}},
}


def body_model(endpoint: Endpoint) -> type[BaseModel] | None:
    if endpoint.request_model is None:
        return None
    if not endpoint.envelope or "requestObject" in endpoint.request_model.model_fields:
        return endpoint.request_model
    return ObjectRequest[endpoint.request_model]  # type: ignore[name-defined]


def build_openapi(version: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every endpoint."""
    models = {model for endpoint in ENDPOINTS if (model := body_model(endpoint)) is not None}
    ordered = sorted(models, key=lambda model: model.__name__)
    refs, definitions = models_json_schema(
        [(model, "validation") for model in ordered], ref_template=REF_TEMPLATE
    )
    schemas = dict(definitions.get("$defs", {}))
    schemas["ErrorResponse"] = ERROR_SCHEMA
    schemas["OkResponse"] = OK_SCHEMA

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        model = body_model(endpoint)
        reference = refs[(model, "validation")] if model is not None else None
        for method in endpoint.methods:
            paths.setdefault(endpoint.path, {})[method.lower()] = operation(
                endpoint, method, reference
            )

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Push server",
            "version": version,
            "description": "REST API compatible with the PowerAuth Push Server, with additions.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
        },
    }


def operation(endpoint: Endpoint, method: str, reference: dict[str, Any] | None) -> dict[str, Any]:
    name = endpoint.handler.__name__
    result: dict[str, Any] = {
        "operationId": f"{name}_{method.lower()}_{endpoint.path.strip('/').replace('/', '_')}",
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
        "responses": {
            "200": {"description": "OK", "content": json_content(OK_SCHEMA_REF)},
            "400": {"description": "Invalid request", "content": json_content(ERROR_REF)},
        },
    }
    if endpoint.deprecated:
        result["deprecated"] = True
    if endpoint.role is not None:
        result["security"] = [{"bearer": []}, {"basic": []}]
        result["description"] = f"Requires an API key with the role {endpoint.role.value} or admin."
        result["responses"]["401"] = {
            "description": "No valid API key",
            "content": json_content(ERROR_REF),
        }
        result["responses"]["403"] = {
            "description": "Role missing",
            "content": json_content(ERROR_REF),
        }
    parameters = (
        [
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            }
        ]
        if "{id}" in endpoint.path
        else []
    )
    parameters += [
        {"name": query, "in": "query", "required": required, "schema": {"type": kind}}
        for query, kind, required in endpoint.query
    ]
    if parameters:
        result["parameters"] = parameters
    if reference is not None and method != "GET":
        result["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": reference}},
        }
    return result


OK_SCHEMA_REF = {"$ref": "#/components/schemas/OkResponse"}
ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def build_docs_page(document: dict[str, Any]) -> str:
    """Return a self-contained HTML page listing operations and schemas (no scripts, no CDN)."""
    rows = []
    for path, operations in document["paths"].items():
        for method, detail in operations.items():
            body = detail.get("requestBody", {}).get("content", {}).get("application/json", {})
            schema = body.get("schema", {}).get("$ref", "").rsplit("/", 1)[-1]
            role = detail.get("description", "")
            link = f'<a href="#{schema}">{schema}</a>' if schema else ""
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code>"
                f"{' (deprecated)' if detail.get('deprecated') else ''}</td>"
                f"<td>{html.escape(detail['summary'])}</td>"
                f"<td>{link}</td>"
                f"<td>{html.escape(role)}</td></tr>"
            )
    schemas = "".join(
        f'<h3 id="{html.escape(name)}">{html.escape(name)}</h3>'
        f"<pre>{html.escape(format_schema(schema))}</pre>"
        for name, schema in document["components"]["schemas"].items()
    )
    return DOCS_TEMPLATE.format(rows="".join(rows), schemas=schemas)


def format_schema(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False)


DOCS_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Push server API</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
pre {{ background: #f6f6f6; padding: 8px; overflow-x: auto; }}
</style></head><body>
<h1>Push server API</h1>
<p>Requests use the envelope <code>{{"requestObject": ...}}</code>; responses are
<code>{{"status": "OK", "responseObject": ...}}</code> or
<code>{{"status": "ERROR", "responseObject": {{"code": ..., "message": ...}}}}</code>.
Send the API key as <code>Authorization: Bearer KEY</code> or as HTTP Basic credentials.
The machine-readable document is <a href="/openapi.json">/openapi.json</a>.</p>
<table><tr><th>verb</th><th>path</th><th>summary</th><th>request body</th><th>access</th></tr>
{rows}</table>
<h2>Schemas</h2>
{schemas}
</body></html>
"""

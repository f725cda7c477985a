"""The OpenAPI document with every ``$ref`` resolvable.

Routes that parse their own bodies describe them with a model's ``model_json_schema()`` in
``openapi_extra``; pydantic puts the models such a schema refers to under a local ``$defs``
and points at them with ``#/$defs/Name``, which means nothing at the document's root (a client
generator or a validator finds no ``Base64Image`` there). :func:`resolved` moves every ``$defs`` it
finds into ``components/schemas`` and points the references there.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

_LOCAL = "#/$defs/"
_COMPONENTS = "#/components/schemas/"


def component(model: type[BaseModel]) -> dict[str, Any]:
    """A reference to ``model``'s schema, which :func:`resolved` files under its name in
    ``components/schemas`` (with the models it refers to): for ``openapi_extra``."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    return {"$ref": _LOCAL + model.__name__, "$defs": {**defs, model.__name__: schema}}


def use_resolved_openapi(app: FastAPI) -> None:
    """Serve :func:`resolved` of FastAPI's document as ``app.openapi()`` (built once)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = resolved(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def resolved(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``spec`` with each local ``$defs`` moved to ``components/schemas``.

    A copy: FastAPI's document shares its dicts with the routes' ``openapi_extra``.

    Raises:
        ValueError: two different schemas under one name (they cannot share a component).
    """
    spec = copy.deepcopy(spec)
    components: dict[str, Any] = spec.setdefault("components", {}).setdefault("schemas", {})
    found: dict[str, Any] = {}
    _collect(spec, found)
    for name, schema in found.items():
        existing = components.get(name)
        if existing is not None and existing != schema:
            raise ValueError(f"two OpenAPI schemas are named {name!r}; rename one")
        components[name] = schema
    _repoint(spec)
    _door_refusals(spec)
    return spec


# What service.limits may answer on any route under /v1, before the route itself runs.
DOOR_REFUSALS = {
    "401": "No API key, or an unknown or revoked one",
    "408": "The request body did not arrive in time (request_body_idle_timeout_s, "
    "request_body_timeout_s)",
    "413": "The request body is over the route's limit (request_max_json_bytes, "
    "max_upload_bytes or predict_max_body_bytes)",
    "422": "A JSON body that is not UTF-8, nests too deep or holds too long a number",
    "429": "Too many requests with keys that are not valid from this client (Retry-After)",
}


def _door_refusals(spec: dict[str, Any]) -> None:
    error = {"application/json": {"schema": {"$ref": _COMPONENTS + "ErrorBody"}}}
    for path, operations in spec.get("paths", {}).items():
        if not path.startswith("/v1/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status, description in DOOR_REFUSALS.items():
                if status == "422" and operation.get("requestBody") is None:
                    continue
                responses.setdefault(status, {"description": description, "content": error})


def _collect(node: Any, found: dict[str, Any]) -> None:
    if isinstance(node, dict):
        defs = node.pop("$defs", None)
        if isinstance(defs, dict):
            for name, schema in defs.items():
                _collect(schema, found)
                found[name] = schema
        for value in node.values():
            _collect(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect(value, found)


def _repoint(node: Any) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_LOCAL):
            node["$ref"] = _COMPONENTS + ref.removeprefix(_LOCAL)
        for value in node.values():
            _repoint(value)
    elif isinstance(node, list):
        for value in node:
            _repoint(value)

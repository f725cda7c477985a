"""Every route but health, metrics and the docs needs a key with the right scope.

The walk covers ``app.routes`` as they are, so a route added later without ``require(scope)``
fails here rather than slipping through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from jobs.records import Scope, session_scope
from jobs.records import repository as records

PUBLIC = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    # Dashboard pages are static shells: every number on them comes from /v1 with the key.
    "/dashboard",
    "/dashboard/login",
    "/dashboard/runs",
    "/dashboard/runs/{run_id}",
    "/dashboard/experiments",
    "/dashboard/experiments/{experiment_id}",
    "/dashboard/models",
    "/dashboard/static/{name}",
}


def flat_routes(app: FastAPI) -> list[tuple[str, set[str], Any]]:
    """(path, methods, dependant) of every route, routers included ones flattened.

    Recent FastAPI keeps an included router as one entry of ``app.routes``;
    ``iter_route_contexts`` yields its routes with their full paths. Older FastAPI flattens.
    """
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - FastAPI without included-router contexts
        contexts: list[Any] = list(app.routes)
    else:
        contexts = list(iter_route_contexts(app.routes))
    flat = []
    for route in contexts:
        path = route.path
        assert isinstance(path, str), f"a route without a path: {route!r}: check its auth"
        flat.append((path, set(route.methods or ()), getattr(route, "dependant", None)))
    return flat


def required_scope(dependant: Any) -> Scope | None:
    """The scope a route's dependencies demand (``require(scope)`` marks its function)."""
    found: list[Scope] = []

    def walk(node: Any) -> None:
        scope = getattr(node.call, "required_scope", None)
        if scope is not None:
            found.append(scope)
        for sub in node.dependencies:
            walk(sub)

    walk(dependant)
    assert len(set(found)) <= 1, f"several scopes demanded: {found}"
    return found[0] if found else None


def protected_routes(app: FastAPI) -> list[tuple[str, str, Any]]:
    routes = []
    for path, methods, dependant in flat_routes(app):
        if path in PUBLIC:
            continue
        assert dependant is not None, f"{path} is not an API route: check its auth"
        for method in sorted(methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path, dependant))
    return routes


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0" * 32, path)


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    return client.request(method, concrete(path), headers=headers, json={})


def test_the_walk_finds_every_resource(app: FastAPI) -> None:
    paths = {path for _, path, _ in protected_routes(app)}
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/datasets", "/v1/datasets/upload"} <= paths
    assert "/v1/architectures" in paths and len(protected_routes(app)) >= 14
    for _, path, dependant in protected_routes(app):
        assert path.startswith("/v1/"), path
        assert required_scope(dependant) is not None, f"{path} has no require(scope) dependency"


def test_every_protected_route_is_401_without_a_valid_key(
    client: TestClient, app: FastAPI, db: sessionmaker[Session]
) -> None:
    with session_scope(db) as session:
        key, revoked = records.create_api_key(session, "gone", ["admin"])
        records.revoke_api_key(session, key.id)
    for method, path, _ in protected_routes(app):
        for headers in (
            {},
            {"Authorization": "Bearer rsk_not-a-real-key"},
            {"Authorization": "Bearer "},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": f"Bearer {revoked}"},
        ):
            response = call(client, method, path, headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert response.json()["error"]["code"] == "unauthorized"


def test_every_protected_route_is_403_for_a_key_lacking_its_scope(
    client: TestClient, app: FastAPI, make_key: Callable[..., dict[str, str]]
) -> None:
    everything_but: dict[Scope, dict[str, str]] = {
        scope: make_key(*[s for s in Scope if s not in (scope, Scope.ADMIN)])
        for scope in Scope
        if scope != Scope.ADMIN
    }
    for method, path, dependant in protected_routes(app):
        scope = required_scope(dependant)
        assert scope is not None
        response = call(client, method, path, everything_but[scope])
        assert response.status_code == 403, (method, path, scope, response.text)
        assert response.json()["error"]["code"] == "forbidden"
        assert scope.value in response.json()["error"]["message"]


@pytest.mark.parametrize("scopes", [("admin",), ("read", "train", "predict")])
def test_a_key_with_the_scope_gets_past_auth(
    client: TestClient,
    app: FastAPI,
    make_key: Callable[..., dict[str, str]],
    scopes: tuple[str, ...],
) -> None:
    headers = make_key(*scopes)
    for method, path, _ in protected_routes(app):
        response = call(client, method, path, headers)
        assert response.status_code not in (401, 403, 500), (method, path, response.text)


def test_reads_need_read_and_writes_need_train(
    client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    reader = make_key("read")
    assert client.get("/v1/runs", headers=reader).status_code == 200
    assert client.post("/v1/runs", json={}, headers=reader).status_code == 403
    trainer = make_key("train")
    assert client.get("/v1/runs", headers=trainer).status_code == 403
    predictor = make_key("predict")
    assert client.get("/v1/architectures", headers=predictor).status_code == 403


def test_the_walk_would_catch_a_route_added_without_a_key(app: FastAPI) -> None:
    from fastapi import APIRouter

    sneaky = APIRouter(prefix="/v1/sneaky")

    @sneaky.get("/{thing}")
    def leak(thing: str) -> dict[str, str]:
        return {"thing": thing}

    app.include_router(sneaky)
    found = {path: dependant for _, path, dependant in protected_routes(app)}
    assert "/v1/sneaky/{thing}" in found
    assert required_scope(found["/v1/sneaky/{thing}"]) is None

"""Health, metrics, the one error shape, and the OpenAPI document."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jobs.settings import Settings
from service.app import create_app


def test_healthz_and_readyz_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}


def test_readyz_names_an_unreachable_database(settings: Settings, tmp_path: Path) -> None:
    broken = settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}"}
    )
    with TestClient(create_app(broken)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready" and "database" in error["message"]
    assert [d["field"] for d in error["details"]] == ["database"]


def test_metrics_count_requests_by_route_template_and_runs_by_status(
    client: TestClient, admin: dict[str, str]
) -> None:
    run = {"architecture": "resnet20", "data": "synthetic:64:8x8x3:2"}
    run_id = client.post("/v1/runs", json=run, headers=admin).json()["id"]
    client.get(f"/v1/runs/{run_id}", headers=admin)
    client.get(f"/v1/runs/{'0' * 32}", headers=admin)
    client.get("/v1/runs")
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'resnet_http_requests_total{method="POST",route="/v1/runs",status="202"} 1.0' in text
    assert 'route="/v1/runs/{run_id}",status="200"} 1.0' in text
    assert 'route="/v1/runs/{run_id}",status="404"} 1.0' in text
    assert 'resnet_http_requests_total{method="GET",route="/v1/runs",status="401"} 1.0' in text
    assert 'route="unmatched",status="404"' in text
    assert run_id not in text  # ids never become labels
    assert 'resnet_http_request_duration_seconds_bucket{le="0.005",method="POST"' in text
    assert 'resnet_runs{status="queued"} 1.0' in text
    assert 'resnet_runs{status="running"} 0.0' in text


def test_unknown_paths_and_methods_get_the_error_shape(
    client: TestClient, admin: dict[str, str]
) -> None:
    missing = client.get("/v2/nothing", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = client.put("/v1/runs", headers=admin)
    assert wrong.status_code == 405
    assert set(wrong.json()["error"]) == {"code", "message", "details"}


def test_a_bug_is_a_logged_500_in_the_same_shape(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("kaput")

    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "error": {
            "code": "internal_error",
            "message": "Internal server error; it has been logged.",
            "details": [],
        }
    }
    assert "kaput" not in response.text
    assert any("kaput" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_openapi_documents_tags_summaries_auth_and_the_error_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {t["name"] for t in spec["tags"]} == {"runs", "datasets", "architectures", "health"}
    assert "ErrorBody" in spec["components"]["schemas"]
    assert "RunCreate" in spec["components"]["schemas"]
    assert "batch_size" in spec["components"]["schemas"]["RunCreate"]["properties"]
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)
            assert operation.get("tags"), (method, path)
            if path.startswith("/v1/"):
                assert operation.get("security") == [{"ApiKey": []}], (method, path)
                assert "401" in operation["responses"] and "403" in operation["responses"]
            for code, response in operation["responses"].items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, code)
    upload = spec["paths"]["/v1/datasets/upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]

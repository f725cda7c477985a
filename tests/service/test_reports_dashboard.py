"""The dashboard's pages and assets: served by the API, shipped in the package, no CDN."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import service

PACKAGE = Path(service.__file__).parent
PAGES = [
    "/dashboard/login",
    "/dashboard/runs",
    "/dashboard/runs/" + "a" * 32,
    "/dashboard/experiments",
    "/dashboard/experiments/" + "b" * 32,
    "/dashboard/models",
]


@pytest.mark.parametrize("path", PAGES)
def test_every_page_is_the_shell_with_a_strict_csp(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<main id="app"' in response.text
    assert '<script src="/dashboard/static/dashboard.js"' in response.text
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp


def test_the_root_redirects_to_the_runs(client: TestClient) -> None:
    response = client.get("/dashboard", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/dashboard/runs"


def test_assets_are_served_from_the_package(client: TestClient) -> None:
    js = client.get("/dashboard/static/dashboard.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.text == (PACKAGE / "static" / "dashboard.js").read_text()
    css = client.get("/dashboard/static/dashboard.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for name in ("../app.py", "nope.js", "..%2Fapp.py"):
        assert client.get(f"/dashboard/static/{name}").status_code == 404


def test_nothing_is_fetched_from_elsewhere() -> None:
    for path in [
        PACKAGE / "templates" / "dashboard.html",
        PACKAGE / "static" / "dashboard.js",
        PACKAGE / "static" / "dashboard.css",
    ]:
        text = path.read_text()
        urls = re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}", text)
        # the one absolute URL is the SVG namespace, an identifier that is never fetched
        assert set(urls) <= {"http://www.w3.org"}, (path.name, urls)
        assert "innerHTML" not in text, path.name  # API text only ever goes in as textContent


def test_the_api_keys_guard_the_data_not_the_shell(client: TestClient) -> None:
    assert client.get("/dashboard/runs").status_code == 200
    assert client.get("/v1/runs").status_code == 401

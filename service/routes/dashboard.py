"""``/dashboard``: a few pages over the JSON API, served by the API itself.

The pages are one static HTML shell and a small script and stylesheet shipped in the package
(``service/templates``, ``service/static``); nothing is fetched from elsewhere. They hold no
data: the script asks for an API key, keeps it in the tab's ``sessionStorage`` and calls
``/v1`` with it as a Bearer token, so the dashboard is exactly as protected as the API. The
shell and assets are therefore served without a key, with a Content-Security-Policy that allows
only this origin's scripts, styles, images (and ``blob:`` images for figures fetched with the
key) and connections.

Pages: ``/dashboard/runs`` (filters), ``/dashboard/runs/{id}`` (live curves over server-sent
events, metrics, bundle), ``/dashboard/experiments[/{id}]`` (Table 1, figures, cells),
``/dashboard/models`` (upload an image to predict; queue a batch prediction of a registered
dataset, an unlabelled one's rows listed there by file), ``/dashboard/login``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from service.errors import ApiError

PACKAGE = Path(__file__).resolve().parents[1]
SHELL = PACKAGE / "templates" / "dashboard.html"
ASSETS = {
    "dashboard.js": (PACKAGE / "static" / "dashboard.js", "text/javascript; charset=utf-8"),
    "dashboard.css": (PACKAGE / "static" / "dashboard.css", "text/css; charset=utf-8"),
}
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _shell() -> Response:
    return FileResponse(SHELL, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("")
def dashboard_root() -> Response:
    return RedirectResponse("/dashboard/runs", status_code=307)


@router.get("/login")
def login_page() -> Response:
    return _shell()


@router.get("/runs")
def runs_page() -> Response:
    return _shell()


@router.get("/runs/{run_id}")
def run_page(run_id: str) -> Response:
    return _shell()


@router.get("/experiments")
def experiments_page() -> Response:
    return _shell()


@router.get("/experiments/{experiment_id}")
def experiment_page(experiment_id: str) -> Response:
    return _shell()


@router.get("/models")
def models_page() -> Response:
    return _shell()


@router.get("/static/{name}")
def asset(name: str) -> Response:
    """The dashboard's script and stylesheet (a fixed list: no paths from the request)."""
    if name not in ASSETS:
        raise ApiError(404, f"No such dashboard asset: {name!r}")
    path, media_type = ASSETS[name]
    return FileResponse(path, media_type=media_type, headers=HEADERS)

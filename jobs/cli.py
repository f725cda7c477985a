"""The installed ``resnet`` command: the library's commands (``core.cli``) plus the service's.

Adds ``resnet serve`` (the embedded default: API and worker on SQLite, no Redis) and lets
``resnet predict`` ask a running service (``--server URL --model NAME``) instead of loading a
model file: the library builds the app, and this module hands it the HTTP client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from core.cli import EXIT_FAILED, build_app, fail

__all__ = ["app"]


def predict_remote(
    server: str, model: str, images: list[Path], *, top_k: int, api_key: str | None
) -> list[dict[str, Any]]:
    """One request per image to ``POST {server}/v1/models/{model}/predict`` (stdlib only).

    A refused image is reported with the service's message and the rest still predicted; an
    error that is not about the image (no such model, a bad key, no server) stops here.
    """
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{server.rstrip('/')}/v1/models/{urllib.parse.quote(model, safe='')}/predict"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    results: list[dict[str, Any]] = []
    for path in images:
        try:
            data = path.read_bytes()
        except OSError as exc:
            results.append({"image": str(path), "error": str(exc)})
            continue
        request = urllib.request.Request(
            f"{url}?top_k={top_k}", data=data, method="POST",
            headers={**headers, "Content-Type": "application/octet-stream"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = _service_error(exc)
            if exc.code in (413, 415, 422) and "image" in message.lower():
                results.append({"image": str(path), "error": message})
                continue
            fail(f"{server}: {exc.code} {message}", EXIT_FAILED)
        except (urllib.error.URLError, OSError) as exc:
            fail(f"{server}: {getattr(exc, 'reason', exc)}", EXIT_FAILED)
        results.append({"image": str(path), "predictions": answer["predictions"][0]["labels"]})
    return results


def _service_error(exc: Any) -> str:
    try:
        return str(json.loads(exc.read())["error"]["message"])
    except (ValueError, KeyError, TypeError, OSError):
        return str(exc.reason)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Listen address (default RESNET_HOST or 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default RESNET_PORT or 8000).")] = None,
) -> None:
    """Run the HTTP service and a worker on the embedded default (SQLite, no Redis).

    Applies migrations, prints the URL and (the first time) an admin API key. Settings come
    from RESNET_* variables: set RESNET_DATABASE_URL / RESNET_BROKER_URL for PostgreSQL/Redis.
    """
    from jobs.launcher import serve as run_service
    from jobs.settings import get_settings

    raise typer.Exit(run_service(get_settings(), host=host, port=port))


app = build_app(remote_predictor=predict_remote)
app.command()(serve)

if __name__ == "__main__":  # pragma: no cover
    app()

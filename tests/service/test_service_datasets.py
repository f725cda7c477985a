"""/v1/datasets: registration confined to the data root, uploads streamed under a size limit."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jobs.settings import Settings
from service.app import create_app
from tests.fixtures.servers import free_port


def error_detail(response: Any) -> dict[str, Any]:
    details: list[dict[str, Any]] = response.json()["error"]["details"]
    return details[0]


def uploads_left(settings: Settings) -> list[str]:
    folder = settings.data_dir / "uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def zip_of(folder: Path, *, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def targz_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buffer.getvalue()


def test_register_a_folder_records_classes_and_counts(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    image_folder: Callable[..., Path],
) -> None:
    image_folder(settings.data_dir / "pets" / "train", {"cat": 3, "dog": 2})
    image_folder(settings.data_dir / "pets" / "test", {"cat": 1, "dog": 1})
    response = client.post(
        "/v1/datasets", json={"name": "pets", "kind": "folder", "path": "./pets/"}, headers=admin
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["name"] == "pets" and dataset["kind"] == "folder"
    assert dataset["location"] == "pets" and dataset["source"] == "folder:pets"
    assert dataset["class_names"] == ["cat", "dog"]
    assert dataset["counts"]["train"]["counts"] == {"cat": 3, "dog": 2}
    assert dataset["counts"]["test"]["size"] == 2
    assert dataset["num_images"] == 7
    for ref in ("pets", dataset["id"]):
        assert client.get(f"/v1/datasets/{ref}", headers=admin).json() == dataset
    listed = client.get("/v1/datasets", headers=admin).json()
    assert listed["total"] == 1 and listed["items"] == [dataset]
    assert client.get("/v1/datasets/cats", headers=admin).status_code == 404

    again = client.post(
        "/v1/datasets", json={"name": "pets", "kind": "folder", "path": "pets"}, headers=admin
    )
    assert again.status_code == 409 and error_detail(again)["field"] == "body.name"


def test_paths_outside_the_data_root_are_refused(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    tmp_path: Path,
    image_folder: Callable[..., Path],
) -> None:
    outside = image_folder(tmp_path / "outside", {"a": 2, "b": 2})
    (settings.data_dir / "link").symlink_to(outside, target_is_directory=True)
    nested = image_folder(settings.data_dir / "ok", {"a": 2, "b": 2})
    (nested / "a" / "escape.png").symlink_to(outside / "a" / "0.png")
    for path in ("../outside", "ok/../../outside", str(outside), "~/outside", "link", "link/a"):
        response = client.post(
            "/v1/datasets", json={"name": "x", "kind": "folder", "path": path}, headers=admin
        )
        assert response.status_code == 422, (path, response.text)
        detail = error_detail(response)
        assert (detail["field"], detail["received"]) == ("body.path", path)
        assert str(settings.data_dir) not in response.text  # the server's layout stays private
    # A symlink inside a class folder that points out is refused too.
    response = client.post(
        "/v1/datasets", json={"name": "x", "kind": "folder", "path": "ok"}, headers=admin
    )
    assert response.status_code == 422 and error_detail(response)["field"] == "body.path"
    assert client.get("/v1/datasets", headers=admin).json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "kind": "folder", "path": "missing"}, "body.path"),
        ({"name": "x", "kind": "pickle", "path": "x"}, "body.kind"),
        ({"name": "../x", "kind": "folder", "path": "x"}, "body.name"),
        ({"name": "0" * 32, "kind": "folder", "path": "x"}, "body.name"),
        ({"name": "x", "kind": "folder", "path": ""}, "body.path"),
        ({"name": "x", "kind": "folder"}, "body.path"),
        ({"name": "x", "kind": "synthetic", "path": "lots"}, "body.path"),
        ({"name": "x", "kind": "folder", "path": "x", "extra": 1}, "body.extra"),
    ],
)
def test_bad_registrations_name_the_field(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/datasets", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert error_detail(response)["field"] == field


def test_upload_a_zip_of_class_folders(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    tmp_path: Path,
    image_folder: Callable[..., Path],
) -> None:
    archive = zip_of(image_folder(tmp_path / "src", {"ant": 2, "bee": 3}), prefix="insects/")
    response = client.post(
        "/v1/datasets/upload",
        data={"name": "insects"},
        files={"file": ("insects.zip", archive, "application/zip")},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    dataset = response.json()
    assert dataset["kind"] == "folder" and dataset["class_names"] == ["ant", "bee"]
    assert dataset["counts"]["train"]["counts"] == {"ant": 2, "bee": 3}
    [upload_id] = uploads_left(settings)
    assert dataset["location"] == f"uploads/{upload_id}/data"
    folder = settings.data_dir / "uploads" / upload_id
    assert sorted(p.name for p in folder.iterdir()) == [".owner", "data"]  # the archive is gone
    run = client.post(
        "/v1/runs", json={"architecture": "resnet20", "dataset": "insects"}, headers=admin
    )
    assert run.json()["config"]["data"] == f"folder:uploads/{upload_id}/data"


def test_upload_a_tar_gz(
    client: TestClient,
    admin: dict[str, str],
    tmp_path: Path,
    image_folder: Callable[..., Path],
) -> None:
    archive = targz_of(image_folder(tmp_path / "shapes", {"round": 2, "square": 2}))
    response = client.post(
        "/v1/datasets/upload",
        files={"file": ("shapes.tar.gz", archive)},
        data={"name": "shapes"},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    assert response.json()["class_names"] == ["round", "square"]


def multipart(name: str, filename: str, payload: bytes) -> tuple[bytes, str]:
    boundary = "testboundary1234"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\n{name}\r\n'
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_upload_over_the_limit_is_413_and_leaves_nothing(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    body, content_type = multipart("big", "big.zip", os.urandom(settings.max_upload_bytes + 1))
    response = client.post(
        "/v1/datasets/upload", content=body, headers={**admin, "Content-Type": content_type}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert uploads_left(settings) == []


def test_chunked_upload_without_content_length_is_413_and_leaves_nothing(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    body, content_type = multipart("big", "big.zip", os.urandom(settings.max_upload_bytes + 1))

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    request = client.build_request(
        "POST",
        "/v1/datasets/upload",
        content=chunks(),
        headers={**admin, "Content-Type": content_type},
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = client.send(request)
    assert response.status_code == 413
    assert uploads_left(settings) == []


@pytest.mark.parametrize(
    ("files", "data", "field"),
    [
        ({"file": ("x.zip", b"not a zip")}, {"name": "x"}, "body.file"),
        ({"file": ("x.rar", b"rar")}, {"name": "x"}, "body.file"),
        ({"file": ("x.zip", b"")}, {}, "body.name"),
        ({"file": ("x.zip", b"")}, {"name": "a/b"}, "body.name"),
        ({"other": ("x.zip", b"")}, {"name": "x"}, "body.other"),
        (None, {"name": "x"}, "body.file"),
        ({"file": ("x.zip", b"")}, {"name": "x", "kind": "coco"}, "body.kind"),
    ],
)
def test_bad_uploads_are_422_and_leave_nothing(
    client: TestClient,
    admin: dict[str, str],
    settings: Settings,
    files: Any,
    data: dict[str, str],
    field: str,
) -> None:
    if files is None:  # multipart with only a text field
        files = {"name": (None, data.pop("name"))}
    response = client.post("/v1/datasets/upload", files=files, data=data, headers=admin)
    assert response.status_code == 422, response.text
    assert error_detail(response)["field"] == field
    assert uploads_left(settings) == []


def unsafe_tar(kind: str, limit: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        png = io.BytesIO()
        from PIL import Image

        Image.new("RGB", (4, 4)).save(png, format="PNG")
        for name in ("d/a/0.png", "d/b/0.png"):
            info = tarfile.TarInfo(name)
            info.size = len(png.getvalue())
            tar.addfile(info, io.BytesIO(png.getvalue()))
        if kind == "symlink":
            info = tarfile.TarInfo("d/a/1.png")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tar.addfile(info)
        elif kind == "escape":
            info = tarfile.TarInfo("../../evil.png")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"bad"))
        elif kind == "bomb":
            info = tarfile.TarInfo("d/a/huge.png")
            info.size = 10 * limit  # claimed; the data never comes
            tar.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["symlink", "escape", "bomb"])
def test_unsafe_archives_are_refused_and_leave_nothing(
    client: TestClient, admin: dict[str, str], settings: Settings, tmp_path: Path, kind: str
) -> None:
    response = client.post(
        "/v1/datasets/upload",
        data={"name": "evil"},
        files={"file": ("evil.tar", unsafe_tar(kind, settings.max_upload_bytes))},
        headers=admin,
    )
    assert response.status_code == 422, response.text
    assert error_detail(response)["field"] == "body.file"
    assert uploads_left(settings) == []
    assert not (settings.data_dir.parent / "evil.png").exists()


def test_upload_needs_multipart(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post("/v1/datasets/upload", json={"name": "x"}, headers=admin)
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_upload_to_a_real_server_is_cut_off_at_the_limit(settings: Settings, admin: dict) -> None:
    """Under uvicorn, a chunked body over the limit gets its 413 before the client is done."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        body, content_type = multipart("big", "big.zip", b"\0" * (20 * settings.max_upload_bytes))
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                (
                    "POST /v1/datasets/upload HTTP/1.1\r\nHost: test\r\n"
                    f"Authorization: {admin['Authorization']}\r\n"
                    f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
                ).encode()
            )
            sock.settimeout(0.01)
            reply = b""
            for i in range(0, len(body), 8192):
                chunk = body[i : i + 8192]
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    sent += len(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break
                try:
                    reply += sock.recv(65536)
                except (TimeoutError, BlockingIOError):
                    continue
                if reply:
                    break
            sock.settimeout(5)
            while b"\r\n\r\n" not in reply:
                more = sock.recv(65536)
                if not more:
                    break
                reply += more
        assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
        assert sent < len(body) / 2  # refused long before the client finished
        assert uploads_left(settings) == []
    finally:
        server.should_exit = True
        thread.join(timeout=10)

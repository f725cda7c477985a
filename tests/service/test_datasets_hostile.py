"""Issue 9, the dataset half, over HTTP against a real API process (uvicorn, its own HOME).

Archives bombs and corrupt archives, nested archives, pixels loaded in the API, concurrent
registrations, deletion, uploads' owners and class names: each finding is reproduced against
``uvicorn service.app:create_app --factory`` in a subprocess, whose memory is read from
``/proc/<pid>/status`` and whose home folder is a temporary one (so ``~/.cache`` can be checked).
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head
from jobs.records import repository as records
from tests.fixtures.servers import free_port
from tests.service.conftest import write_image_folder

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
UPLOAD_LIMIT = 4 * 1024**2


@dataclass
class Api:
    url: str
    pid: int
    home: Path
    state: Path
    data: Path
    keys: dict[str, dict[str, str]]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def rss_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")

    def uploads(self) -> list[str]:
        folder = self.data / "uploads"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    base = tmp_path_factory.mktemp("hostile")
    state, data, home = base / "state", base / "data", base / "home"
    for folder in (state, data, home):
        folder.mkdir()
    db_url = f"sqlite:///{state / 'resnet.db'}"
    upgrade_to_head(db_url)
    engine = make_engine(db_url)
    keys = {}
    with session_scope(make_sessionmaker(engine)) as session:
        for name, scopes in (("admin", ["admin"]), ("alice", ["read", "train"]),
                             ("bob", ["read", "train"])):  # fmt: skip
            _, secret = records.create_api_key(session, name, scopes)
            keys[name] = {"Authorization": f"Bearer {secret}"}
    engine.dispose()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_")}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        RESNET_STATE_DIR=str(state),
        RESNET_DATA_ROOT=str(data),
        RESNET_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "service.app:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the API did not start: {proc.stderr.read()!r}"[-3000:])
        time.sleep(0.2)
    try:
        yield Api(url, proc.pid, home, state, data, keys)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 20, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buffer.getvalue()


def patch_zip(archive: bytes, *, method: int | None = None, flags: int = 0) -> bytes:
    """Set every member's compression method, or OR in general-purpose flags, in both the
    local headers and the central directory (as another tool would have written them)."""
    out = bytearray(archive)
    for signature, flag_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = out.find(signature)
        while at >= 0:
            if method is not None:
                out[at + method_at : at + method_at + 2] = method.to_bytes(2, "little")
            old = int.from_bytes(out[at + flag_at : at + flag_at + 2], "little")
            out[at + flag_at : at + flag_at + 2] = (old | flags).to_bytes(2, "little")
            at = out.find(signature, at + 4)
    return bytes(out)


def upload(
    client: httpx.Client, key: dict[str, str], name: str, filename: str, payload: bytes
) -> httpx.Response:
    return client.post(
        "/v1/datasets/upload",
        data={"name": name},
        files={"file": (filename, payload, "application/octet-stream")},
        headers=key,
    )


def classes(**counts: int) -> dict[str, bytes]:
    image = png()
    return {f"{c}/{i}.png": image for c, n in counts.items() for i in range(n)}


def bad_archives() -> dict[str, bytes]:
    """Archives that made main answer 500 (or, for the tar.gz's CRC, accept them)."""
    good = classes(cat=2, dog=2)
    deflated = zip_bytes(good, zipfile.ZIP_DEFLATED)
    corrupt = bytearray(deflated)
    data_at = 30 + len("cat/0.png")  # the first member's compressed bytes
    corrupt[data_at : data_at + 8] = b"\xff" * 8
    xz = bytearray(lzma.compress(tar_bytes(good, mode="w")))
    xz[len(xz) // 2 : len(xz) // 2 + 16] = b"\x00" * 16
    targz = bytearray(tar_bytes(good))
    targz[-8:-4] = bytes(b ^ 0xFF for b in targz[-8:-4])  # the gzip trailer's CRC32
    return {
        "method9.zip": patch_zip(deflated, method=9),
        "method99.zip": patch_zip(deflated, method=99),
        "encrypted.zip": patch_zip(zip_bytes(good), flags=0x1),
        "corrupt-deflate.zip": bytes(corrupt),
        "corrupt-xz.tar": bytes(xz),
        "bad-crc.tar.gz": bytes(targz),
    }


def test_bad_archives_are_422_naming_the_archive_and_leave_nothing(api: Api) -> None:
    with api.client() as client:
        for filename, payload in bad_archives().items():
            response = upload(client, api.keys["alice"], "bad", filename, payload)
            assert response.status_code == 422, (filename, response.text)
            detail = response.json()["error"]["details"][0]
            assert detail["field"] == "body.file", filename
            assert filename in detail["message"], (filename, detail)
            assert api.uploads() == [], filename
        assert client.get("/v1/datasets/bad", headers=api.keys["alice"]).status_code == 404
        # The same archives placed in the data root and registered by path.
        (api.data / "bad").mkdir()
        for filename, payload in bad_archives().items():
            (api.data / "bad" / filename).write_bytes(payload)
            body = {"name": "bad", "kind": "folder", "path": f"bad/{filename}"}
            response = client.post("/v1/datasets", json=body, headers=api.keys["alice"])
            assert response.status_code == 422, (filename, response.text)
            detail = response.json()["error"]["details"][0]
            assert detail["field"] == "body.path" and filename in detail["message"], detail
        extracted = api.state / "extracted"
        assert not extracted.exists() or list(extracted.iterdir()) == []


def test_an_upload_may_expand_only_relative_to_its_own_size(api: Api) -> None:
    """1 KB of zip must not become megabytes; 20,000 empty members must not become files."""
    padded = zip_bytes({**classes(cat=1, dog=1), "cat/pad.png": b"\0" * (3 << 20)},
                       zipfile.ZIP_DEFLATED)  # fmt: skip
    assert len(padded) < 8192
    members = {**classes(cat=1, dog=1), **{f"dog/empty{i}.png": b"" for i in range(20_000)}}
    many = tar_bytes(members)
    assert len(many) < UPLOAD_LIMIT
    with api.client() as client:
        for filename, payload, says in (
            ("padded.zip", padded, "expands to more than"),
            ("many.tar.gz", many, "files and folders"),
        ):
            started = time.monotonic()
            response = upload(client, api.keys["alice"], "amplified", filename, payload)
            assert response.status_code == 422, (filename, response.text)
            message = response.json()["error"]["details"][0]["message"]
            assert filename in message and says in message, message
            assert time.monotonic() - started < 10
            assert api.uploads() == []


def test_a_nested_archive_is_extracted_under_the_state_folder_and_freed(api: Api) -> None:
    inner = tar_bytes(classes(a=2, b=2))
    outer = zip_bytes({**classes(cat=2, dog=2), "cat/inner.tar.gz": inner})
    with api.client() as client:
        response = upload(client, api.keys["admin"], "outer", "outer.zip", outer)
        assert response.status_code == 201, response.text
        location = response.json()["location"]
        nested = client.post(
            "/v1/datasets",
            json={"name": "nested", "kind": "folder", "path": f"{location}/cat/inner.tar.gz"},
            headers=api.keys["admin"],
        )
        assert nested.status_code == 201, nested.text
        assert nested.json()["counts"]["train"]["counts"] == {"a": 2, "b": 2}
        assert not (api.home / ".cache").exists()  # nothing outside the roots
        extracted = api.state / "extracted"
        assert len(list(extracted.iterdir())) == 1
        assert client.delete("/v1/datasets/nested", headers=api.keys["admin"]).status_code == 204
        assert list(extracted.iterdir()) == []
        assert client.delete("/v1/datasets/outer", headers=api.keys["admin"]).status_code == 204
        assert api.uploads() == []


def test_registering_reads_no_pixels_in_the_api(api: Api) -> None:
    """An IDX file that declares 327 MB and 20,000 synthetic 32x32x3 images: the API's peak
    memory grows by less than 64 MiB (main grew by hundreds of MB for each)."""
    folder = api.data / "bomb-idx"
    folder.mkdir()
    n, side = 20_000, 128
    header = b"\0\0\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (n, side, side))
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(header)
        zeros = bytes(side * side * 1000)
        for _ in range(n // 1000):
            f.write(zeros)
    labels = (np.arange(n) % 10).astype(np.uint8)
    (folder / "train-labels-idx1-ubyte").write_bytes(
        b"\0\0\x08\x01" + n.to_bytes(4, "big") + labels.tobytes()
    )
    with api.client() as client:
        before = api.rss_kib("VmHWM")
        for body in (
            {"name": "idx-bomb", "kind": "idx", "path": "bomb-idx"},
            {"name": "synthetic-bomb", "kind": "synthetic", "path": "20000:32x32x3:10"},
        ):
            response = client.post("/v1/datasets", json=body, headers=api.keys["alice"])
            assert response.status_code == 201, response.text
        growth_mib = (api.rss_kib("VmHWM") - before) / 1024
        assert growth_mib < 64, f"the API's peak memory grew by {growth_mib:.0f} MiB"
        idx = client.get("/v1/datasets/idx-bomb", headers=api.keys["alice"]).json()
        assert idx["counts"]["train"] == {
            "size": n,
            "counts": {str(i): n // 10 for i in range(10)},
            "image_shape": [side, side, 1],
        }
        synthetic = client.get("/v1/datasets/synthetic-bomb", headers=api.keys["alice"]).json()
        assert synthetic["num_images"] == 20_000
        assert synthetic["counts"]["train"]["counts"]["class_3"] == 2_000


def test_one_name_registered_eight_times_at_once_gives_one_201(api: Api) -> None:
    write_image_folder(api.data / "race", {"cat": 2, "dog": 2})
    write_image_folder(api.data / "race-other", {"x": 2, "y": 2})
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def register(i: int) -> None:
        with api.client() as client:
            barrier.wait()
            path = "race" if i % 2 else "race-other"
            response = client.post(
                "/v1/datasets",
                json={"name": "raced", "kind": "folder", "path": path},
                headers=api.keys["alice"],
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201] + [409] * 7, statuses
    with api.client() as client:
        kept = client.get("/v1/datasets/raced", headers=api.keys["alice"]).json()
        run = client.post(
            "/v1/runs", json={"architecture": "resnet20", "dataset": "raced"},
            headers=api.keys["alice"],
        )  # fmt: skip
        assert run.status_code == 202, run.text
        # The name stays with the dataset the queued run points to: no silent replacement.
        again = client.post(
            "/v1/datasets",
            json={"name": "raced", "kind": "folder", "path": "race"},
            headers=api.keys["alice"],
        )
        assert again.status_code == 409
        assert client.get("/v1/datasets/raced", headers=api.keys["alice"]).json() == kept


def test_delete_is_refused_while_a_job_uses_the_dataset_and_frees_an_upload(api: Api) -> None:
    with api.client() as client:
        response = upload(client, api.keys["alice"], "doomed", "doomed.zip",
                          zip_bytes(classes(cat=2, dog=2)))  # fmt: skip
        assert response.status_code == 201, response.text
        [upload_id] = api.uploads()
        run = client.post(
            "/v1/runs", json={"architecture": "resnet20", "dataset": "doomed"},
            headers=api.keys["alice"],
        )  # fmt: skip
        assert run.status_code == 202, run.text
        refused = client.delete("/v1/datasets/doomed", headers=api.keys["alice"])
        assert refused.status_code == 409 and run.json()["id"] in refused.text
        assert api.uploads() == [upload_id]
        cancel = client.post(f"/v1/runs/{run.json()['id']}/cancel", headers=api.keys["alice"])
        assert cancel.status_code in (200, 202), cancel.text
        assert client.delete("/v1/datasets/doomed", headers=api.keys["alice"]).status_code == 204
        assert api.uploads() == []
        assert client.get("/v1/datasets/doomed", headers=api.keys["alice"]).status_code == 404
        assert client.delete("/v1/datasets/doomed", headers=api.keys["alice"]).status_code == 404
        # A folder the operator placed by hand stays when its dataset goes.
        write_image_folder(api.data / "by-hand", {"cat": 1, "dog": 1})
        body = {"name": "by-hand", "kind": "folder", "path": "by-hand"}
        assert client.post("/v1/datasets", json=body, headers=api.keys["alice"]).status_code == 201
        # Another train key may not delete it (finding 11): it is its registering key's.
        others = client.delete("/v1/datasets/by-hand", headers=api.keys["bob"])
        assert others.status_code == 403 and others.json()["error"]["code"] == "not_owner"
        assert client.delete("/v1/datasets/by-hand", headers=api.keys["alice"]).status_code == 204
        assert (api.data / "by-hand" / "cat" / "0.png").is_file()


def test_an_upload_belongs_to_the_key_that_sent_it(api: Api) -> None:
    with api.client() as client:
        response = upload(client, api.keys["alice"], "alices", "alices.zip",
                          zip_bytes(classes(cat=2, dog=2)))  # fmt: skip
        assert response.status_code == 201, response.text
        location = response.json()["location"]
        body: dict[str, Any] = {"name": "stolen", "kind": "folder", "path": location}
        stolen = client.post("/v1/datasets", json=body, headers=api.keys["bob"])
        assert stolen.status_code == 403, stolen.text
        assert client.delete("/v1/datasets/alices", headers=api.keys["bob"]).status_code == 403
        for everyones in (".", "uploads", "./uploads/"):  # every key's uploads at once
            whole = {"name": "everything", "kind": "folder", "path": everyones}
            refused = client.post("/v1/datasets", json=whole, headers=api.keys["bob"])
            assert refused.status_code == 403, (everyones, refused.text)
        assert client.post("/v1/datasets", json=body, headers=api.keys["alice"]).status_code == 201
        body["name"] = "by-admin"
        assert client.post("/v1/datasets", json=body, headers=api.keys["admin"]).status_code == 201
        for name in ("stolen", "by-admin", "alices"):
            assert (
                client.delete(f"/v1/datasets/{name}", headers=api.keys["admin"]).status_code == 204
            )
        assert api.uploads() == []  # freed once no dataset used the upload


@pytest.mark.parametrize("bad", ["\tcmd", "=1+2\r", "a\nb", "x" * 200, "rtl\u202egpj"])
def test_class_names_from_folders_are_validated(api: Api, bad: str) -> None:
    archive = zip_bytes({f"{bad}/0.png": png(), "ok/0.png": png()})
    with api.client() as client:
        response = upload(client, api.keys["alice"], "names", "names.zip", archive)
        assert response.status_code == 422, response.text
        detail = response.json()["error"]["details"][0]
        assert detail["field"] == "body.file" and "class name" in detail["message"]
        assert api.uploads() == []


def test_symlinks_in_the_data_root_do_not_leak_outside_names(api: Api, tmp_path: Path) -> None:
    outside = write_image_folder(tmp_path / "secret-place", {"cat": 1, "dog": 1})
    (api.data / "ops").mkdir()
    (api.data / "ops" / "cat").mkdir()
    (api.data / "ops" / "cat" / "0.png").symlink_to(outside / "cat" / "0.png")
    (api.data / "ops" / "dog").symlink_to(outside / "dog", target_is_directory=True)
    (api.data / "loop").symlink_to(api.data / "loop")
    (api.data / "dangling").symlink_to(tmp_path / "secret-place" / "gone")
    with api.client() as client:
        for path in ("ops", "loop", "dangling", "loop/x"):
            body = {"name": "leak", "kind": "folder", "path": path}
            response = client.post("/v1/datasets", json=body, headers=api.keys["alice"])
            assert response.status_code == 422, (path, response.text)
            assert "secret-place" not in response.text and str(tmp_path) not in response.text
            assert str(api.data) not in response.text

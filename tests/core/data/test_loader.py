"""load_dataset's source strings, root confinement and downloads."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from core.data import DataError, load_dataset
from core.data.arrays import CIFAR
from core.data.files import download
from tests.core.data.conftest import write_class_folders
from tests.core.data.test_arrays import write_cifar10, write_idx


def test_unknown_kind_lists_kinds() -> None:
    with pytest.raises(ValueError, match=r"Unknown data source kind: 'pascal'.*cifar10.*synthetic"):
        load_dataset("pascal:/data")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs a path"):
        load_dataset("folder")
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


@pytest.mark.parametrize("path", ["../outside", "d/../../outside", "/etc", "~/x", "link", "link/a"])
def test_paths_escaping_root_are_refused(tmp_path: Path, path: str) -> None:
    root = tmp_path / "root"
    write_class_folders(root / "d", {"a": 1})
    write_class_folders(tmp_path / "outside", {"a": 1})
    os.symlink(tmp_path / "outside", root / "link")
    with pytest.raises(ValueError, match=r"root|'\.\.'"):
        load_dataset(f"folder:{path}", root=root, cache_dir=tmp_path / "c")


def test_path_inside_root(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "root" / "d", {"a": 2})
    ds = load_dataset("folder:d", root=tmp_path / "root", cache_dir=tmp_path / "c")
    assert len(ds.splits["train"]) == 2


def test_fashion_mnist_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_idx(tmp_path / "fm", gz=True)
    monkeypatch.setitem(
        __import__("core.data.loader", fromlist=["ALIASES"]).ALIASES,
        "fashion_mnist",
        ("idx", str(tmp_path / "fm")),
    )
    ds = load_dataset("fashion_mnist")
    assert ds.kind == "idx" and ds.class_names[0] == "T-shirt/top"
    # An explicit path with the alias's kind also names Fashion-MNIST's classes.
    assert load_dataset(f"fashion_mnist:{tmp_path / 'fm'}").class_names[-1] == "Ankle boot"


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar10_download_from_file_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "served" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    write_cifar10(tarball)
    monkeypatch.setitem(
        CIFAR, "cifar10", replace(CIFAR["cifar10"], url=tarball.as_uri(), md5=_md5(tarball))
    )
    ds = load_dataset("cifar10", cache_dir=tmp_path / "cache")
    assert len(ds.splits["train"]) == 20
    assert (tmp_path / "cache" / "cifar-10-python.tar.gz").is_file()
    tarball.unlink()  # the cached copy is reused
    assert len(load_dataset("cifar10", cache_dir=tmp_path / "cache").splits["test"]) == 4


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    served = tmp_path / "www"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_download_over_http_checks_the_checksum(
    tmp_path: Path, http_root: tuple[str, Path]
) -> None:
    base, served = http_root
    write_cifar10(served / "c.tar.gz")
    dest = tmp_path / "cache" / "c.tar.gz"
    with pytest.raises(DataError, match="checksum mismatch"):
        download(f"{base}/c.tar.gz", dest, md5="0" * 32)
    assert not dest.exists() and list(dest.parent.iterdir()) == []  # no partial file left
    assert download(f"{base}/c.tar.gz", dest, md5=_md5(served / "c.tar.gz")) == dest
    assert dest.read_bytes() == (served / "c.tar.gz").read_bytes()


def test_download_failure_is_a_clear_error(tmp_path: Path, http_root: tuple[str, Path]) -> None:
    base, _ = http_root
    with pytest.raises(DataError, match=r"could not download.*offline"):
        download(f"{base}/missing.tar.gz", tmp_path / "x.tar.gz", md5="0" * 32)
    with pytest.raises(DataError, match="could not download"):
        download("http://127.0.0.1:9/nothing", tmp_path / "y.tar.gz", md5="0" * 32, timeout=2)


def test_channels_must_be_1_or_3() -> None:
    with pytest.raises(ValueError, match="channels"):
        load_dataset("synthetic:4:4x4x3:2", channels=2)

"""The bounded extraction routine and describing sources without pixels."""

from __future__ import annotations

import bz2
import gzip
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.data import DataError, load_dataset
from core.data.archives import ArchiveLimits, extract_cached, extract_into, extracted_folder
from core.data.describe import describe_source
from tests.core.data.conftest import write_class_folders


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_extracts_within_the_target_and_leaves_no_temporary_folder(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar({"top/cat/0.png": b"x" * 10, "top/dog/0.png": b"y" * 10}))
    target = extract_into(archive, tmp_path / "out" / "a")
    assert (target / "top" / "cat" / "0.png").read_bytes() == b"x" * 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a"]


def test_the_byte_budget_is_relative_to_the_archives_size(tmp_path: Path) -> None:
    archive = tmp_path / "zeros.tar.gz"
    archive.write_bytes(_tar({"a/0.png": bytes(1 << 20)}))  # 1 MiB of zeros: ~1 KB
    assert archive.stat().st_size < 4096
    with pytest.raises(DataError, match=r"zeros\.tar\.gz: expands to more than"):
        extract_into(archive, tmp_path / "out", ArchiveLimits(max_ratio=20))
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == [archive]
    # The absolute cap holds whatever the ratio.
    with pytest.raises(DataError, match="expands to more than 1000 bytes"):
        extract_into(archive, tmp_path / "out", ArchiveLimits(max_ratio=1e6, max_total_bytes=1000))
    assert extract_into(archive, tmp_path / "out", ArchiveLimits(max_ratio=2000)).is_dir()


def test_members_and_folders_count_against_the_inode_cap(tmp_path: Path) -> None:
    empty = {f"a/{i}.png": b"" for i in range(2000)}
    archive = tmp_path / "many.tar.gz"
    archive.write_bytes(_tar(empty))
    with pytest.raises(DataError, match="files and folders"):
        extract_into(archive, tmp_path / "out", ArchiveLimits(min_bytes_per_member=64))
    deep = tmp_path / "deep.zip"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("/".join(["d"] * 40) + "/x.png", b"x")
    with pytest.raises(DataError, match="files and folders"):
        extract_into(deep, tmp_path / "out2", ArchiveLimits(max_members=20))
    # A zip's declared entry count is refused before its central directory is parsed.
    wide = tmp_path / "wide.zip"
    with zipfile.ZipFile(wide, "w") as zf:
        for i in range(300):
            zf.writestr(f"{i}", b"")
    with pytest.raises(DataError, match="300 members"):
        extract_into(wide, tmp_path / "out3", ArchiveLimits(max_members=100))


@pytest.mark.parametrize("compress", ["gz", "bz2"])
def test_a_corrupt_compressed_trailer_is_refused(tmp_path: Path, compress: str) -> None:
    payload = _tar({"a/0.png": b"abc" * 100}, mode="w")
    if compress == "gz":
        data = bytearray(gzip.compress(payload))
        data[-8] ^= 0xFF  # the CRC32, which tarfile alone never reads
    else:
        data = bytearray(bz2.compress(payload))
        data[-6] ^= 0xFF  # the stream's combined CRC
    archive = tmp_path / f"bad.tar.{compress}"
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"bad\.tar\.\w+: not a readable archive"):
        extract_into(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_links_devices_and_escapes_are_refused(tmp_path: Path) -> None:
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo("a/x.png")
            info.type, info.linkname = kind, "/etc/passwd"
            tar.addfile(info)
        archive = tmp_path / "link.tar"
        archive.write_bytes(buffer.getvalue())
        with pytest.raises(DataError, match="link or special file"):
            extract_into(archive, tmp_path / "out")
    for name in ("/abs.png", "a/../../up.png", "c:/x.png"):
        archive = tmp_path / "escape.tar"
        archive.write_bytes(_tar({name: b"x"}, mode="w"))
        with pytest.raises(DataError, match="escape"):
            extract_into(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["escape.tar", "link.tar"]


def test_an_extraction_is_named_by_the_archive_and_reused(tmp_path: Path) -> None:
    archive = tmp_path / "data.tar.gz"
    archive.write_bytes(_tar({"a/0.png": b"1", "b/0.png": b"2"}))
    first = extract_cached(archive, tmp_path / "x")
    assert first == extracted_folder(archive, tmp_path / "x") and first.name.startswith("data-")
    assert extract_cached(archive, tmp_path / "x") == first


def test_a_folder_is_described_as_it_is_loaded_without_reading_pixels(tmp_path: Path) -> None:
    write_class_folders(tmp_path / "pets" / "train", {"cat": 3, "dog": 2})
    write_class_folders(tmp_path / "pets" / "test", {"cat": 1, "dog": 1})
    (tmp_path / "pets" / "train" / "cat" / "broken.png").write_bytes(b"not an image")
    described = describe_source("folder:pets", root=tmp_path)
    loaded = load_dataset("folder:pets", root=tmp_path)
    assert described.class_names == loaded.class_names
    assert described.splits["test"].counts == loaded.splits["test"].counts()
    # The listing counts the broken file that loading skips: the worker reports it by name.
    assert described.splits["train"].counts == {"cat": 4, "dog": 2}
    assert described.num_images == 8


def test_an_archive_is_described_from_a_bounded_extraction_in_extract_dir(tmp_path: Path) -> None:
    archive = tmp_path / "root" / "pets.tar.gz"
    archive.parent.mkdir()
    write_class_folders(tmp_path / "src", {"cat": 2, "dog": 1})
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src", arcname="pets")
    described = describe_source(
        "folder:pets.tar.gz", root=tmp_path / "root", extract_dir=tmp_path / "extracted"
    )
    assert described.splits["train"].counts == {"cat": 2, "dog": 1}
    assert [p.name for p in (tmp_path / "extracted").iterdir()] == [
        extracted_folder(archive, tmp_path / "extracted").name
    ]


def test_idx_and_synthetic_are_described_from_headers_and_specs(tmp_path: Path) -> None:
    folder = tmp_path / "digits"
    folder.mkdir()
    n = 1000
    # Declares 1000 28x28 images but holds none: describing reads only the header.
    (folder / "train-images-idx3-ubyte").write_bytes(
        b"\0\0\x08\x03" + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
    )
    labels = (np.arange(n) % 4).astype(np.uint8)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(b"\0\0\x08\x01" + n.to_bytes(4, "big") + labels.tobytes())
    described = describe_source("idx:digits", root=tmp_path)
    assert described.class_names == [str(i) for i in range(10)]
    assert described.splits["train"].size == n
    assert (
        described.splits["train"].counts["3"] == 250 and described.splits["train"].counts["9"] == 0
    )
    assert described.splits["train"].image_shape == [28, 28, 1]
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\0\0\x08\x01" + b"\0\0\x03\xe8" + b"\0" * 10)
    )
    with pytest.raises(DataError, match="truncated"):
        describe_source("idx:digits", root=tmp_path)

    synthetic = describe_source("synthetic:103:8x8x3:10")
    loaded = load_dataset("synthetic:103:8x8x3:10")
    assert synthetic.counts()["train"]["counts"] == loaded.splits["train"].counts()


@pytest.mark.parametrize("bad", ["\tcmd", "a\rb", "x" * 129, " padded", "bidi\u202e"])
def test_class_folder_names_are_validated(tmp_path: Path, bad: str) -> None:
    write_class_folders(tmp_path / "d", {"ok": 1, bad: 1})
    for load in (describe_source, load_dataset):
        with pytest.raises(DataError, match="class name"):
            load("folder:d", root=tmp_path)  # type: ignore[operator]


def test_cifar_is_described_from_its_members_and_meta(tmp_path: Path) -> None:
    from tests.core.data.test_arrays import write_cifar10

    write_cifar10(tmp_path / "cifar-10-python.tar.gz")
    described = describe_source("cifar10:cifar-10-python.tar.gz", root=tmp_path)
    loaded = load_dataset("cifar10:cifar-10-python.tar.gz", root=tmp_path)
    assert described.class_names == loaded.class_names
    # The format's split sizes, not the tiny test file's: no batch is unpickled but the meta.
    assert described.splits["train"].size == 50_000 and described.splits["test"].size == 10_000
    (tmp_path / "broken.tar.gz").write_bytes(_tar({"cifar-10-batches-py/data_batch_1": b"x"}))
    with pytest.raises(DataError, match="missing"):
        describe_source("cifar10:broken.tar.gz", root=tmp_path)


def test_imagenet_is_described_as_it_is_loaded(tmp_path: Path) -> None:
    from tests.core.data.test_folders import _imagenet

    _imagenet(tmp_path / "ilsvrc")
    (tmp_path / "ilsvrc" / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n01443537 1 2 3 4\n"
        "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000003,n01443537 1 2 3 4\n"
    )
    described = describe_source("imagenet:ilsvrc", root=tmp_path)
    loaded = load_dataset("imagenet:ilsvrc", root=tmp_path)
    assert described.class_names == loaded.class_names
    for split in ("train", "test"):
        assert described.splits[split].counts == loaded.splits[split].counts()


def test_a_path_too_long_for_the_file_system_is_a_data_error(tmp_path: Path) -> None:
    """ENAMETOOLONG was a 500 from POST /v1/datasets (found by the schemathesis run)."""
    from core.data.loader import resolve_source_path

    with pytest.raises(DataError, match="cannot be opened") as caught:
        resolve_source_path("0" * 1000, tmp_path, must_exist=True)
    assert len(str(caught.value)) < 300

"""Unlabelled images (``images:PATH``): listing a folder without class folders, decoding it file
by file with bad files reported by name, archives and the data root's confinement."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.data import DataError
from core.data.describe import describe_source
from core.data.unlabelled import (
    MAX_IMAGE_FILE_BYTES,
    NOT_AN_IMAGE,
    decode_chunks,
    list_unlabelled,
    open_unlabelled,
    read_image,
)
from core.images import ImageDecodeError, decode_image
from tests.core.data.conftest import colour_image, encode
from tests.fixtures.trained import CIFAR_JPEGS

REAL_JPEG = CIFAR_JPEGS / "bird" / "0000.jpg"


def write_photos(root: Path) -> Path:
    """A folder as a user has one: real images at two depths, a corrupt JPEG, a text file, an
    empty PNG, and hidden files and folders."""
    root.mkdir(parents=True)
    shutil.copy(REAL_JPEG, root / "b.jpg")
    (root / "2024" / "05").mkdir(parents=True)
    (root / "2024" / "05" / "a.png").write_bytes(encode(colour_image(1, (12, 10)), "PNG"))
    (root / "2024" / "c.JPEG").write_bytes(encode(colour_image(2, (40, 30)), "JPEG"))
    (root / "corrupt.jpg").write_bytes(REAL_JPEG.read_bytes()[:300])  # truncated mid-scan
    (root / "notes.txt").write_text("not a picture")
    (root / "empty.png").write_bytes(b"")
    (root / ".DS_Store").write_bytes(b"\0\1")
    (root / ".thumbs").mkdir()
    (root / ".thumbs" / "x.jpg").write_bytes(REAL_JPEG.read_bytes())
    return root


NAMES = ["2024/05/a.png", "2024/c.JPEG", "b.jpg", "corrupt.jpg", "empty.png", "notes.txt"]


def test_every_visible_file_is_listed_by_its_relative_path_sorted(tmp_path: Path) -> None:
    listing = list_unlabelled(write_photos(tmp_path / "photos"))
    assert listing.names == NAMES
    assert [p.relative_to(listing.root).as_posix() for p in listing.paths] == NAMES
    assert listing.image_files == 5 and len(listing) == 6  # notes.txt is not named as an image


def test_decoding_reports_each_bad_file_and_keeps_the_rest(tmp_path: Path) -> None:
    listing = list_unlabelled(write_photos(tmp_path / "photos"))
    chunks = list(decode_chunks(listing, channels=3, size=4))
    assert [len(c.names) for c in chunks] == [4, 2]
    names = [n for c in chunks for n in c.names]
    images = dict(zip(names, [i for c in chunks for i in c.images], strict=True))
    errors = dict(zip(names, [e for c in chunks for e in c.errors], strict=True))
    assert names == NAMES
    assert {n for n, e in errors.items() if e} == {"corrupt.jpg", "empty.png", "notes.txt"}
    assert errors["corrupt.jpg"].startswith("corrupt or truncated image")
    assert errors["empty.png"] == "empty file"
    assert errors["notes.txt"] == NOT_AN_IMAGE
    for name in ("corrupt.jpg", "empty.png", "notes.txt"):
        assert images[name] is None
    # The readable ones are exactly what the predictor's decoder makes of the same bytes.
    for name in ("2024/05/a.png", "2024/c.JPEG", "b.jpg"):
        want = decode_image((listing.root / name).read_bytes(), channels=3)
        np.testing.assert_array_equal(images[name], want)
    assert images["2024/05/a.png"].shape == (12, 10, 3)
    gray = next(decode_chunks(listing, channels=1, size=1)).images[0]
    assert gray is not None and gray.shape == (12, 10, 1)


def test_a_file_over_the_size_limit_is_reported_unread(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    with big.open("wb") as f:  # sparse: no disk used
        f.truncate(MAX_IMAGE_FILE_BYTES + 1)
    with pytest.raises(ImageDecodeError, match="bytes is over"):
        read_image(big)


def test_a_folder_without_image_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        list_unlabelled(tmp_path / "empty")
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "readme.txt").write_text("hello")
    (tmp_path / "text" / ".hidden.jpg").write_bytes(REAL_JPEG.read_bytes())
    with pytest.raises(DataError, match="no image files"):
        list_unlabelled(tmp_path / "text")


def test_a_labelled_folder_is_listed_whole_class_folders_in_the_names() -> None:
    listing = list_unlabelled(CIFAR_JPEGS)
    assert len(listing) == 24 and listing.image_files == 24
    assert listing.names[0] == "airplane/0000.jpg" and listing.names[-1] == "bird/0007.jpg"


def test_the_data_root_confines_the_path_and_every_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_photos(root / "photos")
    outside = write_photos(tmp_path / "outside")
    with pytest.raises(ValueError, match=r"must not contain '\.\.'"):
        open_unlabelled("../outside", root=root)
    with pytest.raises(ValueError, match="relative to the data root"):
        open_unlabelled(str(outside), root=root)
    with pytest.raises(DataError, match="no such file"):
        open_unlabelled("missing", root=root)
    (root / "link").symlink_to(outside)
    with pytest.raises(ValueError, match="resolves outside the data root"):
        open_unlabelled("link", root=root)
    (root / "photos" / "leak.jpg").symlink_to(outside / "b.jpg")
    with pytest.raises(ValueError, match="resolves outside the data root"):
        open_unlabelled("images:photos", root=root)
    (root / "photos" / "leak.jpg").unlink()
    assert open_unlabelled("images:photos", root=root).names == NAMES


def test_an_archive_is_extracted_within_its_budget_and_described(tmp_path: Path) -> None:
    root = tmp_path / "root"
    photos = write_photos(tmp_path / "photos")
    root.mkdir()
    with zipfile.ZipFile(root / "photos.zip", "w") as z:
        for path in sorted(photos.rglob("*")):
            if path.is_file():
                z.write(path, path.relative_to(photos).as_posix())
    extract = tmp_path / "extracted"
    listing = open_unlabelled("photos.zip", root=root, extract_dir=extract)
    assert listing.names == NAMES and listing.root.is_relative_to(extract)
    described = describe_source("images:photos.zip", root=root, extract_dir=extract)
    assert described.kind == "images" and described.class_names == []
    assert described.counts() == {
        "all": {"size": 5, "counts": {}, "image_shape": None, "other_files": 1}
    }
    assert described.num_images == 5

"""Class folders, archives of them, ImageNet's layout and COCO."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import DataError, load_dataset
from core.data.archives import ArchiveLimits
from tests.core.data.conftest import colour_image, encode, write_class_folders


def test_folder_of_mixed_formats(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "flowers"
    for label, (cls, fmt, ext) in enumerate(
        [("a", "JPEG", "jpg"), ("b", "PNG", "png"), ("c", "BMP", "bmp"), ("d", "GIF", "gif")]
    ):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            (root / cls / f"{i}.{ext}").write_bytes(encode(colour_image(label, seed=i), fmt))
    (root / "a" / "UPPER.JPG").write_bytes(encode(colour_image(0), "JPEG"))
    (root / "a" / ".hidden.jpg").write_bytes(b"not an image")
    (root / "a" / "notes.txt").write_text("not an image either")
    (root / ".git").mkdir()
    ds = load_dataset(f"folder:{root}", cache_dir=cache_dir)
    assert ds.kind == "folder" and ds.class_names == ["a", "b", "c", "d"]
    assert ds.skipped == [] and list(ds.splits) == ["train"]
    train = ds.splits["train"]
    assert train.images is not None and train.images.shape == (13, 8, 8, 3)
    assert train.counts() == {"a": 4, "b": 3, "c": 3, "d": 3}
    # Labels follow the folders: the dominant colour channel is the class (for a, b, c).
    dominant = train.images.reshape(13, -1, 3).mean(1).argmax(1)
    mask = train.labels < 3
    np.testing.assert_array_equal(dominant[mask], train.labels[mask])
    assert json.dumps(ds.summary())


def test_folder_image_modes(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "modes"
    (root / "x").mkdir(parents=True)
    arr = colour_image(0)
    (root / "x" / "gray.png").write_bytes(encode(arr, "PNG", "L"))
    (root / "x" / "rgba.png").write_bytes(encode(arr, "PNG", "RGBA"))
    (root / "x" / "palette.png").write_bytes(encode(arr, "PNG", "P"))
    (root / "x" / "cmyk.jpg").write_bytes(encode(arr, "JPEG", "CMYK"))
    (root / "x" / "gray16.png").write_bytes(encode(arr, "PNG", "I;16"))
    ds = load_dataset(f"folder:{root}", cache_dir=cache_dir)
    assert ds.skipped == []
    assert ds.splits["train"].image_shape == (8, 8, 3)
    gray = load_dataset(f"folder:{root}", cache_dir=cache_dir, channels=1)
    assert gray.splits["train"].image_shape == (8, 8, 1)


def test_all_grayscale_folder_is_one_channel(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "g"
    (root / "x").mkdir(parents=True)
    for i in range(3):
        (root / "x" / f"{i}.png").write_bytes(encode(colour_image(0, seed=i), "PNG", "L"))
    assert load_dataset(f"folder:{root}", cache_dir=cache_dir).splits["train"].image_shape == (
        8,
        8,
        1,
    )


def _write_broken(folder: Path) -> None:
    good = encode(colour_image(0, (8, 8)), "JPEG")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "text.png").write_text("this is not a png")


def test_broken_files_are_skipped_and_named(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "d"
    write_class_folders(root, {"cat": 3, "dog": 2}, fmt="JPEG")
    _write_broken(root / "cat")
    ds = load_dataset(f"folder:{root}", cache_dir=cache_dir)
    assert len(ds.splits["train"]) == 5
    skipped = dict(ds.skipped)
    assert set(skipped) == {"cat/empty.jpg", "cat/truncated.jpg", "cat/text.png"}
    assert "empty" in skipped["cat/empty.jpg"]
    assert "truncated" in skipped["cat/truncated.jpg"]
    assert ds.summary()["skipped"] == 3


def test_strict_mode_raises_naming_the_file(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "d"
    write_class_folders(root, {"cat": 2}, fmt="PNG")
    (root / "cat" / "zzz.png").write_text("nope")
    with pytest.raises(DataError, match=r"cat/zzz\.png"):
        load_dataset(f"folder:{root}", cache_dir=cache_dir, strict=True)
    assert issubclass(DataError, ValueError)


def test_large_images_are_streamed_and_checked(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "big"
    write_class_folders(root, {"a": 2, "b": 2}, size=(150, 140), fmt="JPEG")
    _write_broken(root / "a")
    big = encode(colour_image(1, (150, 140)), "JPEG")
    (root / "b" / "cut.jpg").write_bytes(big[: len(big) - 200])
    (root / "b" / "cmyk.jpg").write_bytes(encode(colour_image(1, (150, 140)), "JPEG", "CMYK"))
    ds = load_dataset(f"folder:{root}", cache_dir=cache_dir)
    train = ds.splits["train"]
    assert train.images is None and train.paths is not None and len(train) == 5
    assert {name for name, _ in ds.skipped} == {
        "a/empty.jpg",
        "a/truncated.jpg",
        "a/text.png",
        "b/cut.jpg",
    }
    # TensorFlow cannot read CMYK the way Pillow does: a converted copy is streamed instead.
    converted = [p for p in train.paths if p.endswith(".png")]
    assert len(converted) == 1 and Path(converted[0]).is_relative_to(cache_dir)


def test_small_images_of_mixed_sizes_are_streamed(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(encode(colour_image(0, (8, 8)), "PNG"))
    (root / "a" / "2.png").write_bytes(encode(colour_image(0, (10, 12)), "PNG"))
    train = load_dataset(f"folder:{root}", cache_dir=cache_dir).splits["train"]
    assert train.paths is not None and train.image_shape is None and len(train) == 2


def _tree_to_archive(src: Path, archive: Path) -> None:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for p in sorted(src.rglob("*")):
                zf.write(p, p.relative_to(src.parent).as_posix())
    else:
        mode = "w:gz" if archive.name.endswith(".gz") else "w"
        with tarfile.open(archive, mode) as tar:
            tar.add(src, arcname=src.name)


@pytest.mark.parametrize("name", ["data.tar.gz", "data.tar", "data.zip"])
def test_archive_with_train_and_test(tmp_path: Path, cache_dir: Path, name: str) -> None:
    src = tmp_path / "cifar-like"
    write_class_folders(src / "train", {"cat": 3, "dog": 2}, fmt="JPEG")
    write_class_folders(src / "test", {"cat": 1, "dog": 1}, fmt="PNG")
    _tree_to_archive(src, tmp_path / name)
    ds = load_dataset(f"folder:{tmp_path / name}", cache_dir=cache_dir)
    assert ds.class_names == ["cat", "dog"] and set(ds.splits) == {"train", "test"}
    assert ds.splits["train"].counts() == {"cat": 3, "dog": 2}
    assert ds.splits["test"].counts() == {"cat": 1, "dog": 1}
    # Extracted once into the cache, then reused.
    extracted = list((cache_dir / "extracted").iterdir())
    load_dataset(f"folder:{tmp_path / name}", cache_dir=cache_dir)
    assert list((cache_dir / "extracted").iterdir()) == extracted


def test_archive_with_val_folder_and_no_wrapper(tmp_path: Path, cache_dir: Path) -> None:
    src = tmp_path / "src"
    write_class_folders(src / "train", {"a": 2, "b": 2})
    write_class_folders(src / "val", {"a": 1})
    with tarfile.open(tmp_path / "d.tar.gz", "w:gz") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=p.name)
    ds = load_dataset(f"folder:{tmp_path / 'd.tar.gz'}", cache_dir=cache_dir)
    assert set(ds.splits) == {"train", "test"} and len(ds.splits["test"]) == 1


def _tar_with(archive: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def test_unsafe_archives_are_refused(tmp_path: Path, cache_dir: Path) -> None:
    escape = tarfile.TarInfo("../evil.png")
    escape.size = 3
    _tar_with(tmp_path / "escape.tar.gz", escape, b"abc")
    with pytest.raises(DataError, match="escape"):
        load_dataset(f"folder:{tmp_path / 'escape.tar.gz'}", cache_dir=cache_dir)
    assert not (cache_dir / "extracted" / "evil.png").exists()

    link = tarfile.TarInfo("data/a/link.png")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    _tar_with(tmp_path / "link.tar.gz", link)
    with pytest.raises(DataError, match="link"):
        load_dataset(f"folder:{tmp_path / 'link.tar.gz'}", cache_dir=cache_dir)

    with zipfile.ZipFile(tmp_path / "escape.zip", "w") as zf:
        zf.writestr("a/../../evil.png", b"abc")
    with pytest.raises(DataError, match="escape"):
        load_dataset(f"folder:{tmp_path / 'escape.zip'}", cache_dir=cache_dir)
    # Nothing half-extracted is left behind to be mistaken for a finished extraction.
    assert not any(p.name.endswith(("evil.png",)) for p in cache_dir.rglob("*"))
    assert [p for p in (cache_dir / "extracted").iterdir()] == []


def test_absurd_member_size_is_refused(tmp_path: Path, cache_dir: Path) -> None:
    src = tmp_path / "s"
    write_class_folders(src, {"a": 1})
    _tree_to_archive(src, tmp_path / "s.tar.gz")
    with pytest.raises(DataError, match="absurdly large"):
        load_dataset(
            f"folder:{tmp_path / 's.tar.gz'}",
            cache_dir=cache_dir,
            archive_limits=ArchiveLimits(max_member_bytes=10),
        )


def test_not_an_archive(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "x.tar.gz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable archive"):
        load_dataset(f"folder:{tmp_path / 'x.tar.gz'}", cache_dir=cache_dir)


def _imagenet(root: Path) -> None:
    write_class_folders(root / "train", {"n01440764": 2, "n01443537": 3}, fmt="JPEG")
    for d in (root / "train").iterdir():  # ImageNet's upper-case extension
        for f in d.iterdir():
            f.rename(f.with_suffix(".JPEG"))
    (root / "val").mkdir()
    for i, label in enumerate([1, 0, 1], start=1):
        (root / "val" / f"ILSVRC2012_val_{i:08d}.JPEG").write_bytes(
            encode(colour_image(label), "JPEG")
        )


def test_imagenet_flat_val_with_kaggle_csv(tmp_path: Path, cache_dir: Path) -> None:
    _imagenet(tmp_path)
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000001,n01443537 1 2 3 4 n01443537 5 6 7 8\n"
        "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"
        "ILSVRC2012_val_00000003,n01443537 1 2 3 4\n"
    )
    ds = load_dataset(f"imagenet:{tmp_path}", cache_dir=cache_dir)
    assert ds.kind == "imagenet" and ds.class_names == ["n01440764", "n01443537"]
    assert ds.splits["train"].counts() == {"n01440764": 2, "n01443537": 3}
    assert ds.splits["test"].labels.tolist() == [1, 0, 1]


def test_imagenet_flat_val_with_ground_truth_txt(tmp_path: Path, cache_dir: Path) -> None:
    _imagenet(tmp_path)
    (tmp_path / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n")  # 1-based
    ds = load_dataset(f"imagenet:{tmp_path}", cache_dir=cache_dir)
    assert ds.splits["test"].labels.tolist() == [1, 0]
    assert ds.skipped == [("val/ILSVRC2012_val_00000003.JPEG", "no ground-truth label")]


def test_imagenet_from_archive(tmp_path: Path, cache_dir: Path) -> None:
    _imagenet(tmp_path / "ILSVRC")
    (tmp_path / "ILSVRC" / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\nILSVRC2012_val_00000001,n01443537 1 2 3 4\n"
    )
    with tarfile.open(tmp_path / "ilsvrc.tar", "w") as tar:
        tar.add(tmp_path / "ILSVRC", arcname="ILSVRC")
    ds = load_dataset(f"imagenet:{tmp_path / 'ilsvrc.tar'}", cache_dir=cache_dir)
    assert len(ds.splits["train"]) == 5 and ds.splits["test"].labels.tolist() == [1]
    assert len(ds.skipped) == 2  # val images 2 and 3 have no ground truth in this CSV


def test_imagenet_val_class_folders(tmp_path: Path, cache_dir: Path) -> None:
    write_class_folders(tmp_path / "train", {"n1": 2, "n2": 2}, fmt="JPEG")
    write_class_folders(tmp_path / "val", {"n1": 1, "n2": 1}, fmt="JPEG")
    ds = load_dataset(f"imagenet:{tmp_path}", cache_dir=cache_dir)
    assert ds.splits["test"].counts() == {"n1": 1, "n2": 1}


def test_imagenet_flat_val_without_ground_truth(tmp_path: Path, cache_dir: Path) -> None:
    _imagenet(tmp_path)
    with pytest.raises(DataError, match="ground-truth"):
        load_dataset(f"imagenet:{tmp_path}", cache_dir=cache_dir)


def test_coco_multi_hot(tmp_path: Path, cache_dir: Path) -> None:
    (tmp_path / "annotations").mkdir()
    for split, n in (("train2017", 3), ("val2017", 1)):
        (tmp_path / split).mkdir()
        images = []
        for i in range(n):
            name = f"{i:012d}.jpg"
            Image.fromarray(colour_image(i)).save(tmp_path / split / name)
            images.append({"id": 100 + i, "file_name": name, "height": 8, "width": 8})
        anns = [
            {"id": 1, "image_id": 100, "category_id": 90, "bbox": [0, 0, 1, 1]},
            {"id": 2, "image_id": 100, "category_id": 1, "bbox": [0, 0, 1, 1]},
            {"id": 3, "image_id": 100, "category_id": 1, "bbox": [0, 0, 1, 1]},
        ]
        if n > 1:
            anns.append({"id": 4, "image_id": 101, "category_id": 18, "bbox": [0, 0, 1, 1]})
            images.append({"id": 999, "file_name": "missing.jpg", "height": 8, "width": 8})
        cats = [
            {"id": 90, "name": "toothbrush"},
            {"id": 1, "name": "person"},
            {"id": 18, "name": "dog"},
        ]
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )
    ds = load_dataset(f"coco:{tmp_path}", cache_dir=cache_dir)
    assert ds.multi_label and ds.class_names == ["person", "dog", "toothbrush"]
    train = ds.splits["train"]
    assert train.labels.dtype == np.float32 and train.labels.shape == (3, 3)
    np.testing.assert_array_equal(train.labels, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])
    assert train.counts() == {"person": 1, "dog": 1, "toothbrush": 1}
    assert ds.skipped == [("train2017/missing.jpg", "missing file")]
    assert len(ds.splits["test"]) == 1


def test_symlink_inside_folder_pointing_out_of_root(tmp_path: Path, cache_dir: Path) -> None:
    root = tmp_path / "root"
    write_class_folders(root / "d", {"a": 1})
    outside = tmp_path / "secret.png"
    outside.write_bytes(encode(colour_image(0), "PNG"))
    os.symlink(outside, root / "d" / "a" / "link.png")
    with pytest.raises(ValueError, match="outside the data root"):
        load_dataset("folder:d", root=root, cache_dir=cache_dir)
    # Without a root (a trusted local path) links are followed.
    assert len(load_dataset(f"folder:{root / 'd'}", cache_dir=cache_dir).splits["train"]) == 2

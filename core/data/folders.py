"""Sources made of image files: class folders (ImageFolder), ImageNet's layout and COCO."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np

from core.data.decode import IMAGE_EXTENSIONS, Skips, infer_channels, is_image_file, load_files
from core.data.types import DataError, Dataset, check_class_names

# Top-level folder names that hold a held-out split, in order of preference.
HELD_OUT_DIRS = ("test", "val", "validation")
IMAGENET_GROUND_TRUTH = ("LOC_val_solution.csv", "ILSVRC2012_validation_ground_truth.txt")


def _subdirs(path: Path) -> list[Path]:
    return sorted(
        (p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted; hidden files and folders left out."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, f) for f in sorted(filenames) if is_image_file(f))
    return found


def _unwrap(root: Path, *, class_folders: bool = True) -> Path:
    """Descend through wrapper folders (an archive's single top folder) to the data.

    With ``class_folders``, a lone folder whose entries are not all folders is a class of
    images, not a wrapper, and is kept.
    """
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir():
            return root
        children = [p for p in entries[0].iterdir() if not p.name.startswith(".")]
        if class_folders and (not children or not all(p.is_dir() for p in children)):
            return root
        root = entries[0]


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """``{"train": ..., "test": ...}`` when ``root`` holds train/ (and test/ or val/) of classes."""
    train = root / "train"
    if not train.is_dir():
        return None
    children = [p for p in train.iterdir() if not p.name.startswith(".")]
    if not children or not all(p.is_dir() for p in children):
        return None
    dirs = {"train": train}
    for name in HELD_OUT_DIRS:
        if (root / name).is_dir():
            dirs["test"] = root / name
            break
    return dirs


def resolves_inside(path: Path, confine: Path) -> bool:
    """Whether ``path``, its symlinks followed, lies inside ``confine`` (a loop does not)."""
    try:
        return path.resolve().is_relative_to(confine)
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        return False


def _check_inside(path: Path, confine: Path | None) -> None:
    # The message names the path as given, never where its symlinks point.
    if confine is not None and not resolves_inside(path, confine):
        raise ValueError(f"{path} resolves outside the data root (or is a symlink loop)")


def _class_files(
    folder: Path, class_names: list[str], base: Path, confine: Path | None
) -> tuple[list[str], list[int], list[str]]:
    paths, labels, names = [], [], []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        _check_inside(class_dir, confine)
        for f in _image_files(class_dir):
            _check_inside(f, confine)
            paths.append(str(f))
            labels.append(label)
            names.append(f.relative_to(base).as_posix())
    return paths, labels, names


def _folder_classes(root: Path, dirs: dict[str, Path]) -> list[str]:
    class_names = [p.name for p in _subdirs(dirs["train"])]
    if not class_names:
        raise DataError(f"{root}: no class folders found (expected <class>/<image> files)")
    check_class_names(class_names, where=str(dirs["train"]))
    if "test" in dirs:
        unknown = sorted({p.name for p in _subdirs(dirs["test"])} - set(class_names))
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise DataError(f"{dirs['test']}: class folders not in train/: {shown}")
    return class_names


def load_folder(
    root: Path,
    *,
    name: str,
    kind: str = "folder",
    strict: bool,
    channels: int | None,
    cache_dir: Path,
    confine: Path | None = None,
) -> Dataset:
    """Class sub-folders (sorted names are the classes), or train/ and test/ (or val/) of them.

    Args:
        root: the folder (an extracted archive's folder for archives).
        name: the dataset's name.
        kind: reported kind.
        strict: raise on the first unreadable image instead of skipping it.
        channels: 1 or 3; None infers grayscale when every sampled image is.
        cache_dir: where converted copies of odd images go.
        confine: when given, every file must resolve inside it (symlinks out are refused).
    """
    base = root
    root = _unwrap(root)
    dirs = _split_dirs(root) or {"train": root}
    class_names = _folder_classes(root, dirs)
    skips = Skips(strict, [])
    listed = {s: _class_files(d, class_names, base, confine) for s, d in dirs.items()}
    if channels is None:
        channels = infer_channels(listed["train"][0])
    splits = {}
    for split, (paths, labels, names) in listed.items():
        if split == "train" and not paths:
            raise DataError(f"{dirs['train']}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
        splits[split] = load_files(
            paths,
            np.asarray(labels, dtype=np.int64),
            names=names,
            class_names=class_names,
            multi_label=False,
            channels=channels,
            skips=skips,
            cache_dir=cache_dir,
        )
    return Dataset(name, kind, class_names, False, splits, skips.items)


def load_imagenet(
    root: Path,
    *,
    name: str,
    strict: bool,
    channels: int | None,
    cache_dir: Path,
    confine: Path | None = None,
) -> Dataset:
    """ILSVRC-2012: train/<wnid>/*.JPEG; val/ as class folders or flat with a ground-truth file.

    The flat layout's labels come from ``LOC_val_solution.csv`` (Kaggle) or
    ``ILSVRC2012_validation_ground_truth.txt`` (1-based ids, one line per image in file order;
    ids follow the devkit's ``meta.mat`` when it is present, else sorted-wnid order).
    """
    if not (root / "train").is_dir():
        root = _unwrap(root, class_folders=False)  # an archive's top folder
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DataError(f"{root}: no train/ folder (expected train/<wnid>/*.JPEG)")
    class_names = [p.name for p in _subdirs(train_dir)]
    if not class_names:
        raise DataError(f"{train_dir}: no class folders")
    check_class_names(class_names, where=str(train_dir))
    skips = Skips(strict, [])
    channels = channels or 3
    paths, labels, names = _class_files(train_dir, class_names, root, confine)
    splits = {
        "train": load_files(
            paths,
            np.asarray(labels, np.int64),
            names=names,
            class_names=class_names,
            multi_label=False,
            channels=channels,
            skips=skips,
            cache_dir=cache_dir,
        )
    }
    val_dir = next((root / d for d in ("val", "validation") if (root / d).is_dir()), None)
    if val_dir is not None:
        if _subdirs(val_dir):
            paths, labels, names = _class_files(val_dir, class_names, root, confine)
        else:
            paths, labels, names = _flat_val(root, val_dir, class_names, skips, confine)
        splits["test"] = load_files(
            paths,
            np.asarray(labels, np.int64),
            names=names,
            class_names=class_names,
            multi_label=False,
            channels=channels,
            skips=skips,
            cache_dir=cache_dir,
        )
    return Dataset(name, "imagenet", class_names, False, splits, skips.items)


def _flat_val(
    root: Path, val_dir: Path, class_names: list[str], skips: Skips, confine: Path | None
) -> tuple[list[str], list[int], list[str]]:
    index = {wnid: i for i, wnid in enumerate(class_names)}
    by_stem = {}
    for f in _image_files(val_dir):
        _check_inside(f, confine)
        by_stem[f.stem] = f
    places = [root, val_dir, root / "ILSVRC2012_devkit_t12" / "data", root.parent]
    truth: dict[str, str] = {}  # image stem -> wnid
    csv_file = next(
        (p / IMAGENET_GROUND_TRUTH[0] for p in places if (p / IMAGENET_GROUND_TRUTH[0]).is_file()),
        None,
    )
    txt_file = next(
        (p / IMAGENET_GROUND_TRUTH[1] for p in places if (p / IMAGENET_GROUND_TRUTH[1]).is_file()),
        None,
    )
    if csv_file is not None:
        _check_inside(csv_file, confine)
        with csv_file.open(newline="") as rows:
            for row in csv.DictReader(rows):
                tokens = (row.get("PredictionString") or "").split()
                if tokens:
                    truth[row["ImageId"]] = tokens[0]
    elif txt_file is not None:
        _check_inside(txt_file, confine)
        ids = [int(line) for line in txt_file.read_text().split()]
        id_to_wnid = _devkit_ids(txt_file.parent) or dict(enumerate(class_names, start=1))
        # Line i is the image numbered i (ILSVRC2012_val_00000001 is line 1).
        for stem in by_stem:
            m = re.search(r"(\d+)$", stem)
            if m and 1 <= int(m.group(1)) <= len(ids):
                truth[stem] = id_to_wnid.get(ids[int(m.group(1)) - 1], "")
    else:
        raise DataError(
            f"{val_dir}: flat val/ needs class folders or a ground-truth file "
            f"({' or '.join(IMAGENET_GROUND_TRUTH)})"
        )
    paths, labels, names = [], [], []
    for stem, f in sorted(by_stem.items()):
        wnid = truth.get(stem)
        if wnid not in index:
            skips.add(f.relative_to(root).as_posix(), "no ground-truth label")
            continue
        paths.append(str(f))
        labels.append(index[wnid])
        names.append(f.relative_to(root).as_posix())
    return paths, labels, names


def _devkit_ids(folder: Path) -> dict[int, str] | None:
    """ILSVRC2012_ID -> wnid from the devkit's meta.mat beside the ground truth, if readable."""
    meta = folder / "meta.mat"
    if not meta.is_file():
        return None
    try:
        from scipy.io import loadmat

        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        return {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
    except Exception:  # no scipy, or not the devkit's file: fall back to sorted-wnid order
        return None


def load_coco(
    root: Path,
    *,
    name: str,
    strict: bool,
    channels: int | None,
    cache_dir: Path,
    confine: Path | None = None,
) -> Dataset:
    """COCO 2017 instances as multi-label classification: which categories appear in an image.

    Category ids are mapped to 0..K-1 in sorted-id order (``class_names`` records the names);
    ``train2017`` is the train split and ``val2017``, when present, the test split. Images with
    no annotation are kept with an all-zero label.
    """
    if not (root / "annotations").is_dir():
        root = _unwrap(root, class_folders=False)  # an archive's top folder
    ann_dir = root / "annotations"
    train_json = ann_dir / "instances_train2017.json"
    if not train_json.is_file():
        raise DataError(f"{root}: missing annotations/instances_train2017.json")
    skips = Skips(strict, [])
    class_names: list[str] | None = None
    splits = {}
    for split, stem in (("train", "train2017"), ("test", "val2017")):
        ann = ann_dir / f"instances_{stem}.json"
        if not ann.is_file() or not (root / stem).is_dir():
            if split == "train":
                raise DataError(f"{root}: missing {stem}/ images folder")
            continue
        _check_inside(ann, confine)
        try:
            data = json.loads(ann.read_text())
            categories = sorted(data["categories"], key=lambda c: int(c["id"]))
            images, annotations = data["images"], data.get("annotations", [])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{ann.name}: not a COCO instances file ({exc})") from None
        names_here = [str(c["name"]) for c in categories]
        if class_names is None:
            class_names = names_here
        elif names_here != class_names:
            raise DataError(f"{ann.name}: categories differ from the train annotations")
        col = {int(c["id"]): i for i, c in enumerate(categories)}
        row = {int(im["id"]): i for i, im in enumerate(images)}
        labels = np.zeros((len(images), len(col)), dtype=np.float32)
        for a in annotations:
            r, c = row.get(int(a["image_id"])), col.get(int(a["category_id"]))
            if r is not None and c is not None:
                labels[r, c] = 1.0
        paths, names, keep = [], [], []
        for i, im in enumerate(images):
            f = root / stem / str(im["file_name"])
            rel = f"{stem}/{im['file_name']}"
            if not f.is_file():
                skips.add(rel, "missing file")
                continue
            _check_inside(f, confine)
            paths.append(str(f))
            names.append(rel)
            keep.append(i)
        if channels is None:
            channels = infer_channels(paths) if paths else 3
        splits[split] = load_files(
            paths,
            labels[keep],
            names=names,
            class_names=class_names,
            multi_label=True,
            channels=channels,
            skips=skips,
            cache_dir=cache_dir,
        )
    assert class_names is not None
    return Dataset(name, "coco", class_names, True, splits, skips.items)

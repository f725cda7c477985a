"""Where the published ImageNet weights are, and their checksums: data, and a checked download.

Keras publishes MD5 sums of its files (``keras/src/applications/resnet.py``'s
``WEIGHTS_HASHES``); torchvision names each file after the first 8 hex digits of its SHA-256,
which is what ``torch.hub`` checks, and what is checked here. A download is written beside its
destination and renamed into place only once its checksum matches.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from core.models.weights.plans import Source
from core.models.weights.tensors import WeightsFileError

log = logging.getLogger(__name__)

KERAS_BASE = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
TORCHVISION_BASE = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class PublishedWeights:
    name: str
    architecture: str  # ours
    source: Source
    url: str
    md5: str | None = None
    sha256_prefix: str | None = None
    note: str = ""

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


def _keras(depth: int, md5_top: str, md5_notop: str) -> list[PublishedWeights]:
    stem = f"resnet{depth}_weights_tf_dim_ordering_tf_kernels"
    return [
        PublishedWeights(
            f"resnet{depth}-keras", f"resnet{depth}", "keras", f"{KERAS_BASE}{stem}.h5", md5_top,
            note="keras.applications, ImageNet-1k, with its 1000-way head",
        ),
        PublishedWeights(
            f"resnet{depth}-keras-notop", f"resnet{depth}", "keras",
            f"{KERAS_BASE}{stem}_notop.h5", md5_notop,
            note="keras.applications, ImageNet-1k, without the head",
        ),
    ]  # fmt: skip


def _torchvision(arch: str, filename: str, version: str) -> PublishedWeights:
    return PublishedWeights(
        f"{arch}-torchvision-{version}", arch, "torchvision", f"{TORCHVISION_BASE}{filename}",
        sha256_prefix=filename.rsplit("-", 1)[-1].split(".", 1)[0],
        note=f"torchvision IMAGENET1K_{version.upper()}",
    )  # fmt: skip


PUBLISHED: dict[str, PublishedWeights] = {
    entry.name: entry
    for entry in [
        *_keras(50, "2cb95161c43110f7111970584f804107", "4d473c1dd8becc155b73f8504c6f6626"),
        *_keras(101, "f1aeb4b969a6efcfb50fad2f0c20cfc5", "88cf7a10940856eca736dc7b7e228a21"),
        *_keras(152, "100835be76be38e30d865e96f2aaae62", "ee4c566cf9a93f14d82f913c2dc6dd0c"),
        _torchvision("resnet18", "resnet18-f37072fd.pth", "v1"),
        _torchvision("resnet34", "resnet34-b627a593.pth", "v1"),
        _torchvision("resnet50", "resnet50-0676ba61.pth", "v1"),
        _torchvision("resnet101", "resnet101-63fe2227.pth", "v1"),
        _torchvision("resnet152", "resnet152-394f9c45.pth", "v1"),
        _torchvision("resnet50", "resnet50-11ad3fa6.pth", "v2"),
        _torchvision("resnet101", "resnet101-cd907fc2.pth", "v2"),
        _torchvision("resnet152", "resnet152-f82ba261.pth", "v2"),
        _torchvision("resnext50_32x4d", "resnext50_32x4d-7cdf4587.pth", "v1"),
        _torchvision("resnext101_32x8d", "resnext101_32x8d-8ba56ff5.pth", "v1"),
    ]
}


def published(name: str) -> PublishedWeights:
    """The catalogue's entry for ``name``.

    Raises:
        WeightsFileError: an unknown name (the known ones listed).
    """
    try:
        return PUBLISHED[name]
    except KeyError:
        raise WeightsFileError(
            f"Unknown weights {name!r}. Expected one of {', '.join(PUBLISHED)}"
        ) from None


def verify(entry: PublishedWeights, path: Path) -> None:
    """Raise unless ``path`` has the entry's checksum."""
    md5, sha256 = _digests(path)
    if entry.md5 is not None and md5 != entry.md5:
        raise WeightsFileError(f"{path.name}: md5 {md5}, expected {entry.md5}")
    if entry.sha256_prefix is not None and not sha256.startswith(entry.sha256_prefix):
        raise WeightsFileError(
            f"{path.name}: sha256 {sha256[:16]}…, expected it to start {entry.sha256_prefix}"
        )


def download_weights(
    entry: PublishedWeights,
    folder: str | Path,
    *,
    url: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``entry`` into ``folder`` (kept if already there with the right checksum).

    Args:
        entry: what to fetch; its checksum decides whether the file is the one published.
        folder: where the file goes, under its published name.
        url: another location of the same file (a mirror, ``file://`` for a local copy).

    Raises:
        WeightsFileError: the download failed, or the file's checksum is not the entry's.
    """
    dest = Path(folder) / entry.filename
    if dest.is_file():
        try:
            verify(entry, dest)
            return dest
        except WeightsFileError:
            log.info("%s is there but not the published file: fetching it again", dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = url or entry.url
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(source, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                out.write(block)
        verify(entry, tmp)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise WeightsFileError(
            f"could not download {source} ({getattr(exc, 'reason', exc)}); on a machine "
            f"without access, fetch it elsewhere and import the file"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _digests(path: Path) -> tuple[str, str]:
    md5 = hashlib.md5(usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            md5.update(block)
            sha256.update(block)
    return md5.hexdigest(), sha256.hexdigest()

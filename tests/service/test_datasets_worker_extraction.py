"""A worker extracts an archive a dataset names under the state folder, where its dataset's
deletion finds it, and within the settings' budget: never into the home folder's cache."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from core.data import DataError
from core.data.archives import extracted_folder
from jobs.settings import Settings
from worker.data import load_data


def test_the_worker_extracts_under_the_state_folder(
    settings: Settings,
    tmp_path: Path,
    image_folder: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    src = image_folder(tmp_path / "src", {"cat": 2, "dog": 1})
    archive = settings.data_dir / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="pets")
    dataset = load_data("folder:pets.tar.gz", settings)
    assert dataset.splits["train"].counts() == {"cat": 2, "dog": 1}
    assert extracted_folder(archive, settings.extract_dir).is_dir()
    assert not (tmp_path / "home").exists()

    tight = settings.model_copy(update={"archive_max_expansion": 2})
    (src / "cat" / "padding.png").write_bytes(bytes(64 * 1024))  # compresses ~1000x
    bigger = settings.data_dir / "bigger.tar.gz"
    with tarfile.open(bigger, "w:gz") as tar:
        tar.add(src, arcname="pets")
    with pytest.raises(DataError, match="expands to more than"):
        load_data("folder:bigger.tar.gz", tight)

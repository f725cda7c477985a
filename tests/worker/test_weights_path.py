"""The worker resolves a run's ``init_from`` under its own data root, refusing any way out."""

from pathlib import Path

import pytest

from jobs.settings import Settings
from worker.data import weights_path


def test_init_from_resolves_under_the_workers_data_root_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "r18.safetensors").write_bytes(b"x")
    (tmp_path / "secret.pth").write_bytes(b"x")
    (root / "out.pth").symlink_to(tmp_path / "secret.pth")
    settings = Settings(state_dir=tmp_path / "state", data_root=root)
    expected = (root / "weights" / "r18.safetensors").resolve()
    assert weights_path("weights/r18.safetensors", settings).resolve() == expected
    assert weights_path(str(expected), settings).resolve() == expected  # absolute, inside
    for path, message in (
        ("../secret.pth", "must not contain '..'"),
        (str(tmp_path / "secret.pth"), "must be relative to the data root"),
        ("out.pth", "resolves outside the data root"),
        ("weights/absent.pth", "no such file"),
    ):
        with pytest.raises(ValueError, match=message):
            weights_path(path, settings)

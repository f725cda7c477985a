"""A run's files on this host: where they are, how many bytes they take, freeing them.

A run writes into ``<artifact root>/<run_id>/`` (or, for a URL root, a staging folder
``<state dir>/staging/<run_id>/`` that is copied up), and an API process that served its model
from a URL root keeps a copy in ``<state dir>/model-cache/<run_id>/``. Every path derives from
the run id alone (checked against the id pattern), never from user input. Files on a URL root
(``gs://…``) are out of reach of the API process, which loads no TensorFlow: their size is the
recorded artifacts' and they are not removed here.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from jobs.ids import RECORD_ID_RULE, is_record_id
from jobs.records.models import Artifact, Run
from jobs.settings import Settings
from jobs.storage import is_url


def run_folders(settings: Settings, run_id: str) -> list[Path]:
    """The local folders that may hold the run's files (existing or not)."""
    if not is_record_id(run_id):
        raise ValueError(f"Invalid run id: {run_id!r}. Expected {RECORD_ID_RULE}")
    folders = [settings.state_dir / "staging" / run_id, settings.state_dir / "model-cache" / run_id]
    if not is_url(settings.artifacts):
        folders.insert(0, Path(settings.artifacts) / run_id)
    return [folder.resolve() for folder in folders]


def free_run_files(settings: Settings, run_id: str) -> None:
    """Remove the run's local folders (call it after the run's deletion is committed)."""
    for folder in run_folders(settings, run_id):
        if folder.is_symlink():  # never follow a link out of the roots
            folder.unlink()
        elif folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def _folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (links are neither followed nor counted)."""
    total = 0
    pending = [str(folder)]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:  # missing, or removed while we walked
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def stored_bytes(session: Session, settings: Settings, api_key_id: str) -> int:
    """Bytes the key's runs keep: their local folders, or their recorded artifacts on a URL
    root (folders there, such as TensorBoard logs, have no recorded size)."""
    run_ids: Iterable[str] = session.scalars(select(Run.id).where(Run.api_key_id == api_key_id))
    total = sum(_folder_bytes(f) for run_id in run_ids for f in run_folders(settings, run_id))
    if is_url(settings.artifacts):
        total += int(
            session.scalar(
                select(func.coalesce(func.sum(Artifact.size_bytes), 0))
                .join(Run, Run.id == Artifact.run_id)
                .where(Run.api_key_id == api_key_id)
            )
            or 0
        )
    return total

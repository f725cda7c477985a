"""The files a run produced (model, checkpoints, TensorBoard logs, history, metrics, exports)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.records.models import Artifact, ArtifactKind, Run, utcnow
from jobs.records.sql import dialect_insert, ensure_exists


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def add_artifact(
    session: Session,
    run_id: str,
    *,
    kind: ArtifactKind | str,
    uri: str,
    path: str | Path | None = None,
) -> Artifact:
    """Record a file a run produced; recording the same (run, kind, uri) again updates it.

    Args:
        session: The session.
        run_id: The run.
        kind: ``model``, ``checkpoint``, ``tensorboard``, ``history``, ``metrics``, ``export``.
        uri: Where it is (a path or a URI).
        path: A local copy to take the size and SHA-256 from (a regular file); none for a
            directory such as TensorBoard logs.

    Raises:
        RecordNotFound: No such run.
    """
    kind = ArtifactKind(kind)
    ensure_exists(session, Run, run_id)
    size: int | None = None
    sha256: str | None = None
    if path is not None and Path(path).is_file():
        size, sha256 = _file_digest(Path(path))
    values = {"size_bytes": size, "sha256": sha256, "created_at": utcnow()}
    stmt = dialect_insert(session, Artifact).values(run_id=run_id, kind=kind, uri=uri, **values)
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=[Artifact.run_id, Artifact.kind, Artifact.uri], set_=values
        )
    )
    artifact = session.scalars(
        select(Artifact)
        .where(Artifact.run_id == run_id, Artifact.kind == kind, Artifact.uri == uri)
        .execution_options(populate_existing=True)
    ).one()
    return artifact


def get_model_artifact(session: Session, run_id: str) -> Artifact | None:
    """The run's ``model`` artifact (the newest, if it was recorded more than once), or ``None``."""
    return session.scalars(
        select(Artifact)
        .where(Artifact.run_id == run_id, Artifact.kind == ArtifactKind.MODEL)
        .order_by(Artifact.created_at.desc(), Artifact.id.desc())
        .limit(1)
    ).one_or_none()

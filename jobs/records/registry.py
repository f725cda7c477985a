"""The model registry: succeeded runs promoted to named, numbered model versions."""

from __future__ import annotations

from sqlalchemy import and_, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from jobs.records.artifacts import get_model_artifact
from jobs.records.errors import RecordConflict, RecordNotFound
from jobs.records.models import ModelVersion, Run, RunStatus, utcnow
from jobs.records.sql import get_row

_LIVE = ModelVersion.deleted_at.is_(None)


def promote_run(
    session: Session, run_id: str, name: str, *, api_key_id: str | None = None
) -> ModelVersion:
    """Make a succeeded run the next version of the model ``name`` (1 for a new name).

    The next number is taken in the INSERT itself (``MAX(version) + 1``), so two promotions
    cannot both get it: on SQLite the statement holds the write lock; on PostgreSQL the loser
    of a race hits the unique (name, version) constraint and gets :class:`RecordConflict`.

    Args:
        session: The session; the version is flushed, not committed.
        run_id: A run that succeeded and recorded its model.
        name: The model's name; checking its spelling is the caller's job.
        api_key_id: The key that promotes it: the version's owner.

    Raises:
        RecordNotFound: No such run.
        RecordConflict: The run has not succeeded, has no model artifact, or a concurrent
            promotion took the version number (or a concurrent delete took the run).
    """
    run = get_row(session, Run, run_id)
    if run.status != RunStatus.SUCCEEDED:
        raise RecordConflict(
            f"Run {run_id!r} is {run.status.value}: only a succeeded run can be promoted"
        )
    if get_model_artifact(session, run_id) is None:
        raise RecordConflict(f"Run {run_id!r} recorded no model artifact: nothing to promote")
    # Over deleted versions too (their rows stay): a number is never handed out twice.
    next_version = (
        select(func.coalesce(func.max(ModelVersion.version), 0) + 1)
        .where(ModelVersion.name == name)
        .scalar_subquery()
    )
    try:
        new_id = session.execute(
            insert(ModelVersion)
            .values(
                name=name,
                version=next_version,
                run_id=run_id,
                created_at=utcnow(),
                api_key_id=api_key_id,
            )
            .returning(ModelVersion.id)
        ).scalar_one()
    except IntegrityError:
        # A concurrent promotion took the number, or the run was deleted meanwhile.
        raise RecordConflict(
            f"Another promotion of {name!r} took the next version, or run {run_id!r} was "
            "deleted, at the same time; try again"
        ) from None
    return get_row(session, ModelVersion, new_id)


def list_models(session: Session) -> list[ModelVersion]:
    """The newest version of every model, by name (their runs loaded too)."""
    newest = (
        select(ModelVersion.name, func.max(ModelVersion.version).label("version"))
        .where(_LIVE)
        .group_by(ModelVersion.name)
        .subquery()
    )
    return list(
        session.scalars(
            select(ModelVersion)
            .join(
                newest,
                and_(ModelVersion.name == newest.c.name, ModelVersion.version == newest.c.version),
            )
            .options(selectinload(ModelVersion.run))
            .order_by(ModelVersion.name)
        )
    )


def list_model_versions(session: Session, name: str) -> list[ModelVersion]:
    """Every version of the model ``name``, newest first (empty if there is no such model)."""
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.name == name, _LIVE)
            .options(selectinload(ModelVersion.run))
            .order_by(ModelVersion.version.desc())
        )
    )


def get_model_version(session: Session, name: str, version: int | None = None) -> ModelVersion:
    """Version ``version`` of the model ``name``; its newest version when ``version`` is None.

    Raises:
        RecordNotFound: No such model, or no such version of it.
    """
    query = select(ModelVersion).where(ModelVersion.name == name, _LIVE)
    if version is None:
        query = query.order_by(ModelVersion.version.desc()).limit(1)
    else:
        query = query.where(ModelVersion.version == version)
    found = session.scalars(query.options(selectinload(ModelVersion.run))).one_or_none()
    if found is None:
        raise RecordNotFound("Model", name if version is None else f"{name} version {version}")
    return found


def delete_model_version(session: Session, name: str, version: int) -> ModelVersion:
    """Delete version ``version`` of the model ``name``: it is no longer listed or served.

    Its row stays as a tombstone, so the number is never handed out again; its run (and the
    run's files) stay until the run itself is deleted, which this makes possible once no live
    version names the run.

    Raises:
        RecordNotFound: No such live version.
        RecordConflict: It is the newest of several live versions, the one that
            ``/v1/models/{name}`` serves by default: deleting it would silently serve an older
            model instead.
    """
    found = get_model_version(session, name, version)
    newer_or_older = list_model_versions(session, name)
    if len(newer_or_older) > 1 and newer_or_older[0].version == version:
        raise RecordConflict(
            f"{name} version {version} is the model's newest version, which requests that name "
            f"no version are served: deleting it would switch them to version "
            f"{newer_or_older[1].version} silently. Promote the run you want served as a new "
            "version first, or delete the older versions before this one"
        )
    found.deleted_at = utcnow()
    session.flush()
    return found

"""``/v1/datasets``: register data under the server's data root, upload archives, describe them.

Only data under ``settings.data_dir`` can be registered: a path is taken relative to it, and
one that leaves it (``..``, an absolute path, a symlink pointing out) is refused with a 422 on
``body.path``. Registering loads the source once to record its classes and per-split counts.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from jobs.ids import new_id
from jobs.records import DatasetRecord
from jobs.records import repository as records
from jobs.records.datasets import dataset_name_taken, find_dataset, list_datasets
from service import uploads
from service.data import Described, describe
from service.deps import ReadKey, SessionDep, SettingsDep, TrainKey, committed
from service.errors import ApiError, ErrorDetail, invalid
from service.owners import require_upload_owner
from service.routes import Limit, Offset, error_responses, keyed_router, multipart_form
from service.schemas import DatasetCreate, DatasetPublic, DatasetsPublic, check_dataset_name

router = keyed_router(prefix="/v1/datasets", tag="datasets")

UPLOADS = "uploads"

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": multipart_form(
            {
                "name": {"type": "string", "description": "The dataset's unique name"},
                "file": {
                    "type": "string",
                    "format": "binary",
                    "description": "A .zip, .tar or .tar.gz of class folders "
                    "(<class>/<image>, or train/ and test/ of them)",
                },
            },
            required=["name", "file"],
        ),
    }
}


@router.post(
    "",
    status_code=201,
    summary="Register data that lies under the data root",
    responses=error_responses(409),
)
def register_dataset(
    body: DatasetCreate, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> DatasetPublic:
    """``kind`` plus a ``path`` relative to the data root. The source is loaded once to check
    it and to record its classes and counts; a path outside the root is a 422."""
    _refuse_taken(session, body.name)
    require_upload_owner(session, key, root=settings.data_dir, path=body.path)
    described = describe(body.kind, body.path, root=settings.data_dir)
    with committed(session):
        row = _register(session, body.name, described, owner=key.id)
    return DatasetPublic.from_row(row)


@router.post(
    "/upload",
    status_code=201,
    summary="Upload an archive of class folders and register it",
    responses=error_responses(400, 409, 413, 415),
    openapi_extra=_UPLOAD_BODY,
)
async def upload_dataset(request: Request, settings: SettingsDep, key: TrainKey) -> DatasetPublic:
    """A ``multipart/form-data`` body with ``name`` and ``file`` (.zip/.tar/.tar.gz of class
    folders). It is streamed to ``<data root>/uploads/<id>/`` and the whole body may be at most
    ``max_upload_bytes``: 413 as soon as it is over, with or without a Content-Length. The
    archive is extracted safely (no links, nothing outside its folder) and registered as kind
    ``folder``. Whatever fails, nothing of the upload is left on disk."""
    limit = settings.max_upload_bytes
    upload_id = new_id()
    folder = settings.data_dir / UPLOADS / upload_id
    sessions: sessionmaker[Session] = request.app.state.sessions
    try:
        received = await uploads.receive(request, folder=folder, limit=limit)
        name = received.fields.get("name")
        if name is None:
            raise invalid("body.name", "Field required")
        try:
            check_dataset_name(name)
        except ValueError as exc:
            raise invalid("body.name", str(exc), name) from None
        if received.archive is None:
            raise invalid("body.file", "Field required")
        await run_in_threadpool(_refuse_taken_in, sessions, name)
        data = folder / "data"
        await run_in_threadpool(
            uploads.extract, received.archive, data, max_bytes=uploads.MAX_EXPANSION * limit
        )
        location = data.relative_to(settings.data_dir).as_posix()
        described = await run_in_threadpool(
            describe, "folder", location, root=settings.data_dir, field="body.file"
        )
        row = await run_in_threadpool(_register_in, sessions, name, described, key.id)
    except BaseException:
        # Synchronously: this must also run when the request is cancelled.
        uploads.remove(folder)
        raise
    return DatasetPublic.from_row(row)


@router.get(
    "",
    summary="List registered datasets, newest first",
)
def list_all(
    session: SessionDep,
    key: ReadKey,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DatasetsPublic:
    rows, total = list_datasets(session, limit=limit, offset=offset)
    return DatasetsPublic(
        items=[DatasetPublic.from_row(r) for r in rows], total=total, limit=limit, offset=offset
    )


@router.get(
    "/{ref}",
    summary="A dataset by id or name: classes and per-split counts",
    responses=error_responses(404),
)
def get_dataset(ref: str, session: SessionDep, key: ReadKey) -> DatasetPublic:
    return DatasetPublic.from_row(find_dataset(session, ref))


# --- helpers ---------------------------------------------------------------------------------


def _refuse_taken(session: Session, name: str) -> None:
    if dataset_name_taken(session, name):
        raise ApiError(
            409,
            f"A dataset named {name!r} is already registered",
            details=[ErrorDetail(field="body.name", message="already taken", received=name)],
        )


def _register(
    session: Session, name: str, described: Described, *, owner: str | None
) -> DatasetRecord:
    row = records.register_dataset(
        session,
        name=name,
        kind=described.kind,
        location=described.location,
        class_names=described.class_names,
        counts=described.counts,
        num_images=described.num_images,
    )
    row.api_key_id = owner  # its owner (jobs.records.owners)
    session.flush()
    return row


def _refuse_taken_in(sessions: sessionmaker[Session], name: str) -> None:
    with sessions() as session:
        _refuse_taken(session, name)


def _register_in(
    sessions: sessionmaker[Session], name: str, described: Described, owner: str | None
) -> DatasetRecord:
    with sessions() as session, committed(session):
        _refuse_taken(session, name)
        return _register(session, name, described, owner=owner)

"""``/v1/datasets``: register data under the server's data root, upload archives, describe them.

Only data under ``settings.data_dir`` can be registered: a path is taken relative to it, and
one that leaves it (``..``, an absolute path, a symlink pointing out) is refused with a 422 on
``body.path``. Registering describes the source from headers and file counts (never its pixels)
to record its classes and per-split counts. ``DELETE`` frees what the service made for it.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import Request, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from core.data.archives import extracted_folder, is_archive
from core.data.types import UNLABELLED_KIND
from jobs.ids import is_record_id, new_id
from jobs.records import ApiKey, DatasetRecord, RecordConflict, Scope
from jobs.records import repository as records
from jobs.records.datasets import (
    dataset_name_taken,
    datasets_at,
    find_dataset,
    list_datasets,
)
from jobs.records.datasets import delete_dataset as delete_dataset_record
from service import uploads
from service.data import Described, archive_limits, describe
from service.deps import ReadKey, SessionDep, SettingsDep, TrainKey, committed
from service.errors import ApiError, ErrorDetail, invalid
from service.owners import require_owner, require_upload_owner
from service.routes import Limit, Offset, error_responses, keyed_router, multipart_form
from service.schemas import DatasetCreate, DatasetPublic, DatasetsPublic, check_dataset_name

router = keyed_router(prefix="/v1/datasets", tag="datasets")

UPLOADS = "uploads"
# What an uploaded archive may be registered as: labelled class folders, or unlabelled images.
UPLOAD_KINDS = ("folder", UNLABELLED_KIND)

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
                    "(<class>/<image>, or train/ and test/ of them), or of any images "
                    "(kind images)",
                },
                "kind": {
                    "type": "string",
                    "enum": list(UPLOAD_KINDS),
                    "default": "folder",
                    "description": "folder: class folders; images: unlabelled images, to predict",
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
    responses=error_responses(403, 409),
)
def register_dataset(
    body: DatasetCreate, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> DatasetPublic:
    """``kind`` plus a ``path`` relative to the data root. The source is described from its
    headers and file counts (no pixels are loaded here: the workers do that) to check it and to
    record its classes and counts; a path outside the root is a 422. A name is registered once
    (409 for a second registration, also when both arrive at the same moment); an upload's
    folder may be registered again only by the key that uploaded it, or an admin key."""
    _refuse_taken(session, body.name)
    require_upload_owner(session, key, root=settings.data_dir, path=body.path)
    _refuse_others_upload(body.path, settings, key)
    described = describe(body.kind, body.path, settings=settings)
    try:
        with committed(session):
            row = _register(session, body.name, described, owner=key.id)
    except RecordConflict:
        free_files(session, settings, kind=described.kind, location=described.location)
        raise _taken(body.name) from None
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
    folders), and ``kind`` (``folder``, the default, or ``images`` for an archive of unlabelled
    images). It is streamed to ``<data root>/uploads/<id>/`` and the whole body may be at most
    ``max_upload_bytes``: 413 as soon as it is over, with or without a Content-Length. The
    archive is extracted within a budget relative to its own size (``archive_*`` settings: no
    links, nothing outside its folder, CRCs checked) and registered as that kind; any
    archive error is a 422 naming the archive. Whatever fails, nothing of the upload is left
    on disk."""
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
        kind = received.fields.get("kind", "folder")
        if kind not in UPLOAD_KINDS:
            raise invalid("body.kind", f"expected one of {', '.join(UPLOAD_KINDS)}", kind)
        if received.archive is None:
            raise invalid("body.file", "Field required")
        await run_in_threadpool(_refuse_taken_in, sessions, name)
        uploads.write_owner(folder, key.id)
        data = folder / "data"
        await run_in_threadpool(
            uploads.extract,
            received.archive,
            data,
            limits=archive_limits(settings),
            filename=received.filename or received.archive.name,
        )
        location = data.relative_to(settings.data_dir).as_posix()
        described = await run_in_threadpool(
            describe, kind, location, settings=settings, field="body.file"
        )
        row = await run_in_threadpool(_register_in, sessions, name, described, key.id)
    except BaseException:
        # Synchronously: this must also run when the request is cancelled.
        uploads.remove(folder)
        raise
    return DatasetPublic.from_row(row)


@router.delete(
    "/{ref}",
    status_code=204,
    summary="Delete a dataset and free its files",
    responses=error_responses(403, 404, 409),
)
def delete_dataset(ref: str, session: SessionDep, settings: SettingsDep, key: TrainKey) -> Response:
    """409, naming the jobs, while a queued or running run or evaluation reads the dataset.
    Otherwise the record goes, and with it the files the service made for it: an uploaded
    dataset's upload folder (the archive's extracted classes) and the folder an archive under
    the data root was extracted to. Folders and archives an operator placed in the data root
    by hand stay. Runs that used the dataset keep their records. A dataset may be deleted by
    the key that registered it (and an upload by the key that uploaded it) or by an admin key;
    one registered before owners were recorded, by an admin key only."""
    row = find_dataset(session, ref)
    require_owner(session, key, row, f"Dataset {row.name!r}")
    _refuse_others_upload(row.location, settings, key)
    kind, location = row.kind, row.location
    with committed(session):
        delete_dataset_record(session, row)
    free_files(session, settings, kind=kind, location=location)
    return Response(status_code=204)


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


def _taken(name: str) -> ApiError:
    return ApiError(
        409,
        f"A dataset named {name!r} is already registered",
        details=[ErrorDetail(field="body.name", message="already taken", received=name)],
    )


def _refuse_taken(session: Session, name: str) -> None:
    if dataset_name_taken(session, name):
        raise _taken(name)


def _upload_folder(location: str, settings: SettingsDep) -> Path | None:
    """The upload folder ``location`` lies in (``uploads/<id>/...``), if it names one."""
    parts = PurePosixPath(location).parts
    if len(parts) >= 2 and parts[0] == UPLOADS and is_record_id(parts[1]):
        return settings.data_dir / UPLOADS / parts[1]
    return None


def _refuse_others_upload(location: str, settings: SettingsDep, key: ApiKey) -> None:
    """An upload belongs to the key that sent it; admin keys may use or delete any. The data
    root itself and ``uploads/`` hold every key's uploads: only an admin key registers them."""
    if key.has_scope(Scope.ADMIN):
        return
    parts = [p for p in PurePosixPath(location).parts if p != "."]
    if parts in ([], [UPLOADS]):
        raise ApiError(
            403,
            "The data root and uploads/ hold every key's uploads; only an admin key may "
            "register them as one dataset",
            code="forbidden",
        )
    folder = _upload_folder(location, settings)
    if folder is None:
        return
    if uploads.owner_of(folder) != key.id:
        raise ApiError(
            403,
            f"{UPLOADS}/{folder.name} was uploaded by another API key; only that key or an "
            "admin key may register or delete it",
            code="forbidden",
        )


def free_files(session: Session, settings: SettingsDep, *, kind: str, location: str) -> None:
    """Remove the files the service made for a dataset at ``location`` that no registered
    dataset still uses: its upload folder, and the folder its archive was extracted to."""
    if kind == "synthetic":
        return
    path = settings.data_dir / location
    if not datasets_at(session, location):
        try:
            if is_archive(path):
                uploads.remove(extracted_folder(path, settings.extract_dir))
        except OSError:  # the archive went already: nothing to find its folder by
            pass
    folder = _upload_folder(location, settings)
    if folder is not None:
        relative = folder.relative_to(settings.data_dir).as_posix()
        if not datasets_at(session, relative):
            uploads.remove(folder)


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
    with sessions() as session:
        try:
            with committed(session):
                return _register(session, name, described, owner=owner)
        except RecordConflict:
            raise _taken(name) from None

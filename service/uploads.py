"""Dataset uploads: a multipart body streamed to disk under a size limit, then safely extracted.

The request body is parsed as it arrives (python-multipart's streaming parser) and the archive's
bytes go straight to ``<data root>/uploads/<id>/``, never to memory or /tmp. The whole body may be
at most ``max_upload_bytes``: a ``Content-Length`` over it is refused before anything is read,
and a body without one (chunked) is refused with 413 as soon as the bytes received pass it. The
caller removes the upload folder whenever anything fails, so a refused upload leaves nothing.
Extraction is core's bounded routine (:mod:`core.data.archives`), with a budget relative to the
archive's own size.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from core.data.archives import ARCHIVE_SUFFIXES, ArchiveLimits, extract_into
from service.errors import ApiError, invalid

FILE_FIELD = "file"
TEXT_FIELDS = ("name", "kind")
MAX_TEXT_FIELD_BYTES = 1024
# How much of the client's file name is kept to name the archive in messages.
MAX_FILENAME_CHARS = 200
# Beside data/ in an upload's folder: the id of the key that uploaded it (no column needed).
OWNER_FILE = ".owner"


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The upload is larger than the limit of {limit} bytes (max_upload_bytes)",
        code="payload_too_large",
    )


@dataclass
class ReceivedUpload:
    """A multipart body written to disk: the archive and the text fields that came with it."""

    archive: Path | None = None
    filename: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    bytes_received: int = 0


class _Receiver:
    """Callbacks for python-multipart: text fields to memory, the one file part to disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.result = ReceivedUpload()
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_name: str | None = None
        self._text: bytearray | None = None
        self._file: IO[bytes] | None = None
        self.pending: list[bytes] = []  # file bytes parsed but not yet written

    # python-multipart calls these synchronously while parsing a chunk.
    def on_part_begin(self) -> None:
        self._disposition = b""
        self._part_name = None
        self._text = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", "replace")
        self._part_name = name
        if b"filename" in options:
            if name != FILE_FIELD:
                raise invalid(
                    f"body.{name}", f"unexpected file; send the archive as '{FILE_FIELD}'"
                )
            if self.result.archive is not None:
                raise invalid("body.file", "send one archive per upload")
            filename = options[b"filename"].decode("utf-8", "replace")[-MAX_FILENAME_CHARS:]
            suffix = next((s for s in ARCHIVE_SUFFIXES if filename.lower().endswith(s)), None)
            if suffix is None:
                raise invalid(
                    "body.file", f"expected a {', '.join(ARCHIVE_SUFFIXES)} archive", filename
                )
            # The client's file name is only reported, never used as a path.
            self.result.archive = self.folder / f"archive{suffix}"
            self.result.filename = filename
            self._file = self.result.archive.open("xb")
        else:
            if name not in TEXT_FIELDS:
                raise invalid(
                    f"body.{name}", f"unknown field; expected {FILE_FIELD!r}, 'name', 'kind'"
                )
            self._text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None:
            self._text += data[start:end]
            if len(self._text) > MAX_TEXT_FIELD_BYTES:
                raise invalid(f"body.{self._part_name}", "too long")
        elif self._file is not None:
            self.pending.append(bytes(data[start:end]))

    def on_part_end(self) -> None:
        if self._text is not None and self._part_name is not None:
            self.result.fields[self._part_name] = self._text.decode("utf-8", "replace")
            self._text = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    async def flush(self) -> None:
        if self.pending and self._file is not None:
            data = b"".join(self.pending)
            self.pending.clear()
            await run_in_threadpool(self._file.write, data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive(request: Request, *, folder: Path, limit: int) -> ReceivedUpload:
    """Stream a ``multipart/form-data`` body into ``folder``; at most ``limit`` bytes.

    Raises:
        ApiError: 413 over the limit, 415 not multipart, 400 malformed, 422 a bad part.
    """
    content_type = request.headers.get("content-type", "")
    media_type, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if media_type != b"multipart/form-data" or not boundary:
        raise ApiError(
            415, f"Expected a multipart/form-data body with a boundary; got {content_type!r}"
        )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    folder.mkdir(parents=True, exist_ok=False)
    receiver = _Receiver(folder)
    parser = MultipartParser(boundary, receiver.callbacks())  # type: ignore[arg-type]
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise too_large(limit)
            parser.write(chunk)
            await receiver.flush()
        parser.finalize()
        await receiver.flush()
    except FormParserError as exc:
        raise ApiError(400, f"Malformed multipart body: {exc}") from None
    except ClientDisconnect:
        raise ApiError(400, "The client disconnected during the upload") from None
    finally:
        receiver.close()
    receiver.result.bytes_received = received
    return receiver.result


def extract(archive: Path, dest: Path, *, limits: ArchiveLimits, filename: str) -> None:
    """Extract ``archive`` into the new folder ``dest`` with core's bounded extraction.

    The budget is relative to the archive's own size (``limits``): a 1 MB upload may write
    ``max_ratio`` MB, not a multiple of the upload limit. Members that would escape the folder,
    links and special files, too many members, corrupt or encrypted data are refused. The
    archive is deleted once extracted.

    Raises:
        ApiError: 422 on ``body.file``, naming the client's ``filename``, for an unreadable,
            oversized or unsafe archive.
    """
    try:
        extract_into(archive, dest, limits, display_name=filename)
    except ValueError as exc:  # core's DataError is a ValueError
        message = str(exc).replace(str(archive.parent) + "/", "")
        raise invalid("body.file", message, filename) from None
    archive.unlink()


def write_owner(folder: Path, key_id: str) -> None:
    """Record which API key uploaded into ``folder`` (read back by :func:`owner_of`)."""
    (folder / OWNER_FILE).write_text(key_id)


def owner_of(folder: Path) -> str | None:
    """The id of the key that uploaded ``folder``, or None when nothing says."""
    try:
        return (folder / OWNER_FILE).read_text().strip() or None
    except OSError:
        return None


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)

"""Reading predict requests: the body limit, and the images and options in the body.

Three ways to send images to ``POST /v1/models/{name}/predict``:

- ``multipart/form-data``: one or more file parts (any field name; ``curl -F file=@cat.jpg``),
  and optional text fields ``top_k`` and ``threshold``;
- ``application/json``: ``{"images": [{"b64": "...", "name": "cat.jpg"}], "top_k": 3}``;
- a bare image body (``Content-Type: image/*`` or ``application/octet-stream``).

and one to ``POST /v1/models/{name}:predict``, TF Serving's REST API:
``{"instances": [{"b64": "..."}]}`` (or ``[{"<input>": {"b64": "..."}}]``, or ``"inputs"``).

The body is capped at ``predict_max_body_bytes`` while it streams: a ``Content-Length`` over the
cap is refused before a byte is read, and a chunked body as soon as the bytes received pass it
(:class:`LimitedRoute`), so nothing over the cap is ever held in memory.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from service.errors import ApiError, ErrorDetail, from_pydantic, invalid
from service.inference.multipart import Part, read_plain_multipart
from service.jsonparse import request_json

OPTION_FIELDS = ("top_k", "threshold")
# Starlette's MultiPartParser.max_part_size for a text part; the plain reader keeps the same.
MAX_TEXT_PART_BYTES = 1024 * 1024
MAX_TOP_K = 1000


@dataclass(frozen=True)
class EncodedImage:
    """One image of a request: its bytes, where it was in the request, the client's name."""

    data: bytes
    field: str
    label: str | None = None


@dataclass
class PredictPayload:
    images: list[EncodedImage]
    top_k: int | None = None
    threshold: float | None = None


# --- the body limit --------------------------------------------------------------------------


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"The request body is larger than the limit of {limit} bytes (predict_max_body_bytes)",
        code="payload_too_large",
    )


class LimitedRoute(APIRoute):
    """An API route whose request body may be at most ``settings.predict_max_body_bytes``.

    The ASGI ``receive`` is wrapped to count bytes as they arrive: a declared
    ``Content-Length`` over the limit fails the first read, and a chunked body fails the read
    that passes the limit. The failure is an :class:`ApiError` (413, the one error shape), and
    it happens where the route reads its body, after authentication.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().handle(scope, receive, send)
            return
        limit: int = scope["app"].state.settings.predict_max_body_bytes
        await super().handle(scope, limited_receive(scope, receive, limit), send)


def limited_receive(scope: Scope, receive: Receive, limit: int) -> Receive:
    """``receive``, failing with 413 once the body (declared or received) passes ``limit``."""
    return _limited(receive, limit, _content_length(scope))


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we get here
    return None


def _limited(receive: Receive, limit: int, declared: int | None) -> Receive:
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        if declared is not None and declared > limit:
            raise too_large(limit)
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large(limit)
        return message

    return limited_receive


# --- request bodies --------------------------------------------------------------------------


class Base64Image(BaseModel):
    model_config = ConfigDict(extra="forbid")

    b64: StrictStr = Field(..., description="The encoded image (JPEG, PNG, …) in base64")
    name: StrictStr | None = Field(
        None,
        description="Your name for it, echoed in the answer (at most predict_max_name_chars)",
    )


class PredictJson(BaseModel):
    """``{"images": [{"b64": "..."}], "top_k": 5, "threshold": 0.5}``."""

    model_config = ConfigDict(extra="forbid")

    images: list[Base64Image] = Field(..., min_length=1)
    top_k: StrictInt | None = Field(None, ge=1, le=MAX_TOP_K, description="Single-label models")
    threshold: StrictFloat | None = Field(None, ge=0, le=1, description="Multi-label models")


_Instance = Base64Image | dict[StrictStr, Base64Image]


class TFServingJson(BaseModel):
    """TF Serving's predict request, row (``instances``) or column (``inputs``) format."""

    model_config = ConfigDict(extra="forbid")

    signature_name: StrictStr | None = None
    instances: list[_Instance] | None = None
    inputs: list[_Instance] | _Instance | None = None


_PREDICT_JSON = TypeAdapter(PredictJson)
_TF_SERVING_JSON = TypeAdapter(TFServingJson)
_TOP_K = TypeAdapter(Annotated[int, Field(ge=1, le=MAX_TOP_K)])
_THRESHOLD = TypeAdapter(Annotated[float, Field(ge=0, le=1)])


async def read_predict(request: Request, *, max_images: int) -> PredictPayload:
    """The images and options of a ``/predict`` request (multipart, JSON or a bare image).

    Raises:
        ApiError: 413 body too large; 415 unknown content type; 422 naming the bad field.
    """
    kind = _content_type(request)
    if kind == "multipart/form-data":
        return await _read_multipart(request, max_images=max_images)
    if kind == "application/json":
        data = await _read_json(request)
        try:
            body = _PREDICT_JSON.validate_python(data)
        except ValidationError as exc:
            raise from_pydantic(exc) from None
        _check_count(len(body.images), max_images, "body.images")
        images = [
            EncodedImage(
                _b64(item.b64, f"body.images[{i}].b64"),
                f"body.images[{i}]",
                _checked_name(request, item.name, f"body.images[{i}].name"),
            )
            for i, item in enumerate(body.images)
        ]
        return PredictPayload(images, top_k=body.top_k, threshold=body.threshold)
    if kind.startswith("image/") or kind == "application/octet-stream":
        return PredictPayload([EncodedImage(await request.body(), "body")])
    raise _unsupported_type(kind, "multipart/form-data, application/json, or image/*")


async def read_tf_serving(request: Request, *, max_images: int) -> list[EncodedImage]:
    """The images of a TF Serving-style ``:predict`` request.

    Raises:
        ApiError: 413, 415 (not JSON), 422 naming the bad field.
    """
    kind = _content_type(request)
    if kind != "application/json":
        raise _unsupported_type(kind, "application/json")
    try:
        body = _TF_SERVING_JSON.validate_python(await _read_json(request))
    except ValidationError as exc:
        raise from_pydantic(exc) from None
    if body.signature_name not in (None, "serving_default"):
        raise invalid(
            "body.signature_name", "the only signature is 'serving_default'", body.signature_name
        )
    if (body.instances is None) == (body.inputs is None):
        raise invalid("body", "send either 'instances' (a list) or 'inputs', not both")
    where = "instances" if body.instances is not None else "inputs"
    rows = body.instances if body.instances is not None else body.inputs
    items = rows if isinstance(rows, list) else [rows]
    if not items:
        raise invalid(f"body.{where}", "at least one instance is needed", [])
    _check_count(len(items), max_images, f"body.{where}")
    images = []
    for i, item in enumerate(items):
        field = f"body.{where}[{i}]"
        image: Base64Image | None = item if isinstance(item, Base64Image) else None
        if isinstance(item, dict):
            if len(item) != 1:
                raise invalid(field, "expected {'b64': ...} or {'<input name>': {'b64': ...}}")
            input_name, image = next(iter(item.items()))
            field = f"{field}.{input_name}"
        if image is None:
            raise invalid(field, "expected {'b64': ...}")
        name = _checked_name(request, image.name, f"{field}.name")
        images.append(EncodedImage(_b64(image.b64, f"{field}.b64"), field, name))
    return images


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _unsupported_type(kind: str, expected: str) -> ApiError:
    return ApiError(
        415,
        f"Content-Type {kind or '(none)'!r} is not accepted; send {expected}",
        details=[ErrorDetail(field="header.content-type", message=f"expected {expected}",
                             received=kind or None)],
    )  # fmt: skip


async def _read_json(request: Request) -> Any:
    return request_json(request, await request.body())


def _b64(text: str, field: str) -> bytes:
    try:
        if "-" in text or "_" in text:  # the URL-safe alphabet (TF Serving accepts both)
            return base64.b64decode(text, altchars=b"-_", validate=True)
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise invalid(field, f"not valid base64: {exc}", text) from None


def _checked_name(request: Request, name: str | None, field: str) -> str | None:
    """A JSON image's name, refused (422) past ``predict_max_name_chars``: it is echoed back."""
    limit: int = request.app.state.settings.predict_max_name_chars
    if name is not None and len(name) > limit:
        raise invalid(
            field,
            f"a name of {len(name)} characters; at most {limit} (predict_max_name_chars)",
            name,  # shortened in the answer (errors.MAX_RECEIVED_CHARS)
        )
    return name


def _cut_name(request: Request, name: str | None) -> str | None:
    """A file part's name, cut to ``predict_max_name_chars``: it names the image in answers.

    Cut rather than refused: a client rarely picks its file names, so a long one should not
    cost it the prediction.
    """
    limit: int = request.app.state.settings.predict_max_name_chars
    if name is not None and len(name) > limit:
        return name[: limit - 1] + "…"
    return name


def _check_count(count: int, limit: int, field: str) -> None:
    if count > limit:
        raise invalid(
            field, f"at most {limit} images per request (predict_max_images); got {count}", count
        )


async def _read_multipart(request: Request, *, max_images: int) -> PredictPayload:
    """The images and text options of a multipart body: the plain shape read directly
    (:mod:`service.inference.multipart`), any other through Starlette's form parser."""
    plain = read_plain_multipart(await request.body(), request.headers.get("content-type", ""))
    if plain is None:
        items = await _starlette_items(request, max_images=max_images)
    else:
        items = _plain_items(plain, max_images=max_images)
    images: list[EncodedImage] = []
    per_field: dict[str, int] = {}
    options: dict[str, str] = {}
    for key, value in items:
        if isinstance(value, _File):
            index = per_field[key] = per_field.get(key, -1) + 1
            images.append(
                EncodedImage(value.data, f"body.{key}[{index}]", _cut_name(request, value.name))
            )
        elif key in OPTION_FIELDS:
            options[key] = value
        else:
            raise invalid(
                f"body.{key}", f"unknown field; send image files and optionally "
                f"{' and '.join(OPTION_FIELDS)}", value,
            )  # fmt: skip
    if not images:
        raise invalid("body", "no image file in the multipart body")
    payload = PredictPayload(images)
    if "top_k" in options:
        payload.top_k = _option(_TOP_K, options["top_k"], "body.top_k")
    if "threshold" in options:
        payload.threshold = _option(_THRESHOLD, options["threshold"], "body.threshold")
    return payload


@dataclass(frozen=True)
class _File:
    data: bytes
    name: str | None


def _too_many_files(max_images: int) -> ApiError:
    return invalid("body", f"at most {max_images} images per request (predict_max_images)")


def _too_many_fields() -> ApiError:
    return invalid("body", f"unknown fields; the only text fields are {', '.join(OPTION_FIELDS)}")


def _plain_items(parts: list[Part], *, max_images: int) -> list[tuple[str, _File | str]]:
    """The parts as Starlette's form would give them, with the same limits (files, then
    fields, counted in order, as its parser counts them)."""
    items: list[tuple[str, _File | str]] = []
    files = fields = 0
    for part in parts:
        if part.filename is not None:
            files += 1
            if files > max_images:
                raise _too_many_files(max_images)
            items.append((part.name, _File(part.data, part.filename)))
        else:
            fields += 1
            if fields > len(OPTION_FIELDS):
                raise _too_many_fields()
            if len(part.data) > MAX_TEXT_PART_BYTES:  # as Starlette's parser refuses it
                raise invalid(
                    "body",
                    "malformed multipart body: Part exceeded maximum size of "
                    f"{MAX_TEXT_PART_BYTES // 1024}KB.",
                )
            items.append((part.name, _user_text(part.data)))
    return items


def _user_text(data: bytes) -> str:
    # As Starlette decodes a text field: UTF-8, else Latin-1 (which cannot fail).
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


async def _starlette_items(request: Request, *, max_images: int) -> list[tuple[str, _File | str]]:
    try:
        form = await request.form(max_files=max_images, max_fields=len(OPTION_FIELDS))
    except ApiError:
        raise  # the body broke a limit while it was read (service.limits)
    except StarletteHTTPException as exc:
        detail = str(exc.detail)
        if detail.startswith("Too many files"):
            raise _too_many_files(max_images) from None
        if detail.startswith("Too many fields"):
            raise _too_many_fields() from None
        raise invalid("body", f"malformed multipart body: {detail}") from None
    try:
        items: list[tuple[str, _File | str]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                items.append((key, _File(await value.read(), value.filename)))
            else:
                items.append((key, value))
        return items
    finally:
        await form.close()


def query_options(request: Request) -> tuple[int | None, float | None]:
    """``top_k`` and ``threshold`` from the query string (None when absent).

    Raises:
        ApiError: 422 naming ``query.top_k`` or ``query.threshold``.
    """
    if not request.scope.get("query_string"):
        return None, None  # the usual case: skip building QueryParams (issue 11's profile)
    query = request.query_params
    top_k = query.get("top_k")
    threshold = query.get("threshold")
    return (
        None if top_k is None else _option(_TOP_K, top_k, "query.top_k"),
        None if threshold is None else _option(_THRESHOLD, threshold, "query.threshold"),
    )


def _option(adapter: TypeAdapter[Any], value: str, field: str) -> Any:
    try:
        return adapter.validate_strings(value)
    except ValidationError as exc:
        raise from_pydantic(exc, prefix=field) from None

"""service.inference.multipart reads plain bodies as Starlette's form parser does, or not at all.

Side by side with Starlette's ``MultiPartParser`` on the bodies real clients build (httpx,
urllib3) and on thousands of generated ones, plain and not: wherever the fast reader answers,
it gives the same parts, names, file names and bytes; where a body departs from the plain
shape it answers ``None`` (and the route hands the body to Starlette).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx
import pytest
import urllib3
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.inference.multipart import read_plain_multipart
from service.inference.payload import _user_text

Item = tuple[str, str | None, bytes | str]


def starlette_parts(body: bytes, content_type: str) -> list[Item] | None:
    """What Starlette's parser makes of the body (None if it refuses it)."""

    async def stream() -> Any:
        yield body
        yield b""

    async def parse() -> list[Item] | None:
        headers = Headers({"content-type": content_type})
        parser = MultiPartParser(headers, stream(), max_files=10_000, max_fields=10_000)
        try:
            form = await parser.parse()
        except MultiPartException:
            return None
        parts: list[Item] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                parts.append((key, value.filename, await value.read()))
            else:
                parts.append((key, None, value))
        await form.close()
        return parts

    return asyncio.run(parse())


def fast_parts(body: bytes, content_type: str) -> list[Item] | None:
    parts = read_plain_multipart(body, content_type)
    if parts is None:
        return None
    # text fields decoded as the route decodes them
    return [(p.name, p.filename, p.data if p.filename is not None else _user_text(p.data))
            for p in parts]  # fmt: skip


PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\r\n--not-the-boundary\r\n" + b"\r\n" * 3


def test_the_bodies_httpx_and_urllib3_build_are_read_directly_and_as_starlette_reads_them():
    built = [
        httpx.Request("POST", "http://x/", files={"file": ("cat.png", PNG, "image/png")}),
        httpx.Request(
            "POST",
            "http://x/",
            files=[("file", ("a.png", PNG)), ("file", ("b.jpg", b"x"))],
            data={"top_k": "3"},
        ),
        httpx.Request("POST", "http://x/", files={"image": ("", b"", "application/octet-stream")}),
    ]
    bodies = [(r.read(), r.headers["content-type"]) for r in built]
    for fields in (
        {"file": ("cat.png", PNG, "image/png")},
        {"file": ("cat.png", PNG), "threshold": "0.5"},
    ):
        body, content_type = urllib3.encode_multipart_formdata(fields)
        bodies.append((body, content_type))
    for body, content_type in bodies:
        fast = fast_parts(body, content_type)
        assert fast is not None, body[:200]
        assert fast == starlette_parts(body, content_type)


def _plain_body(rng: random.Random, boundary: str) -> bytes:
    chunks = []
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(["file", "image", "top_k", "a b", "x-y.z", ""])
        disposition = f'form-data; name="{name}"'
        if rng.random() < 0.7:
            disposition += f'; filename="{rng.choice(["cat.png", "", "a b.jpg", "x;y.png"])}"'
        headers = [f"{rng.choice(['Content-Disposition', 'content-disposition'])}: {disposition}"]
        if rng.random() < 0.5:
            headers.append(f"Content-Type: {rng.choice(['image/png', 'text/plain'])}")
            rng.shuffle(headers)
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 40)))
        if rng.random() < 0.3:
            data += rng.choice([b"\r\n", b"--", b"\r\n--", b"\r\n\r\n", b"--" + boundary.encode()])
        chunks.append(f"--{boundary}\r\n".encode() + "\r\n".join(headers).encode()
                      + b"\r\n\r\n" + data + b"\r\n")  # fmt: skip
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


# Ways a body leaves the plain shape (each still one Starlette may or may not accept).
DEPARTURES = [
    lambda b, bd: b"preamble\r\n" + b,
    lambda b, bd: b + b"epilogue",
    lambda b, bd: b[:-2],
    lambda b, bd: b.replace(b"\r\n\r\n", b"\r\nX-Extra: 1\r\n\r\n", 1),
    lambda b, bd: b.replace(b'name="', b'name="\xc3\xa9', 1),
    lambda b, bd: b.replace(b"form-data; ", b"form-data;", 1),
    lambda b, bd: b.replace(b'filename="', b"filename*=UTF-8''", 1),
    lambda b, bd: b.replace(f"--{bd}\r\n".encode(), f"--{bd}  \r\n".encode(), 1),
    lambda b, bd: b.replace(b"\r\n", b"\n"),
    lambda b, bd: b[: len(b) // 2],
]


@pytest.mark.parametrize("seed", range(8))
def test_generated_bodies_read_directly_equal_starlettes_reading(seed):
    rng = random.Random(seed)
    answered = departed = 0
    for _ in range(150):
        boundary = rng.choice(["b", "----WebKitFormBoundary7MA4YWxkTrZu0gW", "a'b(c)+_,-./:=?"])
        content_type = f"multipart/form-data; boundary={boundary}"
        body = _plain_body(rng, boundary)
        if rng.random() < 0.4:
            body = rng.choice(DEPARTURES)(body, boundary)
        fast = fast_parts(body, content_type)
        theirs = starlette_parts(body, content_type)
        if fast is None:
            departed += 1
            continue
        answered += 1
        assert fast == theirs, body
    assert answered > 50 and departed > 10


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/form-data; boundary="b"',
        "multipart/form-data; boundary=b; charset=latin-1",
        "multipart/mixed; boundary=b",
        "multipart/form-data",
        "multipart/form-data; boundary=" + "b" * 71,
    ],
)
def test_content_types_other_than_the_plain_one_are_left_to_starlette(content_type):
    body = b'--b\r\nContent-Disposition: form-data; name="f"; filename="a"\r\n\r\nx\r\n--b--\r\n'
    assert read_plain_multipart(body, content_type) is None
    assert read_plain_multipart(body, "multipart/form-data; boundary=b") is not None


def test_a_text_part_over_starlettes_limit_is_refused_on_the_plain_path_too():
    from service.errors import ApiError
    from service.inference.payload import MAX_TEXT_PART_BYTES, _plain_items

    value = b"1" * (MAX_TEXT_PART_BYTES + 1)
    body = (b'--b\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n' + value
            + b'\r\n--b\r\nContent-Disposition: form-data; name="f"; filename="a.png"\r\n\r\n'
            + PNG + b"\r\n--b--\r\n")  # fmt: skip
    content_type = "multipart/form-data; boundary=b"
    parts = read_plain_multipart(body, content_type)
    assert parts is not None
    with pytest.raises(ApiError) as refused:
        _plain_items(parts, max_images=8)
    assert refused.value.status_code == 422
    assert "Part exceeded maximum size of 1024KB." in str(refused.value.message)
    assert starlette_parts(body, content_type) is None  # Starlette refuses it too
    just_under = body.replace(value, value[:-1])
    assert (
        len(_plain_items(read_plain_multipart(just_under, content_type) or [], max_images=8)) == 2
    )

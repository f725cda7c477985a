"""JSON request bodies within limits: nesting depth, number length, UTF-8.

Python's ``json`` recurses once per nesting level (a body of 100,000 ``[`` raised
``RecursionError``: a 500 on the predict routes, a bare 400 on the others) and refuses
integers over 4,300 digits with a ``ValueError`` that is not a ``JSONDecodeError`` (another
500). :func:`check_json` finds both, and a body that is not UTF-8, without parsing (linear,
never recursive), so every such body is one 422 naming the limit and its setting.

The predict routes parse their bodies with :func:`parse_json`; every other JSON body is
checked by :class:`~service.limits.RequestLimits` before FastAPI parses it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from service.errors import ApiError, ErrorDetail

# A string literal (escapes included): removed before counting brackets, which it may hold.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = re.compile(rb"[\[\]{}]")
_NUMBER = re.compile(rb"[-+0-9.eE]+")  # outside strings, only numbers hold these (and "e"s)
_NUMBER_CHARS = bytes(0x31 if chr(b) in "-+0123456789.eE" else 0x30 for b in range(256))


class JsonRejected(ApiError):
    """A JSON body that is not valid or breaks a limit: always 422 at ``body``."""

    def __init__(self, message: str) -> None:
        super().__init__(
            422,
            f"body: {message}",
            details=[ErrorDetail(field="body", message=message)],
        )


def parse_json(raw: bytes, *, max_depth: int, max_number_chars: int) -> Any:
    """Parse a JSON body, refusing bodies that are not UTF-8 JSON or pass a limit.

    Args:
        raw: the body.
        max_depth: the deepest nesting of arrays and objects allowed (``[[1]]`` is 2).
        max_number_chars: the longest number literal allowed (sign, digits, point, exponent).

    Raises:
        JsonRejected: 422 saying what is wrong and, for a limit, its setting.
    """
    text = check_json(raw, max_depth=max_depth, max_number_chars=max_number_chars)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonRejected(f"not valid JSON: {exc}") from None
    except RecursionError:  # not reachable within the depth limit; kept as a 422 regardless
        raise JsonRejected(f"JSON nested too deep; at most {max_depth}") from None


def check_json(raw: bytes, *, max_depth: int, max_number_chars: int) -> str:
    """The body as text, if it is UTF-8 within both limits (it may still not be JSON).

    Raises:
        JsonRejected: 422 naming what is wrong.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRejected(f"not valid UTF-8 (byte {exc.start}); JSON must be UTF-8") from None
    # The common case, cheaply: too few brackets anywhere to nest too deep, and no run of
    # number characters long enough to be too long a number (a predict body is one long
    # base64 string, which the full check below would copy to skip).
    runs = raw.translate(_NUMBER_CHARS)  # number characters as "1", the rest as "0"
    if raw.count(b"[") + raw.count(b"{") <= max_depth and b"1" * (max_number_chars + 1) not in runs:
        return text
    outside_strings = _STRING.sub(b'""', raw)
    depth = _depth(outside_strings)
    if depth > max_depth:
        raise JsonRejected(
            f"JSON nested {depth} deep; at most {max_depth} (request_json_max_depth)"
        )
    longest = max((len(m.group()) for m in _NUMBER.finditer(outside_strings)), default=0)
    if longest > max_number_chars:
        raise JsonRejected(_number_message(longest, max_number_chars))
    return text


def _number_message(length: int, limit: int) -> str:
    return f"a number of {length} characters; at most {limit} (request_json_max_number_chars)"


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of ``[`` and ``{`` in a JSON text, strings skipped, without parsing.

    Linear in the body, in C (two regex passes), and never recursive. Unbalanced brackets are
    left for the parser to refuse.
    """
    return _depth(_STRING.sub(b'""', raw))


def _depth(outside_strings: bytes) -> int:
    depth = deepest = 0
    for match in _BRACKETS.finditer(outside_strings):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def request_json(request: Request, raw: bytes) -> Any:
    """:func:`parse_json` with the app's limits."""
    settings = request.app.state.settings
    return parse_json(
        raw,
        max_depth=settings.request_json_max_depth,
        max_number_chars=settings.request_json_max_number_chars,
    )

"""Booleans are not numbers anywhere in the API, and only booleans are booleans.

pydantic's default (lax) mode takes ``true`` for ``1`` in an ``int`` or ``float`` field, so
``"seeds": [false]`` was seed 0 and ``"epochs": true`` one epoch. :func:`refuse_bools` walks a
request body along its model's field types, nested models, lists, tuples and dicts included,
and refuses a boolean wherever the type does not allow one; request models call it in a
``mode="before"`` validator (core's configs stay lax for the library's Python callers). The
other way round too: lax mode takes ``0``, ``"yes"`` or ``"off"`` for a ``bool`` field, which
the schema (``type: boolean``) does not allow.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticCustomError


def refuse_bools(model: type[BaseModel], data: Any) -> Any:
    """``data``, unchanged, if no boolean sits where ``model`` wants another type.

    Raises:
        PydanticCustomError: naming the first such place (``seeds.0``, ``schedule.warmup``).
    """
    if isinstance(data, dict):
        _check_fields(model, data, ())
    return data


def _check_fields(model: type[BaseModel], data: dict[Any, Any], at: tuple[str, ...]) -> None:
    for name, field in model.model_fields.items():
        for key in (name, field.alias):
            if key is not None and key in data:
                _check(field.annotation, data[key], (*at, name))
                break


def _check(annotation: Any, value: Any, at: tuple[str, ...]) -> None:
    if value is not None and not isinstance(value, bool) and _only_bool(annotation):
        raise PydanticCustomError(
            "not_a_boolean", "{field}: expected true or false", {"field": ".".join(at)}
        )
    if isinstance(value, bool):
        if _numeric(annotation) and not _allows_bool(annotation):
            raise PydanticCustomError(
                "bool_not_number",
                "{field}: expected a number, not a boolean",
                {"field": ".".join(at)},
            )
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        _check(args[0], value, at)
    elif origin in (typing.Union, types.UnionType):
        for option in args:
            if _fits(option, value):
                _check(option, value, at)
                return
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if isinstance(value, dict):
            _check_fields(annotation, value, at)
    elif origin in (list, tuple, set, frozenset) and isinstance(value, list):
        items = args if origin is tuple and args and args[-1] is not Ellipsis else None
        for i, item in enumerate(value):
            element = (items[i] if i < len(items) else Any) if items else (args or (Any,))[0]
            _check(element, item, (*at, str(i)))
    elif origin is dict and isinstance(value, dict) and len(args) == 2:
        for key, item in value.items():
            _check(args[1], item, (*at, str(key)))


def _allows_bool(annotation: Any) -> bool:
    if annotation in (bool, Any, object) or annotation is None:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _allows_bool(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_allows_bool(option) for option in args)
    if origin is typing.Literal:
        return any(isinstance(arg, bool) for arg in args)
    # containers, models, numbers and strings: a bare boolean is not one of them
    return False


def _only_bool(annotation: Any) -> bool:
    """Whether the type is ``bool`` (or ``bool | None``): nothing but a boolean belongs there."""
    if annotation is bool:
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _only_bool(args[0])
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return bool(options) and all(_only_bool(a) for a in options)
    return False


def _numeric(annotation: Any) -> bool:
    """Whether the type takes an int or a float (where lax mode would take a boolean)."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _numeric(args[0])
    if origin in (typing.Union, types.UnionType):
        return any(_numeric(option) for option in args)
    return False


def _fits(option: Any, value: Any) -> bool:
    """Whether ``value``'s shape matches this member of a union (to walk into the right one)."""
    origin = typing.get_origin(option) or option
    if isinstance(value, dict):
        return origin is dict or (isinstance(origin, type) and issubclass(origin, BaseModel))
    if isinstance(value, list):
        return origin in (list, tuple, set, frozenset)
    return True

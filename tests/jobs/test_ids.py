"""The identifier shapes in jobs.ids, and the places that must agree with them."""

from __future__ import annotations

import pytest

from jobs.ids import MAX_VERSION, is_name, is_record_id, new_id
from jobs.records.models import Run


def test_a_new_id_is_a_record_id_and_every_record_gets_one() -> None:
    assert is_record_id(new_id())
    assert new_id() != new_id()
    assert Run.__table__.c.id.type.length == len(new_id())


@pytest.mark.parametrize("text", ["0123456789abcdef0123456789abcdef", "f" * 32])
def test_record_ids_are_32_lowercase_hex_digits(text: str) -> None:
    assert is_record_id(text)


@pytest.mark.parametrize(
    "text", ["", "0123456789ABCDEF0123456789ABCDEF", "a" * 31, "a" * 33, "../x", "run-1"]
)
def test_anything_else_is_no_record_id(text: str) -> None:
    assert not is_record_id(text)


@pytest.mark.parametrize("text", ["r20", "cifar-10", "A.b_c-d", "x" * 128, "0" * 32])
def test_names(text: str) -> None:
    assert is_name(text)  # (a name shaped like an id is refused by its validator, not here)


@pytest.mark.parametrize("text", ["", ".hidden", "-x", "a/b", "a b", "x" * 129])
def test_not_names(text: str) -> None:
    assert not is_name(text)


def test_versions_fit_an_sql_integer() -> None:
    assert MAX_VERSION == 2**31 - 1

"""The pieces of the request limits on their own: the fair decoder, the JSON checks, the
refusal of booleans as numbers (issue 9; the HTTP behaviour is in test_limits_http.py and
test_limits_predict.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from pydantic import ValidationError

from service.inference.decoder import FairDecoder
from service.jsonparse import JsonRejected, nesting_depth, parse_json
from service.schemas.experiments import ExperimentCreate
from service.schemas.runs import RunCreate

# --- the fair decoder ------------------------------------------------------------------------


class Recorder:
    """Work that takes ``seconds`` per item and notes the order items were started in."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.started: list[Any] = []
        self.lock = threading.Lock()

    def __call__(self, item: Any) -> Any:
        with self.lock:
            self.started.append(item)
        if isinstance(item, str) and item.startswith("bad"):
            raise ValueError(item)
        time.sleep(self.seconds)
        return item


def test_results_come_back_in_order() -> None:
    async def main() -> list[int]:
        decoder = FairDecoder(2)
        try:
            return await decoder.run(list(range(10)), Recorder(0.001))
        finally:
            decoder.close()

    assert asyncio.run(main()) == list(range(10))


def test_a_new_request_goes_before_the_rest_of_a_big_one() -> None:
    work = Recorder()

    async def main() -> None:
        decoder = FairDecoder(1)
        big = asyncio.ensure_future(decoder.run([f"big{i}" for i in range(20)], work))
        await asyncio.sleep(0.05)  # a few of the big request's items are done
        assert await decoder.run(["small"], work) == ["small"]
        await big
        decoder.close()

    asyncio.run(main())
    at = work.started.index("small")
    assert 0 < at < 6  # right after the item that was in the thread when it came
    assert [s for s in work.started if s != "small"] == [f"big{i}" for i in range(20)]


def test_equal_requests_share_the_threads_in_turn() -> None:
    work = Recorder(0.005)

    async def main() -> None:
        decoder = FairDecoder(1)
        await asyncio.gather(
            decoder.run([f"a{i}" for i in range(5)], work),
            decoder.run([f"b{i}" for i in range(5)], work),
        )
        decoder.close()

    asyncio.run(main())
    assert [s[0] for s in work.started] == list("ababababab")


def test_the_first_failed_item_is_raised_and_nothing_after_it_starts() -> None:
    work = Recorder()

    async def main() -> None:
        decoder = FairDecoder(1)
        with pytest.raises(ValueError, match="bad2"):
            await decoder.run(["ok0", "ok1", "bad2", "ok3", "bad4"], work)
        decoder.close()

    asyncio.run(main())
    assert work.started == ["ok0", "ok1", "bad2"]


def test_a_cancelled_request_starts_nothing_more() -> None:
    work = Recorder(0.02)

    async def main() -> None:
        decoder = FairDecoder(2)
        task = asyncio.ensure_future(decoder.run(list(range(100)), work))
        await asyncio.sleep(0.07)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        started = len(work.started)
        await asyncio.sleep(0.2)
        assert len(work.started) == started  # the threads took nothing more of it
        assert await decoder.run(["next"], work) == ["next"]  # and are free for others
        decoder.close()

    asyncio.run(main())
    assert len(work.started) < 20


# --- JSON within limits ----------------------------------------------------------------------


def parse(raw: bytes, depth: int = 4, digits: int = 20) -> Any:
    return parse_json(raw, max_depth=depth, max_number_chars=digits)


def test_depth_is_counted_outside_strings_only() -> None:
    assert nesting_depth(b"[]") == 1
    assert nesting_depth(b'{"a": [[1], {"b": []}]}') == 4
    assert nesting_depth(b'["[[[[", "\\"[[[[", {"x": "]]]"}]') == 2
    assert parse(b'["[[[[[[[[[[", "\\\\", "\\"]]]"]') == ["[[[[[[[[[[", "\\", '"]]]']
    with pytest.raises(JsonRejected, match=r"nested 5 deep; at most 4 \(request_json_max_depth\)"):
        parse(b"[[[[[]]]]]")
    with pytest.raises(JsonRejected, match="nested 100000 deep"):
        parse(b"[" * 100_000)  # refused before the parser could recurse


def test_long_numbers_are_refused_and_strings_of_digits_are_not() -> None:
    assert parse(b'{"n": -12345678901234567.5e+10}', digits=24) == {"n": -12345678901234567.5e10}
    assert parse(b'{"s": "' + b"9" * 5000 + b'"}') == {"s": "9" * 5000}
    for body in (b"1" * 5000, b"[0." + b"1" * 30 + b"]", b'{"n": -' + b"1" * 20 + b"}"):
        with pytest.raises(JsonRejected, match="request_json_max_number_chars"):
            parse(body)


def test_bodies_that_are_not_utf8_or_not_json_are_422() -> None:
    for body, message in (
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
    ):
        with pytest.raises(JsonRejected, match=message) as refused:
            parse(body)
        assert refused.value.status_code == 422
        assert refused.value.details[0].field == "body"


# --- booleans are not numbers ----------------------------------------------------------------

RUN = {"architecture": "resnet20", "data": "cifar10"}


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"epochs": True}, "epochs"),
        ({"batch_size": False}, "batch_size"),
        ({"label_smoothing": True}, "label_smoothing"),
        ({"validation": False}, "validation"),
        ({"input_shape": [32, 32, True]}, "input_shape.2"),
        ({"schedule": {"base_lr": True}}, "schedule.base_lr"),
        ({"optimizer": {"momentum": True}}, "optimizer.momentum"),
    ],
)
def test_a_run_refuses_booleans_for_numbers(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=f"{field}: expected a number, not a boolean"):
        RunCreate.model_validate({**RUN, **extra})


def test_booleans_where_they_belong_and_numbers_still_pass() -> None:
    run = RunCreate.model_validate({**RUN, "xla": True, "epochs": 3, "schedule": {"base_lr": 1}})
    assert run.overrides() == {"xla": True, "epochs": 3, "schedule.base_lr": 1.0}


def test_an_experiment_refuses_boolean_seeds() -> None:
    base = {"name": "e", "architectures": ["resnet20"]}
    with pytest.raises(ValidationError, match="seeds"):
        ExperimentCreate.model_validate({**base, "seeds": [False]})
    assert ExperimentCreate.model_validate({**base, "seeds": [0, 1]}).seeds == [0, 1]


@pytest.mark.parametrize("value", [0, 1, "true", "yes", "off"])
def test_only_booleans_are_booleans(value: object) -> None:
    """Lax mode took ``0`` or ``"yes"`` for a boolean field (schemathesis: ``plain_twins: 0``
    was accepted); the schema says ``type: boolean``."""
    from pydantic import ValidationError

    from service.schemas import ExperimentCreate, RunCreate

    with pytest.raises(ValidationError, match="xla"):
        RunCreate.model_validate({"architecture": "resnet8", "data": "cifar10", "xla": value})
    with pytest.raises(ValidationError, match="plain_twins"):
        ExperimentCreate.model_validate(
            {"name": "x", "architectures": ["resnet8"], "plain_twins": value}
        )
    assert RunCreate.model_validate({"architecture": "resnet8", "data": "cifar10", "xla": True})

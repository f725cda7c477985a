"""ASHA's rungs and cut, and the median-stopping rule, on numbers chosen by hand."""

from __future__ import annotations

import pytest

from core.early_stopping import (
    Report,
    Verdict,
    asha_decide,
    asha_rungs,
    check_asha,
    higher_is_better,
    median_decide,
)


def test_rungs_from_grace_period_and_factor() -> None:
    assert asha_rungs(max_epochs=27, grace_period=1, reduction_factor=3) == [1, 3, 9]
    assert asha_rungs(max_epochs=28, grace_period=1, reduction_factor=3) == [1, 3, 9, 27]
    assert asha_rungs(max_epochs=10, grace_period=2, reduction_factor=2) == [2, 4, 8]
    assert asha_rungs(max_epochs=9, grace_period=1, reduction_factor=3, rungs=[1, 4]) == [1, 4]


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"grace_period": 1, "reduction_factor": 1}, "reduction_factor", "at least 2"),
        ({"max_epochs": 3, "grace_period": 3}, "grace_period", "before the budget"),
        ({"grace_period": 1, "rungs": [1, 1]}, "rungs", "increasing"),
        ({"grace_period": 1, "rungs": [2, 4]}, "rungs", "grace period"),
        ({"grace_period": 1, "rungs": [1, 9]}, "rungs", "before the budget"),
    ],
)
def test_bad_schedules_name_the_field(kwargs: dict, field: str, words: str) -> None:
    kwargs = {"max_epochs": 9, "reduction_factor": 3, **kwargs}
    problem = check_asha(**kwargs)
    assert problem is not None and problem[0] == field and words in problem[1]
    with pytest.raises(ValueError, match=words):
        asha_rungs(**kwargs)


def test_asha_promotes_the_top_fraction_so_far_and_stops_those_out_of_reach() -> None:
    # η = 3, 9 trials in all; 4 reported so far, 5 still to come.
    reports = [Report("a", 0.5), Report("b", 0.9), Report("c", 0.2), Report("d", 0.6)]
    out = asha_decide(reports, reduction_factor=3, still_to_report=5)
    assert out["b"].verdict == Verdict.PROMOTED  # top 4 // 3 = 1
    assert out["d"].verdict == Verdict.PENDING  # 2nd: the final cut keeps 9 // 3 = 3
    assert out["a"].verdict == Verdict.PENDING  # 3rd: still inside that cut
    assert out["c"].verdict == Verdict.STOPPED  # 4th: can only fall further
    assert "below the cut" in out["c"].reason


def test_asha_decides_everyone_once_all_have_reported_and_keeps_at_least_one() -> None:
    reports = [Report("a", 0.5), Report("b", 0.9)]
    out = asha_decide(reports, reduction_factor=3, still_to_report=0)
    assert out["b"].verdict == Verdict.PROMOTED  # 2 // 3 = 0, but the best always goes on
    assert out["a"].verdict == Verdict.STOPPED


def test_asha_losses_are_minimised_and_ties_go_to_the_earlier_report() -> None:
    out = asha_decide(
        [Report("a", 0.3), Report("b", 0.3), Report("c", 1.0)],
        reduction_factor=3,
        still_to_report=0,
        higher_better=higher_is_better("val_loss"),
    )
    assert [out[t].verdict for t in "abc"] == [Verdict.PROMOTED, Verdict.STOPPED, Verdict.STOPPED]


def test_median_rule() -> None:
    peers = [[0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.1, 0.2, 0.3]]  # running means at 2: .55 .45 .15
    kwargs = {"grace_period": 2, "min_trials": 3}
    assert median_decide([0.1], peers, **kwargs).verdict == Verdict.PROMOTED  # grace period
    assert median_decide([0.1, 0.4], peers, **kwargs).verdict == Verdict.STOPPED  # .4 < .45
    assert median_decide([0.1, 0.46], peers, **kwargs).verdict == Verdict.PROMOTED
    assert median_decide([0.1, 0.4], peers[:2], **kwargs).verdict == Verdict.PROMOTED  # 2 peers
    short = [*peers[:2], [0.9]]  # a peer with one epoch has no running mean at epoch 2
    assert median_decide([0.1, 0.4], short, **kwargs).verdict == Verdict.PROMOTED
    assert median_decide([0.1, float("nan")], peers, **kwargs).verdict == Verdict.STOPPED
    losses = median_decide([2.0, 1.0], [[1.0, 1.0]] * 3, higher_better=False, **kwargs)
    assert losses.verdict == Verdict.PROMOTED  # best 1.0 is not worse than the median 1.0

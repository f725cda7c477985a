"""Early-stopping rules for hyperparameter searches, as plain functions over reported numbers.

Two rules, both asynchronous (no trial ever waits for a whole generation of others):

- **ASHA**, asynchronous successive halving (Li et al., *A System for Massively Parallel
  Hyperparameter Tuning*, MLSys 2020). Trials are judged at *rungs*: epochs
  ``grace_period × reduction_factor**k`` below the full budget. A trial that reaches a rung is
  promoted to the next one as soon as it ranks in the top ``1/reduction_factor`` of the trials
  that have reported at that rung so far; it is stopped as soon as it can no longer get there
  (even if every trial still able to report came in below it); otherwise it waits (paused).
  Once every trial that can report at a rung has, at least the best one is promoted, so a
  search always ends with a trial trained on the whole budget.
- **Median stopping** (Golovin et al., *Google Vizier*, KDD 2017): from ``grace_period`` on,
  a trial whose best value so far is worse than the median of the other trials' running means
  up to the same epoch (at least ``min_trials`` of them) is stopped.

A value's direction comes from the metric's name: accuracies are maximised, losses minimised.
Nothing here knows about runs, databases or workers: the caller records the numbers, holds
whatever lock makes a decision atomic, and acts on the verdicts.
"""

from __future__ import annotations

import enum
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

# The epoch metrics a rule may judge by (core.training.hooks.EpochRecord's fields).
METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")


class Verdict(enum.StrEnum):
    """What becomes of a trial that reported at a rung."""

    PROMOTED = "promoted"  # goes on to the next rung
    STOPPED = "stopped"  # stopped early: it cannot make the cut
    PENDING = "pending"  # waits (paused) until enough trials have reported to decide


@dataclass(frozen=True)
class Report:
    """One trial's value at a rung, in the order reports arrived."""

    trial: str
    value: float


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


def higher_is_better(metric: str) -> bool:
    """Accuracies are maximised, losses minimised."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric: {metric!r}. Expected one of {list(METRICS)}")
    return "accuracy" in metric


def asha_rungs(
    *,
    max_epochs: int,
    grace_period: int,
    reduction_factor: int,
    rungs: Sequence[int] | None = None,
) -> list[int]:
    """The epochs at which trials are judged, ascending, each below ``max_epochs``.

    Without explicit ``rungs``: ``grace_period × reduction_factor**k`` for k = 0, 1, ...

    Raises:
        ValueError: A combination that leaves no rung, or explicit rungs that are not
            increasing or not below the budget; the message says which and why.
    """
    problem = check_asha(
        max_epochs=max_epochs,
        grace_period=grace_period,
        reduction_factor=reduction_factor,
        rungs=rungs,
    )
    if problem is not None:
        raise ValueError(problem[1])
    if rungs is not None:
        return list(rungs)
    out, epoch = [], grace_period
    while epoch < max_epochs:
        out.append(epoch)
        epoch *= reduction_factor
    return out


def check_asha(
    *,
    max_epochs: int,
    grace_period: int,
    reduction_factor: int,
    rungs: Sequence[int] | None = None,
) -> tuple[str, str] | None:
    """What is wrong with an ASHA schedule, as (field, message), or ``None``."""
    if reduction_factor < 2:
        return "reduction_factor", f"must be at least 2 (keep the top 1/η); got {reduction_factor}"
    if rungs is not None:
        if not rungs:
            return "rungs", "list at least one epoch, or leave rungs out"
        if any(b <= a for a, b in itertools.pairwise(rungs)):
            return "rungs", f"must be strictly increasing; got {list(rungs)}"
        if rungs[-1] >= max_epochs:
            return "rungs", (
                f"every rung must come before the budget's end (epochs = {max_epochs}); "
                f"got {rungs[-1]}"
            )
        if rungs[0] != grace_period:
            return "rungs", (
                f"the first rung is the grace period ({grace_period} epochs); got {rungs[0]}"
            )
    if grace_period < 1:
        return "grace_period", f"must be at least 1 epoch; got {grace_period}"
    if max_epochs <= grace_period:
        return "grace_period", (
            f"the first rung ({grace_period} epochs) must come before the budget's end "
            f"(epochs = {max_epochs}), or no trial is ever stopped early"
        )
    return None


def asha_decide(
    reports: Sequence[Report],
    *,
    reduction_factor: int,
    still_to_report: int,
    higher_better: bool = True,
) -> dict[str, Decision]:
    """The verdict on every trial that reported at one rung.

    Args:
        reports: The rung's reports in arrival order (ties go to the earlier one).
        reduction_factor: η: the top 1/η go on.
        still_to_report: How many live trials have not reached this rung yet (they may).
        higher_better: The metric's direction.

    Returns:
        Trial → decision. The caller applies only the verdicts of trials still pending there:
        a promotion is never taken back, as in ASHA (a later, better trial may push a promoted
        one out of the top, and both go on).
    """
    order = sorted(
        range(len(reports)),
        key=lambda i: (-reports[i].value if higher_better else reports[i].value, i),
    )
    reported = len(reports)
    eventual = reported + still_to_report
    keep_now = reported // reduction_factor
    # At least the best goes on once all are in, so that every search ends with a trial trained
    # on the whole budget; and a trial outside that final cut now can only fall further.
    keep_final = max(1, eventual // reduction_factor)
    word = "highest" if higher_better else "lowest"
    out: dict[str, Decision] = {}
    for rank, i in enumerate(order, start=1):
        trial, value = reports[i].trial, reports[i].value
        place = f"ranked {rank} of {reported} reported ({value:.4g})"
        if rank <= keep_now:
            out[trial] = Decision(Verdict.PROMOTED, f"{place}: in the {word} 1/{reduction_factor}")
        elif rank > keep_final:
            out[trial] = Decision(
                Verdict.STOPPED,
                f"{place}: below the cut, the {word} {keep_final} of {eventual} trials go on",
            )
        elif still_to_report == 0:
            out[trial] = Decision(
                Verdict.PROMOTED, f"{place}: all {eventual} reported, the {word} {keep_final} go on"
            )
        else:
            out[trial] = Decision(
                Verdict.PENDING, f"{place}: waiting for {still_to_report} more trial(s)"
            )
    return out


def median_decide(
    history: Sequence[float],
    peers: Sequence[Sequence[float]],
    *,
    grace_period: int,
    min_trials: int,
    higher_better: bool = True,
) -> Decision:
    """The median-stopping verdict on a trial after its epoch ``len(history)``.

    Args:
        history: The trial's values, one per epoch so far.
        peers: The other trials' values for the same epochs (those that have as many: a
            peer's running mean is over exactly the epochs this trial has).
        grace_period: No trial is stopped before this many epochs.
        min_trials: No trial is stopped on the word of fewer peers than this.
        higher_better: The metric's direction.

    Returns:
        ``STOPPED`` (worse than the median) or ``PROMOTED`` (it goes on).
    """
    epoch = len(history)
    usable = [p[:epoch] for p in peers if len(p) >= epoch]
    if epoch < grace_period:
        return Decision(Verdict.PROMOTED, f"within the grace period ({grace_period} epochs)")
    if len(usable) < min_trials:
        return Decision(
            Verdict.PROMOTED, f"{len(usable)} peer(s) at epoch {epoch}, fewer than {min_trials}"
        )
    median = statistics.median(statistics.fmean(p) for p in usable)
    best = max(history) if higher_better else min(history)
    worse = best < median if higher_better else best > median
    if math.isnan(best) or worse:
        return Decision(
            Verdict.STOPPED,
            f"best {best:.4g} is worse than the median {median:.4g} of "
            f"{len(usable)} other trials' running means",
        )
    return Decision(
        Verdict.PROMOTED,
        f"best {best:.4g}, median of {len(usable)} others {median:.4g}",
    )

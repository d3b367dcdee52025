"""A stopping rule for ``compare``: run batches until the verdict is decided or a cap is hit,
without raising the chance of a false "REPRODUCED" above ``alpha``.

The plan is group-sequential with a Bonferroni split: K = ceil(max_iterations / batch) looks
are fixed before the first iteration runs, one after each batch of ``batch`` iterations per
variant (both variants run each batch back to back in one VM boot, with a seed of its own so
the faults differ). Each look tests the pooled counts with the one-sided Fisher test at
alpha / K. Why that keeps the error rate: with equal race rates each look's test rejects with
probability at most alpha / K (Fisher's test is exact, conservative), so the chance that any
of the K looks rejects is at most K * alpha / K = alpha (the union bound needs no assumption
about how the looks depend on one another, nor equal batch sizes). Stopping at the first
decided look only removes looks after it; stopping at the cap or at the deadline
(``max_minutes``) only gives up chances to reject: neither can raise the rate. The price is
power: each look is stricter than one test of the final size at alpha would be.

The other verdicts need no correction: NOT FIXED rests on a single counterexample, not on a
test; NOT REPRODUCED (no stock race, 95% bound below the rate looked for) can first hold at
one fixed number of iterations, and while the stock variant has no race that number is the
same at every look, so it is one bound computed once.

Everything here is pure: the VM runs behind the ``run_batch`` callable of ``run_sequence``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from harness.analysis.compare import (
    DEFAULT_MIN_RATE,
    Comparison,
    ComparisonVerdict,
    VariantOutcome,
    compare,
)
from harness.core.errors import HarnessError

DEFAULT_BATCH = 10
DEFAULT_MAX_ITERATIONS = 60


@dataclass(frozen=True)
class SequentialPlan:
    """The looks planned before the first iteration (iterations are per variant)."""

    alpha: float  # overall chance of a false REPRODUCED, over all looks
    batch: int  # iterations per variant between looks
    max_iterations: int  # per variant, the cap
    max_minutes: float | None  # wall-clock cap of the whole sequence; None: no cap

    @property
    def looks(self) -> int:
        """K: the number of looks planned."""
        return math.ceil(self.max_iterations / self.batch)

    @property
    def alpha_per_look(self) -> float:
        """The level each look's test uses: alpha / K (Bonferroni)."""
        return self.alpha / self.looks

    def batch_sizes(self) -> list[int]:
        """Iterations per variant of each batch: ``batch`` each, the last one what is left."""
        return [
            min(self.batch, self.max_iterations - index * self.batch) for index in range(self.looks)
        ]

    def describe(self) -> str:
        """The rule and why it is proper, in one line."""
        deadline = f", {self.max_minutes:g} min" if self.max_minutes is not None else ""
        return (
            f"group-sequential: up to {self.looks} looks, one after each batch of "
            f"{self.batch} iterations per variant (cap {self.max_iterations}{deadline}); each "
            f"look tests at alpha/{self.looks} = {self.alpha_per_look:.3g} (Bonferroni: a false "
            f"REPRODUCED over all looks stays <= alpha = {self.alpha:g}); stops at the first "
            "decided look; stopping at the cap or deadline cannot raise that rate"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "looks": self.looks, "alpha_per_look": self.alpha_per_look}


def make_plan(
    alpha: float, batch: int, max_iterations: int, max_minutes: float | None = None
) -> SequentialPlan:
    """A checked plan. Raises HarnessError (with the option to fix) on a value out of range."""
    if not 0.0 < alpha < 1.0:
        raise HarnessError(f"--alpha {alpha}: give a level in (0, 1), e.g. 0.01")
    if batch < 1:
        raise HarnessError(f"--batch {batch}: give at least 1 iteration per variant")
    if max_iterations < 1:
        raise HarnessError(f"--max-iterations {max_iterations}: give at least 1")
    if max_minutes is not None and max_minutes <= 0:
        raise HarnessError(f"--max-minutes {max_minutes}: give a positive number of minutes")
    return SequentialPlan(alpha, batch, max_iterations, max_minutes)


class StopReason(StrEnum):
    DECIDED = "decided"  # the verdict is no longer INCONCLUSIVE
    NOT_CLEAN = "not_clean"  # the patched run crashed or hung: more batches cannot fix that
    NO_ITERATIONS = "no_iterations"  # a batch added no iteration to a variant (infrastructure)
    CAP = "cap"  # every planned look is done
    DEADLINE = "deadline"  # another batch would end after max_minutes


@dataclass(frozen=True)
class Look:
    """The pooled counts at one look and what the test said (iterations per variant)."""

    number: int
    stock_race_iterations: int
    stock_trials: int
    patched_race_iterations: int
    patched_trials: int
    p_one_sided: float
    alpha: float  # the level of this look: alpha / K
    verdict: str  # a ComparisonVerdict value
    batch_s: float  # wall seconds of this look's batch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """Whether to stop after a look; ``reason`` is None while the sequence goes on."""

    stop: bool
    reason: StopReason | None
    detail: str  # one line for a person


def decide(
    plan: SequentialPlan,
    look: int,
    comparison: Comparison,
    elapsed_s: float,
    batch_s: float,
    added: tuple[int, int],
) -> Decision:
    """Stop or go on after look number ``look`` (1-based).

    ``elapsed_s`` is the wall time since the first batch started, ``batch_s`` the last batch's
    (the estimate of the next one's), ``added`` the trials the last batch added to the stock
    and the patched variant.
    """
    if comparison.verdict != ComparisonVerdict.INCONCLUSIVE:
        return Decision(True, StopReason.DECIDED, f"decided at look {look} of {plan.looks}")
    if not comparison.patched.clean and comparison.patched.trials > 0:
        return Decision(
            True, StopReason.NOT_CLEAN, f"the {comparison.patched.variant} run is not clean"
        )
    if min(added) <= 0:
        which = comparison.stock.variant if added[0] <= 0 else comparison.patched.variant
        return Decision(
            True,
            StopReason.NO_ITERATIONS,
            f"batch {look} ran no iteration on {which} (see its console.log)",
        )
    if look >= plan.looks:
        return Decision(
            True, StopReason.CAP, f"cap of {plan.max_iterations} iterations per variant reached"
        )
    if plan.max_minutes is not None and elapsed_s + batch_s > plan.max_minutes * 60:
        return Decision(
            True,
            StopReason.DEADLINE,
            f"another batch (~{batch_s:.0f} s) would end after {plan.max_minutes:g} min "
            f"({elapsed_s:.0f} s spent)",
        )
    return Decision(False, None, f"undecided after look {look} of {plan.looks}: next batch")


@dataclass(frozen=True)
class SequentialResult:
    """How a sequence ended: its looks, the last look's comparison, and why it stopped."""

    plan: SequentialPlan
    looks: tuple[Look, ...]
    comparison: Comparison
    reason: StopReason
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """The ``sequential`` entry of compare.json."""
        return {
            "plan": self.plan.to_dict(),
            "looks": [look.to_dict() for look in self.looks],
            "stop_reason": self.reason.value,
            "stop_detail": self.detail,
        }


RunBatch = Callable[[int, int], tuple[VariantOutcome, VariantOutcome]]


def run_sequence(
    plan: SequentialPlan,
    run_batch: RunBatch,
    on_look: Callable[[Look, Decision], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    min_rate: float = DEFAULT_MIN_RATE,
    eod_shape: str | None = None,
) -> SequentialResult:
    """Run the plan's batches until ``decide`` stops it.

    ``run_batch(look_number, iterations_per_variant)`` runs one batch on both variants and
    returns the (stock, patched) outcomes pooled over every batch so far. ``clock`` gives
    seconds. Each look's comparison uses ``plan.alpha_per_look`` (and ``eod_shape``: the
    kernel's bio_check_eod() shape, compare()'s); the last one is the result.
    Raises what ``run_batch`` raises.
    """
    started = clock()
    looks: list[Look] = []
    trials = (0, 0)
    for number, size in enumerate(plan.batch_sizes(), start=1):
        batch_started = clock()
        stock, patched = run_batch(number, size)
        batch_s = clock() - batch_started
        comparison = compare(
            stock,
            patched,
            alpha=plan.alpha_per_look,
            min_rate=min_rate,
            rule=plan.describe(),
            eod_shape=eod_shape,
        )
        look = Look(
            number=number,
            stock_race_iterations=stock.race_iterations,
            stock_trials=stock.trials,
            patched_race_iterations=patched.race_iterations,
            patched_trials=patched.trials,
            p_one_sided=comparison.fisher_p_one_sided,
            alpha=plan.alpha_per_look,
            verdict=comparison.verdict.value,
            batch_s=round(batch_s, 1),
        )
        looks.append(look)
        added = (stock.trials - trials[0], patched.trials - trials[1])
        trials = (stock.trials, patched.trials)
        decision = decide(plan, number, comparison, clock() - started, batch_s, added)
        if on_look is not None:
            on_look(look, decision)
        if decision.stop:
            assert decision.reason is not None
            reason, detail = decision.reason, decision.detail
            return SequentialResult(plan, tuple(looks), comparison, reason, detail)
    raise AssertionError("decide() stops at the last planned look")  # pragma: no cover

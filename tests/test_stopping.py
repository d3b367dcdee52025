"""The stopping rule of ``compare --sequential``: the plan, each look's decision, the loop,
simulations of its false-positive rate, and the CLI loop with the VM faked."""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import compare as compare_mod
from harness.analysis import stopping
from harness.analysis.compare import ComparisonVerdict, VariantOutcome, compare
from harness.analysis.stats import fisher_exact_greater
from harness.analysis.stopping import Decision, Look, SequentialPlan, StopReason, decide, make_plan
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from tests.test_compare import compare_cli, dead_vm, fake_vm

__all__ = ["fake_vm"]  # the fixture, imported for the CLI tests below

# --- the plan ------------------------------------------------------------------------------------


def test_plan_splits_alpha_over_the_planned_looks() -> None:
    plan = make_plan(alpha=0.01, batch=10, max_iterations=25)
    assert plan.looks == 3
    assert plan.alpha_per_look == pytest.approx(0.01 / 3)
    assert plan.batch_sizes() == [10, 10, 5]
    assert make_plan(0.01, 10, 60).batch_sizes() == [10] * 6
    assert make_plan(0.01, 10, 4).batch_sizes() == [4]  # a cap below one batch: one look
    line = make_plan(0.01, 10, 60, max_minutes=30).describe()
    assert "\n" not in line
    assert "up to 6 looks" in line and "alpha/6 = 0.00167" in line and "30 min" in line
    assert "Bonferroni" in line and "<= alpha = 0.01" in line
    data = plan.to_dict()
    assert (data["looks"], data["batch"], data["max_minutes"]) == (3, 10, None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ((0.0, 10, 60, None), "--alpha 0.0"),
        ((1.0, 10, 60, None), "--alpha 1.0"),
        ((0.01, 0, 60, None), "--batch 0"),
        ((0.01, 10, 0, None), "--max-iterations 0"),
        ((0.01, 10, 60, 0.0), "--max-minutes 0.0"),
    ],
)
def test_plan_refuses_values_out_of_range(
    values: tuple[float, int, int, float | None], message: str
) -> None:
    with pytest.raises(HarnessError, match=message):
        make_plan(*values)


# --- decide --------------------------------------------------------------------------------------


def comparison_of(stock: tuple[int, int], patched: tuple[int, int], plan: SequentialPlan) -> Any:
    return compare(
        VariantOutcome.of_counts("unfixed", stock[1], stock[0]),
        VariantOutcome.of_counts("fixed", patched[1], patched[0]),
        alpha=plan.alpha_per_look,
    )


PLAN = make_plan(alpha=0.01, batch=10, max_iterations=40, max_minutes=10)


def test_a_decided_look_stops() -> None:
    decision = decide(PLAN, 1, comparison_of((9, 10), (0, 10), PLAN), 60, 60, (10, 10))
    assert decision == Decision(True, StopReason.DECIDED, "decided at look 1 of 4")
    not_fixed = decide(PLAN, 1, comparison_of((1, 10), (1, 10), PLAN), 60, 60, (10, 10))
    assert not_fixed.reason == StopReason.DECIDED


def test_an_undecided_look_goes_on() -> None:
    # 4/20 vs 0/20: p = 0.053, far from 0.0025
    decision = decide(PLAN, 2, comparison_of((4, 20), (0, 20), PLAN), 120, 60, (10, 10))
    assert decision == Decision(False, None, "undecided after look 2 of 4: next batch")


def test_the_cap_stops() -> None:
    decision = decide(PLAN, 4, comparison_of((4, 40), (0, 40), PLAN), 240, 60, (10, 10))
    assert decision.stop and decision.reason == StopReason.CAP
    assert decision.detail == "cap of 40 iterations per variant reached"


def test_the_deadline_stops_before_a_batch_that_would_overrun_it() -> None:
    undecided = comparison_of((4, 20), (0, 20), PLAN)
    assert not decide(PLAN, 2, undecided, 500, 99, (10, 10)).stop  # 599 s <= 600 s
    decision = decide(PLAN, 2, undecided, 500, 101, (10, 10))
    assert decision.stop and decision.reason == StopReason.DEADLINE
    assert decision.detail == "another batch (~101 s) would end after 10 min (500 s spent)"


def test_a_batch_that_ran_nothing_stops() -> None:
    decision = decide(PLAN, 2, comparison_of((4, 20), (0, 10), PLAN), 120, 60, (10, 0))
    assert decision.stop and decision.reason == StopReason.NO_ITERATIONS
    assert "batch 2 ran no iteration on fixed" in decision.detail


def test_a_patched_run_that_is_not_clean_stops() -> None:
    hung = VariantOutcome.of_counts("fixed", 10, 0)
    hung = VariantOutcome(**{**hung.__dict__, "hangs": 1})
    result = compare(VariantOutcome.of_counts("unfixed", 10, 4), hung, alpha=PLAN.alpha_per_look)
    decision = decide(PLAN, 1, result, 60, 60, (10, 10))
    assert decision.stop and decision.reason == StopReason.NOT_CLEAN


# --- run_sequence ------------------------------------------------------------------------------


class Batches:
    """A run_batch that pools race counts over batches; a batch takes ``batch_s`` seconds of
    the clock ``now`` (pass ``clock=batches.now``)."""

    def __init__(self, batch_s: float = 1.0) -> None:
        self.calls: list[tuple[int, int]] = []
        self.totals = [0, 0, 0]  # stock races, patched races, iterations per variant
        self.batch_s = batch_s
        self.seconds = 0.0

    def now(self) -> float:
        return self.seconds

    def races(self, number: int, size: int) -> tuple[int, int]:
        raise NotImplementedError  # pragma: no cover

    def __call__(self, number: int, size: int) -> tuple[VariantOutcome, VariantOutcome]:
        self.calls.append((number, size))
        self.seconds += self.batch_s
        stock, patched = self.races(number, size)
        self.totals = [self.totals[0] + stock, self.totals[1] + patched, self.totals[2] + size]
        return (
            VariantOutcome.of_counts("unfixed", self.totals[2], self.totals[0]),
            VariantOutcome.of_counts("fixed", self.totals[2], self.totals[1]),
        )


class Scripted(Batches):
    """Fixed race counts per batch: [(stock, patched), ...]."""

    def __init__(self, races: list[tuple[int, int]], batch_s: float = 1.0) -> None:
        super().__init__(batch_s)
        self.script = races

    def races(self, number: int, size: int) -> tuple[int, int]:
        return self.script[number - 1]


class Drawn(Batches):
    """Races drawn per iteration at the given true rates (seeded by the caller's rng)."""

    def __init__(self, rng: random.Random, rate_stock: float, rate_patched: float) -> None:
        super().__init__()
        self.rng, self.rates = rng, (rate_stock, rate_patched)

    def races(self, number: int, size: int) -> tuple[int, int]:
        stock = sum(self.rng.random() < self.rates[0] for _ in range(size))
        patched = sum(self.rng.random() < self.rates[1] for _ in range(size))
        return stock, patched


def test_the_sequence_stops_at_the_first_significant_look() -> None:
    plan = make_plan(alpha=0.01, batch=10, max_iterations=60)
    # pooled: 3/10 (p 0.106), 7/20 (p 0.0042 > 0.00167), 12/30 (p 6e-5): decided at look 3
    batches = Scripted([(3, 0), (4, 0), (5, 0), (5, 0), (5, 0), (5, 0)])
    seen: list[tuple[Look, Decision]] = []
    result = stopping.run_sequence(
        plan, batches, on_look=lambda look, d: seen.append((look, d)), clock=batches.now
    )
    assert batches.calls == [(1, 10), (2, 10), (3, 10)]
    assert [look.verdict for look in result.looks] == ["inconclusive"] * 2 + [
        "reproduced_and_fixed"
    ]
    assert result.looks[1].p_one_sided == pytest.approx(0.00416, rel=1e-2)
    assert all(look.alpha == plan.alpha_per_look for look in result.looks)
    assert result.reason == StopReason.DECIDED
    assert result.comparison.verdict == ComparisonVerdict.REPRODUCED_AND_FIXED
    assert result.comparison.alpha == plan.alpha_per_look
    assert result.comparison.rule == plan.describe()
    assert [look for look, _ in seen] == list(result.looks)
    assert [d.stop for _, d in seen] == [False, False, True]
    data = result.to_dict()
    assert data["stop_reason"] == "decided" and len(data["looks"]) == 3
    assert data["looks"][2]["stock_race_iterations"] == 12
    assert data["plan"]["alpha_per_look"] == plan.alpha_per_look


def test_the_sequence_ends_at_the_cap_when_nothing_is_decided() -> None:
    plan = make_plan(alpha=0.01, batch=10, max_iterations=25)
    batches = Scripted([(1, 0), (0, 0), (1, 0)])
    result = stopping.run_sequence(plan, batches, clock=batches.now)
    assert batches.calls == [(1, 10), (2, 10), (3, 5)]
    assert result.reason == StopReason.CAP
    assert result.comparison.verdict == ComparisonVerdict.INCONCLUSIVE
    assert result.comparison.needed_iterations is not None


def test_the_sequence_ends_at_the_deadline() -> None:
    plan = make_plan(alpha=0.01, batch=10, max_iterations=60, max_minutes=1)
    # a batch takes 20 s: three fit in the minute, a fourth would end at 80 s
    batches = Scripted([(1, 0)] * 6, batch_s=20.0)
    result = stopping.run_sequence(plan, batches, clock=batches.now)
    assert len(result.looks) == 3
    assert result.reason == StopReason.DEADLINE
    assert result.detail == "another batch (~20 s) would end after 1 min (60 s spent)"


def test_a_race_on_the_patched_variant_ends_the_sequence_at_once() -> None:
    plan = make_plan(alpha=0.01, batch=10, max_iterations=60)
    batches = Scripted([(2, 1)] * 6)
    result = stopping.run_sequence(plan, batches, clock=batches.now)
    assert len(result.looks) == 1
    assert result.comparison.verdict == ComparisonVerdict.NOT_FIXED


# --- simulations: the false-positive rate under equal rates -------------------------------------


@cache
def one_sided_p(stock: int, patched: int, n: int) -> float:
    return fisher_exact_greater(stock, n - stock, patched, n - patched)


def any_look_rejects_rate(rate: float, alpha_per_look: float, looks: int, sims: int) -> float:
    """How often some look's test rejects when both variants fail at ``rate`` (seeded)."""
    rng = random.Random(f"{rate}-{alpha_per_look}-{looks}")
    batch = 10
    rejected = 0
    for _ in range(sims):
        stock = patched = 0
        for look in range(1, looks + 1):
            stock += sum(rng.random() < rate for _ in range(batch))
            patched += sum(rng.random() < rate for _ in range(batch))
            if one_sided_p(stock, patched, look * batch) < alpha_per_look:
                rejected += 1
                break
    return rejected / sims


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5])
def test_bonferroni_looks_keep_the_false_positive_rate_below_alpha(rate: float) -> None:
    """5 looks after batches of 10, alpha 0.05 (large enough to measure): testing each look
    at alpha/5 keeps the chance of any false rejection <= alpha; the test is only a
    boundary, so it holds whatever else stops the sequence."""
    plan = make_plan(alpha=0.05, batch=10, max_iterations=50)
    assert any_look_rejects_rate(rate, plan.alpha_per_look, plan.looks, 2000) <= plan.alpha


def test_looking_five_times_at_full_alpha_would_not() -> None:
    """The same simulation with the naive rule (each look at alpha) exceeds alpha: the
    Bonferroni split is what keeps the rate, and the simulation can tell."""
    naive = any_look_rejects_rate(0.3, 0.05, 5, 2000)
    assert naive > 0.05
    assert any_look_rejects_rate(0.3, 0.01, 5, 2000) < naive


def test_the_whole_procedure_claims_reproduced_at_most_alpha_under_equal_rates() -> None:
    """run_sequence itself, equal race rates on both variants, 300 seeded sequences."""
    plan = make_plan(alpha=0.05, batch=10, max_iterations=50)
    rng = random.Random(7)
    claims = 0
    for _ in range(300):
        batches = Drawn(rng, 0.2, 0.2)
        result = stopping.run_sequence(plan, batches, clock=batches.now)
        claims += result.comparison.reproduced
    assert claims / 300 <= plan.alpha


def test_a_real_difference_is_found_early() -> None:
    """Power, the other half: 50% vs 0% at looks of 10, alpha/6 = 0.00167. Look 2 rejects
    from 8/20 on (C(20,8)/C(40,8) = 0.00164), which 50% reaches 87% of the time: most
    sequences stop by look 2, none runs long."""
    plan = make_plan(alpha=0.01, batch=10, max_iterations=60)
    rng = random.Random(3)
    looks = []
    for _ in range(50):
        batches = Drawn(rng, 0.5, 0.0)
        result = stopping.run_sequence(plan, batches, clock=batches.now)
        assert result.comparison.verdict == ComparisonVerdict.REPRODUCED_AND_FIXED
        looks.append(len(result.looks))
    assert sorted(looks)[len(looks) // 2] <= 2
    assert max(looks) <= 3


# --- nvmf-harness compare --sequential, the VM faked ----------------------------------------


def test_sequential_cli_runs_batches_until_decided(
    tmp_path: Path, fake_vm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    guest = fake_vm({"unfixed": 0.6})
    out = tmp_path / "out"
    status = compare_cli(out, "--sequential", "--batch", "5", "--max-iterations", "40")
    printed = capsys.readouterr().out
    data = json.loads((out / compare_mod.COMPARE_JSON).read_text())
    looks = data["sequential"]["looks"]
    # one boot per batch, both variants in it, a new seed per batch (config seed 11)
    assert guest.boots == [
        [("unfixed", 5, 11 + index), ("fixed", 5, 11 + index)] for index in range(len(looks))
    ]
    for index in range(len(looks)):
        for variant in ("unfixed", "fixed"):
            assert (out / f"batch-{index + 1:02d}" / variant / "results.jsonl").exists()
    assert data["verdict"] == "reproduced_and_fixed" and status == ExitCode.OK
    assert data["sequential"]["stop_reason"] == "decided"
    assert data["stock"]["iterations"] == 5 * len(looks)  # pooled over the batches
    assert data["stock"]["race_iterations"] == looks[-1]["stock_race_iterations"]
    assert data["alpha"] == pytest.approx(0.01 / 8)
    assert data["rule"].startswith("group-sequential: up to 8 looks")
    assert f"nvmf-harness: rule: {data['rule']}" in printed
    assert "nvmf-harness: look 1/8: unfixed " in printed
    assert printed.rstrip().endswith(data["headline"])


def test_sequential_cli_stops_at_the_cap(tmp_path: Path, fake_vm: Any) -> None:
    guest = fake_vm({})
    out = tmp_path / "out"
    status = compare_cli(out, "--sequential", "--batch", "3", "--max-iterations", "6")
    data = json.loads((out / compare_mod.COMPARE_JSON).read_text())
    assert len(guest.boots) == 2
    assert data["verdict"] == "inconclusive" and status == ExitCode.FAILED
    assert data["sequential"]["stop_reason"] == "cap"
    assert data["stock"]["iterations"] == data["patched"]["iterations"] == 6


def test_sequential_cli_refuses_iterations_in_one_line(
    tmp_path: Path, fake_vm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    guest = fake_vm({})
    status = compare_cli(tmp_path / "out", "--sequential", "--iterations", "5")
    err = capsys.readouterr().err
    assert status == ExitCode.INFRA and guest.boots == []
    assert err.count("\n") == 1 and "--iterations and --sequential do not go together" in err


def test_sequential_cli_with_a_vm_that_never_starts_a_campaign_exits_3(
    tmp_path: Path, fake_vm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.vm import campaigns as vm_campaigns

    fake_vm({})
    monkeypatch.setattr(vm_campaigns, "run_in_vm", dead_vm)
    status = compare_cli(tmp_path / "out", "--sequential", "--batch", "3", "--max-iterations", "6")
    assert status == ExitCode.INFRA

"""Stock versus patched: the same campaign on two module variants, and a verdict the
statistics printed beside it support.

Both variants run the same config and seed (so the same faults on the same paths in the same
order); the comparison reads only the JSON lines they left. The question it answers: does the
application see EIO with the race's failed bios seen while another path is live on the
unfixed variant, and never on the fixed one? A race iteration (harness.core.results
is_race_iteration) is app EIO, another path live, and a witness of the race's bios: the
kernel's "attempt to access beyond end of device ... limit=0" line for a per-path disk, or
the block-layer (BPF) witness's bios that failed that check on a zero-capacity per-path disk
(since v6.17 the kernel prints no line for them). The verdicts, in the order they are
decided:

- NOT FIXED: the patched variant had at least one race iteration. No test is needed: such an
  iteration is a counterexample, not a noisy sample; a fixed kernel must never fail a
  remapped bio on the end-of-device check.
- INCONCLUSIVE (patched run not clean): the patched VM crashed, hung or ran no iteration, so
  "no race on it" is no claim.
- INCONCLUSIVE (blind): a variant without race iterations whose run could not have seen one:
  the block-layer witness did not run throughout, and the kernel may fail the race's bios
  without a line (``eod_shape`` "fail-silently", or unknown).
- REPRODUCED AND FIXED: the stock variant's race rate is significantly above the patched
  one's, by the one-sided Fisher exact test at ``alpha``, and the patched one had none; the
  headline gives the 95% upper bound on the patched rate. One-sided, because the question is
  directional (does the patch lower the rate?): a patched variant failing more is never
  evidence of a reproduction, and is already NOT FIXED; a two-sided test would spend half of
  ``alpha`` on that impossible direction.
- NOT REPRODUCED: the stock variant had no race iteration and its 95% upper bound is below
  ``min_rate``: the stock kernel does not race at that rate in this scenario.
- INCONCLUSIVE: anything else, with the iterations per variant that would decide it (80%
  power of the same test at the observed rates, or at ``min_rate`` when the stock variant saw
  none: at a true rate of 0 no number of iterations decides it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.analysis.stats import (
    DEFAULT_POWER,
    MAX_ITERATIONS_SEARCHED,
    clopper_pearson_upper,
    fisher_exact_greater,
    fisher_exact_two_sided,
    iterations_for_power,
)
from harness.core.results import (
    RESULTS_FILE,
    Verdict,
    format_cell,
    is_iteration,
    is_race_iteration,
    read_records,
    write_json_atomic,
)

COMPARE_JSON = "compare.json"
COMPARE_TABLE = "compare.txt"
DEFAULT_ALPHA = 0.01
DEFAULT_MIN_RATE = 0.05  # the smallest stock race rate a comparison is meant to find
BOUND_CONFIDENCE = 0.95


class ComparisonVerdict(StrEnum):
    """The machine-readable verdict of a comparison (see the module docstring)."""

    REPRODUCED_AND_FIXED = "reproduced_and_fixed"
    NOT_FIXED = "not_fixed"
    NOT_REPRODUCED = "not_reproduced"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class VariantOutcome:
    """One variant's totals over its results directories (counts of iterations unless said)."""

    variant: str
    srcversion: str
    iterations: int
    iterations_with_app_eio: int
    race_iterations: int  # app EIO with the race's bios seen while another path was live
    eio_count: int
    eod_race_lines: int
    verify_failures: int
    hangs: int
    infra_errors: int
    crashed: bool
    time_to_first_eio_s: float | None  # from the start of its campaign (earliest of all)
    failure_rate_upper95: float  # of race iterations per trial, one-sided 95% bound
    # The two witnesses of the race's bios (harness.core.results race_seen): race iterations
    # the EOD-race kernel line saw, those the block-layer (BPF) witness saw, its bios in all,
    # and the iterations it watched whole (no event dropped, caught up: witness_complete).
    line_race_iterations: int = 0
    witness_race_iterations: int = 0
    witness_events: int = 0
    witness_iterations: int = 0

    @property
    def failed(self) -> bool:
        return self.race_iterations > 0

    @property
    def trials(self) -> int:
        """Iterations that exercised the kernel: all but the infra errors."""
        return max(self.iterations - self.infra_errors, self.race_iterations)

    @property
    def clean(self) -> bool:
        """Whether "no race iteration" is a claim: trials ran, no crash, no hang."""
        return self.trials > 0 and not self.crashed and self.hangs == 0

    @property
    def witness_ran(self) -> bool:
        """Whether the block-layer witness ran in every iteration."""
        return self.iterations > 0 and self.witness_iterations >= self.iterations

    def could_see_the_race(self, eod_shape: str | None) -> bool:
        """Whether a run without race iterations says the race did not happen: the
        block-layer witness ran throughout, or the kernel prints a line for the race's bios
        (``eod_shape`` "fail-with-line"; "skip-zero-size" cannot fail them at all). A kernel
        that fails them silently (v6.17 on), or of unknown shape, needs the witness."""
        return self.witness_ran or eod_shape in ("fail-with-line", "skip-zero-size")

    @classmethod
    def of_counts(cls, variant: str, iterations: int, race_iterations: int) -> VariantOutcome:
        """An outcome from bare counts (a clean run of ``iterations``, ``race_iterations`` of
        them races), for callers that have no results directory (simulations, tests)."""
        return cls(
            variant=variant,
            srcversion="",
            iterations=iterations,
            iterations_with_app_eio=race_iterations,
            race_iterations=race_iterations,
            eio_count=race_iterations,
            eod_race_lines=race_iterations,
            verify_failures=0,
            hangs=0,
            infra_errors=0,
            crashed=False,
            time_to_first_eio_s=None,
            failure_rate_upper95=round(clopper_pearson_upper(race_iterations, iterations), 4),
            line_race_iterations=race_iterations,
            witness_race_iterations=race_iterations,
            witness_iterations=iterations,
        )


def outcome(variant: str, *results_dirs: Path) -> VariantOutcome:
    """The totals of ``variant`` over one or more results directories (pooled batches).

    Reads each directory's results.jsonl (a missing one counts as empty). ``crashed`` is true
    when any directory holds a VM crash/timeout record; ``srcversion`` is the first
    iteration's. Raises nothing for missing data: zero iterations is an outcome.
    """
    records = [r for d in results_dirs for r in read_records(d / RESULTS_FILE)]
    iterations = [r for r in records if is_iteration(r)]
    race = [r for r in iterations if is_race_iteration(r)]
    first = [float(r["first_eio_at_s"]) for r in iterations if r.get("first_eio_at_s") is not None]
    infra = sum(1 for r in iterations if r.get("verdict") == Verdict.INFRA_ERROR)
    trials = max(len(iterations) - infra, len(race))
    return VariantOutcome(
        variant=variant,
        srcversion=str(iterations[0].get("srcversion", "")) if iterations else "",
        iterations=len(iterations),
        iterations_with_app_eio=sum(1 for r in iterations if r.get("app_eio", 0) > 0),
        race_iterations=len(race),
        eio_count=sum(int(r.get("app_eio", 0)) for r in iterations),
        eod_race_lines=sum(int(r.get("eod_race_lines", 0)) for r in iterations),
        verify_failures=sum(int(r.get("verify_failures", 0)) for r in iterations),
        hangs=sum(1 for r in iterations if r.get("hang")),
        infra_errors=infra,
        crashed=len(records) > len(iterations),
        time_to_first_eio_s=min(first) if first else None,
        failure_rate_upper95=round(clopper_pearson_upper(len(race), trials), 4),
        line_race_iterations=sum(1 for r in race if r.get("eod_race_lines", 0)),
        witness_race_iterations=sum(1 for r in race if r.get("witness_events")),
        witness_events=sum(int(r.get("witness_events") or 0) for r in iterations),
        witness_iterations=sum(1 for r in iterations if witness_complete(r)),
    )


def witness_complete(record: dict[str, Any]) -> bool:
    """Whether the block-layer witness watched the whole of this iteration: it ran, dropped
    no event and had caught up when its window was taken (harness.campaign.witness)."""
    return (
        record.get("witness_events") is not None
        and not record.get("witness_lost", 0)
        and record.get("witness_caught_up", True) is not False
    )


def single_comparison_rule(alpha: float) -> str:
    """The one-line rule of a comparison of fixed size."""
    return (
        f"one comparison of fixed size: one-sided Fisher's exact test at alpha={alpha:g} "
        "(the question is directional: does the patch lower the race rate?)"
    )


@dataclass(frozen=True)
class Comparison:
    """Two variants' outcomes, the test, and the verdict (rates are fractions)."""

    stock: VariantOutcome
    patched: VariantOutcome
    fisher_p: float  # two-sided, kept for readers of older compare.json; not the verdict's
    fisher_p_one_sided: float  # stock race rate > patched race rate: the verdict's test
    alpha: float
    verdict: ComparisonVerdict
    reproduced: bool  # the stock rate is significantly above the patched one (p < alpha)
    fixed: bool  # the verdict is REPRODUCED AND FIXED
    needed_iterations: int | None  # per variant, to decide an INCONCLUSIVE one (80% power)
    needed_at_rates: tuple[float, float] | None  # (stock, patched) true rates assumed for it
    min_rate: float
    rule: str  # one line: how the iterations were chosen and tested
    # The kernel's bio_check_eod() shape when known (harness.kernels.source_check), and
    # which variant's run could not have seen the race (no witness on a silent kernel).
    eod_shape: str | None = None
    blind: str = ""  # "", or the variant whose detector was blind

    @staticmethod
    def _seen(outcome: VariantOutcome) -> str:
        """Which witnesses saw the race iterations: "(kernel line 10, BPF witness 13)"."""
        if not outcome.race_iterations:
            return ""
        parts = [f"kernel line {outcome.line_race_iterations}"]
        if outcome.witness_iterations:
            parts.append(f"BPF witness {outcome.witness_race_iterations}")
        return f" ({', '.join(parts)})"

    def _counts(self) -> str:
        s, p = self.stock, self.patched
        return (
            f"{s.variant} {s.race_iterations}/{s.trials} vs {p.variant} "
            f"{p.race_iterations}/{p.trials} race iterations"
        )

    def _test(self) -> str:
        relation = "<" if self.reproduced else ">="
        return f"one-sided Fisher p={self.fisher_p_one_sided:.3g} {relation} alpha={self.alpha:g}"

    def _need(self) -> str:
        if self.needed_at_rates is None:
            return ""
        stock_rate, patched_rate = self.needed_at_rates
        rates = f"{stock_rate:.1%} vs {patched_rate:.1%}"
        if self.needed_iterations is None:
            amount = f"more than {MAX_ITERATIONS_SEARCHED} iterations per variant"
        else:
            amount = f"{self.needed_iterations} iterations per variant"
        return f"{amount} would decide it at true rates of {rates} ({DEFAULT_POWER:.0%} power)"

    def headline(self) -> str:
        """One line: the verdict with the numbers that support it."""
        s, p = self.stock, self.patched
        if self.verdict == ComparisonVerdict.REPRODUCED_AND_FIXED:
            return (
                f"REPRODUCED AND FIXED: {s.variant} saw app EIO with the race's failed bios "
                f"in {s.race_iterations}/{s.trials} iterations{self._seen(s)}, {p.variant} in "
                f"0/{p.trials} ({self._test()}); {p.variant} race rate "
                f"< {p.failure_rate_upper95:.1%} at 95%"
            )
        if self.verdict == ComparisonVerdict.NOT_FIXED:
            return (
                f"NOT FIXED: {p.variant} saw app EIO with the race's failed bios in "
                f"{p.race_iterations}/{p.trials} iterations{self._seen(p)} (one is a "
                f"counterexample); {s.variant}: {s.race_iterations}/{s.trials} ({self._test()})"
            )
        if self.verdict == ComparisonVerdict.NOT_REPRODUCED:
            return (
                f"NOT REPRODUCED: {s.variant} saw no race EIO in {s.trials} iterations: "
                f"its race rate is < {s.failure_rate_upper95:.1%} at 95%, below the "
                f"{self.min_rate:.0%} looked for ({p.variant}: {p.race_iterations}/"
                f"{p.trials}); try --widen or another scenario"
            )
        if self.blind:
            shape = self.eod_shape or "unknown"
            return (
                f"INCONCLUSIVE: {self._counts()} ({self._test()}), but the block-layer "
                f"witness did not run throughout on {self.blind} and this kernel's "
                f"bio_check_eod() is {shape}: it may fail the race's bios without a line, so "
                "no race seen is no claim; run where bpftrace, BTF and kprobes work"
            )
        if not p.clean:
            why = []
            if p.trials == 0:
                why.append("it ran no iteration")
            if p.crashed:
                why.append("its VM crashed or timed out")
            if p.hangs:
                why.append(f"{p.hangs} hang(s)")
            return (
                f"INCONCLUSIVE: {self._counts()} ({self._test()}), but the {p.variant} run "
                f"was not clean ({', '.join(why)}): no race on it is no claim; rerun it"
            )
        if s.race_iterations == 0:
            return (
                f"INCONCLUSIVE: {self._counts()} ({self._test()}; {s.variant} race rate "
                f"< {s.failure_rate_upper95:.1%} at 95%); no number of iterations decides it "
                f"at a true {s.variant} rate of 0; {self._need()}"
            )
        return f"INCONCLUSIVE: {self._counts()} ({self._test()}); {self._need()}"

    def to_dict(self) -> dict[str, Any]:
        """compare.json: ``stock``/``patched`` outcome dicts (as before), the test, the
        verdict (``verdict`` one of ComparisonVerdict's values) and the ``headline``."""
        rates = self.needed_at_rates
        return {
            "stock": asdict(self.stock),
            "patched": asdict(self.patched),
            "fisher_p": self.fisher_p,
            "fisher_p_one_sided": self.fisher_p_one_sided,
            "alpha": self.alpha,
            "reproduced": self.reproduced,
            "fixed": self.fixed,
            "verdict": self.verdict.value,
            "needed_iterations": self.needed_iterations,
            "needed_at_rates": (
                None if rates is None else {"stock": rates[0], "patched": rates[1]}
            ),
            "min_rate": self.min_rate,
            "rule": self.rule,
            "eod_shape": self.eod_shape,
            "blind": self.blind,
            "headline": self.headline(),
        }


def _significant(p_value: float) -> float:
    """A p-value kept to 6 significant digits (rounding to decimals would turn 1e-9 into 0)."""
    return float(f"{p_value:.6g}")


def compare(
    stock: VariantOutcome,
    patched: VariantOutcome,
    alpha: float = DEFAULT_ALPHA,
    min_rate: float = DEFAULT_MIN_RATE,
    rule: str | None = None,
    eod_shape: str | None = None,
) -> Comparison:
    """The verdict on ``stock`` versus ``patched`` (see the module docstring for the rules).

    ``eod_shape``: the kernel's bio_check_eod() shape when known (source_check.EodShape
    values). A variant with no race iteration makes a claim only where its run could have
    seen one (VariantOutcome.could_see_the_race): else the verdict is INCONCLUSIVE.

    ``alpha`` is the one-sided test's level (a fraction); ``min_rate`` the smallest stock
    race rate worth finding (NOT REPRODUCED needs the stock bound below it; the power
    calculation assumes it when the stock variant saw none); ``rule`` the line that says how
    the iterations were chosen (default: one comparison of fixed size). Raises ValueError
    for ``alpha`` or ``min_rate`` outside (0, 1).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha {alpha} is not in (0, 1)")
    if not 0.0 < min_rate < 1.0:
        raise ValueError(f"min_rate {min_rate} is not in (0, 1)")
    table = (
        stock.race_iterations,
        stock.trials - stock.race_iterations,
        patched.race_iterations,
        patched.trials - patched.race_iterations,
    )
    p_one = fisher_exact_greater(*table)
    reproduced = p_one < alpha
    needed: int | None = None
    rates: tuple[float, float] | None = None
    blind = ""
    if patched.failed:
        verdict = ComparisonVerdict.NOT_FIXED
    elif not patched.clean:
        verdict = ComparisonVerdict.INCONCLUSIVE
    elif not patched.could_see_the_race(eod_shape):
        verdict, blind = ComparisonVerdict.INCONCLUSIVE, patched.variant
    elif reproduced:
        verdict = ComparisonVerdict.REPRODUCED_AND_FIXED
    elif not stock.failed and not stock.could_see_the_race(eod_shape):
        verdict, blind = ComparisonVerdict.INCONCLUSIVE, stock.variant
    elif not stock.failed and stock.failure_rate_upper95 < min_rate:
        verdict = ComparisonVerdict.NOT_REPRODUCED
    else:
        verdict = ComparisonVerdict.INCONCLUSIVE
        # patched.race_iterations is 0 here: any race on it is NOT FIXED above
        stock_rate = stock.race_iterations / stock.trials if stock.failed else min_rate
        rates = (round(stock_rate, 4), 0.0)
        needed = iterations_for_power(stock_rate, 0.0, alpha)
    return Comparison(
        stock=stock,
        patched=patched,
        fisher_p=_significant(fisher_exact_two_sided(*table)),
        fisher_p_one_sided=_significant(p_one),
        alpha=alpha,
        verdict=verdict,
        reproduced=reproduced,
        fixed=verdict == ComparisonVerdict.REPRODUCED_AND_FIXED,
        needed_iterations=needed,
        needed_at_rates=rates,
        min_rate=min_rate,
        rule=rule or single_comparison_rule(alpha),
        eod_shape=eod_shape,
        blind=blind,
    )


def render(comparison: Comparison) -> str:
    """compare.txt: the two variants side by side, the test, the rule and the headline."""
    s, p = comparison.stock, comparison.patched
    rows = [
        ("", s.variant, p.variant),
        ("nvme_core srcversion", s.srcversion, p.srcversion),
    ]
    fields = [
        ("iterations", "iterations"),
        ("iterations with app EIO", "iterations_with_app_eio"),
        ("  of them race bios seen, other path live", "race_iterations"),
        ("    seen by the kernel line", "line_race_iterations"),
        ("    seen by the BPF witness", "witness_race_iterations"),
        ("app EIO count", "eio_count"),
        ("EOD-race kernel lines", "eod_race_lines"),
        ("BPF witness bios (failed EOD)", "witness_events"),
        ("iterations the BPF witness ran", "witness_iterations"),
        ("verify failures", "verify_failures"),
        ("hangs", "hangs"),
        ("infra errors", "infra_errors"),
        ("VM crashed", "crashed"),
        ("time to first EIO (s)", "time_to_first_eio_s"),
        ("failure rate, 95% upper bound", "failure_rate_upper95"),
    ]
    for label, key in fields:
        rows.append((label, format_cell(getattr(s, key)), format_cell(getattr(p, key))))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join((row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append(
        f"Fisher's exact test on race iterations (iterations without infra errors), "
        f"one-sided ({s.variant} rate > {p.variant} rate): p = "
        f"{comparison.fisher_p_one_sided:.3g}, alpha = {comparison.alpha:g} "
        f"(two-sided p = {comparison.fisher_p:.3g})"
    )
    lines.append(f"Rule: {comparison.rule}")
    lines.append(comparison.headline())
    return "\n".join(lines)


def write(comparison: Comparison, outdir: Path, extra: dict[str, Any] | None = None) -> str:
    """Write compare.json (``to_dict`` plus ``extra``, e.g. a sequential run's looks) and
    compare.txt into ``outdir``; return the text."""
    text = render(comparison)
    data = comparison.to_dict()
    if extra:
        data.update(extra)
    write_json_atomic(outdir / COMPARE_JSON, data)
    (outdir / COMPARE_TABLE).write_text(text + "\n")
    return text

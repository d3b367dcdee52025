"""Stock versus patched: the same campaign on two module variants, side by side.

Each variant runs in a VM of its own (same kernel, same config, same seed, so the same faults
on the same paths in the same order); the comparison reads only the JSON lines they left.
The question it answers: does the application see EIO with the EOD-race signature while
another path is live on the unfixed variant, and never on the fixed one?
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.results import (
    RESULTS_FILE,
    Verdict,
    format_cell,
    is_iteration,
    is_race_iteration,
    read_records,
    write_json_atomic,
)
from harness.stats import clopper_pearson_upper, fisher_exact_two_sided

COMPARE_JSON = "compare.json"
COMPARE_TABLE = "compare.txt"


@dataclass(frozen=True)
class VariantOutcome:
    variant: str
    srcversion: str
    iterations: int
    iterations_with_app_eio: int
    race_iterations: int  # app EIO with the EOD-race line while another path was live
    eio_count: int
    eod_race_lines: int
    verify_failures: int
    hangs: int
    infra_errors: int
    crashed: bool
    time_to_first_eio_s: float | None  # from the campaign start
    failure_rate_upper95: float  # of race iterations

    @property
    def failed(self) -> bool:
        return self.race_iterations > 0


def outcome(variant: str, results_dir: Path) -> VariantOutcome:
    records = list(read_records(results_dir / RESULTS_FILE))
    iterations = [r for r in records if is_iteration(r)]
    race = [r for r in iterations if is_race_iteration(r)]
    first = [float(r["first_eio_at_s"]) for r in iterations if r.get("first_eio_at_s") is not None]
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
        infra_errors=sum(1 for r in iterations if r.get("verdict") == Verdict.INFRA_ERROR),
        crashed=len(records) > len(iterations),
        time_to_first_eio_s=min(first) if first else None,
        failure_rate_upper95=round(clopper_pearson_upper(len(race), len(iterations)), 4),
    )


@dataclass(frozen=True)
class Comparison:
    stock: VariantOutcome
    patched: VariantOutcome
    fisher_p: float
    reproduced: bool  # the stock variant failed
    fixed: bool  # ... and the patched one did not, over at least as many iterations

    def headline(self) -> str:
        s, p = self.stock, self.patched
        if self.reproduced and self.fixed:
            return (
                f"REPRODUCED AND FIXED: {s.variant} saw app EIO with the EOD-race signature "
                f"in {s.race_iterations}/{s.iterations} iterations; {p.variant} saw none in "
                f"{p.iterations} (Fisher p={self.fisher_p:.3g}; {p.variant} failure rate "
                f"< {p.failure_rate_upper95:.1%} at 95%)"
            )
        if self.reproduced:
            return (
                f"NOT FIXED: {p.variant} also failed ({p.race_iterations}/{p.iterations} "
                f"iterations; {s.variant}: {s.race_iterations}/{s.iterations})"
            )
        return (
            f"NOT REPRODUCED: {s.variant} saw no EOD-race EIO in {s.iterations} iterations "
            f"({p.variant}: {p.race_iterations}/{p.iterations}); try more iterations or --widen"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stock": asdict(self.stock),
            "patched": asdict(self.patched),
            "fisher_p": self.fisher_p,
            "reproduced": self.reproduced,
            "fixed": self.fixed,
            "headline": self.headline(),
        }


def compare(stock: VariantOutcome, patched: VariantOutcome) -> Comparison:
    p = fisher_exact_two_sided(
        stock.race_iterations,
        stock.iterations - stock.race_iterations,
        patched.race_iterations,
        patched.iterations - patched.race_iterations,
    )
    reproduced = stock.failed
    fixed = (
        reproduced
        and not patched.failed
        and patched.iterations >= stock.iterations
        and not patched.crashed
        and patched.hangs == 0
    )
    return Comparison(stock, patched, round(p, 6), reproduced, fixed)


def render(comparison: Comparison) -> str:
    rows = [
        ("", comparison.stock.variant, comparison.patched.variant),
        ("nvme_core srcversion", comparison.stock.srcversion, comparison.patched.srcversion),
    ]
    fields = [
        ("iterations", "iterations"),
        ("iterations with app EIO", "iterations_with_app_eio"),
        ("  of them EOD race, other path live", "race_iterations"),
        ("app EIO count", "eio_count"),
        ("EOD-race kernel lines", "eod_race_lines"),
        ("verify failures", "verify_failures"),
        ("hangs", "hangs"),
        ("infra errors", "infra_errors"),
        ("VM crashed", "crashed"),
        ("time to first EIO (s)", "time_to_first_eio_s"),
        ("failure rate, 95% upper bound", "failure_rate_upper95"),
    ]
    for label, key in fields:
        stock, patched = getattr(comparison.stock, key), getattr(comparison.patched, key)
        rows.append((label, format_cell(stock), format_cell(patched)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join((row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2])))
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append(f"Fisher's exact test (race iterations), two-sided p = {comparison.fisher_p:.3g}")
    lines.append(comparison.headline())
    return "\n".join(lines)


def write(comparison: Comparison, outdir: Path) -> str:
    text = render(comparison)
    write_json_atomic(outdir / COMPARE_JSON, comparison.to_dict())
    (outdir / COMPARE_TABLE).write_text(text + "\n")
    return text

"""prove-fixed: run a (fixed) module variant until N clean iterations or the first failure.

A fix is shown by many clean iterations, not by one short campaign: after n clean iterations
and no failure the failure rate is below ``1 - 0.05**(1/n)`` with 95 % confidence (exact
one-sided Clopper-Pearson, harness/stats.py; 1,000 clean iterations: below 0.30 %).

The run is split into parts, ``<out>/part-01``, ``part-02``...: each part is one VM boot
running one campaign of the iterations still missing, which stops at its first failing
verdict (``run --stop-on-failure``). Records are fsynced one iteration at a time, so a run
that was killed (Ctrl-C, a crashed VM, a lost machine) resumes where it stopped when the
same command is given again with the same ``--out``: the parts already there are counted,
and a new part runs the rest. ``<out>/prove.json`` says where it stands:

    {"config": "race-ns-remove-path", "variant": "fixed", "target": 1000, "clean": 1000,
     "failures": 0, "infra_errors": 0, "upper_bound_95": 0.0030, "status": "proven", ...}

Exit status: 0 proven (target clean iterations, no failure), 1 a failure was found (the
fix does not hold: its record is in prove.json), 2 infrastructure (a part made no progress
or too many iterations could not run).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.stats import clopper_pearson_upper
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.results import (
    FAILING_VERDICTS,
    RESULTS_FILE,
    SUMMARY_FILE,
    Verdict,
    read_records,
    write_json_atomic,
)

PROVE_FILE = "prove.json"
DEFAULT_TARGET = 1000
PART_PREFIX = "part-"
CONFIDENCE = 0.95
# Iterations that could not run (infra_error) beyond this share of the target end the run:
# they are neither clean nor failures, and a bed that keeps failing proves nothing.
MAX_INFRA_SHARE = 0.05


@dataclass
class ProveState:
    """What the parts in ``<out>`` add up to.

    ``clean``: iterations with verdict pass; ``failure``: the first record with a failing
    verdict (harness/results.py FAILING_VERDICTS), or None; ``infra_errors``: iterations the
    harness could not run; ``elapsed_s``: campaign seconds summed over parts (summary.json).
    """

    config: str
    variant: str
    target: int
    clean: int = 0
    infra_errors: int = 0
    other: int = 0  # expected_eio: an application error no path could have prevented
    failure: dict[str, Any] | None = None
    parts: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def upper_bound(self) -> float:
        """The failure rate's one-sided 95 % upper bound (a fraction) from what ran."""
        failures = 1 if self.failure is not None else 0
        return clopper_pearson_upper(failures, self.clean + failures, CONFIDENCE)

    @property
    def status(self) -> str:
        if self.failure is not None:
            return "failed"
        if self.clean >= self.target:
            return "proven"
        return "running"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status
        data["upper_bound_95"] = round(self.upper_bound, 6)
        data["iterations_per_min"] = (
            round(60 * (self.clean + self.infra_errors + self.other) / self.elapsed_s, 2)
            if self.elapsed_s > 0
            else None
        )
        return data


def part_dirs(outdir: Path) -> list[Path]:
    """The parts already in ``outdir``, in order."""
    return sorted(p for p in outdir.glob(f"{PART_PREFIX}*") if p.is_dir())


def next_part(outdir: Path) -> Path:
    """The directory of the next part (``part-01`` for the first)."""
    return outdir / f"{PART_PREFIX}{len(part_dirs(outdir)) + 1:02d}"


def tally(state: ProveState, records: Iterable[dict[str, Any]]) -> None:
    """Add one part's iteration records to ``state`` (the first failure is kept)."""
    for record in records:
        verdict = record.get("verdict", "")
        if verdict == Verdict.PASS:
            state.clean += 1
        elif verdict in FAILING_VERDICTS:
            if state.failure is None:
                state.failure = record
        elif verdict == Verdict.INFRA_ERROR:
            state.infra_errors += 1
        else:
            state.other += 1


def read_state(outdir: Path, config: str, variant: str, target: int) -> ProveState:
    """Count what the parts under ``outdir`` hold. Raises HarnessError when ``outdir``
    belongs to another prove-fixed run (another config or variant)."""
    previous = outdir / PROVE_FILE
    if previous.exists():
        try:
            data = json.loads(previous.read_text())
        except (OSError, ValueError) as exc:
            raise HarnessError(f"cannot read {previous}: {exc}", hint="choose a new --out") from exc
        if (data.get("config"), data.get("variant")) != (config, variant):
            raise HarnessError(
                f"{outdir} holds a prove-fixed run of {data.get('config')} on "
                f"{data.get('variant')}, not {config} on {variant}",
                hint="choose a new --out, or the same --config/--variant to resume it",
            )
    state = ProveState(config=config, variant=variant, target=target)
    for part in part_dirs(outdir):
        state.parts.append(part.name)
        tally(state, read_records(part / RESULTS_FILE))
        try:
            summary = json.loads((part / SUMMARY_FILE).read_text())
            state.elapsed_s += float(summary.get("elapsed_s", 0.0))
        except (OSError, ValueError):
            pass  # a part killed before its summary: its records still count
    return state


def describe(state: ProveState) -> str:
    """One line a person reads: the verdict with the numbers beside it."""
    bound = f"{100 * state.upper_bound:.2f} %"
    if state.status == "failed":
        assert state.failure is not None
        return (
            f"NOT FIXED: iteration {state.failure.get('iteration')} of "
            f"{state.parts[-1] if state.parts else '?'} failed ({state.failure.get('verdict')}, "
            f"app EIO {state.failure.get('app_eio', 0)}) after {state.clean} clean iterations"
        )
    if state.status == "proven":
        return (
            f"FIXED: {state.clean} clean iterations of {state.config} on {state.variant}, no "
            f"failure: failure rate < {bound} at 95 % (one-sided Clopper-Pearson)"
        )
    return (
        f"{state.clean}/{state.target} clean iterations so far (failure rate < {bound} at "
        f"95 %); {state.infra_errors} could not run"
    )


RunPart = Callable[[Path, int], int]


def prove(
    outdir: Path,
    config: str,
    variant: str,
    target: int,
    run_part: RunPart,
    say: Callable[[str], None],
) -> int:
    """Run parts until ``target`` clean iterations or the first failure (see the module
    docstring). ``run_part(part_dir, iterations)`` runs one campaign in a VM and returns its
    exit status. Returns ExitCode.OK, ExitCode.FAILED or ExitCode.INFRA; writes prove.json after
    every part."""
    if target <= 0:
        raise HarnessError("prove-fixed needs a positive --iterations")
    outdir.mkdir(parents=True, exist_ok=True)
    state = read_state(outdir, config, variant, target)
    if state.parts:
        say(f"resuming {outdir}: {describe(state)}")
    while True:
        write_json_atomic(outdir / PROVE_FILE, state.to_dict())
        if state.status != "running":
            say(describe(state))
            return ExitCode.OK if state.status == "proven" else ExitCode.FAILED
        if state.infra_errors > max(1, int(MAX_INFRA_SHARE * target)):
            say(f"stopped: {state.infra_errors} iterations could not run; see {outdir}")
            return ExitCode.INFRA
        before = state.clean + state.infra_errors + state.other
        part = next_part(outdir)
        missing = target - state.clean
        so_far = f" ({describe(state)})" if state.parts else ""
        say(f"{part.name}: up to {missing} iterations of {config} on {variant}{so_far}")
        run_part(part, missing)
        state = read_state(outdir, config, variant, target)
        progressed = state.clean + state.infra_errors + state.other > before
        if not progressed and state.failure is None:
            write_json_atomic(outdir / PROVE_FILE, state.to_dict())
            say(f"stopped: {part.name} ran no iteration; see {part}/console.log")
            return ExitCode.INFRA

"""Baselines and the nightly's per-scenario verdict: is tonight's failure rate a regression?

A baseline is the accepted failure rate of one scenario (the campaign name) on one kernel
release: failing iterations (harness.core.results.FAILING_VERDICTS) over iterations that
exercised the kernel (infra errors left out), with the date, the harness version, the module
variant and the results it came from. ``nvmf-harness baseline accept RESULT_DIR... --out
baselines/`` writes one JSON file per (release, scenario),
``baselines/<release>/<scenario>.json``, pooling the directories of the same pair and
replacing an older file.

``judge`` decides a night's scenario, in this order:

- a known failure (harness/known_failures.py) matches: KNOWN_FAILURE when it failed at all,
  unless its rate is significantly above the expected one (one-sided exact binomial test,
  P(X >= failing | iterations, expected_rate) < alpha): then REGRESSION;
- a baseline exists: REGRESSION when the night's rate is significantly above the baseline's
  (one-sided Fisher exact test on [[night failing, night passing], [baseline failing,
  baseline passing]], p < alpha, harness.analysis.stats); PASS when the rate is not above it;
  otherwise INCONCLUSIVE, with the iterations per side that would decide it (80% power of
  the same test at the observed rates, as compare does);
- neither: any failing iteration is a REGRESSION (the strict default; accept a baseline or
  list a known failure to relax it).

Alpha defaults to 0.01 (compare's). Errors: HarnessError, one line, for results that cannot be
a baseline and for unreadable baseline files.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.ci.known_failures import KnownFailure
from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT
from harness.core.results import (
    FAILING_VERDICTS,
    RESULTS_FILE,
    RUN_FILE,
    Verdict,
    is_iteration,
    read_json_object,
    read_records,
    write_json_atomic,
)

DEFAULT_ALPHA = 0.01
DEFAULT_DIR = Path("baselines")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")  # a release or scenario as a file name


@dataclass(frozen=True)
class RunCounts:
    """A scenario's iterations on one release (one or more results directories pooled)."""

    release: str
    scenario: str
    variant: str
    iterations: int  # that exercised the kernel: infra errors and VM crash records left out
    failing: int  # with a failing verdict
    crashed: bool  # a VM crash or timeout record is among the results
    sources: tuple[str, ...]

    @property
    def rate(self) -> float:
        return self.failing / self.iterations if self.iterations else 0.0


def run_counts(results_dir: Path) -> RunCounts:
    """The counts of one results directory (results.jsonl and run.json).

    The release is the iterations' ``kernel_release`` (else run.json's), the scenario the
    config's ``[campaign] name``. HarnessError when there is no result or no scenario name.
    """
    records = list(read_records(results_dir / RESULTS_FILE))
    iterations = [r for r in records if is_iteration(r)]
    run = read_json_object(results_dir / RUN_FILE)
    if not records:
        raise HarnessError(
            f"{results_dir}: no results ({RESULTS_FILE} missing or empty)",
            hint="give a campaign's results directory",
        )
    config = run.get("config", {})
    scenario = str(config.get("campaign", {}).get("name", "")) if isinstance(config, dict) else ""
    first = iterations[0] if iterations else records[0]
    release = str(first.get("kernel_release") or run.get("kernel_release") or "")
    if not scenario or not release:
        missing = "scenario (run.json config.campaign.name)" if not scenario else "kernel release"
        raise HarnessError(f"{results_dir}: no {missing}", hint="a campaign's run.json is needed")
    trials = [r for r in iterations if r.get("verdict") != Verdict.INFRA_ERROR]
    return RunCounts(
        release=release,
        scenario=scenario,
        variant=str(first.get("variant") or run.get("variant") or ""),
        iterations=len(trials),
        failing=sum(1 for r in trials if r.get("verdict") in FAILING_VERDICTS),
        crashed=len(records) > len(iterations),
        sources=(str(results_dir),),
    )


def pool(counts: Iterable[RunCounts]) -> list[RunCounts]:
    """One RunCounts per (release, scenario), summed; HarnessError if a pair mixes variants."""
    pooled: dict[tuple[str, str], RunCounts] = {}
    for c in counts:
        key = (c.release, c.scenario)
        old = pooled.get(key)
        if old is None:
            pooled[key] = c
            continue
        if old.variant != c.variant:
            raise HarnessError(
                f"{c.sources[0]}: variant {c.variant!r}, but {old.sources[0]} of the same "
                f"release and scenario is {old.variant!r}",
                hint="accept one variant's results per release and scenario",
            )
        pooled[key] = RunCounts(
            c.release,
            c.scenario,
            c.variant,
            old.iterations + c.iterations,
            old.failing + c.failing,
            old.crashed or c.crashed,
            old.sources + c.sources,
        )
    return list(pooled.values())


@dataclass(frozen=True)
class Baseline:
    """The accepted failure rate of a scenario on a release (a fraction in [0, 1])."""

    release: str
    scenario: str
    variant: str
    iterations: int
    failing: int
    rate: float
    date: str  # YYYY-MM-DD, when accepted
    harness_version: str
    sources: tuple[str, ...]

    def describe(self) -> str:
        return f"baseline {self.failing}/{self.iterations} ({self.date})"


def baseline_path(directory: Path, release: str, scenario: str) -> Path:
    """``<directory>/<release>/<scenario>.json``; HarnessError for a name unfit for a path."""
    for what, name in (("release", release), ("scenario", scenario)):
        if not NAME_RE.match(name):
            raise HarnessError(f"{what} {name!r} cannot name a baseline file")
    return directory / release / f"{scenario}.json"


def harness_version(repo: Path | None = None) -> str:
    """The installed package's version, and the git commit when ``repo`` is a checkout."""
    try:
        version = metadata.version("nvmf-mpath-harness")
    except metadata.PackageNotFoundError:
        version = "unknown"
    if repo is None:
        return version
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return version
    commit = done.stdout.strip()
    return f"{version}+g{commit}" if done.returncode == 0 and commit else version


def accept(
    results_dirs: Iterable[Path],
    out_dir: Path,
    *,
    date: str | None = None,
    version: str | None = None,
) -> list[Path]:
    """Write a baseline per (release, scenario) of ``results_dirs``; return the files written.

    HarnessError (nothing written) when a directory has no results, no iteration that
    exercised the kernel, or a VM crash record (a crashed run is no baseline).
    """
    counts = [run_counts(Path(d)) for d in results_dirs]
    for c in counts:
        if c.crashed:
            raise HarnessError(
                f"{c.sources[0]}: the VM crashed or timed out during this run",
                hint="a baseline comes from a clean run",
            )
        if c.iterations == 0:
            raise HarnessError(f"{c.sources[0]}: no iteration exercised the kernel")
    day = date or datetime.now(UTC).date().isoformat()
    ver = version or harness_version(REPO_ROOT)
    written = []
    for c in pool(counts):
        path = baseline_path(out_dir, c.release, c.scenario)
        base = Baseline(
            release=c.release,
            scenario=c.scenario,
            variant=c.variant,
            iterations=c.iterations,
            failing=c.failing,
            rate=round(c.rate, 6),
            date=day,
            harness_version=ver,
            sources=tuple(str(Path(s).resolve()) for s in c.sources),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, asdict(base))
        written.append(path)
    return written


def load(directory: Path, release: str, scenario: str) -> Baseline | None:
    """The baseline of (release, scenario) under ``directory``, None when there is none;
    HarnessError, one line, when the file is there but unreadable or malformed."""
    path = baseline_path(directory, release, scenario)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        base = Baseline(
            release=str(data["release"]),
            scenario=str(data["scenario"]),
            variant=str(data.get("variant", "")),
            iterations=int(data["iterations"]),
            failing=int(data["failing"]),
            rate=float(data["rate"]),
            date=str(data["date"]),
            harness_version=str(data.get("harness_version", "")),
            sources=tuple(str(s) for s in data.get("sources", [])),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(
            f"{path}: not a baseline ({type(exc).__name__}: {exc})",
            hint="rewrite it with nvmf-harness baseline accept",
        ) from None
    if not 0 <= base.failing <= base.iterations or base.iterations < 1:
        raise HarnessError(f"{path}: failing {base.failing} of {base.iterations} iterations")
    return base


class Judgement(StrEnum):
    PASS = "pass"
    REGRESSION = "regression"
    INCONCLUSIVE = "inconclusive"
    KNOWN_FAILURE = "known_failure"


@dataclass(frozen=True)
class ScenarioVerdict:
    """A night's verdict on one scenario, with the numbers behind it (rates are fractions)."""

    night: RunCounts
    judgement: Judgement
    reason: str  # one line
    p_value: float | None = None
    needed_iterations: int | None = None  # per side, for an INCONCLUSIVE one (80% power)
    baseline: Baseline | None = None
    known: KnownFailure | None = None

    @property
    def waive_reason(self) -> str | None:
        """Why the night's failing iterations are not failures (JUnit skipped), if they
        are not: a known failure, or a rate not above its baseline."""
        if not self.night.failing:
            return None
        if self.judgement == Judgement.KNOWN_FAILURE and self.known is not None:
            return f"{self.known.describe()}: {self.reason}"
        if self.judgement == Judgement.PASS and self.baseline is not None:
            return f"within the baseline: {self.reason}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "release": self.night.release,
            "scenario": self.night.scenario,
            "variant": self.night.variant,
            "iterations": self.night.iterations,
            "failing": self.night.failing,
            "judgement": str(self.judgement),
            "reason": self.reason,
            "p_value": self.p_value,
            "needed_iterations": self.needed_iterations,
            "baseline": asdict(self.baseline) if self.baseline else None,
            "known_failure": asdict(self.known) if self.known else None,
        }


def judge(
    night: RunCounts,
    baseline: Baseline | None = None,
    known: KnownFailure | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> ScenarioVerdict:
    """The verdict on one night of a scenario (see the module docstring for the rule)."""
    from harness.analysis.stats import (
        DEFAULT_POWER,
        binomial_cdf,
        fisher_exact_greater,
        iterations_for_power,
    )

    k, n = night.failing, night.iterations
    counts = f"{k}/{n} failing"
    if n == 0:
        return ScenarioVerdict(night, Judgement.INCONCLUSIVE, "no iteration exercised the kernel")
    if known is not None:
        p = 1.0 - binomial_cdf(k - 1, n, known.expected_rate) if k else 1.0
        expected = f"expected {known.expected_rate:.0%}, one-sided binomial p={p:.3g}"
        if k and p < alpha:
            reason = f"{counts}, above the known rate ({expected} < alpha={alpha:g})"
            return ScenarioVerdict(night, Judgement.REGRESSION, reason, p, known=known)
        if k:
            return ScenarioVerdict(
                night, Judgement.KNOWN_FAILURE, f"{counts} ({expected})", p, known=known
            )
        return ScenarioVerdict(night, Judgement.PASS, f"{counts} ({expected})", p, known=known)
    if baseline is not None:
        b, m = baseline.failing, baseline.iterations
        p = fisher_exact_greater(k, n - k, b, m - b)
        of = f" of variant {baseline.variant}" if baseline.variant != night.variant else ""
        versus = f"{counts} vs {baseline.describe()}{of}, one-sided Fisher p={p:.3g}"
        if p < alpha:
            reason = f"{versus} < alpha={alpha:g}"
            return ScenarioVerdict(night, Judgement.REGRESSION, reason, p, baseline=baseline)
        if night.rate <= baseline.rate:
            return ScenarioVerdict(night, Judgement.PASS, versus, p, baseline=baseline)
        needed = iterations_for_power(night.rate, baseline.rate, alpha, DEFAULT_POWER)
        amount = f"{needed} iterations" if needed else "more iterations than searched"
        reason = (
            f"{versus} >= alpha={alpha:g}: above the baseline but not significantly; {amount} "
            f"per side would decide it at true rates of {night.rate:.1%} vs "
            f"{baseline.rate:.1%} ({DEFAULT_POWER:.0%} power)"
        )
        return ScenarioVerdict(night, Judgement.INCONCLUSIVE, reason, p, needed, baseline)
    why = "no baseline and no known failure"
    if k:
        return ScenarioVerdict(
            night, Judgement.REGRESSION, f"{counts}, {why}: any failing iteration counts"
        )
    return ScenarioVerdict(night, Judgement.PASS, f"{counts} ({why})")

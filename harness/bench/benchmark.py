"""Benchmarks: the harness's figures of merit, measured in one run, side by side.

``benchmarks/run --out DIR`` (``python -m harness.bench.benchmark``) boots VMs on the host and
writes ``DIR/bench.md`` and ``DIR/bench.json``:

1. **Time to the first application EIO** on the unfixed variant, per scenario (the race
   with and without the BPF widener), each run ending at its first EIO
   (``campaign.stop_on_first_eio``) or at ``--max-iterations`` / ``--max-seconds``. Host
   time from the moment the bench starts the run (before the VM boots) to the console line
   of the first ``eio_race``/``eio`` iteration, and the campaign's own ``first_eio_at_s``.
2. **Fault iterations per minute** per fault kind (60 / mean cycle) in a campaign over every
   host- and target-side fault, against the kernel's floor: the bare operations timed with
   no fio in the same VM (``nvmf-harness floor``, floor.json), and again while the
   campaign's IO runs (``floor --under-io``: the kernel's own time under that load).
3. **fio IOPS and p99 completion latency** on the multipath head with the harness running
   (median pre-fault IOPS of the iterations) versus bare fio with the same job in the same VM
   (the campaign's ``baseline``).
4. **VM boot to first IO** and the harness's **peak memory** (``max_rss_kib``).

Layout of DIR: ``eio/<scenario>/run-NN/`` (one VM each, a results directory plus
``bench-config.toml`` and ``bench-timing.json``), ``throughput/`` (one VM: ``floor/``,
``floor-io/``, then ``campaign/``). Everything in the tables is derived from these
directories by the pure functions below (``collect``, ``markdown``), so ``--report-only``
rebuilds them.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.campaign.floor import FLOOR_OPS_OF_FAULT
from harness.config import campaign as config_mod
from harness.core.errors import HarnessError
from harness.core.paths import REPO_ROOT
from harness.core.results import (
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    is_iteration,
    read_json_object,
    read_records,
    write_json_atomic,
)
from harness.core.results import median as results_median
from harness.vm.progress import ITERATION_RE

REPO = REPO_ROOT
CONFIGS = REPO / "configs"
DEFAULT_SCENARIOS: tuple[tuple[str, Path], ...] = (
    ("widened", CONFIGS / "race-ctrl-delete-widened.toml"),
    ("natural", CONFIGS / "race-ctrl-delete-natural.toml"),
)
DEFAULT_THROUGHPUT_CONFIG = CONFIGS / "pace.toml"
TIMING_FILE = "bench-timing.json"
CONFIG_FILE = "bench-config.toml"
BENCH_MD = "bench.md"
BENCH_JSON = "bench.json"
EIO_VERDICTS = frozenset({"eio_race", "eio"})
CAMPAIGN_LINE_RE = re.compile(r"nvmf-harness: campaign \S+: ")
IOPS_GOAL = 0.95
# Issue 11's pace goals under TCG on 2 cores, iterations per minute, and the largest cycle
# that still counts as "at the kernel's pace": a multiple of the floor.
PACE_GOALS_PER_MINUTE: dict[str, float] = {"ns_remove_path": 40.0, "ctrl_delete": 20.0}
FLOOR_MULTIPLE_GOAL = 3.0


def say(message: str) -> None:
    print(f"nvmf-bench: {message}", flush=True)


# --- timing the console ------------------------------------------------------------------------


@dataclass
class LineTimer:
    """Host times (seconds since ``started``) of the guest lines the bench cares about."""

    started: float
    clock: Callable[[], float] = time.monotonic
    campaign_line_s: float | None = None
    first_iteration_s: float | None = None
    first_eio_s: float | None = None
    first_eio_line: str = ""
    iteration_lines: int = 0

    def line(self, text: str) -> None:
        now = self.clock() - self.started
        if self.campaign_line_s is None and CAMPAIGN_LINE_RE.search(text):
            self.campaign_line_s = round(now, 3)
        match = ITERATION_RE.search(text)
        if match is None:
            return
        self.iteration_lines += 1
        if self.first_iteration_s is None:
            self.first_iteration_s = round(now, 3)
        if self.first_eio_s is None and match.group("verdict") in EIO_VERDICTS:
            self.first_eio_s = round(now, 3)
            self.first_eio_line = text.strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "campaign_line_s": self.campaign_line_s,
            "first_iteration_s": self.first_iteration_s,
            "first_eio_s": self.first_eio_s,
            "first_eio_line": self.first_eio_line,
            "iteration_lines": self.iteration_lines,
        }


# --- pure analysis: result directories -> figures ------------------------------------------------


def _iteration_records(rundir: Path) -> list[dict[str, Any]]:
    return [r for r in read_records(rundir / RESULTS_FILE) if is_iteration(r)]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values present, rounded to 3 decimals (None when there are none)."""
    middle = results_median([float(v) for v in values if v is not None])
    return None if middle is None else round(middle, 3)


def censored_median(values: Sequence[float | None]) -> float | None:
    """Median where None means "not reached within the cap" (larger than any value).

    None when the median itself lies among the runs that did not reach it.
    """
    if not values:
        return None
    ordered = sorted(math.inf if v is None else float(v) for v in values)
    mid = statistics.median(ordered)
    return None if math.isinf(mid) else round(mid, 3)


@dataclass(frozen=True)
class EioRun:
    """One run to the first application EIO (or to the cap)."""

    scenario: str
    run: int
    seed: int
    widener: bool
    variant: str
    iterations: int  # fault iterations recorded
    max_iterations: int
    eio: bool
    first_eio_iteration: int | None
    first_eio_verdict: str
    host_s_to_first_eio: float | None  # bench start of this run -> first EIO iteration line
    first_eio_at_s: float | None  # the campaign's own clock (results.jsonl)
    host_s_to_campaign_line: float | None
    host_s_to_first_iteration: float | None
    wall_s: float | None
    limit_s: float | None
    timed_out: bool
    crashed: bool
    max_rss_kib: int | None


def eio_run(rundir: Path) -> EioRun:
    """Figures of one time-to-EIO run directory."""
    timing = read_json_object(rundir / TIMING_FILE)
    summary = read_json_object(rundir / SUMMARY_FILE)
    records = _iteration_records(rundir)
    first = next((r for r in records if r.get("verdict") in EIO_VERDICTS), None)
    host_s = timing.get("first_eio_s")
    if first is None:
        host_s = None  # a line without a record (a crash in between) is not an EIO we can show
    rss = summary.get("max_rss_kib")
    return EioRun(
        scenario=str(timing.get("scenario", rundir.parent.name)),
        run=int(timing.get("run", 0)),
        seed=int(timing.get("seed", 0)),
        widener=bool(timing.get("widener", records[0].get("widener") if records else False)),
        variant=str(timing.get("variant", records[0].get("variant", "") if records else "")),
        iterations=len(records),
        max_iterations=int(timing.get("max_iterations", 0)),
        eio=first is not None,
        first_eio_iteration=None if first is None else int(first["iteration"]),
        first_eio_verdict="" if first is None else str(first["verdict"]),
        host_s_to_first_eio=None if host_s is None else float(host_s),
        first_eio_at_s=None if first is None else first.get("first_eio_at_s"),
        host_s_to_campaign_line=timing.get("campaign_line_s"),
        host_s_to_first_iteration=timing.get("first_iteration_s"),
        wall_s=timing.get("wall_s"),
        limit_s=timing.get("limit_s"),
        timed_out=bool(timing.get("timed_out", False)),
        crashed=bool(timing.get("crashed", False)),
        max_rss_kib=int(rss) if isinstance(rss, int) else None,
    )


@dataclass(frozen=True)
class EioScenario:
    scenario: str
    widener: bool
    runs: int
    runs_with_eio: int
    median_host_s_to_first_eio: float | None  # censored: None when most runs saw no EIO
    median_first_eio_at_s: float | None
    median_iterations_to_eio: float | None
    result: str  # one honest sentence


def eio_scenario(name: str, runs: Sequence[EioRun]) -> EioScenario:
    hits = [r for r in runs if r.eio]
    host = censored_median([r.host_s_to_first_eio if r.eio else None for r in runs])
    in_campaign = censored_median([r.first_eio_at_s if r.eio else None for r in runs])
    iterations = censored_median(
        [float(r.first_eio_iteration) if r.first_eio_iteration else None for r in runs]
    )
    misses = [r for r in runs if not r.eio]
    cap = ""
    if misses:
        most_iterations = max(r.iterations for r in misses)
        cap_iterations = max((r.max_iterations for r in misses), default=0) or most_iterations
        longest = max((r.wall_s or 0.0) for r in misses)
        cap = f"no EIO within {cap_iterations} iterations / {longest:.0f} s"
        if any(r.timed_out for r in misses):
            cap += " (time limit reached)"
        if any(r.crashed for r in misses):
            cap += " (VM died)"
    if not runs:
        result = "not run"
    elif host is None:
        result = f"{cap} in {len(misses)} of {len(runs)} runs"
    else:
        result = f"median {host:.1f} s to the first EIO ({len(hits)}/{len(runs)} runs saw one)"
        if misses:
            result += f"; {cap} in the other {len(misses)}"
    return EioScenario(
        scenario=name,
        widener=any(r.widener for r in runs),
        runs=len(runs),
        runs_with_eio=len(hits),
        median_host_s_to_first_eio=host,
        median_first_eio_at_s=in_campaign,
        median_iterations_to_eio=iterations,
        result=result,
    )


@dataclass(frozen=True)
class FloorOpFigure:
    name: str
    n: int
    median_action_s: float | None
    median_total_s: float | None
    errors: int


def floor_figures(floor: dict[str, Any]) -> list[FloorOpFigure]:
    figures = []
    for op in floor.get("ops", []):
        total = op.get("total_s") or []
        figures.append(
            FloorOpFigure(
                name=str(op.get("name", "")),
                n=len(total),
                median_action_s=median(op.get("action_s") or []),
                median_total_s=median(total),
                errors=len(op.get("errors") or []),
            )
        )
    return figures


@dataclass(frozen=True)
class FaultRate:
    fault: str
    iterations: int
    mean_cycle_s: float
    per_minute: float
    configured_waits_s: float  # warmup + mean jitter + hold + settle of the config
    floor_ops: tuple[str, ...]
    floor_s: float | None  # sum of the median total times of those bare ops
    floor_per_minute: float | None
    overhead_s: float | None  # cycle - floor - configured waits: fio start/stop, checks, ...
    fio_start_stop_s: float | None = None  # of that overhead: mean io_start_s + io_stop_s
    floor_multiple: float | None = None  # mean cycle / floor
    floor_io_s: float | None = None  # the same ops' floor under the campaign's IO
    floor_io_multiple: float | None = None  # mean cycle / floor under IO
    overhead_io_s: float | None = None  # cycle - floor under IO - configured waits
    goal_per_minute: float | None = None  # PACE_GOALS_PER_MINUTE, where the fault has one
    previous_per_minute: float | None = None  # the same fault in --previous's bench.json


def configured_waits(campaign: dict[str, Any]) -> float:
    keys = ("warmup_s", "hold_s", "settle_s")
    waits = sum(float(campaign.get(key, 0.0)) for key in keys)
    return round(waits + float(campaign.get("jitter_s", 0.0)) / 2, 3)


def _first_fio_start(records: Sequence[dict[str, Any]]) -> int | None:
    """Index of the record whose iteration started the campaign's first fio: the first with
    ``fio_run`` 1 and a nonzero ``io_start_s`` (None when no record says so)."""
    for index, record in enumerate(records):
        if record.get("fio_run", 1) == 1 and float(record.get("io_start_s", 0.0)) > 0:
            return index
    return None


def _floor_sum(by_op: dict[str, FloorOpFigure], ops: tuple[str, ...]) -> float | None:
    """The sum of the median total times of ``ops``; None when one is missing."""
    parts = [by_op[name].median_total_s if name in by_op else None for name in ops]
    if not ops or any(part is None for part in parts):
        return None
    return round(sum(part for part in parts if part is not None), 3)


def fault_rates(
    records: Sequence[dict[str, Any]],
    floor: dict[str, Any],
    campaign: dict[str, Any],
    previous: dict[str, float] | None = None,
    floor_io: dict[str, Any] | None = None,
) -> list[FaultRate]:
    """Iterations per minute per fault kind, beside the kernel's floor for that kind (idle,
    and under the campaign's IO when ``floor_io`` is given)."""
    by_op = {f.name: f for f in floor_figures(floor)}
    by_op_io = {f.name: f for f in floor_figures(floor_io or {})}
    waits = configured_waits(campaign)
    by_fault: dict[str, list[float]] = {}
    fio_s: dict[str, list[float]] = {}
    first_start = _first_fio_start(records)
    for index, record in enumerate(records):
        cycle = float(record["cycle_s"])
        started = float(record.get("io_start_s", 0.0))
        if index == first_start:
            # the campaign's one fio starts here: setup, paid once per campaign (a restart
            # later on is the iteration's and stays in its cycle)
            cycle, started = cycle - started, 0.0
        by_fault.setdefault(str(record["fault"]), []).append(cycle)
        if "io_start_s" in record:  # records before these fields existed have neither
            spent = started + float(record.get("io_stop_s", 0.0))
            fio_s.setdefault(str(record["fault"]), []).append(spent)
    rates = []
    for fault, cycles in by_fault.items():
        mean_cycle = sum(cycles) / len(cycles)
        ops = FLOOR_OPS_OF_FAULT.get(fault, ())
        floor_s = _floor_sum(by_op, ops)
        floor_io_s = _floor_sum(by_op_io, ops)
        rates.append(
            FaultRate(
                fault=fault,
                iterations=len(cycles),
                mean_cycle_s=round(mean_cycle, 3),
                per_minute=round(60 / mean_cycle, 2) if mean_cycle > 0 else 0.0,
                configured_waits_s=waits,
                floor_ops=ops,
                floor_s=floor_s,
                floor_per_minute=round(60 / floor_s, 1) if floor_s else None,
                overhead_s=None if floor_s is None else round(mean_cycle - floor_s - waits, 3),
                fio_start_stop_s=(
                    round(sum(fio_s[fault]) / len(fio_s[fault]), 3) if fio_s.get(fault) else None
                ),
                floor_multiple=round(mean_cycle / floor_s, 2) if floor_s else None,
                floor_io_s=floor_io_s,
                floor_io_multiple=round(mean_cycle / floor_io_s, 2) if floor_io_s else None,
                overhead_io_s=(
                    None if floor_io_s is None else round(mean_cycle - floor_io_s - waits, 3)
                ),
                goal_per_minute=PACE_GOALS_PER_MINUTE.get(fault),
                previous_per_minute=(previous or {}).get(fault),
            )
        )
    return rates


def previous_rates(path: Path | None) -> dict[str, float]:
    """{fault: per_minute} of an earlier bench.json (``--previous``); {} when there is none.
    Raises HarnessError when the file is given but unreadable."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
        return {str(r["fault"]): float(r["per_minute"]) for r in data.get("fault_rates", [])}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"--previous {path}: not a bench.json ({exc})") from exc


@dataclass(frozen=True)
class Throughput:
    baseline_s: float | None
    baseline_iops: float | None
    baseline_p99_clat_us: float | None
    iterations: int
    harness_pre_fault_iops: float | None  # median over iterations, outside the fault window
    iops_ratio: float | None
    meets_goal: bool | None  # iops_ratio >= IOPS_GOAL
    harness_iteration_iops: float | None  # median of fio's whole-iteration IOPS (with faults)
    harness_p99_clat_us: float | None  # median of per-iteration p99 (fault window included)
    p99_ratio: float | None  # harness / baseline


def iteration_p99s(rundir: Path, records: Sequence[dict[str, Any]]) -> list[float]:
    """p99 completion latency (us) of each iteration's fio window, where it has one: the
    record's ``p99_clat_us``, else (runs before one fio served the whole campaign) that
    iteration's own ``iterations/NNNN/fio.json``."""
    from harness.campaign.workload import parse_result

    found = []
    for record in records:
        p99 = record.get("p99_clat_us")
        if p99 is None:
            path = rundir / "iterations" / f"{int(record['iteration']):04d}" / "fio.json"
            p99 = parse_result(path, [], None, False).p99_clat_us
        if p99 is not None:
            found.append(float(p99))
    return found


def throughput(
    baseline: dict[str, Any] | None, records: Sequence[dict[str, Any]], p99s: Sequence[float]
) -> Throughput:
    base = baseline or {}
    base_iops = base.get("iops")
    base_p99 = base.get("p99_clat_us")
    pre = median(float(r["pre_fault_iops"]) for r in records if r.get("pre_fault_iops"))
    ratio = round(pre / base_iops, 3) if pre is not None and base_iops else None
    p99 = median(p99s)
    return Throughput(
        baseline_s=base.get("seconds"),
        baseline_iops=base_iops,
        baseline_p99_clat_us=base_p99,
        iterations=len(records),
        harness_pre_fault_iops=pre,
        iops_ratio=ratio,
        meets_goal=None if ratio is None else ratio >= IOPS_GOAL,
        harness_iteration_iops=median(float(r["fio_iops"]) for r in records if "fio_iops" in r),
        harness_p99_clat_us=p99,
        p99_ratio=round(p99 / base_p99, 2) if p99 is not None and base_p99 else None,
    )


@dataclass(frozen=True)
class Spread:
    n: int
    median: float | None
    min: float | None
    max: float | None


def spread(values: Iterable[float | None]) -> Spread:
    present = [float(v) for v in values if v is not None]
    if not present:
        return Spread(0, None, None, None)
    return Spread(len(present), median(present), min(present), max(present))


@dataclass(frozen=True)
class BootFigures:
    s_to_campaign_line: Spread  # VM start -> the guest's "campaign ..." line (modules loaded)
    s_to_first_iteration: Spread  # VM start -> the first iteration line (one fault cycle done)
    max_rss_kib: Spread  # the harness process in the guest (summary.json)


@dataclass
class BenchReport:
    meta: dict[str, Any]
    eio_runs: list[EioRun] = field(default_factory=list)
    eio: list[EioScenario] = field(default_factory=list)
    floor: list[FloorOpFigure] = field(default_factory=list)
    floor_meta: dict[str, Any] = field(default_factory=dict)
    floor_io: list[FloorOpFigure] = field(default_factory=list)  # the floor under IO
    floor_io_meta: dict[str, Any] = field(default_factory=dict)
    fault_rates: list[FaultRate] = field(default_factory=list)
    throughput: Throughput | None = None
    boot: BootFigures | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _floor_meta(floor: dict[str, Any]) -> dict[str, Any]:
    """A floor.json without its ops: kernel, variant, repetitions, path, under_io, io..."""
    return {key: value for key, value in floor.items() if key != "ops"}


def collect(outdir: Path) -> BenchReport:
    """Every figure, from the directories a bench run left (no VM, no root)."""
    meta = read_json_object(outdir / "bench-meta.json")
    report = BenchReport(meta=meta)
    eio_root = outdir / "eio"
    scenario_dirs = sorted(p for p in eio_root.iterdir() if p.is_dir()) if eio_root.is_dir() else []
    order = [name for name in meta.get("scenarios", [])]
    scenario_dirs.sort(key=lambda p: order.index(p.name) if p.name in order else len(order))
    for scenario_dir in scenario_dirs:
        runs = [eio_run(p) for p in sorted(scenario_dir.glob("run-*")) if p.is_dir()]
        report.eio_runs += runs
        report.eio.append(eio_scenario(scenario_dir.name, runs))
    campaign_dir = outdir / "throughput" / "campaign"
    floor_data = read_json_object(outdir / "throughput" / "floor" / "floor.json")
    floor_io_data = read_json_object(outdir / "throughput" / "floor-io" / "floor.json")
    report.floor, report.floor_meta = floor_figures(floor_data), _floor_meta(floor_data)
    report.floor_io, report.floor_io_meta = floor_figures(floor_io_data), _floor_meta(floor_io_data)
    records = _iteration_records(campaign_dir)
    summary = read_json_object(campaign_dir / SUMMARY_FILE)
    run_info = read_json_object(campaign_dir / RUN_FILE)
    campaign_cfg = (run_info.get("config") or {}).get("campaign") or {}
    if records:
        previous = meta.get("previous")
        report.fault_rates = fault_rates(
            records,
            floor_data,
            campaign_cfg,
            previous_rates(Path(previous) if previous else None),
            floor_io=floor_io_data,
        )
    if records or summary:
        report.throughput = throughput(
            summary.get("baseline"), records, iteration_p99s(campaign_dir, records)
        )
    rss = [r.max_rss_kib for r in report.eio_runs]
    if isinstance(summary.get("max_rss_kib"), int):
        rss.append(summary["max_rss_kib"])
    report.boot = BootFigures(
        s_to_campaign_line=spread(r.host_s_to_campaign_line for r in report.eio_runs),
        s_to_first_iteration=spread(r.host_s_to_first_iteration for r in report.eio_runs),
        max_rss_kib=spread(rss),
    )
    return report


# --- rendering -----------------------------------------------------------------------------------


def _cell(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, tuple | list):
        return " + ".join(str(v) for v in value) or "-"
    return str(value).replace("|", "\\|")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 1) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(value, digits) for value in row) + " |")
    return lines


def _goal_cell(rate: FaultRate) -> str:
    """ "40: met" / "40: not met" (the per-minute goal alone), or "-" without a goal."""
    if rate.goal_per_minute is None:
        return "-"
    met = rate.per_minute >= rate.goal_per_minute
    return f"{rate.goal_per_minute:g}: {'met' if met else 'not met'}"


def _floor_goal_cell(multiple: float | None) -> str:
    """ "met" / "not met": the mean cycle within FLOOR_MULTIPLE_GOAL times a floor
    (``multiple`` = cycle / floor); "-" without that floor."""
    if multiple is None:
        return "-"
    return "met" if multiple <= FLOOR_MULTIPLE_GOAL else "not met"


def _fault_rate_section(report: BenchReport, meta: dict[str, Any]) -> list[str]:
    out: list[str] = []
    fm = report.floor_meta
    out.append(
        f"Campaign `{meta.get('throughput_config', '?')}` on variant "
        f"`{meta.get('throughput_variant', '?')}`: per fault kind 60 / mean cycle (the first "
        "iteration's cycle without starting the campaign's one fio, which is setup). *Floor*: "
        f"the bare kernel operations of that fault, timed in the same VM before the campaign "
        f"with no fio running (`nvmf-harness floor`, {fm.get('repeat', '?')} repetitions, "
        "median of action + wait until done). *Waits*: warmup + mean jitter + hold + settle "
        "of the config; *overhead*: cycle - floor - waits (the harness's work: fio status "
        "snapshots, device interlock, kernel-log read, record; and what the operations take "
        "longer under IO than idle, which the floor under IO separates); *fio start+stop*: "
        "the part spent on fio: with one fio per campaign its status snapshots at the "
        "window's ends (records' `io_start_s` + `io_stop_s`; a restart shows up here). *x floor*: "
        "mean cycle / floor. *Floor under IO*: the same bare operations timed in the same VM "
        "while the campaign's fio and passthrough readers run (generated as in the campaign, "
        "the readers as threads of the timing process), each on the path the campaign would "
        "choose from the IO (`nvmf-harness floor --under-io`): what the operations take "
        "under that load; *x floor under IO*: mean cycle / that floor; *overhead under "
        "IO*: cycle - floor under IO - waits, what the iteration adds to the operations "
        "under the same load (window snapshots, checks, kernel-log read, record). "
        "*previous*: the same fault in `--previous`'s bench.json (one made before the "
        "first fio start left the first cycle counts it in)."
    )
    out.append("")
    out += _table(
        (
            "fault",
            "iterations",
            "mean cycle s",
            "per minute",
            "floor ops",
            "floor s",
            "floor per minute",
            "waits s",
            "overhead s",
            "fio start+stop s",
            "x floor",
            "floor under IO s",
            "x floor under IO",
            "overhead under IO s",
            "goal per minute",
            f"goal <= {FLOOR_MULTIPLE_GOAL:g}x floor",
            f"goal <= {FLOOR_MULTIPLE_GOAL:g}x floor under IO",
            "previous per minute",
        ),
        (
            (
                f.fault,
                f.iterations,
                f.mean_cycle_s,
                f.per_minute,
                f.floor_ops,
                f.floor_s,
                f.floor_per_minute,
                f.configured_waits_s,
                f.overhead_s,
                f.fio_start_stop_s,
                f.floor_multiple,
                f.floor_io_s,
                f.floor_io_multiple,
                f.overhead_io_s,
                _goal_cell(f),
                _floor_goal_cell(f.floor_multiple),
                _floor_goal_cell(f.floor_io_multiple),
                f.previous_per_minute,
            )
            for f in report.fault_rates
        ),
        digits=2,
    )
    out += ["", "The floor, per bare operation (seconds; *under IO*: the same op meanwhile):", ""]
    under_io = {f.name: f for f in report.floor_io}
    out += _table(
        (
            "op",
            "n",
            "median action s",
            "median total s",
            "errors",
            "n under IO",
            "median total s under IO",
            "errors under IO",
        ),
        (
            (
                f.name,
                f.n,
                f.median_action_s,
                f.median_total_s,
                f.errors,
                *_under_io_cells(under_io.get(f.name)),
            )
            for f in report.floor
        ),
        digits=3,
    )
    io = report.floor_io_meta.get("io") or {}
    if io:
        out += [
            "",
            f"While the floor under IO ran, fio completed "
            f"{io.get('fio_read_ios', 0) + io.get('fio_write_ios', 0)} IOs with "
            f"{io.get('app_errors', 0)} errors, and the passthrough readers "
            f"{io.get('passthru_commands', 0)} commands with {io.get('passthru_errors', 0)} "
            "failures.",
        ]
    return out


def _under_io_cells(figure: FloorOpFigure | None) -> tuple[Any, Any, Any]:
    if figure is None:
        return ("-", "-", "-")
    return (figure.n, figure.median_total_s, figure.errors)


def markdown(report: BenchReport) -> str:
    meta = report.meta
    out = ["# nvmf-harness benchmarks", ""]
    load = meta.get("loadavg_start"), meta.get("loadavg_end")
    out.append(
        f"Measured {meta.get('started', '?')} on {meta.get('host', '?')} "
        f"({meta.get('cpus_host', '?')} CPUs), kernel under test {meta.get('kernel', '?')}, "
        f"VM {meta.get('vm_cpus', '?')} CPUs / {meta.get('vm_memory', '?')}, accel "
        f"{meta.get('accel', '?')}; host load average at start {_load(load[0])}, "
        f"at end {_load(load[1])} (other VMs on the host make every time here longer)."
    )
    out.append(f"Command: `{meta.get('command', '?')}`")
    out += ["", "## 1. Time to the first application EIO (unfixed variant)", ""]
    out.append(
        f"Variant `{meta.get('variant', '?')}`, `campaign.stop_on_first_eio = true`, each run "
        f"capped at {meta.get('max_iterations', '?')} iterations"
        + (f" / {meta['max_seconds']:g} s" if meta.get("max_seconds") else "")
        + "; seed = config seed + run index. *Host s*: from the bench starting the run "
        "(before the VM boots) to the console line of the first `eio_race`/`eio` iteration "
        "(printed when that iteration ends). *first_eio_at_s*: the campaign's own time of the "
        "first error (fio's first error line, from campaign start in the guest)."
    )
    out.append("")
    out += _table(
        (
            "scenario",
            "widener",
            "runs",
            "runs with EIO",
            "median host s to 1st EIO",
            "median first_eio_at_s",
            "median iterations",
            "result",
        ),
        (
            (
                s.scenario,
                s.widener,
                s.runs,
                s.runs_with_eio,
                s.median_host_s_to_first_eio,
                s.median_first_eio_at_s,
                s.median_iterations_to_eio,
                s.result,
            )
            for s in report.eio
        ),
    )
    out += ["", "Per run:", ""]
    out += _table(
        (
            "scenario",
            "run",
            "seed",
            "iterations",
            "1st EIO verdict",
            "at iteration",
            "host s to 1st EIO",
            "first_eio_at_s",
            "wall s",
            "VM",
        ),
        (
            (
                r.scenario,
                r.run,
                r.seed,
                r.iterations,
                r.first_eio_verdict or "none",
                r.first_eio_iteration,
                r.host_s_to_first_eio,
                r.first_eio_at_s,
                r.wall_s,
                "timed out" if r.timed_out else ("died" if r.crashed else "ok"),
            )
            for r in report.eio_runs
        ),
    )
    out += ["", "## 2. Fault iterations per minute, against the kernel's floor", ""]
    if report.fault_rates or report.floor:
        out += _fault_rate_section(report, meta)
    else:
        out.append("Not measured.")
    out += ["", "## 3. fio on the multipath head: with the harness vs bare fio", ""]
    t = report.throughput
    if t is None:
        out.append("Not measured.")
    else:
        out.append(
            f"Same job, same head, same VM: bare fio for {_cell(t.baseline_s, 0)} s before the "
            f"campaign (summary.json `baseline`) vs {t.iterations} fault iterations. *Pre-fault "
            "IOPS*: IO completed on the path disks between IO start and the fault (per "
            "iteration, median), i.e. outside the fault window. Per-iteration p99 comes from "
            "each iteration's fio.json and includes the fault window. p99 over jobs: the "
            "largest job p99 of reads and writes."
        )
        out.append("")
        out += _table(
            ("figure", "bare fio", "with the harness", "ratio", "goal"),
            (
                (
                    "IOPS (outside fault windows)",
                    t.baseline_iops,
                    t.harness_pre_fault_iops,
                    _ratio(t.iops_ratio, t.meets_goal),
                    f">= {IOPS_GOAL}",
                ),
                (
                    "IOPS (whole iteration, faults included)",
                    t.baseline_iops,
                    t.harness_iteration_iops,
                    "-",
                    "-",
                ),
                (
                    "p99 clat us (faults included)",
                    t.baseline_p99_clat_us,
                    t.harness_p99_clat_us,
                    t.p99_ratio,
                    "-",
                ),
            ),
        )
    out += ["", "## 4. VM boot to first IO, harness memory", ""]
    b = report.boot
    if b is not None:
        out.append(
            "Over the time-to-EIO runs: host seconds from the bench starting the run to the "
            "guest's `campaign ...` line (VM booted, nvme variant loaded, before the test bed "
            "is built) and to its first iteration line (test bed up, fio running, one fault "
            "cycle done). Peak RSS: `ru_maxrss` of the harness process in the guest at the end "
            "of the campaign (summary.json `max_rss_kib`; fio is not included)."
        )
        out.append("")
        out += _table(
            ("figure", "n", "median", "min", "max"),
            (
                ("s to `campaign` line", *_spread(b.s_to_campaign_line)),
                ("s to first iteration line", *_spread(b.s_to_first_iteration)),
                ("harness peak RSS KiB", *(_int(v) for v in _spread(b.max_rss_kib))),
            ),
        )
    return "\n".join(out) + "\n"


def _spread(s: Spread) -> tuple[Any, ...]:
    return (s.n, s.median, s.min, s.max)


def _int(value: Any) -> Any:
    return round(value) if isinstance(value, float) else value


def _ratio(ratio: float | None, meets: bool | None) -> str:
    if ratio is None:
        return "-"
    return f"{ratio:.3f} ({'meets' if meets else 'below'} goal)"


def _load(value: Any) -> str:
    if not isinstance(value, list):
        return "?"
    return "/".join(f"{v:.2f}" for v in value)


def write(report: BenchReport, outdir: Path) -> str:
    text = markdown(report)
    (outdir / BENCH_MD).write_text(text)
    write_json_atomic(outdir / BENCH_JSON, report.to_dict())
    return text


# --- orchestration on the host (boots VMs) ------------------------------------------------------


@dataclass(frozen=True)
class BenchOptions:
    out: Path
    runs: int = 5
    max_iterations: int = 60
    max_seconds: float | None = None
    scenarios: tuple[tuple[str, Path], ...] = DEFAULT_SCENARIOS
    variant: str = "unfixed"
    throughput_config: Path = DEFAULT_THROUGHPUT_CONFIG
    throughput_variant: str = "fixed"
    throughput_iterations: int = 8
    baseline_s: float = 20.0
    floor_repeat: int = 5
    kernel: str | None = None
    memory: str = "2G"
    cpus: int = 2
    accel: str = "auto"
    modules: Path | None = None
    skip_eio: bool = False
    skip_throughput: bool = False
    previous: Path | None = None  # an earlier bench.json, for the "previous" column


def _vm_timeout(config: config_mod.CampaignConfig, extra_s: float = 0.0) -> float:
    """Like ``nvmf-harness vm``: boot allowance plus a generous bound per iteration."""
    ccfg = config.campaign
    per_iteration = ccfg.warmup_s + ccfg.jitter_s + ccfg.hold_s + ccfg.settle_s + 15
    bound = min(per_iteration + ccfg.recover_timeout_s, 300)
    return 300 + extra_s + ccfg.baseline_s + ccfg.iterations * bound


def _guest_variant_args(variant: str, modules: Path | None) -> list[str]:
    args = ["--variant", variant]
    if modules is not None:
        args += ["--modules", str(modules.resolve())]
    return args


def eio_run_in_vm(
    options: BenchOptions, scenario: str, config_path: Path, index: int, rundir: Path
) -> EioRun:
    """One run to the first EIO in its own VM; the clock starts before anything else."""
    from harness.kernels.prepared import default_kernel
    from harness.vm.boot import VmSpec, guest_python, record_crash, run_in_vm
    from harness.vm.campaigns import fresh_outdir

    started = time.monotonic()
    base = config_mod.load(config_path)
    seed = base.campaign.seed + index
    config = config_mod.override(
        base,
        "campaign",
        iterations=options.max_iterations,
        stop_on_first_eio=True,
        seed=seed,
    )
    rundir = fresh_outdir(rundir)
    config_file = rundir / CONFIG_FILE
    config_file.write_text(config_mod.to_toml(config))
    limit = _vm_timeout(config)
    if options.max_seconds:
        limit = min(limit, options.max_seconds)
    spec = VmSpec(
        kernel=options.kernel or default_kernel(),
        memory=options.memory,
        cpus=options.cpus,
        accel=options.accel,
        timeout_s=limit,
    )
    guest = [guest_python(), "-m", "harness.cli", "run"]
    guest += ["--config", str(config_file), "--out", str(rundir)]
    guest += _guest_variant_args(options.variant, options.modules)
    timer = LineTimer(started)
    result = run_in_vm(spec, rundir, guest, on_line=timer.line)
    if result.crashed or result.timed_out:
        record_crash(rundir, result)
    timing = timer.to_dict() | {
        "scenario": scenario,
        "config": str(config_path),
        "run": index + 1,
        "seed": seed,
        "widener": config.widener.enabled,
        "variant": options.variant,
        "max_iterations": options.max_iterations,
        "limit_s": round(limit, 1),
        "wall_s": round(time.monotonic() - started, 3),
        "vm_wall_s": round(result.wall_s, 3),
        "vm_boot_marker_s": None if result.boot_s is None else round(result.boot_s, 3),
        "timed_out": result.timed_out,
        "crashed": result.crashed,
        "exit_status": result.exit_status,
    }
    write_json_atomic(rundir / TIMING_FILE, timing)
    return eio_run(rundir)


def throughput_in_vm(options: BenchOptions, vmdir: Path) -> int | None:
    """One VM: the floor (no fio), the floor under the campaign's IO, then a campaign over
    every fault with a bare-fio baseline."""
    from harness.kernels.prepared import default_kernel
    from harness.vm.boot import VmSpec, guest_python, run_in_vm

    base = config_mod.load(options.throughput_config)
    config = config_mod.override(
        base,
        "campaign",
        iterations=options.throughput_iterations,
        baseline_s=options.baseline_s,
        stop_on_first_eio=False,
    )
    vmdir.mkdir(parents=True, exist_ok=True)
    if (vmdir / "campaign" / RESULTS_FILE).exists() or (vmdir / "floor" / "floor.json").exists():
        raise HarnessError(f"{vmdir} already holds results", hint="choose a new --out")
    config_file = vmdir / CONFIG_FILE
    config_file.write_text(config_mod.to_toml(config))
    variant = _guest_variant_args(options.throughput_variant, options.modules)
    python = guest_python()
    floor = [python, "-m", "harness.cli", "floor", "--config", str(config_file)]
    floor += ["--repeat", str(options.floor_repeat), *variant]
    idle = [*floor, "--out", str(vmdir / "floor")]
    under_io = [*floor, "--out", str(vmdir / "floor-io"), "--under-io"]
    campaign = [python, "-m", "harness.cli", "run", "--config", str(config_file)]
    campaign += ["--out", str(vmdir / "campaign"), *variant]
    script = "; ".join(shlex.join(command) for command in (idle, under_io, campaign))
    floor_bound = len(FLOOR_OPS_OF_FAULT) * 2 * options.floor_repeat * 40 * 2
    spec = VmSpec(
        kernel=options.kernel or default_kernel(),
        memory=options.memory,
        cpus=options.cpus,
        accel=options.accel,
        timeout_s=_vm_timeout(config, extra_s=floor_bound),
    )
    result = run_in_vm(spec, vmdir, ["sh", "-c", script], on_line=_echo_harness_line)
    write_json_atomic(
        vmdir / TIMING_FILE,
        {
            "vm_wall_s": round(result.wall_s, 3),
            "timed_out": result.timed_out,
            "crashed": result.crashed,
            "exit_status": result.exit_status,
        },
    )
    if result.crashed or result.timed_out:
        say(f"the throughput VM {'timed out' if result.timed_out else 'died'}; see console.log")
    return result.exit_status


def _echo_harness_line(text: str) -> None:
    if "nvmf-harness:" in text or "Traceback" in text:
        print(text, flush=True)


def run_bench(options: BenchOptions, command: str = "") -> BenchReport:
    from harness.kernels import kbuild
    from harness.kernels.prepared import default_kernel, kernel_release
    from harness.vm.boot import VmSpec

    if options.runs < 1 or options.max_iterations < 1:
        raise HarnessError("--runs and --max-iterations must be at least 1")
    out = options.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    kernel = options.kernel or default_kernel()
    options = _with(options, kernel=kernel)
    release = kernel_release(kernel) or None
    for variant in {options.variant, options.throughput_variant} - {"distro"}:
        build = kbuild.build_variant(variant, release=release, cache_dir=options.modules)
        say(f"{variant} modules: nvme_core {build.srcversion.get('nvme-core', '?')}")
    from harness.kernels import nvmet_variant

    configs = [] if options.skip_eio else [config_mod.load(p) for _, p in options.scenarios]
    if not options.skip_throughput:
        configs.append(config_mod.load(options.throughput_config))
    nvmet = nvmet_variant.build_for_configs(kernel, configs)
    if nvmet is not None:
        say(f"patched nvmet (ns visibility): srcversion {nvmet.srcversion}")
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "cpus_host": os.cpu_count(),
        "loadavg_start": [round(v, 2) for v in os.getloadavg()],
        "kernel": kernel,
        "accel": "kvm" if VmSpec(kernel=kernel, accel=options.accel).use_kvm() else "tcg",
        "vm_cpus": options.cpus,
        "vm_memory": options.memory,
        "command": command,
        "runs": options.runs,
        "max_iterations": options.max_iterations,
        "max_seconds": options.max_seconds,
        "scenarios": [name for name, _ in options.scenarios],
        "scenario_configs": {name: str(path) for name, path in options.scenarios},
        "variant": options.variant,
        "throughput_config": str(options.throughput_config),
        "throughput_variant": options.throughput_variant,
        "throughput_iterations": options.throughput_iterations,
        "baseline_s": options.baseline_s,
        "floor_repeat": options.floor_repeat,
        "previous": str(options.previous.resolve()) if options.previous else None,
    }
    write_json_atomic(out / "bench-meta.json", meta)
    if not options.skip_eio:
        for name, config_path in options.scenarios:
            for index in range(options.runs):
                say(f"time to first EIO: {name} run {index + 1}/{options.runs}")
                run = eio_run_in_vm(
                    options, name, config_path, index, out / "eio" / name / f"run-{index + 1:02d}"
                )
                say(
                    f"{name} run {index + 1}: "
                    + (
                        f"{run.first_eio_verdict} at iteration {run.first_eio_iteration}, "
                        f"{run.host_s_to_first_eio} s after start"
                        if run.eio
                        else f"no EIO in {run.iterations} iterations ({run.wall_s} s)"
                    )
                )
    if not options.skip_throughput:
        say("floor and throughput: one VM")
        throughput_in_vm(options, out / "throughput")
    meta["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    write_json_atomic(out / "bench-meta.json", meta)
    return collect(out)


def _with(options: BenchOptions, **changes: Any) -> BenchOptions:
    import dataclasses

    return dataclasses.replace(options, **changes)

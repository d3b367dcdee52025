"""The main config at the kernel's pace: what reading the kernel log costs per iteration.

``nvmf-harness bench-kernel-log`` (benchmarks/README.md, issue "reading the kernel log costs
10 ms a line") runs the README's main config (configs/race-ns-remove-path.toml, the identity
flip: nvmet prints 1,000-6,000 "failed cmd" lines per iteration) in the VM, once per harness
revision (``--before REV``: a detached git worktree of that commit under build/, run with the
same virtualenv, kernel and module builds) and per host condition: ``quiet`` (nothing added)
and ``busy`` (:class:`BusyHost`: one spinning process per host core for the whole run, the
"two cores loaded by another process" fixture). Every figure comes from the runs' own
records (results.jsonl): ``phases_s["kernel_log"]`` (the campaign's wait for its kernel log
window: since 1b646f0 only the wait left after the ``witness`` phase, as the log's process
works while the witness is read; revisions before and after it differ in this figure, so
compare them on the cycle and on ``kmsg_cpu_s``, the log process's CPU per record),
``kernel_classes`` (its kernel log records, all classes summed), ``cycle_s``.

Goals (the issue's): kernel_log <= 0.2 s per iteration at 3,000 records, cycle <= 2 s on a
quiet host and <= 4 s with the cores loaded. Never a unit test: nothing here fails on a slow
machine; the table says whether each goal was met and the host's load beside it.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.analysis import stats
from harness.core.console import Say
from harness.core.errors import ToolError, UsageError
from harness.core.paths import BUILD_DIR, CONFIGS_DIR, REPO_ROOT
from harness.core.procs import run
from harness.core.results import (
    RESULTS_FILE,
    is_iteration,
    read_json_object,
    read_records,
    write_json_atomic,
)
from harness.vm.progress import ITERATION_RE

MAIN_CONFIG = CONFIGS_DIR / "race-ns-remove-path.toml"
CONDITIONS: tuple[str, ...] = ("quiet", "busy")
CHECKOUTS_DIR = BUILD_DIR / "bench-checkouts"
GOAL_KERNEL_LOG_S_AT_3000 = 0.2  # seconds per iteration at 3,000 records
GOAL_CYCLE_S = {"quiet": 2.0, "busy": 4.0}  # median cycle
REPORT_JSON = "kernel-log.json"
REPORT_MD = "kernel-log.md"
GIT_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class KernelLogRun:
    """The figures of one run (one revision, one host condition), from its results.jsonl.

    Seconds unless said; ``records``: kernel log records per iteration (all classes);
    ``kernel_log_s_per_1000``: the run's kernel_log seconds over its records, times 1,000;
    ``at_3000_s``: that rate times 3, the goal's figure; ``cpu_us_per_record``: the kernel
    log process's CPU microseconds per record (``kmsg_cpu_s`` over the records; None for
    revisions that did not record it); ``loadavg``: the host's 1-minute
    load average at the start and the end of the run; ``wall_s``: host seconds of the whole
    run, boot included.
    """

    revision: str
    condition: str
    iterations: int
    race_iterations: int
    app_eio_iterations: int
    cycle_s_median: float | None
    cycle_s_mean: float | None
    kernel_log_s_median: float | None
    kernel_log_s_max: float | None
    records_median: float | None
    records_max: int
    kernel_log_s_per_1000: float | None
    cpu_us_per_record: float | None
    kmsg_lost: int
    loadavg: tuple[float, float]
    wall_s: float
    rundir: str

    @property
    def at_3000_s(self) -> float | None:
        return None if self.kernel_log_s_per_1000 is None else 3 * self.kernel_log_s_per_1000

    @property
    def meets_kernel_log_goal(self) -> bool | None:
        at = self.at_3000_s
        return None if at is None else at <= GOAL_KERNEL_LOG_S_AT_3000

    @property
    def meets_cycle_goal(self) -> bool | None:
        goal = GOAL_CYCLE_S.get(self.condition)
        if goal is None or self.cycle_s_median is None:
            return None
        return self.cycle_s_median <= goal

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["at_3000_s"] = self.at_3000_s
        return data


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def run_figures(
    rundir: Path, revision: str, condition: str, loadavg: tuple[float, float], wall_s: float
) -> KernelLogRun:
    """The figures of the run in ``rundir`` (its results.jsonl; zero iterations is a figure)."""
    records = [r for r in read_records(rundir / RESULTS_FILE) if is_iteration(r)]
    cycles = [float(r["cycle_s"]) for r in records]
    kernel_log = [float(r.get("phases_s", {}).get("kernel_log", 0.0)) for r in records]
    counts = [sum(int(v) for v in r.get("kernel_classes", {}).values()) for r in records]
    total_records = sum(counts)
    cpu_s = [float(r["kmsg_cpu_s"]) for r in records if r.get("kmsg_cpu_s")]
    return KernelLogRun(
        revision=revision,
        condition=condition,
        iterations=len(records),
        race_iterations=sum(1 for r in records if r.get("verdict") == "eio_race"),
        app_eio_iterations=sum(1 for r in records if r.get("app_eio")),
        cycle_s_median=_median(cycles),
        cycle_s_mean=statistics.fmean(cycles) if cycles else None,
        kernel_log_s_median=_median(kernel_log),
        kernel_log_s_max=max(kernel_log) if kernel_log else None,
        records_median=_median([float(c) for c in counts]),
        records_max=max(counts, default=0),
        kernel_log_s_per_1000=(1000 * sum(kernel_log) / total_records if total_records else None),
        cpu_us_per_record=(1e6 * sum(cpu_s) / total_records if cpu_s and total_records else None),
        kmsg_lost=sum(int(r.get("kmsg_lost", 0)) for r in records),
        loadavg=loadavg,
        wall_s=wall_s,
        rundir=str(rundir),
    )


@contextmanager
def busy_host(cores: int | None = None) -> Iterator[list[int]]:
    """Load the host: one process spinning on the CPU per core (``os.cpu_count()`` when
    None), each in its own session, for the time of the ``with`` block; yields their pids.
    They are killed and reaped when the block ends, also on an exception or Ctrl-C."""
    count = cores or os.cpu_count() or 1
    spinners = [
        subprocess.Popen(
            [sys.executable, "-c", "while True: pass"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(count)
    ]
    try:
        yield [p.pid for p in spinners]
    finally:
        for spinner in spinners:
            if spinner.poll() is None:
                os.killpg(spinner.pid, signal.SIGKILL)
        for spinner in spinners:
            spinner.wait(timeout=STOP_TIMEOUT_S)


def checkout(revision: str) -> tuple[Path, str]:
    """A checkout of ``revision`` to run: this one for ``HEAD`` with no changes since, else a
    detached git worktree under build/bench-checkouts/<sha> (made once). Returns the
    directory and the commit's short sha (``+changes`` for this checkout with uncommitted
    changes). Raises UsageError for a revision git does not know."""
    git = ["git", "-C", str(REPO_ROOT)]
    resolved = run([*git, "rev-parse", "--short", f"{revision}^{{commit}}"], GIT_TIMEOUT_S)
    if not resolved.ok:
        raise UsageError(f"git does not know the revision {revision!r}", hint="git log --oneline")
    sha = resolved.stdout.strip()
    head = run([*git, "rev-parse", "--short", "HEAD"], GIT_TIMEOUT_S).stdout.strip()
    if revision == "HEAD" or sha == head:
        dirty = run([*git, "status", "--porcelain", "--untracked-files=no"], GIT_TIMEOUT_S)
        return REPO_ROOT, sha + ("+changes" if dirty.stdout.strip() else "")
    target = CHECKOUTS_DIR / sha
    if not (target / "harness").is_dir():
        shutil.rmtree(target, ignore_errors=True)
        run([*git, "worktree", "prune"], GIT_TIMEOUT_S)
        made = run([*git, "worktree", "add", "--detach", str(target), sha], GIT_TIMEOUT_S)
        if not made.ok:
            raise ToolError(f"git worktree add {target} {sha}: {made.one_line_error()}")
    return target, sha


@dataclass(frozen=True)
class KernelLogOptions:
    """``bench-kernel-log``'s options: revisions to run (``HEAD`` is this checkout), host
    conditions, iterations per run, variant, and the VM's (passed to ``nvmf-harness vm``).
    ``config`` None: each revision's own main config (MAIN_CONFIG in its checkout), so that
    a revision that tuned the config is measured with it."""

    out: Path
    revisions: tuple[str, ...] = ("HEAD",)
    conditions: tuple[str, ...] = CONDITIONS
    iterations: int = 12
    variant: str = "unfixed"
    config: Path | None = None
    accel: str = "auto"
    kernel: str | None = None
    modules: Path | None = None
    timeout_s: float = 1800.0


def vm_argv(options: KernelLogOptions, rundir: Path, checkout_dir: Path = REPO_ROOT) -> list[str]:
    """``python -m harness.cli vm ...`` for one run (``checkout_dir``, the revision's checkout,
    is the working directory and PYTHONPATH). The module cache is this checkout's unless
    given, so that every revision boots the same builds."""
    modules = (options.modules or BUILD_DIR / "modules").resolve()
    config = options.config or checkout_dir / MAIN_CONFIG.relative_to(REPO_ROOT)
    argv = [sys.executable, "-m", "harness.cli", "vm", "--config", str(config.resolve())]
    argv += ["--variant", options.variant, "--iterations", str(options.iterations)]
    argv += ["--out", str(rundir), "--accel", options.accel, "--modules", str(modules)]
    if options.kernel:
        argv += ["--kernel", options.kernel]
    return argv


def run_one(
    options: KernelLogOptions, revision: str, condition: str, say: Say = print
) -> KernelLogRun:
    """One run of the main config at ``revision`` under ``condition`` into
    ``out/<sha>-<condition>/``; its figures. Raises ToolError when the run left no record."""
    directory, sha = checkout(revision)
    rundir = (options.out / f"{sha}-{condition}").resolve()
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(directory)}
    argv = vm_argv(options, rundir, directory)
    say(f"bench-kernel-log: {sha} {condition}: {' '.join(argv[3:])}")
    start_load = os.getloadavg()[0]
    started = time.monotonic()
    console = rundir / "bench-console.txt"
    with busy_host() if condition == "busy" else nullcontext():
        returncode = _run_streamed(argv, directory, env, console, options.timeout_s, say)
    wall = time.monotonic() - started
    figures = run_figures(rundir, sha, condition, (start_load, os.getloadavg()[0]), wall)
    if figures.iterations == 0:
        raise ToolError(
            f"{sha} {condition}: the run recorded no iteration (exit {returncode}; see {console})"
        )
    say(
        f"bench-kernel-log: {sha} {condition}: {figures.iterations} iterations, cycle median "
        f"{_cell(figures.cycle_s_median)} s, kernel_log {_cell(figures.kernel_log_s_per_1000, 3)}"
        f" s per 1,000 records"
    )
    return figures


def _run_streamed(
    argv: list[str], cwd: Path, env: dict[str, str], console: Path, timeout_s: float, say: Say
) -> int:
    """Run ``argv``, its output to ``console`` and its progress lines (iterations) to
    ``say``; killed (its whole session) after ``timeout_s``. Returns its exit status."""
    with console.open("w") as out:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        timer = threading.Timer(timeout_s, os.killpg, (process.pid, signal.SIGKILL))
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                out.write(line)
                if ITERATION_RE.search(line):
                    say("  " + line.rstrip())
            return process.wait(timeout=STOP_TIMEOUT_S)
        except BaseException:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)
            raise
        finally:
            timer.cancel()


def run_bench(options: KernelLogOptions, say: Say = print) -> list[KernelLogRun]:
    """Every revision under every condition, in that order; writes the report after each run
    (a run that fails keeps the others). Raises UsageError for an unknown condition."""
    unknown = [c for c in options.conditions if c not in CONDITIONS]
    if unknown:
        raise UsageError(f"unknown condition {unknown[0]!r}", hint="quiet, busy")
    options.out.mkdir(parents=True, exist_ok=True)
    runs: list[KernelLogRun] = []
    for revision in options.revisions:
        for condition in options.conditions:
            runs.append(run_one(options, revision, condition, say))
            write(runs, options.out)
    return runs


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _goal(meets: bool | None) -> str:
    return "-" if meets is None else ("yes" if meets else "no")


def markdown(runs: Sequence[KernelLogRun]) -> str:
    """The table: one row per run, the goals' columns beside their figures."""
    header = (
        "| revision | host | iterations | race / app EIO | cycle s median (mean) | cycle goal "
        "| kernel_log s median (max) | records per iteration median (max) "
        "| kernel_log s per 1,000 records | at 3,000 records | <= 0.2 s? "
        "| log process CPU us per record | lost | load 1-min start -> end | wall s |"
    )
    lines = [header, "|" + "---|" * 15]
    for r in runs:
        goal = GOAL_CYCLE_S.get(r.condition)
        lines.append(
            f"| {r.revision} | {r.condition} | {r.iterations} | {r.race_iterations} / "
            f"{r.app_eio_iterations} | {_cell(r.cycle_s_median)} ({_cell(r.cycle_s_mean)}) | "
            f"<= {goal:g}: {_goal(r.meets_cycle_goal)} | {_cell(r.kernel_log_s_median, 2)} "
            f"({_cell(r.kernel_log_s_max, 2)}) | {_cell(r.records_median, 0)} ({r.records_max})"
            f" | {_cell(r.kernel_log_s_per_1000, 3)} | {_cell(r.at_3000_s, 2)} | "
            f"{_goal(r.meets_kernel_log_goal)} | {_cell(r.cpu_us_per_record, 0)} | "
            f"{r.kmsg_lost} | {r.loadavg[0]:.1f} -> "
            f"{r.loadavg[1]:.1f} | {r.wall_s:.0f} |"
        )
    return "\n".join(lines) + "\n"


def hit_rate_lines(runs: Sequence[KernelLogRun]) -> list[str]:
    """Per host condition run by two revisions or more: the race hit rate of the first
    revision against the last (race iterations / iterations), with the two-sided Fisher
    exact p (harness.analysis.stats): did a change of the harness change what it finds?"""
    lines = []
    for condition in CONDITIONS:
        same = [r for r in runs if r.condition == condition and r.iterations]
        if len({r.revision for r in same}) < 2:
            continue
        first, last = same[0], same[-1]
        p = stats.fisher_exact_two_sided(
            first.race_iterations,
            first.iterations - first.race_iterations,
            last.race_iterations,
            last.iterations - last.race_iterations,
        )
        lines.append(
            f"- {condition}: race iterations {first.revision} {first.race_iterations}/"
            f"{first.iterations}, {last.revision} {last.race_iterations}/{last.iterations} "
            f"(two-sided Fisher p={p:.3g})"
        )
    return lines


def write(runs: Sequence[KernelLogRun], out: Path) -> str:
    """kernel-log.json and kernel-log.md in ``out``; returns the Markdown."""
    text = markdown(runs)
    rates = hit_rate_lines(runs)
    if rates:
        text += (
            "\nThe race hit rate, first revision against the last:\n\n" + "\n".join(rates) + "\n"
        )
    write_json_atomic(out / REPORT_JSON, {"runs": [r.to_dict() for r in runs]})
    (out / REPORT_MD).write_text(text)
    return text


def read(out: Path) -> list[KernelLogRun]:
    """The runs of an earlier report in ``out`` (kernel-log.json), figures recomputed from
    their results so that a change of the collector applies."""
    runs = []
    for saved in read_json_object(out / REPORT_JSON).get("runs", []):
        runs.append(
            run_figures(
                Path(saved["rundir"]),
                saved["revision"],
                saved["condition"],
                (float(saved["loadavg"][0]), float(saved["loadavg"][1])),
                float(saved["wall_s"]),
            )
        )
    return runs

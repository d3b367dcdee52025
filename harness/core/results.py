"""Results: one JSON line per fault iteration, written and fsynced at once.

A guest crash or a kill -9 must not lose an iteration already recorded, so every record is
flushed and fsynced before the next fault. Summaries and tables are derived from the JSON
lines only, so ``report`` works on a directory left by a crashed run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.core.exits import ExitCode

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"


class Verdict:
    """Names of per-iteration verdicts (strings in the JSON lines)."""

    PASS = "pass"  # no application-visible error, paths recovered
    # app EIO with the race's failed bios seen (the EOD-race kernel line, or the block-layer
    # witness's bios on a zero-capacity per-path disk) while another path was live
    EIO_RACE = "eio_race"
    EIO = "eio"  # app EIO, and neither witness saw the race
    EXPECTED_EIO = "expected_eio"  # app EIO while no path was usable (ns_disable): real loss
    # An application error other than EIO (e.g. EOPNOTSUPP from a path that answered Invalid
    # Namespace with DNR) while another path was live: IO failed that another path could serve.
    APP_ERROR = "app_error"
    VERIFY_FAIL = "verify_fail"  # fio data verification failed
    # The stale-write check (workload.stale_write_check) read an older generation of a block
    # than the last acknowledged write, or no valid block of its own: data integrity lost.
    STALE_WRITE = "stale_write"
    HANG = "hang"  # no IO progress for hang_timeout_s, or a fault's kernel write never returned
    KERNEL_BUG = "kernel_bug"  # WARN/BUG/oops in the kernel log
    NOT_RECOVERED = "not_recovered"  # paths did not come back in recover_timeout_s
    INFRA_ERROR = "infra_error"  # the harness could not run the iteration


FAILING_VERDICTS = frozenset(
    {
        Verdict.EIO_RACE,
        Verdict.EIO,
        Verdict.APP_ERROR,
        Verdict.VERIFY_FAIL,
        Verdict.STALE_WRITE,
        Verdict.HANG,
        Verdict.KERNEL_BUG,
        Verdict.NOT_RECOVERED,
    }
)


@dataclass
class IterationRecord:
    """What happened in one fault iteration."""

    run_id: str
    iteration: int
    fault: str
    path: int
    kernel_release: str
    variant: str
    srcversion: str
    iopolicy: str
    widener: bool
    started_at: float  # seconds since the campaign started
    inject_at_s: float  # seconds after the iteration started
    restore_at_s: float
    inject_s: float  # how long inject() took
    restore_s: float
    cycle_s: float  # whole iteration, fio start to fio stop
    recovered: bool
    time_to_recover_s: float | None
    another_path_live: bool  # the fault left another path usable
    app_eio: int
    app_other_errors: int
    verify_failures: int
    fio_exit_code: int | None
    fio_iops: float
    fio_read_ios: int
    fio_write_ios: int
    eod_race_lines: int
    eod_race_disks: list[str]
    io_error_lines: int
    path_event_lines: int
    hung_task_lines: int
    kernel_bug_lines: int
    hang: bool
    max_stall_s: float
    first_eio_at_s: float | None  # seconds since the campaign started, when known
    verdict: str
    error: str = ""
    pre_fault_iops: float = 0.0  # IO rate on the paths between IO start and the fault
    p99_clat_us: float | None = None  # fio's p99 completion latency (fault window included)
    io_start_s: float = 0.0  # fio started -> IO seen completing on the paths (harness overhead)
    io_stop_s: float = 0.0  # fio asked to stop -> its results read (harness overhead)
    kernel_examples: list[str] = field(default_factory=list)
    stuck_tasks: list[str] = field(default_factory=list)
    # The path the head sent its IO to just before the fault (most IOs completed on its
    # per-path disks during the warmup), and each path's IOs then; None when not measured.
    current_path: int | None = None
    path_ios_before_fault: list[int] = field(default_factory=list)
    fault_notes: list[str] = field(default_factory=list)  # e.g. another path lost it too
    # The passthrough readers (workload.passthru_readers): commands, failed ones, longest (s).
    passthru_commands: int = 0
    passthru_errors: int = 0
    passthru_max_s: float = 0.0
    # The stale-write check (workload.stale_write_check, harness/stale_write.py): reads that
    # showed an older generation than the last acknowledged write, reads that showed no valid
    # block of ours (mismatch), IOs completed, IOs failed, the longest IO (s; one in flight
    # counts with its age), a few examples ("LBA n: read generation g, wrote h").
    stale_writes: int = 0
    stale_write_mismatches: int = 0
    stale_write_ios: int = 0
    stale_write_errors: int = 0
    stale_write_max_io_s: float = 0.0
    stale_write_examples: list[str] = field(default_factory=list)
    kmsg_lost: int = 0  # kernel log records overwritten before the harness read them
    # CPU seconds the kernel log's own process spent on the iteration's window (reading,
    # classifying, writing kmsg.txt; harness/campaign/kmsg_child.py); 0 in records from before
    kmsg_cpu_s: float = 0.0
    # which fio run of the campaign served this window (1: the first; more: fio was started
    # again because it exited or its head was replaced); 0 in records from before
    fio_run: int = 0
    # kernel log records of the iteration per class (harness/kmsg.py kernel_class: "no
    # usable path - requeuing I/O", "identifiers changed", controller state changes...)
    kernel_classes: dict[str, int] = field(default_factory=dict)
    # seconds per phase of the iteration, in order (window_open, prepare, warmup,
    # eod_ratelimit, inject, hold, restore, recover, settle, window_close, witness,
    # kernel_log: the wait for the kernel log left after the witness's): where a cycle's
    # time goes
    phases_s: dict[str, float] = field(default_factory=dict)
    # a [[steps]] campaign: what each step did and when (harness/steps.py StepRecord), then
    # the automatic restores (step -1); empty for a one-fault campaign
    steps: list[dict[str, Any]] = field(default_factory=list)
    # a fault's write to the kernel (delete_controller, say) did not return within its
    # timeout: the kernel is stuck in that operation even when IO goes on on another path
    kernel_write_hung: bool = False
    # The block-layer witness (harness/campaign/witness.py): bios the end-of-device check
    # failed on a zero-capacity per-path disk in the iteration (None: the witness was not
    # running), their disks, and failed bios elsewhere.
    witness_events: int | None = None
    witness_disks: list[str] = field(default_factory=list)
    witness_other_events: int = 0
    # The witness's window was not complete: bpftrace dropped this many events (its perf
    # ring buffer was full), or it had not caught up with the window's end when it was taken
    # (witness_caught_up false). Such a window does not say "no race bio".
    witness_lost: int = 0
    witness_caught_up: bool = True
    # Which witnesses saw the race's bios: "kernel_line" (the EOD-race line, kmsg),
    # "block_layer" (the BPF witness); since v6.17 the kernel prints no line for them.
    race_seen_by: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class JsonlWriter:
    """Appends records to a JSON lines file; each one is on disk when ``append`` returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] = path.open("a", encoding="utf-8")
        if _ends_torn(path):  # a crash cut the last line: start a new one
            self._file.write("\n")

    def append(self, record: IterationRecord | dict[str, Any]) -> None:
        line = record.to_json() if isinstance(record, IterationRecord) else json.dumps(record)
        self._file.write(line + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ends_torn(path: Path) -> bool:
    with path.open("rb") as handle:
        if handle.seek(0, os.SEEK_END) == 0:
            return False
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) != b"\n"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write a JSON document so readers see the old or the new file, never half of one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def is_iteration(record: dict[str, Any]) -> bool:
    """A fault iteration's record (the VM runner's kernel_crash/vm_timeout records are not)."""
    return "cycle_s" in record


def exit_status(records: list[dict[str, Any]]) -> ExitCode:
    """The exit status a run's records give: INFRA when there are none or one is an
    infra_error, FAILED when one has a failing verdict (FAILING_VERDICTS), else OK."""
    if not records or any(r.get("verdict") == Verdict.INFRA_ERROR for r in records):
        return ExitCode.INFRA
    if any(r.get("verdict") in FAILING_VERDICTS for r in records):
        return ExitCode.FAILED
    return ExitCode.OK


def race_seen(record: dict[str, Any]) -> bool:
    """Whether a witness saw the race's failed bios: the EOD-race kernel line, or the
    block-layer witness's bios on a zero-capacity per-path disk."""
    return bool(record.get("eod_race_lines", 0) or record.get("witness_events") or 0)


def is_race_iteration(record: dict[str, Any]) -> bool:
    """The bug's signature: app EIO (fio's, or a failed IO of the stale-write checker), with
    the race's failed bios seen (``race_seen``), while another path was live."""
    return bool(
        (record.get("app_eio", 0) or record.get("stale_write_errors", 0))
        and record.get("another_path_live")
        and race_seen(record)
    )


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object from a file; {} when the file is missing, torn or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def format_cell(value: Any) -> str:
    """A value as a table cell: "-" for none, yes/no, 3 significant digits for floats."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records from a JSON lines file; a torn last line (crash mid-write) is skipped."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            line = raw.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


@dataclass
class FaultSummary:
    """Totals over the iterations of one fault kind (or of all, as fault "all")."""

    fault: str
    iterations: int = 0
    iterations_with_eio: int = 0
    eio_count: int = 0
    eod_race_lines: int = 0
    witness_events: int = 0  # the block-layer witness's race bios (harness/campaign/witness.py)
    race_iterations: int = 0  # app EIO with another path live (the bug's signature)
    verify_failures: int = 0
    stale_writes: int = 0  # stale and mismatched reads of the stale-write check
    hangs: int = 0
    kernel_bugs: int = 0
    not_recovered: int = 0
    infra_errors: int = 0
    cycle_s_total: float = 0.0
    recover_s: list[float] = field(default_factory=list)
    iops: list[float] = field(default_factory=list)
    pre_fault_iops: list[float] = field(default_factory=list)
    first_eio_at_s: float | None = None

    def add(self, record: dict[str, Any]) -> None:
        self.iterations += 1
        eio = int(record.get("app_eio", 0))
        self.eio_count += eio
        if eio:
            self.iterations_with_eio += 1
            if record.get("another_path_live"):
                self.race_iterations += 1
            at = record.get("first_eio_at_s")
            if at is not None and (self.first_eio_at_s is None or at < self.first_eio_at_s):
                self.first_eio_at_s = float(at)
        self.eod_race_lines += int(record.get("eod_race_lines", 0))
        self.witness_events += int(record.get("witness_events") or 0)
        self.verify_failures += int(record.get("verify_failures", 0))
        self.stale_writes += int(record.get("stale_writes", 0)) + int(
            record.get("stale_write_mismatches", 0)
        )
        self.hangs += int(bool(record.get("hang")) or bool(record.get("kernel_write_hung")))
        self.kernel_bugs += int(record.get("kernel_bug_lines", 0) > 0)
        self.not_recovered += int(not record.get("recovered", True))
        self.infra_errors += int(record.get("verdict") == Verdict.INFRA_ERROR)
        self.cycle_s_total += float(record.get("cycle_s", 0.0))
        if record.get("time_to_recover_s") is not None:
            self.recover_s.append(float(record["time_to_recover_s"]))
        if record.get("fio_iops"):
            self.iops.append(float(record["fio_iops"]))
        if record.get("pre_fault_iops"):
            self.pre_fault_iops.append(float(record["pre_fault_iops"]))

    @property
    def mean_cycle_s(self) -> float:
        return self.cycle_s_total / self.iterations if self.iterations else 0.0

    @property
    def median_recover_s(self) -> float | None:
        return median(self.recover_s)

    @property
    def median_iops(self) -> float | None:
        return median(self.iops)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["recover_s"], data["iops"], data["pre_fault_iops"]
        data["median_pre_fault_iops"] = median(self.pre_fault_iops)
        data["mean_cycle_s"] = round(self.mean_cycle_s, 3)
        data["median_recover_s"] = self.median_recover_s
        data["median_iops"] = self.median_iops
        return data


def median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def summarize(records: Iterable[dict[str, Any]]) -> list[FaultSummary]:
    """Per-fault summaries, in first-seen order, followed by the total row "all"."""
    by_fault: dict[str, FaultSummary] = {}
    total = FaultSummary("all")
    for record in records:
        fault = str(record.get("fault", "?"))
        by_fault.setdefault(fault, FaultSummary(fault)).add(record)
        total.add(record)
    return [*by_fault.values(), total]


def render_table(summaries: list[FaultSummary]) -> str:
    """A plain-text per-fault table (what the main command prints)."""
    header = (
        "fault",
        "iters",
        "iters w/ EIO",
        "EIO",
        "race iters",
        "EOD lines",
        "BPF bios",
        "verify",
        "hangs",
        "bugs",
        "unrecov",
        "cycle s",
        "recover s",
        "IOPS",
    )
    rows = [header]
    for summary in summaries:
        rows.append(
            (
                summary.fault,
                str(summary.iterations),
                str(summary.iterations_with_eio),
                str(summary.eio_count),
                str(summary.race_iterations),
                str(summary.eod_race_lines),
                str(summary.witness_events),
                str(summary.verify_failures),
                str(summary.hangs),
                str(summary.kernel_bugs),
                str(summary.not_recovered),
                f"{summary.mean_cycle_s:.1f}",
                _fmt(summary.median_recover_s, ".2f"),
                _fmt(summary.median_iops, ".0f"),
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[col]) if col == 0 else cell.rjust(widths[col])
            for col, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)

"""The fault campaign: N iterations of (fault one path under IO, restore, verdict).

One fio runs on the multipath head for the whole campaign (harness/fio_stream.py), with the
passthrough readers if configured; each iteration owns the time window between two status
snapshots of it, so its IO counts, errors, verify failures and p99 are exact for that window
without a restart (a restart cost ~1.4 s per iteration under TCG). fio is started again only
when it exited or the head it opened is gone (another gendisk: /sys/block/<head>/diskseq).

One iteration:

1. fio's status at the start of the window (the previous iteration's end); the device
   interlock; fio restarted if needed;
2. let the fault prepare (FaultInjector.prepare); warmup_s plus a seeded random jitter, over
   which each path's IO is counted (the current path);
3. inject the fault on the chosen path (each fault returns once the kernel shows it: a
   controller gone, a per-path disk gone...); at least hold_s; restore it;
4. wait until every path is live and optimized again (reconnecting expired controllers);
5. at least settle_s more IO; fio's status closes the window;
6. classify the kernel log, combine with fio's window, write the record (fsynced).

hold_s and settle_s are minimums a config may set to 0: every step already waits for the
kernel state it needs. A monitor thread samples the paths' /sys/block stat for the whole
campaign; no completed IO for hang_timeout_s means a hang: the stuck tasks' stacks are
captured and the iteration ends (fio is stopped: SIGINT, SIGKILL when it does not stop).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.bed import nvmet_modules
from harness.bed.host import MultipathDevice
from harness.bed.testbed import NSID, Testbed, new_run_id
from harness.campaign import all_paths_down
from harness.campaign.fio_stream import FioSnapshot, FioStream, FioStreamError, window_result
from harness.campaign.kmsg import KernelLogSummary, KmsgReader, format_record
from harness.campaign.passthru import PassthruReaders, PassthruStats
from harness.campaign.stale_write import (
    BLOCK_BYTES,
    StaleWriteChecker,
    StaleWriteStats,
    tail_region,
)
from harness.campaign.steps import SequenceRun, SequenceRunner, sequence_name
from harness.campaign.workload import FioJob, FioResult, bare_fio
from harness.config import campaign as config_mod
from harness.config.campaign import (
    DYNAMIC_PATH_CHOICES,
    CampaignConfig,
)
from harness.core.errors import HarnessError, KernelFsTimeout
from harness.core.results import (
    FAILING_VERDICTS,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    IterationRecord,
    JsonlWriter,
    Verdict,
    read_records,
    render_table,
    summarize,
    write_json_atomic,
)
from harness.faults import FaultAction, FaultInjector, fault_class

IO_START_TIMEOUT_S = 30.0  # a failure bound, not a wait: IO usually flows within 1-2 s
# bio_check_eod() prints with pr_info_ratelimited: at most 10 lines per 5 s
# (DEFAULT_RATELIMIT_INTERVAL, lib/ratelimit.c), counted from the burst's first line, per
# call site. A fault injected within 5 s of the last such line could fail bios with no line
# at all (an eio verdict for an eio_race); the campaign waits that out, plus a margin.
EOD_RATELIMIT_S = 5.5
MONITOR_PERIOD_S = 0.5  # hang detection's resolution; each sample reads every path's stat


@dataclass(frozen=True)
class KernelInfo:
    release: str
    variant: str
    srcversion: str


def kernel_info(variant: str) -> KernelInfo:
    """Release and nvme_core srcversion of the running kernel."""
    try:
        srcversion = Path("/sys/module/nvme_core/srcversion").read_text().strip()
    except OSError:
        srcversion = ""
    return KernelInfo(platform.release(), variant, srcversion)


def plan(config: CampaignConfig) -> list[FaultAction]:
    """The faults and paths of every iteration, reproducible from the seed. For the path
    choices "current" and "other" the path is decided at fault time (``resolve_path``); the
    plan holds path 0 for them."""
    rng = random.Random(config.campaign.seed)
    # a [[steps]] campaign is one "fault" (its sequence) per iteration
    faults = (sequence_name(config.steps),) if config.steps else config.campaign.faults
    paths = config.target.paths
    actions = []
    for index in range(config.campaign.iterations):
        if config.campaign.order == "random":
            kind = rng.choice(faults)
        else:
            kind = faults[index % len(faults)]
        choice = config.campaign.path
        if choice == "first":
            path = 0
        elif choice == "last":
            path = paths - 1
        elif choice == "random":
            path = rng.randrange(paths)
        elif choice in DYNAMIC_PATH_CHOICES:
            path = 0
        else:  # alternate: each fault kind walks over the paths in turn
            path = (index // len(faults)) % paths
        actions.append(FaultAction(str(kind), path))
    return actions


def resolve_path(choice: str, before: list[int], after: list[int]) -> tuple[int, int]:
    """(path to fault, current path) from each path's completed IOs at two instants.

    The current path is the one whose per-path disks completed the most IOs in between (with
    iopolicy numa: all of them, multipath.c:nvme_find_path's cached current_path; ties go
    to the lower index). ``choice`` "current" faults it, "other" the path with the fewest.
    """
    if not before or len(before) != len(after):
        raise HarnessError("no per-path IO counts to find the current path from")
    carried = [max(0, a - b) for a, b in zip(after, before, strict=True)]
    current = max(range(len(carried)), key=lambda p: (carried[p], -p))
    if choice == "current":
        return current, current
    others = [p for p in range(len(carried)) if p != current]
    return min(others, key=lambda p: (carried[p], p)), current


def jitters(config: CampaignConfig) -> list[float]:
    rng = random.Random(config.campaign.seed * 7919 + 1)
    return [rng.uniform(0, config.campaign.jitter_s) for _ in range(config.campaign.iterations)]


@dataclass
class ProgressMonitor:
    """Samples IO completions on a disk; notices when IO stops making progress."""

    read_stat: Callable[[], tuple[int, int]]
    hang_timeout_s: float
    period_s: float = MONITOR_PERIOD_S
    max_stall_s: float = 0.0
    hang: bool = False
    stuck: list[str] = field(default_factory=list)  # D-state tasks when the hang was seen
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_count, _ = self.read_stat()
        last_change = time.monotonic()
        while not self._stop.wait(self.period_s):
            count, _inflight = self.read_stat()
            now = time.monotonic()
            self.samples.append((now, count))
            if count != last_count:
                last_count, last_change = count, now
            stall = now - last_change
            self.max_stall_s = max(self.max_stall_s, stall)
            if stall >= self.hang_timeout_s and not self.hang:
                self.stuck = stuck_tasks()  # while they are stuck, before any restore
                self.hang = True

    def begin_window(self) -> None:
        """Start a new iteration's window: ``max_stall_s`` counts from here (a hang stays)."""
        self.max_stall_s = 0.0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def rate(self, start: float, end: float) -> float:
        """Completed IOs per second between two time.monotonic() instants."""
        window = [(t, n) for t, n in list(self.samples) if start <= t <= end]
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return 0.0
        return max(0, window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])

    def completed(self) -> int:
        return self.samples[-1][1] if self.samples else 0


ProgressCallback = Callable[[IterationRecord, int], None]


@dataclass
class PhaseClock:
    """Seconds spent in each phase of an iteration, in order: ``mark(name)`` closes the
    phase that ran since the previous mark (or ``start``, a time.monotonic() instant)."""

    last: float
    seconds: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic

    def mark(self, name: str) -> None:
        now = self.clock()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self.last, 3)
        self.last = now


@dataclass
class IoSession:
    """The campaign's running IO: one fio (and the passthrough readers) on one head.

    ``head`` is (head name, diskseq) of the gendisk fio opened; ``last`` the snapshot that
    ends the previous window (the start of the next one); ``number`` counts fio starts.
    """

    fio: FioStream
    readers: PassthruReaders | None
    head: tuple[str, str]
    last: FioSnapshot
    number: int
    start_s: float  # starting fio until IO flowed on the paths, seconds
    stale: StaleWriteChecker | None = None  # workload.stale_write_check

    def stop(self) -> tuple[int | None, bool]:
        """Stop the readers and fio; (fio's exit status, killed)."""
        if self.readers is not None:
            self.readers.stop()
        if self.stale is not None:
            self.stale.stop()  # bounded: a worker wedged in an IO is left to end with it
        return self.fio.stop()


class Campaign:
    """Runs a campaign in the current kernel (as root, inside the VM) into ``outdir``."""

    def __init__(
        self,
        config: CampaignConfig,
        outdir: Path,
        variant: str = "distro",
        on_iteration: ProgressCallback | None = None,
        widener_factory: Callable[[], Any] | None = None,
        stop_on_failure: bool = False,
    ) -> None:
        self.config = config
        self.stop_on_failure = stop_on_failure  # end at the first failing verdict (prove-fixed)
        self.outdir = outdir
        self.run_id = new_run_id()
        self.kernel = kernel_info(variant)
        self.on_iteration = on_iteration
        self.widener_factory = widener_factory
        self.bed = Testbed(config, self.run_id)
        self.faults = FaultInjector(self.bed)
        self.sequence = (
            SequenceRunner(self.bed, self.faults, config.steps) if config.steps else None
        )
        self.started = time.monotonic()
        self.stop_reason = ""
        self.baseline: dict[str, Any] | None = None
        self.last_eod_line_at: float | None = None  # time.monotonic() clock (kmsg's)
        self.io: IoSession | None = None
        self.monitor: ProgressMonitor | None = None
        self.fio_starts = 0

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Run every iteration; always tears down. Returns the per-fault summaries."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        (self.outdir / "iterations").mkdir(exist_ok=True)
        interrupted = False
        widener = None
        try:
            with (
                KmsgReader(background=True) as kmsg,
                JsonlWriter(self.outdir / RESULTS_FILE) as writer,
            ):
                setup_start = time.monotonic()
                if self.widener_factory is not None:
                    # bpftrace compiles and attaches while the test bed is built: under TCG
                    # each takes ~10 s, and the probe only delays bios (setup's few too).
                    widener = self.widener_factory()
                    widener.launch()
                device = self.bed.up()
                self.kernel = kernel_info(self.kernel.variant)  # nvme_core is loaded now
                setup_s = time.monotonic() - setup_start
                if widener is not None:
                    widener.wait_attached()
                self._write_run_file(device, setup_s, time.monotonic() - setup_start)
                self._baseline(device)  # under the widener too, when there is one
                self.monitor = ProgressMonitor(
                    self._io_progress, self.config.campaign.hang_timeout_s
                )
                self.monitor.start()
                kmsg.read_available()  # setup noise is not part of iteration 1
                actions = plan(self.config)
                waits = jitters(self.config)
                for index, action in enumerate(actions):
                    record = self._iteration(index, action, waits[index], kmsg)
                    writer.append(record)
                    if self.on_iteration is not None:
                        self.on_iteration(record, len(actions))
                    if self._should_stop(record):
                        break
        except KeyboardInterrupt:
            interrupted = True
            self.stop_reason = "interrupted"
        finally:
            self._stop_io()
            if self.monitor is not None:
                self.monitor.stop()
            widener_stats = None
            if widener is not None:
                with contextlib.suppress(HarnessError):
                    widener_stats = widener.stop()
            errors = self.faults.restore_everything()
            errors += self.bed.down()
            self._write_summary(interrupted, errors, widener_stats)
        if interrupted:
            raise KeyboardInterrupt
        return [
            summary.to_dict() for summary in summarize(read_records(self.outdir / RESULTS_FILE))
        ]

    def _baseline(self, device: MultipathDevice) -> None:
        """Bare fio with no faults, same job, same head (with the passthrough readers when the
        config has them: they are part of the workload): the reference for harness overhead."""
        seconds = self.config.campaign.baseline_s
        if seconds <= 0:
            return
        workdir = self.outdir / "baseline"
        workdir.mkdir(exist_ok=True)
        readers = self._start_passthru(device)
        try:
            result = bare_fio(self._fio_job(device), workdir, seconds)
        finally:
            if readers is not None:
                readers.stop()
        self.baseline = {
            "seconds": seconds,
            "iops": round(result.iops, 1),
            "read_ios": result.read_ios,
            "write_ios": result.write_ios,
            "errors": result.total_errors,
            "p99_clat_us": result.p99_clat_us,
            "read_p99_clat_us": result.read_p99_clat_us,
            "write_p99_clat_us": result.write_p99_clat_us,
        }

    def _should_stop(self, record: IterationRecord) -> bool:
        if record.verdict == Verdict.HANG:
            self.stop_reason = (
                "hang: a fault's kernel write never returned"
                if record.kernel_write_hung
                else "hang: the kernel stopped completing IO"
            )
            return True
        if record.verdict == Verdict.NOT_RECOVERED:
            self.stop_reason = "paths did not recover"
            return True
        if self.config.campaign.stop_on_first_eio and record.app_eio > 0:
            self.stop_reason = "stop_on_first_eio"
            return True
        if self.stop_on_failure and record.verdict in FAILING_VERDICTS:
            self.stop_reason = f"stop on failure: {record.verdict}"
            return True
        return False

    # --- one iteration ---------------------------------------------------------------------------

    def _iteration(
        self, index: int, action: FaultAction, jitter: float, kmsg: KmsgReader
    ) -> IterationRecord:
        ccfg = self.config.campaign
        workdir = self.outdir / "iterations" / f"{index + 1:04d}"
        workdir.mkdir(parents=True, exist_ok=True)
        iteration_start = time.monotonic()
        phases = PhaseClock(iteration_start)
        lost_before = kmsg.lost
        kernel = KernelLogSummary()
        kernel_lines: list[str] = []
        error = ""
        inject_at = restore_at = inject_s = restore_s = 0.0
        recovered, recover_s = False, None
        another_path_live = False
        pre_fault_iops = 0.0
        io_start_s = io_stop_s = 0.0
        current_path: int | None = None
        path_ios: list[int] = []
        steps: list[dict[str, Any]] = []
        passthru = PassthruStats()
        stale = StaleWriteStats()
        monitor = self.monitor
        assert monitor is not None
        monitor.begin_window()
        fio_result: FioResult | None = None
        io: IoSession | None = None
        stuck: list[str] = []
        kernel_write_hung = False
        try:
            device = self.bed.checked_device()
            preparing = time.monotonic()
            io = self._ensure_io(device)
            io_start_s = time.monotonic() - preparing
            phases.mark("window_open")
            self._prepare(action)
            phases.mark("prepare")
            ios_before, counted_from = self._path_ios(device), time.monotonic()
            time.sleep(ccfg.warmup_s + jitter)
            ios_after, counted_to = self._path_ios(device), time.monotonic()
            phases.mark("warmup")
            path_ios = [max(0, a - b) for a, b in zip(ios_after, ios_before, strict=True)]
            chosen, current_path = resolve_path(
                ccfg.path if ccfg.path in DYNAMIC_PATH_CHOICES else "current",
                ios_before,
                ios_after,
            )
            if ccfg.path in DYNAMIC_PATH_CHOICES:
                action = FaultAction(action.kind, chosen)
            if self.sequence is None:
                another_path_live = self._another_path_live(device, action)
            # IO the paths completed over the warmup: outside any fault window, exact
            # (the per-path disks' completed counters, read at both ends)
            pre_fault_iops = sum(path_ios) / max(counted_to - counted_from, 1e-6)
            self._wait_for_eod_ratelimit()
            phases.mark("eod_ratelimit")
            if self.sequence is not None:
                sequence = self.sequence.run(action.path, iteration_start, lambda: monitor.hang)
                phases.mark("steps")
                another_path_live = sequence.spared_live
                steps = sequence.to_dicts()
                inject_at, restore_at, inject_s, restore_s = sequence_times(sequence)
            else:
                inject_at = time.monotonic() - iteration_start
                self.faults.inject(action)
                phases.mark("inject")
                inject_s = time.monotonic() - iteration_start - inject_at
                _sleep_unless(ccfg.hold_s, lambda: monitor.hang)
                phases.mark("hold")
                restore_at = time.monotonic() - iteration_start
                self.faults.restore(action)
                phases.mark("restore")
                restore_s = time.monotonic() - iteration_start - restore_at
            recover_s = self.faults.recover(ccfg.recover_timeout_s, lambda: monitor.hang)
            phases.mark("recover")
            recovered = recover_s is not None
            _sleep_unless(ccfg.settle_s, lambda: monitor.hang)
            phases.mark("settle")
        except HarnessError as exc:
            error = str(exc)
            if isinstance(exc, KernelFsTimeout) or isinstance(exc.__cause__, KernelFsTimeout):
                kernel_write_hung = True  # the kernel never finished a fault's write
                stuck = stuck_tasks()
            if self.sequence is not None and self.sequence.last is not None:
                steps = self.sequence.last.to_dicts()
        finally:
            if monitor.hang:
                stuck = monitor.stuck or stuck or stuck_tasks()
            io = io or self.io
            if io is not None:
                closing = time.monotonic()
                fio_result, error = self._close_window(io, error, hang=monitor.hang)
                io_stop_s = time.monotonic() - closing
                phases.mark("window_close")
                if io.readers is not None:
                    passthru = io.readers.take_window()
                if io.stale is not None:
                    stale = io.stale.take_window()
            if error:
                self.faults.restore_everything()
                with contextlib.suppress(HarnessError):
                    self.faults.recover(ccfg.recover_timeout_s, lambda: False)
        for record in kmsg.read_available():
            kernel.add(record)
            kernel_lines.append(format_record(record))
        (workdir / "kmsg.txt").write_text("\n".join(kernel_lines) + "\n")
        kernel.lost = kmsg.lost - lost_before
        phases.mark("kernel_log")
        if kernel.last_eod_ts_s is not None:
            self.last_eod_line_at = kernel.last_eod_ts_s
        return self._record(
            index=index,
            action=action,
            iteration_start=iteration_start,
            times=(inject_at, restore_at, inject_s, restore_s),
            recovered=recovered,
            recover_s=recover_s,
            another_path_live=another_path_live,
            fio_result=fio_result,
            kernel=kernel,
            monitor=monitor,
            error=error,
            stuck=stuck,
            pre_fault_iops=pre_fault_iops,
            io_times=(io_start_s, io_stop_s),
            current=(current_path, path_ios),
            passthru=passthru,
            phases=phases.seconds,
            steps=steps,
            stale=stale,
            kernel_write_hung=kernel_write_hung,
        )

    # --- the campaign's IO ---------------------------------------------------------------------

    def _head_key(self, device: MultipathDevice) -> tuple[str, str]:
        """(head name, diskseq): a new gendisk under the same name has another diskseq
        (block/genhd.c:inc_diskseq, 5.15+)."""
        diskseq = self.bed.kfs.read(f"/sys/block/{device.head}/diskseq", default="")
        return device.head, diskseq.strip()

    def _ensure_io(self, device: MultipathDevice) -> IoSession:
        """The running IO session, started (again) when there is none, fio exited, or the
        head fio opened is not the head now. ``device`` has passed the interlock."""
        io = self.io
        if io is not None and io.fio.running() and io.head == self._head_key(device):
            return io
        if io is not None:
            io.stop()
            self.io = None
        return self._start_io(device)

    def _start_io(self, device: MultipathDevice) -> IoSession:
        """Start fio (and the passthrough readers) on the head; returns once IO completes on
        the paths, with the first snapshot. Raises HarnessError when fio exits or no IO flows
        within IO_START_TIMEOUT_S."""
        assert self.monitor is not None
        self.fio_starts += 1
        workdir = self.outdir / ("fio" if self.fio_starts == 1 else f"fio-{self.fio_starts}")
        started = time.monotonic()
        stream = FioStream(self._fio_job(device), workdir)
        try:
            wait_io_flowing(stream, lambda: self._io_progress()[0])
            readers = self._start_passthru(device)
            stale = self._start_stale_write(device)
            first = stream.snapshot()
        except BaseException:
            stream.stop()
            raise
        self.io = IoSession(
            fio=stream,
            readers=readers,
            head=self._head_key(device),
            last=first,
            number=self.fio_starts,
            start_s=time.monotonic() - started,
            stale=stale,
        )
        return self.io

    def _close_window(self, io: IoSession, error: str, hang: bool) -> tuple[FioResult | None, str]:
        """End the iteration's window: fio's status now (or, on a hang, after stopping it),
        the window's result from the previous snapshot. A fio that exited or does not answer
        is stopped (the next iteration starts a new one) and named in the error."""
        start = io.last
        exit_code: int | None = None
        killed = False
        try:
            if hang:
                raise FioStreamError("the kernel stopped completing IO")
            end = io.fio.snapshot()
        except FioStreamError as exc:
            exit_code, killed = io.stop()
            self.io = None
            end = io.fio.snapshots[-1] if io.fio.snapshots else start
            if not hang:
                error = error or str(exc)
        io.last = end
        lines = io.fio.lines_between(start.at, end.at if self.io is not None else float("inf"))
        return window_result(start, end, lines, exit_code, killed), error

    def _stop_io(self) -> None:
        if self.io is not None:
            with contextlib.suppress(HarnessError):
                self.io.stop()
            self.io = None

    def _wait_for_eod_ratelimit(self) -> None:
        """Sleep until bio_check_eod()'s printk ratelimit has reset since the last EOD line
        (EOD_RATELIMIT_S), so an EOD failure of this fault prints its line."""
        if self.last_eod_line_at is None:
            return
        left = self.last_eod_line_at + EOD_RATELIMIT_S - time.monotonic()
        if left > 0:
            time.sleep(left)

    def _start_passthru(self, device: MultipathDevice) -> PassthruReaders | None:
        """Start the passthrough readers on the (interlock-checked) head, if configured."""
        return start_passthru(self.bed, self.config, device)

    def _stale_write_region(self, device: MultipathDevice) -> tuple[int, int] | None:
        """(offset in bytes, logical block size) of the stale-write check's region, the
        head's last whole MiBs (harness/stale_write.py tail_region); None when it is off."""
        wcfg = self.config.workload
        if not wcfg.stale_write_check:
            return None
        head = f"/sys/block/{device.head}"
        lba_bytes = int(self.bed.kfs.read(f"{head}/queue/logical_block_size", default="0"))
        sectors = int(self.bed.kfs.read(f"{head}/size", default="0"))
        if lba_bytes <= 0 or sectors <= 0:
            raise HarnessError(f"{device.head_dev}: no block size or capacity in sysfs")
        block = max(BLOCK_BYTES, lba_bytes)
        try:
            offset, _ = tail_region(sectors * 512, wcfg.stale_write_blocks, block)
        except ValueError as exc:
            raise HarnessError(str(exc), hint="lower workload.stale_write_blocks") from None
        return offset, lba_bytes

    def _start_stale_write(self, device: MultipathDevice) -> StaleWriteChecker | None:
        """Start the stale-write check on the (interlock-checked) head, if configured."""
        region = self._stale_write_region(device)
        if region is None:
            return None
        checker = StaleWriteChecker(
            path=device.head_dev,
            offset=region[0],
            blocks=self.config.workload.stale_write_blocks,
            run_id=self.run_id,
            lba_bytes=region[1],
            block_bytes=max(BLOCK_BYTES, region[1]),
        )
        checker.start()
        return checker

    def _path_ios(self, device: MultipathDevice | None) -> list[int]:
        """Each path's completed IOs on ``device`` (the topology read at the window's
        start: the warmup changes none), Testbed.path_ios."""
        return self.bed.path_ios(device)

    def _io_progress(self) -> tuple[int, int]:
        """(IOs completed, in flight) summed over the per-path disks: the head itself keeps
        no IO statistics on 6.1 (it is bio-based), the paths do."""
        assert self.bed.host is not None
        done = inflight = 0
        for ctrl in self.bed.host.controllers(self.bed.nqn):
            for disk in ctrl.path_disks:
                completed, active = self.bed.host.io_completed(disk)
                done += completed
                inflight += active
        return done, inflight

    def _fio_job(self, device: MultipathDevice) -> FioJob:
        stale_region = self._stale_write_region(device)  # fio stays below it
        return fio_job(self.bed, self.config, device, stale_region[0] if stale_region else None)

    def _prepare(self, action: FaultAction) -> None:
        """Before the warmup: the fault's ``prepare``; for a sequence, that of every fault
        it injects (on the planned path: the identity flip's uuid change is per run)."""
        if self.sequence is None:
            self.faults.prepare(action)
            return
        for fault in dict.fromkeys(str(s.fault) for s in self.config.steps if s.action == "inject"):
            self.faults.prepare(FaultAction(fault, action.path))

    def _another_path_live(self, device: MultipathDevice, action: FaultAction) -> bool:
        """Whether a path other than the faulted one is live, for a fault that spares it."""
        if not fault_class(str(action.kind)).spares_io(dict(action.args)):
            return False
        faulted = self.bed.endpoints[action.path]
        return any(
            ctrl.state == "live"
            and (ctrl.traddr, ctrl.trsvcid) != (faulted.traddr, faulted.trsvcid)
            for ctrl in device.controllers
        )

    def _record(
        self,
        *,
        index: int,
        action: FaultAction,
        iteration_start: float,
        times: tuple[float, float, float, float],
        recovered: bool,
        recover_s: float | None,
        another_path_live: bool,
        fio_result: FioResult | None,
        kernel: KernelLogSummary,
        monitor: ProgressMonitor | None,
        error: str,
        stuck: list[str],
        pre_fault_iops: float,
        io_times: tuple[float, float],
        current: tuple[int | None, list[int]] = (None, []),
        passthru: PassthruStats | None = None,
        phases: dict[str, float] | None = None,
        steps: list[dict[str, Any]] | None = None,
        stale: StaleWriteStats | None = None,
        kernel_write_hung: bool = False,
    ) -> IterationRecord:
        fio = fio_result
        hang = bool(monitor and monitor.hang) or bool(fio and fio.killed)
        app_eio = fio.eio if fio else 0
        first_eio_at = None
        if fio and fio.first_error_at is not None:
            first_eio_at = fio.first_error_at - self.started
        elif app_eio:  # fio printed no line: take the kernel's first error line (same clock)
            kernel_ts = kernel.first_eod_race_ts_s or kernel.first_error_ts_s
            if kernel_ts is not None:
                first_eio_at = kernel_ts - self.started
        record = IterationRecord(
            run_id=self.run_id,
            iteration=index + 1,
            fault=str(action.kind),
            path=action.path,
            kernel_release=self.kernel.release,
            variant=self.kernel.variant,
            srcversion=self.kernel.srcversion,
            iopolicy=self.config.host.iopolicy,
            widener=self.config.widener.enabled,
            started_at=round(iteration_start - self.started, 3),
            inject_at_s=round(times[0], 3),
            restore_at_s=round(times[1], 3),
            inject_s=round(times[2], 3),
            restore_s=round(times[3], 3),
            cycle_s=round(time.monotonic() - iteration_start, 3),
            recovered=recovered,
            time_to_recover_s=None if recover_s is None else round(recover_s, 3),
            another_path_live=another_path_live,
            app_eio=app_eio,
            app_other_errors=(fio.total_errors - app_eio) if fio else 0,
            verify_failures=fio.verify_failures if fio else 0,
            fio_exit_code=fio.exit_code if fio else None,
            fio_iops=round(fio.iops, 1) if fio else 0.0,
            fio_read_ios=fio.read_ios if fio else 0,
            fio_write_ios=fio.write_ios if fio else 0,
            eod_race_lines=kernel.eod_race_lines,
            eod_race_disks=kernel.eod_race_disks,
            io_error_lines=kernel.io_error_lines,
            path_event_lines=kernel.path_event_lines,
            hung_task_lines=kernel.hung_task_lines,
            kernel_bug_lines=kernel.kernel_bug_lines,
            hang=hang,
            max_stall_s=round(monitor.max_stall_s, 3) if monitor else 0.0,
            first_eio_at_s=None if first_eio_at is None else round(first_eio_at, 3),
            verdict="",
            error=error,
            pre_fault_iops=round(pre_fault_iops, 1),
            p99_clat_us=fio.p99_clat_us if fio else None,
            io_start_s=round(io_times[0], 3),
            io_stop_s=round(io_times[1], 3),
            kernel_examples=kernel.examples + (fio.error_lines[:4] if fio else []),
            stuck_tasks=stuck,
            current_path=current[0],
            path_ios_before_fault=current[1],
            fault_notes=self.faults.take_notes(),
            passthru_commands=passthru.commands if passthru else 0,
            passthru_errors=passthru.errors if passthru else 0,
            passthru_max_s=round(passthru.max_command_s, 3) if passthru else 0.0,
            stale_writes=stale.stale if stale else 0,
            stale_write_mismatches=stale.mismatches if stale else 0,
            stale_write_ios=stale.ios if stale else 0,
            stale_write_errors=stale.errors if stale else 0,
            stale_write_max_io_s=round(stale.max_io_s, 3) if stale else 0.0,
            stale_write_examples=list(stale.examples) if stale else [],
            kmsg_lost=kernel.lost,
            fio_run=self.fio_starts,
            kernel_classes=dict(sorted(kernel.classes.items())),
            phases_s=dict(phases or {}),
            steps=list(steps or []),
            kernel_write_hung=kernel_write_hung,
        )
        record.verdict = verdict(record)
        return record

    # --- files -----------------------------------------------------------------------------------

    def _write_run_file(self, device: MultipathDevice, setup_s: float, ready_s: float) -> None:
        """run.json: what this run is. ``setup_s`` is the test bed (phases in
        ``setup_phases_s``), ``ready_s`` also includes waiting for the widener to attach."""
        assert self.bed.host is not None
        data = {
            "run_id": self.run_id,
            "kernel_release": self.kernel.release,
            "variant": self.kernel.variant,
            "srcversion": self.kernel.srcversion,
            "subsystem_nqn": self.bed.nqn,
            "host_nqn": self.bed.identity.hostnqn,
            "head": device.head_dev,
            "paths": [
                {
                    "controller": c.name,
                    "traddr": c.traddr,
                    "trsvcid": c.trsvcid,
                    "disks": list(c.path_disks),
                }
                for c in device.controllers
            ],
            "iopolicy": self.bed.host.iopolicy(device),
            "nvmet": nvmet_modules.loaded_nvmet(self.bed.kfs).describe(),
            **self.bed.record_fields(),  # transport, rxe devices, nvme_core io_timeout...
            "setup_s": round(setup_s, 3),
            "setup_phases_s": {name: round(sec, 3) for name, sec in self.bed.setup_phases.items()},
            "ready_s": round(ready_s, 3),
            "config": config_mod.to_dict(self.config),
            "started_unix": time.time(),
            "pid": os.getpid(),
        }
        write_json_atomic(self.outdir / RUN_FILE, data)
        if self.bed.spec is not None:
            from harness.bed import nvmetcli_json

            nvmetcli_json.save(self.bed.spec, self.outdir / "target.nvmetcli.json")

    def _write_summary(self, interrupted: bool, errors: list[str], widener_stats: Any) -> None:
        records = list(read_records(self.outdir / RESULTS_FILE))
        summaries = summarize(records)
        data = {
            "run_id": self.run_id,
            "complete": not interrupted and len(records) == self.config.campaign.iterations,
            "interrupted": interrupted,
            "stop_reason": self.stop_reason,
            "iterations": len(records),
            "kernel_release": self.kernel.release,
            "variant": self.kernel.variant,
            "srcversion": self.kernel.srcversion,
            "teardown_errors": errors,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "faults": [summary.to_dict() for summary in summaries],
            "widener": _plain(widener_stats),
            "baseline": self.baseline,
            # peak resident set of this process (the harness; fio is a child), KiB on Linux
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        write_json_atomic(self.outdir / SUMMARY_FILE, data)
        (self.outdir / "table.txt").write_text(render_table(summaries) + "\n")
        from harness.core.junit import write_junit

        write_junit(self.outdir / "junit.xml", records, suite=f"campaign-{self.kernel.variant}")


def _plain(value: Any) -> Any:
    if value is None:
        return None
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))


def wait_io_flowing(fio: FioStream, completed: Callable[[], int]) -> None:
    """Until the paths completed 100 IOs more than when called (``completed``: IOs completed
    on the per-path disks so far). HarnessError when fio exits first or after
    IO_START_TIMEOUT_S seconds."""
    deadline = time.monotonic() + IO_START_TIMEOUT_S
    baseline = completed()
    while time.monotonic() < deadline:
        if not fio.running():
            raise HarnessError(f"fio exited at start: see {fio.stderr_path}")
        if completed() > baseline + 100:
            return
        time.sleep(0.02)
    raise HarnessError(f"no IO on the head {IO_START_TIMEOUT_S:g} s after fio started")


def fio_job(
    bed: Testbed, config: CampaignConfig, device: MultipathDevice, below_bytes: int | None = None
) -> FioJob:
    """The config's fio job on ``device``'s head (which the caller checked with the device
    interlock), over the whole head or its first ``below_bytes``. HarnessError when sysfs
    shows no capacity (/sys/block/<head>/size, 512-byte sectors)."""
    wcfg = config.workload
    sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size", default="0"))
    if sectors <= 0:
        raise HarnessError(f"{device.head_dev} has no capacity")
    return FioJob(
        filename=device.head_dev,
        size_bytes=below_bytes if below_bytes is not None else sectors * 512,
        rw=wcfg.rw,
        bs=wcfg.bs,
        iodepth=wcfg.iodepth,
        numjobs=wcfg.numjobs,
        verify=wcfg.verify,
    )


def start_passthru(
    bed: Testbed, config: CampaignConfig, device: MultipathDevice
) -> PassthruReaders | None:
    """Start the config's passthrough readers (workload.passthru_readers, _kib) on
    ``device``'s head, which the caller checked with the device interlock; None when the
    config has none. HarnessError when sysfs shows no block size or capacity."""
    wcfg = config.workload
    if wcfg.passthru_readers <= 0:
        return None
    lba_bytes = int(bed.kfs.read(f"/sys/block/{device.head}/queue/logical_block_size", default="0"))
    sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size", default="0"))
    if lba_bytes <= 0 or sectors <= 0:
        raise HarnessError(f"{device.head_dev}: no block size or capacity in sysfs")
    readers = PassthruReaders(
        head_dev=device.head_dev,
        nsid=NSID,
        lba_bytes=lba_bytes,
        capacity_lbas=sectors * 512 // lba_bytes,
        threads=wcfg.passthru_readers,
        read_bytes=wcfg.passthru_kib * 1024,
        seed=config.campaign.seed,
    )
    readers.start()
    return readers


def sequence_times(sequence: SequenceRun) -> tuple[float, float, float, float]:
    """(inject_at, restore_at, inject_s, restore_s) of a sequence for the iteration record:
    its first inject and last restore (seconds from the iteration's start), and the seconds
    its inject and restore actions took in all."""
    inject_s = sum(r.action_s for r in sequence.records if r.action == "inject")
    restore_s = sum(r.action_s for r in sequence.records if r.action == "restore")
    return (
        sequence.first_inject_at_s or 0.0,
        sequence.last_restore_at_s or 0.0,
        inject_s,
        restore_s,
    )


def verdict(record: IterationRecord) -> str:
    """One verdict per iteration, the most serious first."""
    stuck_hang = record.kernel_write_hung or (
        (record.hang or record.hung_task_lines) and record.stuck_tasks
    )
    if record.error and not record.fio_read_ios and not record.fio_write_ios and not stuck_hang:
        # nothing ran; but IO that stopped with tasks stuck in the kernel (a step's write
        # blocked in nvme_do_delete_ctrl, say) is a hang, whatever error the step gave
        return Verdict.INFRA_ERROR
    if record.kernel_bug_lines:
        return Verdict.KERNEL_BUG
    # no IO progress, the kernel saw a hung task, or a fault's kernel write never returned
    if record.hang or record.hung_task_lines or record.kernel_write_hung:
        return Verdict.HANG
    if record.stale_writes or record.stale_write_mismatches:  # acknowledged data lost
        return Verdict.STALE_WRITE
    # the stale-write checker is an application on the head too: its failed IOs count
    eio = all_paths_down.eio_verdict(
        record.app_eio + record.stale_write_errors, record.eod_race_lines, record.another_path_live
    )
    if eio is not None:  # with no other path live an EIO is expected, race line or not
        return eio
    if record.app_other_errors and record.another_path_live:
        return Verdict.APP_ERROR
    if record.verify_failures:
        return Verdict.VERIFY_FAIL
    if not record.recovered:
        return Verdict.NOT_RECOVERED if not record.error else Verdict.INFRA_ERROR
    # Recovered with IO done, but a step failed (fio exited mid-window, a fault did not take
    # effect in time): not a pass.
    return Verdict.INFRA_ERROR if record.error else Verdict.PASS


def stuck_tasks(limit: int = 16) -> list[str]:
    """Tasks in uninterruptible sleep (D) with their kernel stacks, for a hang verdict."""
    found: list[str] = []
    for pid in sorted(os.listdir("/proc"), key=lambda p: (len(p), p)):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state != "D":
                continue
            comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
            stack = Path(f"/proc/{pid}/stack").read_text().strip().replace("\n", " <- ")
        except (OSError, IndexError):
            continue
        found.append(f"{pid} {comm}: {stack}")
        if len(found) >= limit:
            break
    return found


def _sleep_unless(seconds: float, stop: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop():
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

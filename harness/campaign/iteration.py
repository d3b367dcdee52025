"""One fault iteration, phase by phase (harness.campaign.runner runs them in turn).

1. ``open_window``: the device interlock; fio (re)started if needed; the window begins at
   fio's last status snapshot (the previous iteration's end);
2. ``warm_up``: the fault's ``prepare``; ``warmup_s`` plus a seeded jitter, over which each
   path's IO is counted (which path is the current one); the path chosen for "current" or
   "other"; whether another path stays live;
3. ``fault``: inject on the chosen path (each fault returns once the kernel shows it), at
   least ``hold_s``, restore; or the config's ``[[steps]]`` sequence;
4. ``recover``: every path live and optimized again (expired controllers reconnected), then
   at least ``settle_s`` more IO;
5. ``close_window``: fio's status closes the window; the passthrough readers' and the
   stale-write check's counts of the window;
6. ``read_witnesses``: the kernel log since the last iteration, classified, and the
   block-layer witness's failed bios of the window (harness.campaign.witness).

``IterationState`` holds what the phases observed; harness.campaign.record turns it into the
iteration's record. A HarnessError in phases 1-4 ends them early (the error is kept, the
faults are restored, the window still closes); a hang (the monitor) cuts every wait short.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.bed.host import MultipathDevice
from harness.campaign.io_session import IoSession
from harness.campaign.kmsg import KernelLogSummary, KmsgWindows
from harness.campaign.monitor import ProgressMonitor, stuck_tasks
from harness.campaign.passthru import PassthruStats
from harness.campaign.plan import resolve_path
from harness.campaign.stale_write import StaleWriteStats
from harness.campaign.steps import SequenceRun
from harness.campaign.witness import WitnessWindow
from harness.campaign.workload import FioResult
from harness.config.campaign import DYNAMIC_PATH_CHOICES
from harness.core.errors import HarnessError, KernelFsTimeout
from harness.faults import FaultAction, fault_class

if TYPE_CHECKING:
    from harness.campaign.runner import Campaign

# bio_check_eod() prints with pr_info_ratelimited: at most 10 lines per 5 s
# (DEFAULT_RATELIMIT_INTERVAL, lib/ratelimit.c), counted from the burst's first line, per
# call site. A fault injected within 5 s of the last such line could fail bios with no line
# at all (an eio verdict for an eio_race): without the block-layer witness, the campaign
# waits that out, plus a margin.
EOD_RATELIMIT_S = 5.5


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
class IterationState:
    """What one iteration's phases observed (times in seconds; ``*_at`` from its start)."""

    index: int
    action: FaultAction
    start: float  # time.monotonic() when it began
    phases: PhaseClock
    workdir: Path
    error: str = ""
    inject_at: float = 0.0
    restore_at: float = 0.0
    inject_s: float = 0.0
    restore_s: float = 0.0
    recovered: bool = False
    recover_s: float | None = None
    another_path_live: bool = False
    pre_fault_iops: float = 0.0
    io_start_s: float = 0.0  # opening the window: fio (re)started and IO flowing
    io_stop_s: float = 0.0  # closing it: fio's status read
    window_end: float | None = None  # time.monotonic() when fio's status closed the window
    current_path: int | None = None
    path_ios: list[int] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    passthru: PassthruStats = field(default_factory=PassthruStats)
    stale: StaleWriteStats = field(default_factory=StaleWriteStats)
    fio: FioResult | None = None
    stuck: list[str] = field(default_factory=list)
    kernel_write_hung: bool = False
    kernel: KernelLogSummary = field(default_factory=KernelLogSummary)
    kernel_log_cpu_s: float = 0.0  # the kernel log's process, on this window
    witness: WitnessWindow | None = None  # None: the block-layer witness is not running


class Iteration:
    """One iteration of ``campaign``: ``run()`` goes through the phases and returns the
    state for the record. The fault's and the sequence's errors end up in ``state.error``."""

    def __init__(
        self, campaign: Campaign, index: int, action: FaultAction, jitter_s: float
    ) -> None:
        self.campaign = campaign
        self.jitter_s = jitter_s
        start = time.monotonic()
        workdir = campaign.outdir / "iterations" / f"{index + 1:04d}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.state = IterationState(index, action, start, PhaseClock(start), workdir)
        self.io: IoSession | None = None

    @property
    def monitor(self) -> ProgressMonitor:
        assert self.campaign.monitor is not None
        return self.campaign.monitor

    def run(self, kmsg: KmsgWindows) -> IterationState:
        """Every phase; the state they observed."""
        state = self.state
        self.monitor.begin_window()
        try:
            device = self.open_window()
            self.warm_up(device)
            self.fault()
            self.recover()
        except HarnessError as exc:
            self.failed(exc)
        finally:
            self.close_window()
        self.read_witnesses(kmsg)
        return state

    # --- the phases ----------------------------------------------------------------------

    def open_window(self) -> MultipathDevice:
        """The device interlock, then the IO session (started again when it must be)."""
        device = self.campaign.bed.checked_device()
        opening = time.monotonic()
        self.io = self.campaign.io.ensure(device)
        self.state.io_start_s = time.monotonic() - opening
        self.state.phases.mark("window_open")
        return device

    def warm_up(self, device: MultipathDevice) -> None:
        """The fault's prepare; the warmup, counting each path's IOs; the path to fault."""
        state, ccfg = self.state, self.campaign.config.campaign
        self.campaign.prepare(state.action)
        state.phases.mark("prepare")
        io = self.campaign.io
        ios_before, counted_from = io.path_ios(device), time.monotonic()
        time.sleep(ccfg.warmup_s + self.jitter_s)
        ios_after, counted_to = io.path_ios(device), time.monotonic()
        state.phases.mark("warmup")
        state.path_ios = [max(0, a - b) for a, b in zip(ios_after, ios_before, strict=True)]
        dynamic = ccfg.path in DYNAMIC_PATH_CHOICES
        chosen, state.current_path = resolve_path(
            ccfg.path if dynamic else "current", ios_before, ios_after
        )
        if dynamic:
            state.action = FaultAction(state.action.kind, chosen)
        if self.campaign.sequence is None:
            state.another_path_live = self.another_path_live(device)
        # IO the paths completed over the warmup: outside any fault window, exact (the
        # per-path disks' completed counters, read at both ends)
        state.pre_fault_iops = sum(state.path_ios) / max(counted_to - counted_from, 1e-6)
        self.wait_for_eod_ratelimit()
        state.phases.mark("eod_ratelimit")

    def fault(self) -> None:
        """Inject, hold, restore; or run the config's sequence."""
        state, campaign = self.state, self.campaign
        hang = self.monitor_hang
        if campaign.sequence is not None:
            sequence = campaign.sequence.run(state.action.path, state.start, hang)
            state.phases.mark("steps")
            state.another_path_live = sequence.spared_live
            state.steps = sequence.to_dicts()
            times = sequence_times(sequence)
            state.inject_at, state.restore_at, state.inject_s, state.restore_s = times
            return
        state.inject_at = time.monotonic() - state.start
        campaign.faults.inject(state.action)
        state.phases.mark("inject")
        state.inject_s = time.monotonic() - state.start - state.inject_at
        sleep_unless(campaign.config.campaign.hold_s, hang)
        state.phases.mark("hold")
        state.restore_at = time.monotonic() - state.start
        campaign.faults.restore(state.action)
        state.phases.mark("restore")
        state.restore_s = time.monotonic() - state.start - state.restore_at

    def recover(self) -> None:
        """Every path back (FaultInjector.recover), then the settle time."""
        state, ccfg = self.state, self.campaign.config.campaign
        state.recover_s = self.campaign.faults.recover(ccfg.recover_timeout_s, self.monitor_hang)
        state.phases.mark("recover")
        state.recovered = state.recover_s is not None
        sleep_unless(ccfg.settle_s, self.monitor_hang)
        state.phases.mark("settle")

    def failed(self, exc: HarnessError) -> None:
        """A phase raised: keep the error; a kernel write that never returned is a hang."""
        state = self.state
        state.error = str(exc)
        if isinstance(exc, KernelFsTimeout) or isinstance(exc.__cause__, KernelFsTimeout):
            state.kernel_write_hung = True  # the kernel never finished a fault's write
            state.stuck = stuck_tasks()
        sequence = self.campaign.sequence
        if sequence is not None and sequence.last is not None:
            state.steps = sequence.last.to_dicts()

    def close_window(self) -> None:
        """fio's status ends the window (stopping fio on a hang); the readers' and the
        stale-write check's counts of it; after an error, every fault restored."""
        state, campaign = self.state, self.campaign
        monitor = self.monitor
        if monitor.hang:
            state.stuck = monitor.stuck or state.stuck or stuck_tasks()
        io = self.io or campaign.io.session
        if io is not None:
            closing = time.monotonic()
            state.fio, state.error = campaign.io.close_window(io, state.error, hang=monitor.hang)
            state.window_end = time.monotonic()
            state.io_stop_s = state.window_end - closing
            if io.readers is not None:
                state.passthru = io.readers.take_window()
            if io.stale is not None:
                state.stale = io.stale.take_window()
        if state.error:
            campaign.faults.restore_everything()
            with contextlib.suppress(HarnessError):
                campaign.faults.recover(campaign.config.campaign.recover_timeout_s, lambda: False)
        state.phases.mark("window_close")

    def read_witnesses(self, kmsg: KmsgWindows) -> None:
        """The kernel log since the last window (its lines in the workdir's kmsg.txt, read
        and classified by the log's own process) and the block-layer witness's window, cut
        where fio's status closed the window (without fio, now): by the time it is read,
        part of the heartbeats the take waits for after its cut have come already.

        The kernel log's window ends first, and its process writes and sums it up while
        the witness's take waits for its heartbeats: the ``kernel_log`` phase is the wait
        for the log left after the ``witness`` phase (its whole cost without a witness)."""
        state = self.state
        kmsg.send_take(state.workdir / "kmsg.txt")
        witness = self.campaign.witness
        if witness is not None:
            try:
                state.witness = witness.take(state.window_end or time.monotonic())
            except HarnessError as exc:
                self.campaign.witness_lost(str(exc))
            state.phases.mark("witness")
        window = kmsg.take_reply()
        state.kernel, state.kernel_log_cpu_s = window.summary, window.cpu_s
        state.phases.mark("kernel_log")
        if state.kernel.last_eod_ts_s is not None:
            self.campaign.last_eod_line_at = state.kernel.last_eod_ts_s

    # --- helpers -------------------------------------------------------------------------

    def monitor_hang(self) -> bool:
        return self.monitor.hang

    def another_path_live(self, device: MultipathDevice) -> bool:
        """Whether a path other than the faulted one is live, for a fault that spares it."""
        action = self.state.action
        if not fault_class(str(action.kind)).spares_io(dict(action.args)):
            return False
        faulted = self.campaign.bed.endpoints[action.path]
        return any(
            ctrl.state == "live"
            and (ctrl.traddr, ctrl.trsvcid) != (faulted.traddr, faulted.trsvcid)
            for ctrl in device.controllers
        )

    def wait_for_eod_ratelimit(self) -> None:
        """With the kernel line as the only witness: sleep until bio_check_eod()'s printk
        ratelimit has reset since the last EOD line (EOD_RATELIMIT_S), so an EOD failure of
        this fault prints its line. The block-layer witness needs no such wait."""
        last = self.campaign.last_eod_line_at
        if self.campaign.witness is not None or last is None:
            return
        left = last + EOD_RATELIMIT_S - time.monotonic()
        if left > 0:
            time.sleep(left)


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


def sleep_unless(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep ``seconds``, or less once ``stop()`` says so (checked every 50 ms)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stop():
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

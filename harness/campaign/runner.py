"""The fault campaign: N iterations of (fault one path under IO, restore, verdict).

``Campaign.run`` builds the test bed, starts the block-layer witness and (when configured)
the BPF widener while it does, runs the baseline, then every iteration of the plan
(harness.campaign.plan) phase by phase (harness.campaign.iteration), writes one record per
iteration (harness.campaign.record, fsynced), and always tears down. One fio runs on the
multipath head for the whole campaign (harness.campaign.io_session); a monitor thread
notices hangs (harness.campaign.monitor).

The witnesses of the race's failed bios: the EOD-race kernel line (harness.campaign.kmsg)
and the block-layer witness (harness.campaign.witness, BPF). Where the second cannot run
(no bpftrace, no BTF, no kprobes, bpftrace refusing), the campaign says so once, on its
first line and in run.json, and counts the line only; ``[witness] mode = "required"``
makes that an error instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bed import nvmet_modules, nvmetcli_json
from harness.bed.host import MultipathDevice
from harness.bed.testbed import Testbed, new_run_id
from harness.bed.variants import kernel_info
from harness.campaign import witness as witness_mod
from harness.campaign.io_session import CampaignIo, stuck_readers_error
from harness.campaign.iteration import Iteration
from harness.campaign.kmsg import KmsgWindows
from harness.campaign.monitor import ProgressMonitor
from harness.campaign.plan import jitters, plan
from harness.campaign.record import RunInfo, build_record
from harness.campaign.steps import SequenceRunner
from harness.campaign.witness import Witness
from harness.campaign.workload import bare_fio
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.errors import HarnessError, ToolError
from harness.core.junit import write_junit
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
from harness.faults import FaultAction, FaultInjector

WITNESS_OUTPUT = "witness.out"  # the witness's bpftrace output, beside the results


ProgressCallback = Callable[[IterationRecord, int], None]


@dataclass
class WitnessState:
    """Whether the block-layer witness runs, and why not (one line) when it does not."""

    running: bool = False
    reason: str = ""  # why it does not run (or stopped running)
    lost_at_iteration: int | None = None  # it ran, then its bpftrace ended here

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Campaign:
    """Runs a campaign in the current kernel (as root, inside the VM) into ``outdir``.

    ``on_witness(line)`` hears once whether the block-layer witness runs (a one-line reason
    when it does not)."""

    def __init__(
        self,
        config: CampaignConfig,
        outdir: Path,
        variant: str = "distro",
        on_iteration: ProgressCallback | None = None,
        widener_factory: Callable[[], Any] | None = None,
        stop_on_failure: bool = False,
        on_witness: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.stop_on_failure = stop_on_failure  # end at the first failing verdict (prove-fixed)
        self.outdir = outdir
        self.run_id = new_run_id()
        self.kernel = kernel_info(variant)
        self.on_iteration = on_iteration
        self.on_witness = on_witness
        self.widener_factory = widener_factory
        self.bed = Testbed(config, self.run_id)
        self.faults = FaultInjector(self.bed)
        self.sequence = (
            SequenceRunner(self.bed, self.faults, config.steps) if config.steps else None
        )
        self.io = CampaignIo(self.bed, config, outdir, self.run_id)
        self.started = time.monotonic()
        self.stop_reason = ""
        self.baseline: dict[str, Any] | None = None
        self.last_eod_line_at: float | None = None  # time.monotonic() clock (kmsg's)
        self.monitor: ProgressMonitor | None = None
        self.witness: Witness | None = None
        self.witness_state = WitnessState()
        self.iteration_index = 0

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> list[dict[str, Any]]:
        """Run every iteration; always tears down. Returns the per-fault summaries."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        (self.outdir / "iterations").mkdir(exist_ok=True)
        interrupted = False
        widener = None
        try:
            with (
                KmsgWindows() as kmsg,
                JsonlWriter(self.outdir / RESULTS_FILE) as writer,
            ):
                setup_start = time.monotonic()
                # bpftrace compiles and attaches while the test bed is built: under TCG each
                # takes ~10 s; the widener only delays bios (setup's few too).
                self._launch_witness()
                if self.widener_factory is not None:
                    widener = self.widener_factory()
                    widener.launch()
                device = self.bed.up()
                self.kernel = kernel_info(self.kernel.variant)  # nvme_core is loaded now
                setup_s = time.monotonic() - setup_start
                if widener is not None:
                    widener.wait_attached()
                self._wait_witness()
                self._write_run_file(device, setup_s, time.monotonic() - setup_start)
                self._baseline(device)  # under the widener too, when there is one
                self.monitor = ProgressMonitor(
                    self.io.progress, self.config.campaign.hang_timeout_s
                )
                self.monitor.start()
                kmsg.skip()  # setup noise is not part of iteration 1
                if self.witness is not None:
                    self.witness.take(time.monotonic())  # nor for the witness
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
            self.io.stop()
            stuck = self.io.stuck_readers
            # named now, while the readers are still blocked: the teardown may free them
            errors = [stuck_readers_error(stuck, self.bed.kfs)] if stuck else []
            if self.monitor is not None:
                self.monitor.stop()
            widener_stats = None
            if widener is not None:
                with contextlib.suppress(HarnessError):
                    widener_stats = widener.stop()
            if self.witness is not None:
                self.witness.stop()
            errors += self.faults.restore_everything()
            errors += self.bed.down()
            self._write_summary(interrupted, errors, widener_stats)
        if interrupted:
            raise KeyboardInterrupt
        return [
            summary.to_dict() for summary in summarize(read_records(self.outdir / RESULTS_FILE))
        ]

    def _iteration(
        self, index: int, action: FaultAction, jitter: float, kmsg: KmsgWindows
    ) -> IterationRecord:
        self.iteration_index = index
        state = Iteration(self, index, action, jitter).run(kmsg)
        run = RunInfo(
            run_id=self.run_id,
            kernel_release=self.kernel.release,
            variant=self.kernel.variant,
            srcversion=self.kernel.srcversion,
            iopolicy=self.config.host.iopolicy,
            widener=self.config.widener.enabled,
            started=self.started,
        )
        return build_record(state, run, self.monitor, self.faults.take_notes(), self.io.starts)

    def prepare(self, action: FaultAction) -> None:
        """Before the warmup: the fault's ``prepare``; for a sequence, that of every fault
        it injects (on the planned path: the identity flip's uuid change is per run)."""
        if self.sequence is None:
            self.faults.prepare(action)
            return
        for fault in dict.fromkeys(str(s.fault) for s in self.config.steps if s.action == "inject"):
            self.faults.prepare(FaultAction(fault, action.path))

    # --- the block-layer witness -----------------------------------------------------------

    def _launch_witness(self) -> None:
        """Start the witness's bpftrace unless ``[witness] mode = "off"``; where it cannot
        run, say why (or, with mode "required", raise ToolError)."""
        mode = self.config.witness.mode
        if mode == "off":
            self._say_witness(False, "off in the config ([witness] mode)")
            return
        self.witness, reason = witness_mod.start_or_say_why(self.outdir / WITNESS_OUTPUT)
        if self.witness is None:
            self._witness_unavailable(reason)

    def _wait_witness(self) -> None:
        if self.witness is None:
            return
        try:
            self.witness.wait_attached()
        except ToolError as exc:
            self.witness = None
            self._witness_unavailable(str(exc))
            return
        self._say_witness(True, "")

    def _witness_unavailable(self, reason: str) -> None:
        if self.config.witness.mode == "required":
            raise ToolError(
                f"the block-layer witness cannot run: {reason}",
                hint='[witness] mode = "auto" counts the kernel line only',
            )
        self._say_witness(False, reason)

    def _say_witness(self, running: bool, reason: str) -> None:
        self.witness_state = WitnessState(running, reason)
        if self.on_witness is None:
            return
        if running:
            self.on_witness("block-layer witness (BPF) running beside the kernel line")
        else:
            self.on_witness(
                f"block-layer witness (BPF) not running: {reason}; counting the kernel line only"
            )

    def witness_lost(self, reason: str) -> None:
        """The witness's bpftrace ended mid-campaign: the rest counts the kernel line only
        (said once, kept in summary.json)."""
        self.witness = None
        self.witness_state = WitnessState(False, reason, self.iteration_index + 1)
        if self.on_witness is not None:
            self.on_witness(
                f"block-layer witness (BPF) stopped at iteration {self.iteration_index + 1}: "
                f"{reason}; counting the kernel line only"
            )

    # --- baseline and stop ---------------------------------------------------------------------

    def _baseline(self, device: MultipathDevice) -> None:
        """Bare fio with no faults, same job, same head (with the passthrough readers when the
        config has them: they are part of the workload): the reference for harness overhead."""
        seconds = self.config.campaign.baseline_s
        if seconds <= 0:
            return
        workdir = self.outdir / "baseline"
        workdir.mkdir(exist_ok=True)
        readers = self.io.start_passthru(device)
        try:
            result = bare_fio(self.io.fio_job(device), workdir, seconds)
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

    # --- files -----------------------------------------------------------------------------------

    def _write_run_file(self, device: MultipathDevice, setup_s: float, ready_s: float) -> None:
        """run.json: what this run is. ``setup_s`` is the test bed (phases in
        ``setup_phases_s``), ``ready_s`` also includes waiting for the BPF programs to
        attach."""
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
            "witness": self.witness_state.to_dict(),
            "setup_s": round(setup_s, 3),
            "setup_phases_s": {name: round(sec, 3) for name, sec in self.bed.setup_phases.items()},
            "ready_s": round(ready_s, 3),
            "config": config_mod.to_dict(self.config),
            "started_unix": time.time(),
            "pid": os.getpid(),
        }
        write_json_atomic(self.outdir / RUN_FILE, data)
        if self.bed.spec is not None:
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
            "witness": self.witness_state.to_dict(),
            "baseline": self.baseline,
            # peak resident set of this process (the harness; fio is a child), KiB on Linux
            "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }
        write_json_atomic(self.outdir / SUMMARY_FILE, data)
        (self.outdir / "table.txt").write_text(render_table(summaries) + "\n")
        write_junit(self.outdir / "junit.xml", records, suite=f"campaign-{self.kernel.variant}")


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return json.loads(json.dumps(value, default=str))

"""An iteration's record (harness.core.results IterationRecord, one JSON line) from what its
phases observed (harness.campaign.iteration IterationState), with its verdict."""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness.campaign.iteration import IterationState
from harness.campaign.monitor import ProgressMonitor
from harness.campaign.verdict import verdict
from harness.core.results import IterationRecord

KERNEL_LINE = "kernel_line"  # the EOD-race line in the kernel log (harness.campaign.kmsg)
BLOCK_LAYER = "block_layer"  # the BPF witness's failed bios (harness.campaign.witness)


@dataclass(frozen=True)
class RunInfo:
    """What every record of a run repeats: ids, kernel, iopolicy, the widener."""

    run_id: str
    kernel_release: str
    variant: str
    srcversion: str
    iopolicy: str
    widener: bool
    started: float  # time.monotonic() when the campaign started


def race_seen_by(state: IterationState) -> list[str]:
    """Which witnesses saw the race's failed bios in the iteration: ``kernel_line`` (the
    EOD-race line), ``block_layer`` (the BPF witness), both or none."""
    seen = []
    if state.kernel.eod_race_lines:
        seen.append(KERNEL_LINE)
    if state.witness is not None and state.witness.events:
        seen.append(BLOCK_LAYER)
    return seen


def first_eio_at(state: IterationState, started: float) -> float | None:
    """Seconds from the campaign's start to the iteration's first application error: fio's
    line, else the first witness of it (the race's bio, an error line: the same clock)."""
    fio = state.fio
    if fio and fio.first_error_at is not None:
        return fio.first_error_at - started
    if not (fio and fio.eio):
        return None
    candidates = [state.kernel.first_eod_race_ts_s, state.kernel.first_error_ts_s]
    if state.witness is not None:
        candidates.insert(0, state.witness.first_ts_s)
    known = [ts for ts in candidates if ts is not None]
    return min(known) - started if known else None


def build_record(
    state: IterationState,
    run: RunInfo,
    monitor: ProgressMonitor | None,
    fault_notes: list[str],
    fio_run: int,
) -> IterationRecord:
    """The record of one iteration, its verdict set (harness.campaign.verdict)."""
    fio = state.fio
    kernel = state.kernel
    witness = state.witness
    hang = bool(monitor and monitor.hang) or bool(fio and fio.killed)
    app_eio = fio.eio if fio else 0
    eio_at = first_eio_at(state, run.started)
    passthru, stale = state.passthru, state.stale
    examples = kernel.examples + (witness.examples if witness else [])
    record = IterationRecord(
        run_id=run.run_id,
        iteration=state.index + 1,
        fault=str(state.action.kind),
        path=state.action.path,
        kernel_release=run.kernel_release,
        variant=run.variant,
        srcversion=run.srcversion,
        iopolicy=run.iopolicy,
        widener=run.widener,
        started_at=round(state.start - run.started, 3),
        inject_at_s=round(state.inject_at, 3),
        restore_at_s=round(state.restore_at, 3),
        inject_s=round(state.inject_s, 3),
        restore_s=round(state.restore_s, 3),
        cycle_s=round(time.monotonic() - state.start, 3),
        recovered=state.recovered,
        time_to_recover_s=None if state.recover_s is None else round(state.recover_s, 3),
        another_path_live=state.another_path_live,
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
        first_eio_at_s=None if eio_at is None else round(eio_at, 3),
        verdict="",
        error=state.error,
        pre_fault_iops=round(state.pre_fault_iops, 1),
        p99_clat_us=fio.p99_clat_us if fio else None,
        io_start_s=round(state.io_start_s, 3),
        io_stop_s=round(state.io_stop_s, 3),
        kernel_examples=examples + (fio.error_lines[:4] if fio else []),
        stuck_tasks=state.stuck,
        current_path=state.current_path,
        path_ios_before_fault=state.path_ios,
        fault_notes=fault_notes,
        passthru_commands=passthru.commands,
        passthru_errors=passthru.errors,
        passthru_max_s=round(passthru.max_command_s, 3),
        stale_writes=stale.stale,
        stale_write_mismatches=stale.mismatches,
        stale_write_ios=stale.ios,
        stale_write_errors=stale.errors,
        stale_write_max_io_s=round(stale.max_io_s, 3),
        stale_write_examples=list(stale.examples),
        kmsg_lost=kernel.lost,
        kmsg_cpu_s=round(state.kernel_log_cpu_s, 4),
        fio_run=fio_run,
        kernel_classes=dict(sorted(kernel.classes.items())),
        phases_s=dict(state.phases.seconds),
        steps=list(state.steps),
        kernel_write_hung=state.kernel_write_hung,
        witness_events=witness.events if witness else None,
        witness_disks=list(witness.disks) if witness else [],
        witness_other_events=witness.other_events if witness else 0,
        witness_lost=witness.lost if witness else 0,
        witness_caught_up=witness.caught_up if witness else True,
        race_seen_by=race_seen_by(state),
    )
    record.verdict = verdict(record)
    return record

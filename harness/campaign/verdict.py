"""One verdict per iteration, from its record, the most serious first (harness.core.results
Verdict names them)."""

from __future__ import annotations

from harness.campaign import all_paths_down
from harness.core.results import IterationRecord, Verdict


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
        record.app_eio + record.stale_write_errors,
        record.eod_race_lines + (record.witness_events or 0),
        record.another_path_live,
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

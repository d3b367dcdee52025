"""Scheduling priority in the guest: the harness's own steps ahead of the IO it drives.

Under TCG the guest's two vCPUs are saturated by the workload (fio, the passthrough readers)
and by nvmet and nvme-tcp serving it. A harness step (a sysfs read, a rescan written through
the kernel-write child, fio's status request, the polls that wait for the kernel) then waits
for a CPU behind the workload, and an iteration's cycle grows with the load, not with what
the kernel does. So the campaign's process runs at HARNESS_NICE and hands the workload
WORKLOAD_NICE: fio's job processes through fio's own ``--nice`` (fio's main process, whose
helper thread prints the status that ends each window, stays with the harness; it still
waits for each job to update its usage figures, fio stat.c:__show_running_run_stats),
the passthrough and stale-write threads by setting their own nice value (a per-thread
attribute on Linux: man 2 setpriority, "BUGS"; a thread inherits its creator's). The
kernel's own work (kworkers, nvmet's and nvme-tcp's work items) keeps its priority.

Measured 2026-12-07 (TCG, 2 cores, race-ns-remove-path, 20 iterations each, unfixed
6.1.192) with a first form that put fio's main process at 0 too (``nice(1)``): cycle median
3.2 s before, 2.3 s with the harness at -5 (inject 0.38 -> 0.15 s, restore 0.53 -> 0.21 s,
window_open 0.21 -> 0.04 s), race iterations 15/20 in both. With fio's main process at -5
as well, the witness's cut at the window's end and the configs' shorter waits: 3.1 -> 1.4 s
(docs/measurements/2026-12-07-cycle-at-the-kernels-pace.md).

The kernel log child and bpftrace (both -10) set their own (harness.campaign.kmsg,
harness.campaign.witness). Without CAP_SYS_NICE a raise fails and everything stays at the
default: correct, only slower.
"""

from __future__ import annotations

import contextlib
import os

# The harness's main thread (and what it starts, but the workload): above the workload.
HARNESS_NICE = -5
# fio and the passthrough readers: the default priority.
WORKLOAD_NICE = 0


def current_nice() -> int:
    """The calling thread's nice value (-20..19)."""
    return os.getpriority(os.PRIO_PROCESS, 0)


def run_above_workload() -> bool:
    """Set the calling thread's nice value to HARNESS_NICE (threads and processes it starts
    afterwards inherit it). Returns whether it is set (False without the privilege)."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, HARNESS_NICE)
    return current_nice() == HARNESS_NICE


def fio_nice_option() -> list[str]:
    """fio's ``--nice=DELTA`` that puts its job processes at WORKLOAD_NICE: fio applies it
    as an increment with nice(2) in each job (fio backend.c:thread_main), so the main
    process keeps the caller's value. ``[]`` when the caller runs at WORKLOAD_NICE."""
    delta = WORKLOAD_NICE - current_nice()
    return [] if delta == 0 else [f"--nice={delta}"]


def become_workload_thread() -> None:
    """Set the calling thread's nice value to WORKLOAD_NICE (a workload thread the harness
    started). Lowering one's priority needs no privilege."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, WORKLOAD_NICE)

"""Tasks the kernel holds in uninterruptible sleep (state D), with their kernel stacks: what a
``delete_controller`` that never returns is waiting for, said where the failure is reported
(the hung-task detector prints only after 120 s, and only to the kernel log).

Read from ``/proc/PID/task/TID/stat`` (field 3, the state; man 5 proc) and ``.../stack``
(fs/proc/base.c:proc_pid_stack, root only, one ``[<0>] function+0xoff/0xlen [module]``
line per frame, innermost first).
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.core.kernelfs import KernelFs

FRAMES = 8  # frames of each stack in a summary: enough to name the wait and its caller
TASKS = 6  # tasks in a summary


@dataclass(frozen=True)
class BlockedTask:
    """One task in state D: ``stack`` holds function names, innermost first (empty when the
    kernel does not show stacks)."""

    pid: int
    comm: str
    stack: tuple[str, ...]

    def summary(self, frames: int = FRAMES) -> str:
        """``comm[pid]: f1 < f2 < ...`` (innermost first)."""
        where = " < ".join(self.stack[:frames]) if self.stack else "(no stack)"
        return f"{self.comm}[{self.pid}]: {where}"


def parse_stat(text: str) -> tuple[str, str] | None:
    """(comm, state) of one /proc/PID/stat line; comm may hold spaces and parentheses, so it
    ends at the last ')'. None when the line is not one."""
    start, end = text.find("("), text.rfind(")")
    if start < 0 or end < start:
        return None
    rest = text[end + 1 :].split()
    return (text[start + 1 : end], rest[0]) if rest else None


def parse_stack(text: str) -> tuple[str, ...]:
    """Function names of a /proc/PID/stack text: ``[<0>] nvme_ns_remove+0x1c/0x1a0
    [nvme_core]`` gives ``nvme_ns_remove``."""
    names = []
    for line in text.splitlines():
        frame = line.split("] ", 1)[-1].strip()
        name = frame.split("+", 1)[0].split()[0] if frame else ""
        if name:
            names.append(name)
    return tuple(names)


def blocked_tasks(kfs: KernelFs) -> list[BlockedTask]:
    """Every task (thread) in state D now, in pid order; ``pid`` is the thread's id. A
    thread matters: a passthrough reader blocked in ``blk_execute_rq()`` is a thread of the
    harness. A task that ends while being read is left out."""
    tasks = []
    for entry in kfs.listdir("proc"):
        if not entry.isdigit():
            continue
        threads = [f"proc/{entry}/task/{tid}" for tid in kfs.listdir(f"proc/{entry}/task")]
        for task in threads or [f"proc/{entry}"]:
            stat = parse_stat(kfs.read(f"{task}/stat", default=""))
            if stat is None or stat[1] != "D":
                continue
            stack = parse_stack(kfs.read(f"{task}/stack", default=""))
            tasks.append(BlockedTask(int(task.rsplit("/", 1)[1]), stat[0], stack))
    return sorted(tasks, key=lambda task: task.pid)


def describe_blocked(kfs: KernelFs, limit: int = TASKS) -> str:
    """One line for an error message: the blocked tasks and where they wait, or that none
    is blocked."""
    tasks = blocked_tasks(kfs)
    if not tasks:
        return "no task is blocked in the kernel (state D)"
    shown = "; ".join(task.summary() for task in tasks[:limit])
    more = f" (and {len(tasks) - limit} more)" if len(tasks) > limit else ""
    return f"tasks blocked in the kernel (state D): {shown}{more}"

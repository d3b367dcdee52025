"""Blocked tasks (state D) and their kernel stacks, from a fake /proc."""

from __future__ import annotations

from pathlib import Path

from harness.bed import blocked
from harness.core.kernelfs import KernelFs


def _task(root: Path, pid: int, stat: str, stack: str | None = None) -> None:
    task = root / "proc" / str(pid)
    task.mkdir(parents=True)
    (task / "stat").write_text(stat)
    if stack is not None:
        (task / "stack").write_text(stack)


def test_stat_comm_may_hold_spaces_and_parentheses() -> None:
    assert blocked.parse_stat("77 (kworker/u4:2-nvme-delete-wq) D 2 0 0") == (
        "kworker/u4:2-nvme-delete-wq",
        "D",
    )
    assert blocked.parse_stat("78 (a (b) c) S 1") == ("a (b) c", "S")
    assert blocked.parse_stat("garbage") is None
    assert blocked.parse_stat("79 (x)") is None


def test_stack_keeps_function_names_innermost_first() -> None:
    text = (
        "[<0>] blk_mq_freeze_queue_wait+0x5b/0x90\n"
        "[<0>] nvme_wait_freeze+0x33/0x50 [nvme_core]\n"
        "\n"
        "[<0>] nvme_tcp_teardown_io_queues.part.0+0x84/0x100 [nvme_tcp]\n"
    )
    assert blocked.parse_stack(text) == (
        "blk_mq_freeze_queue_wait",
        "nvme_wait_freeze",
        "nvme_tcp_teardown_io_queues.part.0",
    )


def test_only_tasks_in_state_d_in_pid_order(tmp_path: Path) -> None:
    _task(tmp_path, 90, "90 (fio) D 1", "[<0>] io_schedule+0x12/0x40\n")
    _task(tmp_path, 12, "12 (kworker/0:1) D 2", "[<0>] nvme_ns_remove+0x1/0x2 [nvme_core]\n")
    _task(tmp_path, 13, "13 (sshd) S 1", "[<0>] do_select+0x1/0x2\n")
    _task(tmp_path, 14, "14 (gone) D 1")  # no stack file: shown without one
    (tmp_path / "proc" / "self").mkdir()
    tasks = blocked.blocked_tasks(KernelFs(root=tmp_path))
    assert [(task.pid, task.comm) for task in tasks] == [
        (12, "kworker/0:1"),
        (14, "gone"),
        (90, "fio"),
    ]
    assert tasks[1].summary() == "gone[14]: (no stack)"


def test_threads_are_tasks_of_their_own(tmp_path: Path) -> None:
    """A reader thread of the harness blocked in the kernel, its main thread not."""
    _task(tmp_path, 50, "50 (python3) S 1")
    for tid, state, stack in [
        (50, "S", "[<0>] do_select+0x1/0x2\n"),
        (51, "D", "[<0>] blk_execute_rq+0x1/0x2\n"),
    ]:
        task = tmp_path / "proc" / "50" / "task" / str(tid)
        task.mkdir(parents=True)
        (task / "stat").write_text(f"{tid} (python3) {state} 1")
        (task / "stack").write_text(stack)
    tasks = blocked.blocked_tasks(KernelFs(root=tmp_path))
    assert [task.summary() for task in tasks] == ["python3[51]: blk_execute_rq"]


def test_description_is_one_line_and_bounded(tmp_path: Path) -> None:
    kfs = KernelFs(root=tmp_path)
    (tmp_path / "proc").mkdir()
    assert blocked.describe_blocked(kfs) == "no task is blocked in the kernel (state D)"
    for pid in range(1, 9):
        _task(tmp_path, pid, f"{pid} (t{pid}) D 1", "[<0>] a+0x1/0x2\n[<0>] b+0x1/0x2\n")
    text = blocked.describe_blocked(kfs, limit=2)
    assert text == (
        "tasks blocked in the kernel (state D): t1[1]: a < b; t2[2]: a < b (and 6 more)"
    )
    assert "\n" not in text

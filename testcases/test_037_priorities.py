"""The harness's steps ahead of its workload (harness/core/priority.py), in the guest: with
the harness's thread raised as the guest's ``run`` raises it, the IO session's fio main
process (it answers the status requests that close each window) stays with the harness,
while fio's job processes and the passthrough reader threads run at the default nice."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bed.testbed import Testbed, new_run_id
from harness.campaign.io_session import CampaignIo
from harness.config import campaign as config_mod
from harness.core import priority

PACE = Path(__file__).resolve().parents[1] / "configs" / "pace.toml"
JOB_START_S = 20.0  # a fio job applies --nice when it starts running


def nice_of(path: Path) -> int:
    """Field 19 of a /proc stat file (proc(5)); the command name may hold spaces."""
    return int(path.read_text().rsplit(")", 1)[1].split()[16])


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    return [int(c) for t in tasks.iterdir() for c in (t / "children").read_text().split()]


@pytest.fixture
def raised() -> Iterator[None]:
    """This thread at HARNESS_NICE for the test, as before afterwards."""
    before = priority.current_nice()
    assert priority.run_above_workload(), "the guest runs the testcases as root"
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def test_fio_jobs_and_readers_run_below_the_harness(raised: None, results_dir: Path) -> None:
    config = config_mod.load(PACE)
    assert config.workload.passthru_readers == 2 and config.workload.numjobs >= 1
    threads_before = {int(t) for t in os.listdir("/proc/self/task")}
    bed = Testbed(config, new_run_id())
    with bed.running():
        io = CampaignIo(bed, config, results_dir, bed.run_id)
        session = io.ensure(bed.checked_device())
        try:
            fio_pid = session.fio.proc.pid
            deadline = time.monotonic() + JOB_START_S
            jobs: list[int] = []
            while time.monotonic() < deadline:
                jobs = children(fio_pid)
                job_nices = [nice_of(Path(f"/proc/{pid}/stat")) for pid in jobs]
                if len(jobs) == config.workload.numjobs and set(job_nices) == {0}:
                    break
                time.sleep(0.1)
            fio_nice = nice_of(Path(f"/proc/{fio_pid}/stat"))
            new_threads = {int(t) for t in os.listdir("/proc/self/task")} - threads_before
            thread_nices = sorted(
                nice_of(Path(f"/proc/self/task/{tid}/stat")) for tid in new_threads
            )
            assert session.fio.running()
        finally:
            io.stop()
    print(f"fio {fio_nice}, its jobs {job_nices}, the session's threads {thread_nices}")
    assert fio_nice == priority.HARNESS_NICE
    assert len(jobs) == config.workload.numjobs
    assert job_nices == [priority.WORKLOAD_NICE] * config.workload.numjobs
    # The readers at the workload's nice; the session's other threads (fio's output
    # readers, the kernel-write child's) inherit the harness's.
    readers = config.workload.passthru_readers
    assert thread_nices.count(priority.WORKLOAD_NICE) == readers, thread_nices
    assert set(thread_nices) == {priority.HARNESS_NICE, priority.WORKLOAD_NICE}

"""harness.core.priority: the harness's steps ahead of the workload it starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from harness.core import priority

# What the child interpreters print: nice values from field 19 of /proc/PID/stat (proc(5)).
NICE_OF = "int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[16])"


def test_fios_option_undoes_the_harness_nice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(priority, "current_nice", lambda: priority.HARNESS_NICE)
    assert priority.fio_nice_option() == [
        f"--nice={priority.WORKLOAD_NICE - priority.HARNESS_NICE}"
    ]
    monkeypatch.setattr(priority, "current_nice", lambda: priority.WORKLOAD_NICE)
    assert priority.fio_nice_option() == []


# The child scripts put the workload at this nice value instead of 0: raising one's own nice
# value needs no privilege, so --nice and the threads' change are exercised without root too.
CHILD_WORKLOAD_NICE = 3


def run_child(script: str) -> list[int]:
    """Run ``script`` in a fresh interpreter whose workload nice is CHILD_WORKLOAD_NICE; the
    integers it printed."""
    script = (
        f"from harness.core import priority\npriority.WORKLOAD_NICE = {CHILD_WORKLOAD_NICE}\n"
        + script
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return [int(word) for word in done.stdout.split()]


def test_for_real_the_workload_threads_run_at_the_default_nice() -> None:
    """In a child interpreter: raise (root: works; else: refused, nothing changes); a
    workload thread ends at the workload's nice and leaves the harness's thread where it was
    (nice is per thread on Linux)."""
    script = """
import os, threading
from harness.core import priority
assert priority.run_above_workload() == (os.geteuid() == 0)
seen = []
def worker():
    priority.become_workload_thread()
    seen.append(priority.current_nice())
thread = threading.Thread(target=worker)
thread.start()
thread.join()
print(priority.current_nice(), seen[0])
"""
    harness_nice, thread_nice = run_child(script)
    assert harness_nice == (priority.HARNESS_NICE if os.geteuid() == 0 else 0)
    assert thread_nice == CHILD_WORKLOAD_NICE


@pytest.mark.skipif(shutil.which("fio") is None, reason="needs fio (scripts/setup installs it)")
def test_for_real_fios_jobs_run_at_the_default_nice_and_its_main_process_above() -> None:
    """fio started by a raised harness: its main process (status output) keeps the raise,
    its job processes (forked by fio) apply --nice and run at the workload's nice."""
    script = f"""
import os, subprocess, time
from harness.core import priority
priority.run_above_workload()
argv = ["fio", "--name=nice-check", "--ioengine=null", "--rw=read", "--size=1M",
        "--time_based=1", "--runtime=5", "--numjobs=2", *priority.fio_nice_option()]
proc = subprocess.Popen(
    argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
)
def nice_of(pid):
    return {NICE_OF}
def job_nices():
    jobs = [int(c) for t in os.listdir(f"/proc/{{proc.pid}}/task")
            for c in open(f"/proc/{{proc.pid}}/task/{{t}}/children").read().split()]
    return [nice_of(pid) for pid in jobs]
# A job applies --nice when it starts running, a moment after fio forked it.
deadline = time.monotonic() + 20
while job_nices() != [priority.WORKLOAD_NICE] * 2 and time.monotonic() < deadline:
    time.sleep(0.05)
main_nice = nice_of(proc.pid)
job_nices = job_nices()
os.killpg(proc.pid, 9)
proc.wait()
print(main_nice, *job_nices)
"""
    main_nice, *job_nices = run_child(script)
    assert main_nice == (priority.HARNESS_NICE if os.geteuid() == 0 else 0)
    assert job_nices == [CHILD_WORKLOAD_NICE] * 2

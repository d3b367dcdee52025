"""With round-robin iopolicy, IO to the head is spread over both per-path disks."""

from __future__ import annotations

import time
from pathlib import Path

from harness.bed.host import MultipathDevice
from harness.bed.testbed import Testbed
from harness.campaign.workload import FioJob, FioRun


def test_io_flows_on_both_paths(
    nvmet_target: Testbed, mpath_device: MultipathDevice, fio_job: FioJob, results_dir: Path
) -> None:
    host = nvmet_target.host
    assert host is not None
    disks = [disk for ctrl in mpath_device.controllers for disk in ctrl.path_disks]
    before = {disk: host.io_completed(disk)[0] for disk in disks}
    run = FioRun(fio_job, results_dir)
    # fio takes a while to start under TCG on a loaded machine: wait until both paths
    # have moved (or 60 s), then let it run a little longer.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.running():
        moved = [d for d in disks if host.io_completed(d)[0] > before[d] + 100]
        if len(moved) == len(disks):
            break
        time.sleep(0.2)
    time.sleep(1)
    result = run.stop()
    after = {disk: host.io_completed(disk)[0] for disk in disks}
    assert result.total_errors == 0, result.error_lines
    assert result.read_ios + result.write_ios > 0
    for disk in disks:
        assert after[disk] > before[disk], f"no IO went through {disk}: {before} -> {after}"

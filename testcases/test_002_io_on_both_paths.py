"""With round-robin iopolicy, IO to the head is spread over both per-path disks."""

from __future__ import annotations

import time
from pathlib import Path

from harness.host import MultipathDevice
from harness.testbed import Testbed
from harness.workload import FioJob, FioRun


def test_io_flows_on_both_paths(
    nvmet_target: Testbed, mpath_device: MultipathDevice, fio_job: FioJob, results_dir: Path
) -> None:
    host = nvmet_target.host
    assert host is not None
    disks = [disk for ctrl in mpath_device.controllers for disk in ctrl.path_disks]
    before = {disk: host.io_completed(disk)[0] for disk in disks}
    run = FioRun(fio_job, results_dir)
    time.sleep(3)
    result = run.stop()
    after = {disk: host.io_completed(disk)[0] for disk in disks}
    assert result.total_errors == 0, result.error_lines
    assert result.read_ios + result.write_ios > 0
    for disk in disks:
        assert after[disk] > before[disk], f"no IO went through {disk}: {before} -> {after}"

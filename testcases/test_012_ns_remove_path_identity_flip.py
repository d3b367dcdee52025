"""ns_remove_path's identity flip on stock nvmet: only one path's per-path disk goes.

With fio running on the head, the flip (Namespace Attribute Notices masked on every
controller, the namespace's uuid changed on the target, one controller rescanned) must
remove exactly that path's per-path disk while its controller stays live; the other path's
disk and the head stay and keep carrying IO. Restoring the uuid and rescanning brings the
per-path disk back under the same head.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness.bed.testbed import Testbed
from harness.campaign.workload import FioJob, FioRun
from harness.faults import make_path_removal

WAIT_S = 20.0


def _completed(bed: Testbed, disk: str) -> int:
    assert bed.host is not None
    return bed.host.io_completed(disk)[0]


def test_identity_flip_removes_only_one_path(
    nvmet_target: Testbed, fio_job: FioJob, results_dir: Path
) -> None:
    bed = nvmet_target
    assert bed.host is not None
    device = bed.checked_device()
    head = device.head
    ctrls = sorted(device.controllers, key=lambda c: c.trsvcid)
    removed, kept = ctrls[0], ctrls[1]
    removed_disk, kept_disk = removed.path_disks[0], kept.path_disks[0]
    mechanism = make_path_removal(bed)
    fio = FioRun(fio_job, results_dir)
    try:
        deadline = time.monotonic() + WAIT_S * 3
        while _completed(bed, kept_disk) + _completed(bed, removed_disk) < 200:
            assert fio.running() and time.monotonic() < deadline, "fio never got going"
            time.sleep(0.1)

        mechanism.remove(removed.name, bed.portid(0))
        after = bed.device()
        assert after is not None and head in after.heads, "the head went away"
        gone = after.controller_for(bed.endpoints[0])
        stays = after.controller_for(bed.endpoints[1])
        assert gone is not None and gone.state == "live", f"{removed.name}: {gone}"
        assert gone.path_disks == (), f"{removed_disk} is still there"
        assert stays is not None and stays.state == "live"
        assert stays.path_disks == (kept_disk,), f"the other path changed: {stays}"
        carried = _completed(bed, kept_disk)
        deadline = time.monotonic() + WAIT_S
        while _completed(bed, kept_disk) < carried + 50:
            assert time.monotonic() < deadline, "no IO on the remaining path"
            time.sleep(0.1)

        mechanism.restore(removed.name, bed.portid(0))
        back = bed.device()
        assert back is not None and back.heads == (head,)
        again = back.controller_for(bed.endpoints[0])
        assert again is not None and again.state == "live" and len(again.path_disks) == 1
        assert mechanism.notes == [], mechanism.notes
    finally:
        mechanism.restore_all()
        result = fio.stop()
    assert result.read_ios + result.write_ios > 0

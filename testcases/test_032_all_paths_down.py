"""All paths down under fio, then back: the host queues the IO or fails it, as its timeout
knobs say (harness/all_paths_down.py has the kernel's rules, with file:function).

Every port of a two-port loopback target is unlinked from the subsystem under fio, held
DOWN_S seconds, and linked again; the harness reconnects what the host deleted. Two
combinations, directly (no step language):

- ctrl_loss_tmo -1, fast_io_fail_tmo -1: the controllers reconnect forever and stay
  CONNECTING; multipath.c:nvme_ns_head_submit_bio requeues the IO ("no usable path -
  requeuing I/O") until a path is live again. No application error, fio verify clean.
- ctrl_loss_tmo -1, fast_io_fail_tmo 2: after 2 s in CONNECTING core.c:nvme_failfast_work
  marks every controller FAILFAST_EXPIRED ("failfast expired"), so
  multipath.c:nvme_available_path is false and the IO fails ("no available path - failing
  I/O"): EIO, not before the timer, and no more once the paths are live again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.bed.testbed import Testbed, new_run_id
from harness.campaign import all_paths_down as apd
from harness.campaign.floor import wait_until
from harness.campaign.kmsg import KernelLogSummary, KmsgReader, format_record
from harness.campaign.workload import FioJob, FioRun
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.faults import FaultAction, FaultInjector, all_paths_ready

DOWN_S = 5.0
IO_WAIT_S = 90.0
MOVED_IOS = 50


def _all_moved(bed: Testbed) -> Callable[[], bool]:
    before = bed.path_ios(bed.device())
    return lambda: all(
        a >= b + MOVED_IOS for a, b in zip(bed.path_ios(bed.device()), before, strict=True)
    )


def _states(bed: Testbed) -> list[str]:
    device = bed.device()
    out = []
    for endpoint in bed.endpoints:
        ctrl = device.controller_for(endpoint) if device else None
        out.append(ctrl.state if ctrl else "gone")
    return out


@pytest.mark.parametrize(
    ("ctrl_loss_tmo", "fast_io_fail_tmo", "outcome"),
    [pytest.param(-1, -1, apd.QUEUE, marks=pytest.mark.extended), (-1, 2, apd.FAIL_FAST)],
    ids=["queue", "failfast"],
)
def test_all_paths_down_queues_or_fails_as_the_knobs_say(
    smoke_config: CampaignConfig,
    ctrl_loss_tmo: int,
    fast_io_fail_tmo: int,
    outcome: str,
    results_dir: Path,
) -> None:
    config = config_mod.override(
        smoke_config,
        "host",
        ctrl_loss_tmo=ctrl_loss_tmo,
        fast_io_fail_tmo=fast_io_fail_tmo,
        reconnect_delay=1,
    )
    expectation = apd.expect(ctrl_loss_tmo, 1, fast_io_fail_tmo, DOWN_S)
    assert expectation.outcome == outcome
    bed = Testbed(config, new_run_id())
    device = bed.up()
    injector = FaultInjector(bed)
    states_seen: set[str] = set()
    try:
        sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size"))
        # a failed write leaves its blocks unverifiable: verify only where nothing fails
        job = FioJob(
            filename=device.head_dev,
            size_bytes=sectors * 512,
            numjobs=2,
            iodepth=16,
            verify=not expectation.eio_expected,
        )
        with KmsgReader(background=True) as kmsg:
            run = FioRun(job, results_dir)
            try:
                wait_until(_all_moved(bed), IO_WAIT_S, "IO on every path")
                kmsg.read_available()  # the window's log only
                down_at = time.monotonic()
                for path in range(len(bed.endpoints)):
                    injector.inject(FaultAction("port_remove", path))
                wait_until(lambda: "live" not in _states(bed), 15, "every controller out of live")
                while time.monotonic() < down_at + DOWN_S:
                    states_seen.update(_states(bed))
                    time.sleep(0.2)
                for path in range(len(bed.endpoints)):
                    injector.restore(FaultAction("port_remove", path))
                assert injector.recover(60.0, lambda: False) is not None, "no recovery"
                up_at = time.monotonic()
                found = bed.device()
                assert found is not None and all_paths_ready(bed, found)
                wait_until(_all_moved(bed), IO_WAIT_S, "IO on every path again")
                assert run.running(), "fio exited"
            finally:
                result = run.stop()
            records = kmsg.read_available()
        (results_dir / "kmsg.txt").write_text("\n".join(format_record(r) for r in records) + "\n")
        log = KernelLogSummary()
        for record in records:
            log.add(record)
        as_record = {"app_eio": result.eio, "kernel_classes": log.classes}
        assert apd.mismatches(expectation, as_record) == [], (log.classes, result.error_lines[:4])
        # reconnect forever: the controllers never leave connecting/resetting for deleting
        assert states_seen <= {"connecting", "resetting", "live"}, states_seen
        assert log.kernel_bug_lines == 0, log.examples
        if outcome == apd.QUEUE:
            assert apd.observed(log.classes) == apd.SEEN_QUEUED, log.classes
            assert result.total_errors == 0, result.error_lines[:4]
            assert result.verify_failures == 0
        else:
            assert apd.observed(log.classes) in (apd.SEEN_FAILED, apd.SEEN_QUEUED_THEN_FAILED)
            assert result.eio > 0, result.error_lines[:4]
            # the kernel's clock is time.monotonic()'s (kmsg.py:KmsgRecord.ts_us)
            failfast = [r.ts_s for r in records if r.text.endswith("failfast expired")]
            failing = [r.ts_s for r in records if "no available path - failing I/O" in r.text]
            assert failfast and failing, log.classes
            assert min(failfast) >= down_at + fast_io_fail_tmo - 0.5, (min(failfast), down_at)
            assert min(failing) >= min(failfast) - 0.01, "IO failed before failfast expired"
            assert max(failing) <= up_at, "IO still failed with every path live"
        assert result.read_ios + result.write_ios > 0
    finally:
        injector.restore_everything()
        errors = bed.down()
    assert not errors, f"teardown errors: {errors}"

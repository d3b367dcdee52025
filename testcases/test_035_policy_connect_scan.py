"""The iopolicy switched mid-run, a connect storm and rescans, each under fio on a real
two-path loopback target (faults/iopolicy_switch.py, connect_storm.py, rescan.py), directly
through Testbed and FaultInjector.

- iopolicy_switch both ways: with round-robin the IO spreads over both per-path disks
  (multipath.c:nvme_round_robin_path), with numa one path carries it all (the head's cached
  current path for the node, multipath.c:nvme_find_path); measured on the per-path disks'
  completed-IO counters (/sys/block/nvmeXcYnZ/stat) over a window after each switch.
- connect_storm: 5 delete+connect cycles of one path's controller under fio: no application
  error, fio verify clean, every path live and optimized afterwards.
- rescan x 10 on each path under fio: no error, the per-path disks unchanged.

Each test writes its numbers (per-path IOs per window, storm and rescan times) to
``numbers.json`` in its results directory, and fails on any kernel BUG/WARNING line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.bed.testbed import Testbed, new_run_id
from harness.campaign.floor import wait_until
from harness.campaign.kmsg import KmsgReader, format_record, summarize
from harness.campaign.workload import FioJob, FioResult, FioRun
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.faults import FaultAction, FaultInjector, all_paths_ready

IO_WAIT_S = 90.0  # fio starts slowly under TCG on a loaded host
MOVED_IOS = 50
WINDOW_S = 3.0
SETTLE_S = 1.0  # IO submitted before a switch completes well within this
MIN_WINDOW_IOS = 200
RR_MIN_SHARE = 0.2  # round-robin alternates per bio: each of two paths near one half
NUMA_MIN_SHARE = 0.98  # numa: one path carries it all


def _all_moved(bed: Testbed) -> Callable[[], bool]:
    before = bed.path_ios(bed.device())
    return lambda: all(
        a >= b + MOVED_IOS for a, b in zip(bed.path_ios(bed.device()), before, strict=True)
    )


def _window(bed: Testbed) -> list[int]:
    """IOs each path completed over WINDOW_S seconds."""
    before = bed.path_ios(bed.device())
    time.sleep(WINDOW_S)
    return [a - b for a, b in zip(bed.path_ios(bed.device()), before, strict=True)]


def _shares(window: list[int]) -> list[float]:
    total = sum(window)
    assert total >= MIN_WINDOW_IOS, f"only {total} IOs in {WINDOW_S:g} s: {window}"
    return [count / total for count in window]


@dataclass
class Running:
    """A bed with fio running on its head, and the kernel log read in the background."""

    bed: Testbed
    injector: FaultInjector
    run: FioRun
    kmsg: KmsgReader
    numbers: dict[str, Any]


@pytest.fixture
def running(request: pytest.FixtureRequest, results_dir: Path) -> Iterator[Running]:
    """fio on a two-path bed whose host.iopolicy is the test's ``iopolicy`` param (indirect;
    round-robin otherwise). Afterwards: fio clean, no kernel BUG/WARNING, numbers written."""
    policy = getattr(request, "param", "round-robin")
    smoke: CampaignConfig = config_mod.load(
        Path(__file__).resolve().parent.parent / "configs" / "smoke.toml"
    )
    config = config_mod.override(smoke, "host", iopolicy=policy)
    bed = Testbed(config, new_run_id())
    device = bed.up()
    injector = FaultInjector(bed)
    result: FioResult | None = None
    try:
        sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size"))
        job = FioJob(filename=device.head_dev, size_bytes=sectors * 512, numjobs=2, iodepth=16)
        with KmsgReader(background=True) as kmsg:
            run = FioRun(job, results_dir)
            numbers: dict[str, Any] = {"iopolicy": policy}
            try:
                wait_until(
                    lambda: sum(bed.path_ios(bed.device())) > MOVED_IOS,
                    IO_WAIT_S,
                    "fio IO on the head",
                )
                kmsg.read_available()  # the test's log only
                yield Running(bed, injector, run, kmsg, numbers)
                assert run.running(), "fio exited"
            finally:
                result = run.stop()
            records = kmsg.read_available()
        (results_dir / "kmsg.txt").write_text("\n".join(format_record(r) for r in records) + "\n")
        log = summarize(records)
        numbers.update(
            fio_errors=result.total_errors,
            fio_eio=result.eio,
            verify_failures=result.verify_failures,
            fio_ios=result.read_ios + result.write_ios,
            fault_notes=injector.take_notes(),
            kernel_classes=log.classes,
        )
        (results_dir / "numbers.json").write_text(json.dumps(numbers, indent=1) + "\n")
        assert log.kernel_bug_lines == 0, log.examples
        assert result.total_errors == 0 and result.eio == 0, result.error_lines[:4]
        assert result.verify_failures == 0
        assert result.read_ios + result.write_ios > 0
    finally:
        injector.restore_everything()
        errors = bed.down()
    assert not errors, f"teardown errors: {errors}"


def _spread(window: list[int]) -> None:
    shares = _shares(window)
    assert min(shares) >= RR_MIN_SHARE, f"round-robin did not spread the IO: {window}"


def _one_path(window: list[int]) -> None:
    shares = _shares(window)
    assert max(shares) >= NUMA_MIN_SHARE, f"numa did not keep the IO on one path: {window}"


CHECKS = {"round-robin": _spread, "numa": _one_path}


@pytest.mark.parametrize(
    "running", [pytest.param("round-robin", marks=pytest.mark.extended), "numa"], indirect=True
)
def test_iopolicy_switch_moves_the_io_both_ways(running: Running) -> None:
    bed, injector, numbers = running.bed, running.injector, running.numbers
    configured = bed.config.host.iopolicy
    switched = "numa" if configured == "round-robin" else "round-robin"
    device = bed.device()
    assert device is not None and bed.host is not None
    assert bed.host.iopolicy(device) == configured
    numbers["before"] = before = _window(bed)
    CHECKS[configured](before)
    action = FaultAction("iopolicy_switch", 0)
    started = time.monotonic()
    injector.inject(action)
    numbers["inject_s"] = time.monotonic() - started
    assert bed.host.iopolicy(device) == switched
    time.sleep(SETTLE_S)
    numbers["switched"] = during = _window(bed)
    CHECKS[switched](during)
    injector.restore(action)
    assert bed.host.iopolicy(device) == configured
    time.sleep(SETTLE_S)
    numbers["restored"] = after = _window(bed)
    CHECKS[configured](after)


@pytest.mark.extended
def test_connect_storm_under_fio_leaves_every_path_live(running: Running) -> None:
    bed, injector, numbers = running.bed, running.injector, running.numbers
    first = bed.device()
    assert first is not None
    other_before = first.controller_for(bed.endpoints[0])
    assert other_before is not None
    action = FaultAction("connect_storm", 1, (("count", 5),))
    started = time.monotonic()
    injector.inject(action)
    numbers["storm_s"] = time.monotonic() - started
    # the kernel reuses the lowest free nvmeX and nvmet the lowest cntlid: the new controller
    # has the old one's name; the fault's note says what each cycle took
    (note,) = numbers["storm_notes"] = injector.take_notes()
    assert note.startswith("connect_storm path 1: 5 cycles in "), note
    injector.restore(action)
    recovered = injector.recover(60.0, lambda: False)
    assert recovered is not None, "paths not all live and optimized again"
    numbers["recover_s"] = recovered
    device = bed.device()
    assert device is not None and all_paths_ready(bed, device)
    ctrl_after = device.controller_for(bed.endpoints[1])
    assert ctrl_after is not None and ctrl_after.state == "live"
    other = device.controller_for(bed.endpoints[0])
    assert other is not None and other.name == other_before.name  # never touched
    wait_until(_all_moved(bed), IO_WAIT_S, "IO on every path again")


def test_rescan_ten_times_under_fio_changes_nothing(running: Running) -> None:
    bed, injector, numbers = running.bed, running.injector, running.numbers
    device = bed.device()
    assert device is not None
    disks_before = sorted(d for ctrl in device.controllers for d in ctrl.path_disks)
    timings = {}
    for path, interval_s in ((0, 0.1), (1, 0.0)):
        action = FaultAction("rescan", path, (("count", 10), ("interval_s", interval_s)))
        started = time.monotonic()
        injector.inject(action)
        timings[f"path{path}_interval{interval_s:g}_s"] = time.monotonic() - started
        injector.restore(action)
    numbers["rescan_inject_s"] = timings
    time.sleep(2.0)  # the queued scans run
    device = bed.device()
    assert device is not None and all_paths_ready(bed, device)
    disks_after = sorted(d for ctrl in device.controllers for d in ctrl.path_disks)
    assert disks_after == disks_before
    wait_until(_all_moved(bed), IO_WAIT_S, "IO on every path again")

"""ANA states as the host sees them, under IO on the head (round-robin, two paths).

For each state nvmet takes, port 0 goes to it while port 1 stays optimized (ana_change): the
host's per-path disk of path 0 shows the state in sysfs (/sys/block/nvmeXcYnZ/ana_state) and
IO goes down path 0 only while it is optimized (round-robin uses a non-optimized path only
when no path is optimized: multipath.c:nvme_round_robin_path). ana_swap moves the IO to the
other path in one step; with target.ana_groups = 2 a change of group 2 leaves namespace 1
(group 1) alone. fio with verify runs throughout and must see no error.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.bed.target import ANA_STATES
from harness.bed.testbed import Testbed, new_run_id
from harness.campaign.workload import FioJob, FioRun
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.faults import FaultAction, FaultInjector

WINDOW_S = 3.0  # IO counted over this long; a TCG guest completes thousands of IOs in it
STATE_TIMEOUT_S = 20.0  # < 2 x ANATT (20 s): "change" resets the controller after that


def _ana(bed: Testbed, path: int, nsid: int = 1) -> str:
    """The ANA state of ``path``'s per-path disk of namespace ``nsid`` ("" without a
    controller or such a disk)."""
    device = bed.device()
    ctrl = device.controller_for(bed.endpoints[path]) if device else None
    assert bed.host is not None
    for disk in ctrl.path_disks if ctrl else ():
        if bed.host.nsid(disk) == nsid:
            return bed.host.ana_state(disk)
    return ""


def _wait_ana(bed: Testbed, expected: list[str], nsid: int = 1) -> None:
    """Wait until path i's per-path disk of namespace ``nsid`` shows expected[i];
    AssertionError after STATE_TIMEOUT_S with what each path showed."""
    deadline = time.monotonic() + STATE_TIMEOUT_S
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = [_ana(bed, path, nsid) for path in range(len(expected))]
        if seen == expected:
            return
        time.sleep(0.05)
    raise AssertionError(f"namespace {nsid}: per-path ANA states {seen}, expected {expected}")


def _ios(bed: Testbed) -> list[int]:
    """IOs completed so far on each path's per-path disks, in path order."""
    device = bed.device()
    assert device is not None and bed.host is not None
    counts = []
    for endpoint in bed.endpoints:
        ctrl = device.controller_for(endpoint)
        disks = ctrl.path_disks if ctrl else ()
        counts.append(sum(bed.host.io_completed(disk)[0] for disk in disks))
    return counts


def _window(bed: Testbed, seconds: float = WINDOW_S) -> list[int]:
    """IOs each path completed over the next ``seconds`` (after 0.5 s for requests in
    flight at the change to finish)."""
    time.sleep(0.5)
    before = _ios(bed)
    time.sleep(seconds)
    return [after - start for after, start in zip(_ios(bed), before, strict=True)]


def _wait_io_on_all(bed: Testbed, run: FioRun, timeout_s: float = 60.0) -> None:
    """Until every path completes IO (fio starts slowly under TCG); AssertionError else."""
    deadline = time.monotonic() + timeout_s
    moved: list[int] = []
    while time.monotonic() < deadline and run.running():
        moved = _window(bed, 1.0)
        if all(moved):
            return
    raise AssertionError(f"IO did not reach every path: {moved} (fio running: {run.running()})")


def _fio(bed: Testbed, results_dir: Path, name: str) -> FioRun:
    device = bed.checked_device()
    sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size"))
    job = FioJob(filename=device.head_dev, size_bytes=sectors * 512, numjobs=2, iodepth=16)
    workdir = results_dir / name
    workdir.mkdir(parents=True, exist_ok=True)
    return FioRun(job, workdir)


def _act(faults: FaultInjector, how: str, kind: str, path: int, **args: Any) -> None:
    action = FaultAction(kind, path, tuple(sorted(args.items())))
    if how == "inject":
        faults.inject(action)
    else:
        faults.restore(action)


@pytest.fixture
def ana_bed(smoke_config: CampaignConfig, request: pytest.FixtureRequest) -> Iterator[Testbed]:
    """A round-robin two-path bed; the indirect parameter is target.ana_groups and
    target.namespaces (1 each without)."""
    groups = int(getattr(request, "param", 1))
    config = config_mod.override(smoke_config, "host", iopolicy="round-robin")
    config = config_mod.override(config, "target", ana_groups=groups, namespaces=groups)
    bed = Testbed(config, new_run_id())
    with bed.running():
        yield bed


@pytest.mark.extended
def test_each_ana_state_on_one_port(ana_bed: Testbed, results_dir: Path) -> None:
    bed = ana_bed
    faults = FaultInjector(bed)
    run = _fio(bed, results_dir, "states")
    seen: dict[str, list[int]] = {}
    try:
        _wait_io_on_all(bed, run)
        for state in ANA_STATES:
            _act(faults, "inject", "ana_change", 0, state=state)
            _wait_ana(bed, [state, "optimized"])
            seen[state] = _window(bed)
            _act(faults, "restore", "ana_change", 0, state=state)
            _wait_ana(bed, ["optimized", "optimized"])
            _wait_io_on_all(bed, run)
    finally:
        result = run.stop()
    print(f"IOs per path over {WINDOW_S:g} s with port 0 in each state: {seen}")
    assert result.total_errors == 0, result.error_lines
    for state, (path0, path1) in seen.items():
        assert path1 > 0, f"{state}: no IO on the optimized path 1 ({seen})"
        if state == "optimized":
            assert path0 > 0, f"{state}: no IO on path 0 ({seen})"
        else:
            assert path0 == 0, f"{state}: {path0} IOs went down path 0 ({seen})"


def test_ana_swap_moves_io_to_the_other_path(ana_bed: Testbed, results_dir: Path) -> None:
    bed = ana_bed
    faults = FaultInjector(bed)
    run = _fio(bed, results_dir, "swap")
    windows: dict[str, list[int]] = {}
    try:
        _wait_io_on_all(bed, run)
        # no optimized path at all: round-robin falls back to the non-optimized ones
        _act(faults, "inject", "ana_swap", 0, state="non-optimized", others="non-optimized")
        _wait_ana(bed, ["non-optimized", "non-optimized"])
        windows["both non-optimized"] = _window(bed)
        _act(faults, "inject", "ana_swap", 0, state="optimized", others="non-optimized")
        _wait_ana(bed, ["optimized", "non-optimized"])
        windows["0 optimized, 1 non-optimized"] = _window(bed)
        _act(faults, "inject", "ana_swap", 0)  # 0 inaccessible, 1 optimized at once
        _wait_ana(bed, ["inaccessible", "optimized"])
        windows["swapped: 0 inaccessible, 1 optimized"] = _window(bed)
        _act(faults, "restore", "ana_swap", 0)
        _wait_ana(bed, ["optimized", "optimized"])
        windows["restored"] = _window(bed)
    finally:
        result = run.stop()
    print(f"IOs per path over {WINDOW_S:g} s: {windows}")
    assert result.total_errors == 0, result.error_lines
    both, before, after, restored = windows.values()
    assert all(both), windows
    assert before[0] > 0 and before[1] == 0, windows
    assert after[0] == 0 and after[1] > 0, windows
    assert all(restored), windows


@pytest.mark.extended
@pytest.mark.parametrize("ana_bed", [2], indirect=True, ids=["2 groups, 2 namespaces"])
def test_each_ana_group_carries_its_namespace(ana_bed: Testbed, results_dir: Path) -> None:
    """Namespace 1 in group 1, namespace 2 in group 2 (namespace_ana_group); fio on
    namespace 1's head."""
    bed = ana_bed
    assert bed.target is not None
    assert bed.target.ana_state(bed.portid(1), 2) == "optimized"
    faults = FaultInjector(bed)
    run = _fio(bed, results_dir, "groups")
    windows: dict[str, list[int]] = {}
    try:
        _wait_io_on_all(bed, run)
        _act(faults, "inject", "ana_change", 0, group=2)
        _wait_ana(bed, ["inaccessible", "optimized"], nsid=2)
        _wait_ana(bed, ["optimized", "optimized"], nsid=1)
        windows["group 2 inaccessible on port 0"] = _window(bed)
        _act(faults, "inject", "ana_change", 0, group=1, state="non-optimized")
        _wait_ana(bed, ["non-optimized", "optimized"], nsid=1)
        _wait_ana(bed, ["inaccessible", "optimized"], nsid=2)
        windows["group 1 non-optimized on port 0"] = _window(bed)
        _act(faults, "restore", "ana_change", 0)  # every group of port 0
        _wait_ana(bed, ["optimized", "optimized"], nsid=1)
        _wait_ana(bed, ["optimized", "optimized"], nsid=2)
    finally:
        result = run.stop()
    print(f"IOs per path over {WINDOW_S:g} s (namespace 1's head): {windows}")
    assert result.total_errors == 0, result.error_lines
    other_group, own_group = windows.values()
    assert all(other_group), windows
    assert own_group[0] == 0 and own_group[1] > 0, windows

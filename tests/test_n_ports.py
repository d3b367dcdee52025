"""N ports (target.paths 2-8; blktests uses 4 and 6): the config's bounds, one nvmet port per
path with its own address, the device interlock's view of N controllers, the readiness check
recover waits for, a port removed and back on one of N paths, per-path IO counts, and a
teardown that leaves no port behind; on the fake kernel trees of tests/fakes.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.bed import testbed as testbed_mod
from harness.bed.backing import Backing
from harness.bed.host import HostIdentity, NvmeHost
from harness.bed.net import Network
from harness.bed.target import NvmetTarget, find_leftovers
from harness.campaign.plan import plan, resolve_path
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.errors import ConfigError
from harness.faults import FaultAction, FaultInjector, all_paths_ready
from tests.fakes import FakeNvmetFs, FakeSysfs
from tests.test_floor import FakeBed, FakeKernel, FakePath, as_testbed

RUN_ID = "20261201-104700-abcdef"


def n_port_config(paths: int, network: str = "loopback") -> CampaignConfig:
    return config_mod.override(CampaignConfig(), "target", paths=paths, network=network)


@pytest.mark.parametrize("paths", [2, 4, 6, 8])
def test_two_to_eight_ports_are_a_valid_config(paths: int) -> None:
    assert n_port_config(paths).target.paths == paths


@pytest.mark.parametrize("paths", [1, 9, 64])
def test_more_than_eight_or_fewer_than_two_ports_is_one_line(paths: int) -> None:
    with pytest.raises(ConfigError, match=rf"^target\.paths: {paths} is out of range \[2, 8\]$"):
        n_port_config(paths)


def bed_with_network(tmp_path: Path, paths: int, network: str = "loopback") -> testbed_mod.Testbed:
    """A Testbed whose network is planned (not set up) and whose backing is a plain file."""
    kfs = FakeNvmetFs.create(tmp_path)
    bed = testbed_mod.Testbed(n_port_config(paths, network), RUN_ID, kfs=kfs)
    bed.network = Network(network, paths, first_port=4421)
    bed.backing = Backing(device_path=str(tmp_path / "ns1.img"), buffered_io=True)
    return bed


@pytest.mark.parametrize(("paths", "network"), [(4, "loopback"), (6, "loopback"), (6, "netns")])
def test_the_target_gets_one_port_per_path_each_with_its_own_address(
    tmp_path: Path, paths: int, network: str
) -> None:
    bed = bed_with_network(tmp_path, paths, network)
    spec = bed.target_spec()
    assert [port.portid for port in spec.ports] == [6000 + p for p in range(paths)]
    assert [bed.portid(p) for p in range(paths)] == [port.portid for port in spec.ports]
    addresses = {(port.traddr, port.trsvcid) for port in spec.ports}
    assert len(addresses) == paths
    assert addresses == {(e.traddr, e.trsvcid) for e in bed.endpoints}
    assert all(port.subsystems == (bed.nqn,) for port in spec.ports)


@pytest.mark.parametrize("paths", [4, 6])
def test_n_ports_are_created_linked_unlinked_and_all_torn_down(tmp_path: Path, paths: int) -> None:
    kfs = FakeNvmetFs.create(tmp_path)
    bed = bed_with_network(tmp_path, paths)
    target = NvmetTarget(kfs)
    target.apply(bed.target_spec())
    assert all(target.port_linked(bed.portid(p), bed.nqn) for p in range(paths))
    target.unlink_port(bed.portid(paths - 1), bed.nqn)
    assert [target.port_linked(bed.portid(p), bed.nqn) for p in range(paths)] == [True] * (
        paths - 1
    ) + [False]
    assert len(find_leftovers(kfs)) == paths + 2  # the ports, the subsystem, the host
    assert target.teardown() == []
    assert find_leftovers(kfs) == []


def sysfs_bed(tmp_path: Path, paths: int) -> tuple[testbed_mod.Testbed, FakeSysfs, list[str]]:
    """A Testbed over a fake /sys with one live, optimized controller per path."""
    sysfs = FakeSysfs(tmp_path / "sys-root")
    bed = testbed_mod.Testbed(n_port_config(paths), RUN_ID, kfs=sysfs.kfs)
    bed.network = Network("loopback", paths, first_port=4421)
    bed.host = NvmeHost(sysfs.kfs, HostIdentity.generate())
    ports = tuple(e.trsvcid for e in bed.endpoints)
    made = sysfs.multipath(bed.nqn, ports=ports, iopolicy="round-robin")
    return bed, sysfs, made.controllers


@pytest.mark.parametrize("paths", [4, 6])
def test_every_one_of_n_paths_must_be_live_and_optimized_to_be_ready(
    tmp_path: Path, paths: int
) -> None:
    bed, sysfs, ctrls = sysfs_bed(tmp_path, paths)
    device = bed.device()
    assert device is not None and len(device.controllers) == paths
    assert all_paths_ready(bed, device)
    sysfs.set_state(ctrls[-1], "connecting")
    device = bed.device()
    assert device is not None and not all_paths_ready(bed, device)
    sysfs.set_state(ctrls[-1], "live")
    disk = sysfs.path_disks(ctrls[paths // 2])[0]
    (sysfs.root / "sys/block" / disk / "ana_state").write_text("inaccessible\n")
    device = bed.device()
    assert device is not None and not all_paths_ready(bed, device)
    sysfs.remove_controller(ctrls[1])
    device = bed.device()
    assert device is not None and not all_paths_ready(bed, device)


@pytest.mark.parametrize("paths", [4, 6])
def test_the_host_waits_for_all_n_paths(tmp_path: Path, paths: int) -> None:
    bed, sysfs, ctrls = sysfs_bed(tmp_path, paths)
    assert bed.host is not None
    assert bed.host.wait_paths(bed.nqn, bed.endpoints, timeout_s=0) is not None
    sysfs.set_state(ctrls[paths - 1], "connecting")
    assert bed.host.wait_paths(bed.nqn, bed.endpoints, timeout_s=0) is None


@pytest.mark.parametrize("paths", [4, 6])
def test_per_path_io_counts_cover_every_path_in_path_order(tmp_path: Path, paths: int) -> None:
    bed, sysfs, ctrls = sysfs_bed(tmp_path, paths)
    for index, ctrl in enumerate(ctrls):
        sysfs.set_stat(sysfs.path_disks(ctrl)[0], read_ios=10 * (index + 1), write_ios=index)
    counts = bed.path_ios(bed.device())
    assert counts == [10 * (i + 1) + i for i in range(paths)]
    sysfs.remove_controller(ctrls[2])
    counts = bed.path_ios(bed.device())
    assert counts[2] == 0 and len(counts) == paths
    assert bed.path_ios(None) == [0] * paths


def test_alternate_walks_over_all_six_paths() -> None:
    config = config_mod.override(n_port_config(6), "campaign", iterations=12, path="alternate")
    config = config_mod.override(config, "campaign", faults=["port_remove"])
    assert [action.path for action in plan(config)] == list(range(6)) * 2


def test_the_current_and_other_path_of_six() -> None:
    before = [0] * 6
    after = [10, 50, 5, 7, 50, 3]
    assert resolve_path("current", before, after) == (1, 1)
    assert resolve_path("other", before, after) == (5, 1)


@pytest.mark.parametrize("victim", [0, 3])
def test_a_port_removed_from_one_of_four_paths_recovers(victim: int) -> None:
    bed = FakeBed(FakeKernel([FakePath(f"nvme{i}") for i in range(4)]))
    injector = FaultInjector(as_testbed(bed))
    action = FaultAction("port_remove", victim)
    injector.inject(action)
    states = [p.state for p in bed.kernel.paths]
    for _ in range(3):
        states = [c.state for c in bed.device().controllers]
    assert states == ["connecting" if i == victim else "live" for i in range(4)]
    injector.restore(action)
    assert injector.recover(5.0, lambda: False) is not None
    assert [p.state for p in bed.kernel.paths] == ["live"] * 4
    assert bed.kernel.log == [f"unlink {6000 + victim}", f"link {6000 + victim}"]


def test_port_removes_undo_relinks_all_four_ports() -> None:
    bed = FakeBed(FakeKernel([FakePath(f"nvme{i}") for i in range(4)]))
    injector = FaultInjector(as_testbed(bed))
    for path in range(4):
        injector.inject(FaultAction("port_remove", path))
    assert injector.fault("port_remove").restore_everything() == []
    assert {f"link {6000 + p}" for p in range(4)} <= set(bed.kernel.log)
    assert all(p.linked for p in bed.kernel.paths)

"""Target setup: the subsystem, namespace and both ports exist in configfs, both paths live."""

from __future__ import annotations

from harness.bed.host import MultipathDevice
from harness.bed.target import NVMET
from harness.bed.testbed import Testbed


def test_target_in_configfs(nvmet_target: Testbed) -> None:
    kfs, nqn = nvmet_target.kfs, nvmet_target.nqn
    assert kfs.exists(f"{NVMET}/subsystems/{nqn}")
    assert kfs.read(f"{NVMET}/subsystems/{nqn}/namespaces/1/enable") == "1"
    assert kfs.read(f"{NVMET}/subsystems/{nqn}/attr_allow_any_host") == "0"
    assert kfs.listdir(f"{NVMET}/subsystems/{nqn}/allowed_hosts") == [nvmet_target.identity.hostnqn]
    for path in range(2):
        port = f"{NVMET}/ports/{nvmet_target.portid(path)}"
        assert kfs.read(f"{port}/addr_traddr") == "127.0.0.1"
        assert kfs.listdir(f"{port}/subsystems") == [nqn]


def test_both_paths_live(nvmet_target: Testbed, mpath_device: MultipathDevice) -> None:
    assert mpath_device.head_dev.startswith("/dev/nvme")
    live = mpath_device.live_controllers()
    assert len(live) == 2, f"controllers: {mpath_device.controllers}"
    ports = sorted(ctrl.trsvcid for ctrl in live)
    assert ports == sorted(e.trsvcid for e in nvmet_target.endpoints)
    assert nvmet_target.host is not None
    for ctrl in live:
        assert len(ctrl.path_disks) == 1, ctrl
        assert nvmet_target.host.ana_state(ctrl.path_disks[0]) == "optimized"
    assert nvmet_target.host.iopolicy(mpath_device) == "round-robin"

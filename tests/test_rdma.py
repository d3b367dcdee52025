"""Soft-RoCE plumbing (harness/rdma.py) on a fake /sys with a fake modprobe/rmmod/rdma."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.bed import rdma
from harness.core.errors import HarnessError
from harness.core.procs import ProcResult

# What `modprobe X` adds to /sys/module on 6.1.0-57-amd64 (modinfo -F depends), starting
# from a guest where only nvme_core and nvme_fabrics (nvme-tcp's) are loaded.
DEPENDS = {
    "rdma_rxe": ["ib_core", "ib_uverbs", "udp_tunnel", "ip6_udp_tunnel", "rdma_rxe"],
    "nvmet_rdma": ["configfs", "ib_cm", "iw_cm", "rdma_cm", "nvmet", "nvmet_rdma"],
    "nvme_rdma": ["nvme_rdma"],
}
# who holds whom (module -> users), as /sys/module/X/holders lists them
USERS = {
    "ib_core": ["rdma_rxe", "ib_uverbs", "rdma_cm", "ib_cm", "iw_cm", "nvmet_rdma", "nvme_rdma"],
    "ib_uverbs": ["rdma_rxe"],
    "udp_tunnel": ["rdma_rxe"],
    "ip6_udp_tunnel": ["rdma_rxe"],
    "rdma_cm": ["nvmet_rdma", "nvme_rdma"],
    "ib_cm": ["rdma_cm"],
    "iw_cm": ["rdma_cm"],
    "nvmet": ["nvmet_rdma"],
    "nvme_fabrics": ["nvme_rdma", "nvme_tcp"],
    "nvme_core": ["nvme_fabrics", "nvme_rdma", "nvme_tcp"],
}


class FakeKernel:
    """/sys/module and /sys/class/infiniband under ``root``; records every command run."""

    def __init__(self, root: Path, loaded: Sequence[str] = ("nvme_core", "nvme_fabrics")) -> None:
        self.root = root
        self.sys_module = root / "module"
        self.sys_module.mkdir(parents=True)
        (root / rdma.IB_CLASS).mkdir(parents=True)
        self.commands: list[tuple[str, ...]] = []
        self.refuse: set[str] = set()
        for name in loaded:
            self.load(name)

    def load(self, name: str) -> None:
        (self.sys_module / name / "holders").mkdir(parents=True, exist_ok=True)
        (self.sys_module / name / "initstate").write_text("live\n")
        self._refresh_holders()

    def _refresh_holders(self) -> None:
        for name, users in USERS.items():
            holders = self.sys_module / name / "holders"
            if holders.is_dir():
                for user in users:
                    entry = holders / user
                    if (self.sys_module / user).is_dir():
                        entry.mkdir(exist_ok=True)
                    elif entry.exists():
                        entry.rmdir()

    def loaded(self) -> set[str]:
        return rdma.loaded_modules(self.sys_module)

    def run(self, argv: Sequence[str], timeout_s: float, *args: object) -> ProcResult:
        argv = tuple(argv)
        self.commands.append(argv)
        if argv[0] == "modprobe":
            if argv[1] in self.refuse:
                return ProcResult(argv, 1, "", f"modprobe: FATAL: Module {argv[1]} not found")
            for name in DEPENDS[argv[1]]:
                self.load(name)
        elif argv[0] == "rmmod":
            holders = self.sys_module / argv[1] / "holders"
            if holders.is_dir() and any(holders.iterdir()):
                return ProcResult(argv, 1, "", f"rmmod: ERROR: Module {argv[1]} is in use")
            for entry in (self.sys_module / argv[1]).rglob("*"):
                if entry.is_file():
                    entry.unlink()
            for entry in sorted((self.sys_module / argv[1]).rglob("*"), reverse=True):
                entry.rmdir()
            (self.sys_module / argv[1]).rmdir()
            self._refresh_holders()
        elif argv[:3] == ("rdma", "link", "add"):
            device = self.root / rdma.IB_CLASS / argv[3]
            (device / "ports/1/gid_attrs/ndevs").mkdir(parents=True)
            (device / "ports/1/gid_attrs/ndevs/0").write_text(argv[7] + "\n")
            (device / "ports/1/state").write_text("4: ACTIVE\n")
        elif argv[:3] == ("rdma", "link", "delete"):
            device = self.root / rdma.IB_CLASS / argv[3]
            if not device.exists():
                return ProcResult(argv, 1, "", "Wrong device name")
            for entry in sorted(device.rglob("*"), reverse=True):
                entry.unlink() if entry.is_file() else entry.rmdir()
            device.rmdir()
        return ProcResult(argv, 0, "", "")


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    fake = FakeKernel(tmp_path / "sys")
    monkeypatch.setattr(rdma, "run", fake.run)
    return fake


def test_load_records_exactly_what_it_added(kernel: FakeKernel, tmp_path: Path) -> None:
    state = tmp_path / "run/rdma-modules.json"
    added = rdma.load_modules(sys_module=kernel.sys_module, state_file=state)
    assert set(added) == {m for deps in DEPENDS.values() for m in deps} - {"configfs"}
    assert "nvme_core" not in added and "nvme_fabrics" not in added  # loaded before
    assert rdma.recorded_modules(state) == added
    # a second call adds nothing and runs nothing
    kernel.commands.clear()
    assert rdma.load_modules(sys_module=kernel.sys_module, state_file=state) == []
    assert kernel.commands == []


def test_unload_takes_users_first_and_leaves_the_rest(kernel: FakeKernel, tmp_path: Path) -> None:
    state = tmp_path / "rdma-modules.json"
    kernel.load("nvme_tcp")  # a user of nvme_fabrics that is not ours
    added = rdma.load_modules(sys_module=kernel.sys_module, state_file=state)
    errors = rdma.unload_modules(
        list(reversed(added)), sys_module=kernel.sys_module, state_file=state
    )
    assert errors == []
    # configfs is mounted for nvmet once loaded: never ours to unload
    assert kernel.loaded() == {"configfs", "nvme_core", "nvme_fabrics", "nvme_tcp"}
    assert not state.exists()
    assert all(cmd[0] == "rmmod" for cmd in kernel.commands if cmd[0] != "modprobe")


def test_unload_reports_a_module_still_in_use(kernel: FakeKernel, tmp_path: Path) -> None:
    state = tmp_path / "rdma-modules.json"
    added = rdma.load_modules(sys_module=kernel.sys_module, state_file=state)
    (kernel.sys_module / "nvme_rdma/holders/somebody").mkdir()
    errors = rdma.unload_modules(added, sys_module=kernel.sys_module, state_file=state)
    assert len(errors) == 1 and "nvme_rdma" in errors[0] and "still in use" in errors[0]
    assert "nvme_rdma" in rdma.recorded_modules(state)  # clean will try again


def test_a_refused_module_is_one_line_and_what_loaded_is_recorded(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    state = tmp_path / "rdma-modules.json"
    kernel.refuse.add("nvme_rdma")
    with pytest.raises(HarnessError, match=r"^cannot load nvme_rdma: modprobe nvme_rdma") as info:
        rdma.load_modules(sys_module=kernel.sys_module, state_file=state)
    assert "CONFIG_NVME_RDMA" in str(info.value)
    assert "rdma_rxe" in rdma.recorded_modules(state)


def test_rxe_devices_add_find_remove(kernel: FakeKernel) -> None:
    sysfs = kernel.root
    rdma.add_rxe(rdma.rxe_name(0), "nvmfh-h0")
    rdma.add_rxe(rdma.rxe_name(1), "nvmfh-h1")
    (sysfs / rdma.IB_CLASS / "mlx5_0").mkdir()  # not ours
    assert rdma.rxe_devices(sysfs) == {"nvmfh_rxe0": "nvmfh-h0", "nvmfh_rxe1": "nvmfh-h1"}
    assert rdma.wait_rxe_active("nvmfh_rxe0", timeout_s=0.1, sysfs=sysfs)
    assert not rdma.wait_rxe_active("nvmfh_rxe7", timeout_s=0.1, sysfs=sysfs)
    assert kernel.commands[0] == (
        "rdma",
        "link",
        "add",
        "nvmfh_rxe0",
        "type",
        "rxe",
        "netdev",
        "nvmfh-h0",
    )
    assert rdma.remove_rxe("nvmfh_rxe0") == []
    assert rdma.remove_rxe("nvmfh_rxe0")[0].startswith("rdma link delete nvmfh_rxe0: ")
    assert list(rdma.rxe_devices(sysfs)) == ["nvmfh_rxe1"]


def test_leftovers_found_and_removed(kernel: FakeKernel, tmp_path: Path) -> None:
    sysfs = kernel.root
    state = tmp_path / "rdma-modules.json"
    assert rdma.find_leftovers(sysfs, state) == []
    rdma.load_modules(sys_module=kernel.sys_module, state_file=state)
    rdma.add_rxe("nvmfh_rxe0", "nvmfh-h0")
    found = rdma.find_leftovers(sysfs, state)
    assert found[0] == "rxe device nvmfh_rxe0"
    assert "module rdma_rxe (loaded by the harness)" in found
    assert rdma.remove_leftovers(sysfs, state) == []
    assert rdma.find_leftovers(sysfs, state) == []
    assert kernel.loaded() == {"configfs", "nvme_core", "nvme_fabrics"}


def test_rxe_names_fit_and_carry_the_prefix() -> None:
    assert rdma.rxe_name(7) == "nvmfh_rxe7" and len(rdma.rxe_name(63)) < 64

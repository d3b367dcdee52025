"""iopolicy_switch, connect_storm and rescan on a fake kernel: the real Testbed, NvmeHost and
FaultInjector over a fake /sys (tests/fakes.py FakeSysfs) whose writes act as 6.1 does:
delete_controller removes the controller (EBUSY when asked to), /dev/nvme-fabrics makes one,
iopolicy takes numa and round-robin only (EINVAL otherwise), rescan_controller is logged."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from harness.bed import testbed as testbed_mod
from harness.bed.host import NvmeHost
from harness.bed.net import Network
from harness.config import campaign as config_mod
from harness.core.errors import ConfigError, HarnessError, KernelFsError
from harness.core.kernelfs import FABRICS_DEVICE, KernelFs
from harness.faults import FaultAction, FaultInjector, fault_class
from harness.faults.iopolicy_switch import other_policy
from tests.fakes import FakeSysfs

KERNEL_61_IOPOLICIES = ("numa", "round-robin")  # multipath.c:nvme_iopolicy_names


@dataclass(frozen=True)
class FakeNvmeFs(KernelFs):
    """A KernelFs over ``sysfs`` whose writes behave like the 6.1 host driver's (see the
    module docstring). ``log`` records (operation, controller or value); ``busy`` holds
    controllers whose next delete fails with EBUSY; ``refuse_connect`` fails every connect."""

    sysfs: FakeSysfs | None = field(default=None, compare=False)
    log: list[tuple[str, str]] = field(default_factory=list, compare=False)
    busy: set[str] = field(default_factory=set, compare=False)
    refuse_connect: list[str] = field(default_factory=list, compare=False)

    def write(self, rel: str | Path, value: str, timeout_s: float | None = None) -> None:
        assert self.sysfs is not None
        parts = str(rel).strip("/").split("/")
        attr = parts[-1]
        if attr == "delete_controller":
            ctrl = parts[-2]
            if ctrl in self.busy:
                self.busy.discard(ctrl)
                self.log.append(("delete-busy", ctrl))
                raise KernelFsError(f"write '1' to {rel} failed: Device or resource busy")
            self.log.append(("delete", ctrl))
            self.sysfs.remove_controller(ctrl)
            return
        if attr == "rescan_controller":
            self.log.append(("rescan", parts[-2]))
            return
        if attr == "iopolicy":
            if value not in KERNEL_61_IOPOLICIES:
                raise KernelFsError(f"write '{value}' to {rel} failed: Invalid argument")
            self.log.append(("iopolicy", value))
        super().write(rel, value, timeout_s)

    def fabrics_connect(self, options: str, timeout_s: float | None = None) -> str:
        assert self.sysfs is not None
        if self.refuse_connect:
            raise KernelFsError(self.refuse_connect[0])
        opts = dict(item.split("=", 1) for item in options.split(","))
        subsystem = next(
            name for name, sub in self.sysfs.subsystems.items() if sub.nqn == opts["nqn"]
        )
        ctrl = self.sysfs.add_controller(subsystem, opts["traddr"], opts["trsvcid"])
        self.log.append(("connect", ctrl))
        return f"instance={ctrl.removeprefix('nvme')},cntlid=7"


@dataclass
class FakeBed:
    bed: testbed_mod.Testbed
    fs: FakeNvmeFs
    sysfs: FakeSysfs

    @property
    def injector(self) -> FaultInjector:
        return FaultInjector(self.bed)

    def ctrl(self, path: int) -> str | None:
        device = self.bed.device()
        found = device.controller_for(self.bed.endpoints[path]) if device else None
        return found.name if found else None


def make_bed(tmp_path: Path, iopolicy: str = "round-robin") -> FakeBed:
    """A two-path bed whose subsystem has the configured ``iopolicy``."""
    config = config_mod.validate(
        {"campaign": {"faults": ["ctrl_delete"]}, "host": {"iopolicy": iopolicy}}
    )
    sysfs = FakeSysfs(tmp_path / "root")
    fs = FakeNvmeFs(root=sysfs.root, timeout_s=5.0, sysfs=sysfs)
    fabrics = fs.path(FABRICS_DEVICE)
    fabrics.parent.mkdir(parents=True, exist_ok=True)
    fabrics.write_text("")
    bed = testbed_mod.Testbed(config, "policy-test", kfs=fs)
    bed.host = NvmeHost(fs, bed.identity)
    bed.network = Network("loopback", 2, config.target.first_port)
    bed.target = cast(Any, object())  # the target side is not touched by these faults
    ports = tuple(endpoint.trsvcid for endpoint in bed.endpoints)
    sysfs.multipath(bed.nqn, ports=ports, traddr=bed.endpoints[0].traddr, iopolicy=iopolicy)
    return FakeBed(bed, fs, sysfs)


def iopolicy_of(fake: FakeBed) -> str:
    device = fake.bed.device()
    assert device is not None and fake.bed.host is not None
    return fake.bed.host.iopolicy(device)


# --- iopolicy_switch ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "switched"), [("numa", "round-robin"), ("round-robin", "numa")]
)
def test_iopolicy_switch_goes_to_the_other_policy_and_back(
    tmp_path: Path, configured: str, switched: str
) -> None:
    fake = make_bed(tmp_path, configured)
    injector = fake.injector
    injector.inject(FaultAction("iopolicy_switch", 0))
    assert iopolicy_of(fake) == switched
    injector.restore(FaultAction("iopolicy_switch", 0))
    assert iopolicy_of(fake) == configured
    assert fake.fs.log == [("iopolicy", switched), ("iopolicy", configured)]
    assert injector.take_notes() == [
        f"iopolicy {configured} -> {switched} (nvme-subsys0)",
        f"iopolicy {switched} -> {configured} (nvme-subsys0)",
    ]


def test_iopolicy_switch_to_a_named_policy_and_the_other_of_queue_depth(tmp_path: Path) -> None:
    fake = make_bed(tmp_path, "round-robin")
    fake.injector.inject(FaultAction("iopolicy_switch", 1, (("policy", "round-robin"),)))
    assert iopolicy_of(fake) == "round-robin"  # the same one: written anyway, no error
    assert other_policy("queue-depth") == "numa"


def test_queue_depth_on_6_1_is_one_line_with_a_hint(tmp_path: Path) -> None:
    fake = make_bed(tmp_path, "numa")
    with pytest.raises(HarnessError) as caught:
        fake.injector.inject(FaultAction("iopolicy_switch", 0, (("policy", "queue-depth"),)))
    assert "refuses iopolicy 'queue-depth'" in str(caught.value)
    assert "6.11" in str(caught.value) and "\n" not in str(caught.value)
    assert iopolicy_of(fake) == "numa"


def test_iopolicy_switch_checks_the_read_back(tmp_path: Path) -> None:
    """A kernel that accepts the write but keeps the old policy is an error, not a switch."""
    fake = make_bed(tmp_path, "numa")

    def ignore_iopolicy(rel: str | Path, value: str, timeout_s: float | None = None) -> None:
        return None

    object.__setattr__(fake.fs, "write", ignore_iopolicy)
    with pytest.raises(HarnessError, match="reads 'numa' after writing 'round-robin'"):
        fake.injector.inject(FaultAction("iopolicy_switch", 0))


def test_iopolicy_switch_needs_a_subsystem(tmp_path: Path) -> None:
    fake = make_bed(tmp_path)
    for ctrl in list(fake.sysfs.subsystems["nvme-subsys0"].controllers):
        fake.sysfs.remove_controller(ctrl)
    fake.sysfs.subsystems.clear()
    (fake.sysfs.path("sys/class/nvme-subsystem/nvme-subsys0")).unlink()
    with pytest.raises(HarnessError, match=r"no subsystem \S+ to switch the iopolicy of"):
        fake.injector.inject(FaultAction("iopolicy_switch", 0))


def test_restore_everything_puts_the_configured_iopolicy_back_after_an_unrestored_inject(
    tmp_path: Path,
) -> None:
    fake = make_bed(tmp_path, "round-robin")
    injector = fake.injector
    fault = injector.fault("iopolicy_switch")
    fake.sysfs.path("sys/class/nvme-subsystem/nvme-subsys0/iopolicy").write_text("numa\n")
    assert fault.restore_everything() == []
    assert fake.fs.log == []  # not switched by this fault: not touched
    injector.inject(FaultAction("iopolicy_switch", 0))
    injector.restore(FaultAction("iopolicy_switch", 0))
    assert fault.restore_everything() == []
    assert len(fake.fs.log) == 2  # restored already: nothing more
    injector.inject(FaultAction("iopolicy_switch", 0))  # and no restore (an error, Ctrl-C)
    assert fault.restore_everything() == []
    assert iopolicy_of(fake) == "round-robin"
    assert fake.fs.log[-1] == ("iopolicy", "round-robin")
    assert fault.restore_everything() == []  # once only
    assert len(fake.fs.log) == 4


def test_iopolicy_switch_args_are_checked() -> None:
    cls = fault_class("iopolicy_switch")
    with pytest.raises(ConfigError, match=r"s\.policy: expected one of other, numa"):
        cls.check_args({"policy": "fastest"}, "s")
    assert cls.check_args({}) == {"policy": "other"}


# --- connect_storm -----------------------------------------------------------------------------


def test_connect_storm_cycles_the_chosen_path_only(tmp_path: Path) -> None:
    fake = make_bed(tmp_path)
    other = fake.ctrl(0)
    first = fake.ctrl(1)
    injector = fake.injector
    injector.inject(FaultAction("connect_storm", 1, (("count", 3),)))
    assert fake.fs.log == [
        ("delete", "nvme1"),
        ("connect", "nvme2"),
        ("delete", "nvme2"),
        ("connect", "nvme3"),
        ("delete", "nvme3"),
        ("connect", "nvme4"),
    ]
    assert first == "nvme1" and fake.ctrl(1) == "nvme4"
    assert fake.ctrl(0) == other  # the other path is never touched
    (note,) = injector.take_notes()
    assert note.startswith("connect_storm path 1: 3 cycles in ")
    assert re.search(r"delete_s \d+\.\d\d/\d+\.\d\d/\d+\.\d\d, connect_s \d+\.\d\d/", note)
    assert note.endswith("controllers nvme2 nvme3 nvme4")
    injector.restore(FaultAction("connect_storm", 1))
    assert fake.fs.log[-1] == ("connect", "nvme4")  # connected already: restore adds none
    assert injector.recover(5.0, lambda: False) is not None


def test_connect_storm_default_is_five_cycles(tmp_path: Path) -> None:
    fake = make_bed(tmp_path)
    fake.injector.inject(FaultAction("connect_storm", 0))
    assert [op for op, _ in fake.fs.log] == ["delete", "connect"] * 5


def test_connect_storm_retries_a_delete_the_kernel_refuses_as_busy(tmp_path: Path) -> None:
    fake = make_bed(tmp_path)
    fake.fs.busy.add("nvme1")  # not started once yet: EBUSY (core.c:nvme_sysfs_delete)
    fake.injector.inject(FaultAction("connect_storm", 1, (("count", 1),)))
    assert fake.fs.log == [("delete-busy", "nvme1"), ("delete", "nvme1"), ("connect", "nvme2")]


def test_connect_storm_failed_connect_names_the_cycle_and_restore_connects(
    tmp_path: Path,
) -> None:
    fake = make_bed(tmp_path)
    fake.fs.refuse_connect.append("Connection refused")
    injector = fake.injector
    with pytest.raises(HarnessError, match=r"connect_storm cycle 1 of 2 on path 1: nvme conn"):
        injector.inject(FaultAction("connect_storm", 1, (("count", 2),)))
    assert fake.ctrl(1) is None
    fake.fs.refuse_connect.clear()
    injector.restore(FaultAction("connect_storm", 1))
    assert fake.ctrl(1) is not None and fake.fs.log[-1][0] == "connect"


def test_connect_storm_needs_a_controller_and_a_sane_count(tmp_path: Path) -> None:
    fake = make_bed(tmp_path)
    fake.sysfs.remove_controller("nvme1")
    with pytest.raises(HarnessError, match="path 1 has no controller"):
        fake.injector.inject(FaultAction("connect_storm", 1))
    with pytest.raises(ConfigError, match=r"count: 0 is out of range"):
        fault_class("connect_storm").check_args({"count": 0})


# --- rescan ------------------------------------------------------------------------------------


def test_rescan_writes_rescan_controller_count_times_on_the_path(tmp_path: Path) -> None:
    fake = make_bed(tmp_path)
    injector = fake.injector
    injector.inject(FaultAction("rescan", 0, (("count", 10),)))
    assert fake.fs.log == [("rescan", "nvme0")] * 10
    injector.restore(FaultAction("rescan", 0))
    assert len(fake.fs.log) == 10  # nothing to undo
    assert injector.take_notes() == []


def test_rescan_notes_a_controller_that_is_not_live(tmp_path: Path) -> None:
    fake = make_bed(tmp_path)
    fake.sysfs.set_state("nvme1", "connecting")
    injector = fake.injector
    injector.inject(FaultAction("rescan", 1))
    assert fake.fs.log == [("rescan", "nvme1")]
    assert injector.take_notes() == ["rescan nvme1: state connecting, the kernel queues no scan"]


def test_rescan_spaces_writes_by_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("harness.faults.rescan.time.sleep", slept.append)
    fake = make_bed(tmp_path)
    fake.injector.inject(FaultAction("rescan", 1, (("count", 3), ("interval_s", 0.25))))
    assert slept == [0.25, 0.25]
    assert len(fake.fs.log) == 3


def test_new_faults_are_valid_step_faults_with_their_args() -> None:
    """Each is a config name; its args go through Param checks like every fault's."""
    config = config_mod.validate(
        {"campaign": {"faults": ["iopolicy_switch", "connect_storm", "rescan"]}}
    )
    assert config.campaign.faults == ("iopolicy_switch", "connect_storm", "rescan")
    assert fault_class("rescan").check_args({"count": 10}) == {"count": 10, "interval_s": 0.0}
    for name in ("iopolicy_switch", "connect_storm", "rescan"):
        assert fault_class(name).surviving_path

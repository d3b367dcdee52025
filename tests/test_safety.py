"""The device interlock refuses every block device but this run's multipath head."""

from __future__ import annotations

import pytest

from harness.bed.safety import require_harness_device
from harness.bed.target import NQN_PREFIX
from harness.core.errors import SafetyError
from tests.fakes import FakeSysfs

OURS = f"{NQN_PREFIX}subsys-run1"
SERIAL = "4c1ae3b5d6f7a8b9c0d1"  # the fake's default serial


def test_accepts_our_head(fake_sysfs: FakeSysfs) -> None:
    device = fake_sysfs.multipath(OURS)
    require_harness_device(f"/dev/{device.head}", OURS, SERIAL, fake_sysfs.kfs)


@pytest.mark.parametrize("path", ["/dev/sda", "/dev/loop0", "/dev/nvme0c0n1", "/dev/ng0n1"])
def test_refuses_what_is_not_a_head(fake_sysfs: FakeSysfs, path: str) -> None:
    fake_sysfs.multipath(OURS)
    with pytest.raises(SafetyError, match="not an NVMe multipath head"):
        require_harness_device(path, OURS, SERIAL, fake_sysfs.kfs)


def test_refuses_a_real_nvme_disk(fake_sysfs: FakeSysfs) -> None:
    real = fake_sysfs.multipath("nqn.2014-08.org.nvmexpress:uuid:real-disk")
    with pytest.raises(SafetyError, match="was not created by this run"):
        require_harness_device(f"/dev/{real.head}", OURS, SERIAL, fake_sysfs.kfs)


def test_refuses_another_harness_run(fake_sysfs: FakeSysfs) -> None:
    other = fake_sysfs.multipath(f"{NQN_PREFIX}subsys-other-run")
    with pytest.raises(SafetyError, match="was not created by this run"):
        require_harness_device(f"/dev/{other.head}", OURS, SERIAL, fake_sysfs.kfs)


def test_refuses_our_nqn_with_a_foreign_serial(fake_sysfs: FakeSysfs) -> None:
    device = fake_sysfs.multipath(OURS)
    with pytest.raises(SafetyError, match="serial"):
        require_harness_device(f"/dev/{device.head}", OURS, "00000000000000000000", fake_sysfs.kfs)


def test_refuses_a_head_no_subsystem_owns(fake_sysfs: FakeSysfs) -> None:
    fake_sysfs.multipath(OURS)
    with pytest.raises(SafetyError, match="no NVMe subsystem owns"):
        require_harness_device("/dev/nvme9n9", OURS, SERIAL, fake_sysfs.kfs)

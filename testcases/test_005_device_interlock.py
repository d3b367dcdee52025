"""The device interlock on real devices: a decoy nvmet subsystem the run did not create and
a loop device are both refused before any IO; the run's own head is accepted."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bed.host import PathEndpoint
from harness.bed.safety import require_harness_device
from harness.bed.target import NamespaceSpec, NvmetTarget, PortSpec, SubsystemSpec, TargetSpec
from harness.bed.testbed import Testbed
from harness.core.errors import SafetyError

DECOY_NQN = "nqn.2026-11.io.decoy:not-the-harness"
DECOY_PORT = 7001  # outside the harness's port id range: clean would not remove it
DECOY_TRSVCID = "4499"


@pytest.fixture
def loop_device(tmp_path: Path) -> Iterator[str]:
    subprocess.run(["modprobe", "loop"], timeout=60, check=False)
    image = tmp_path / "decoy.img"
    image.write_bytes(b"\0" * (16 << 20))
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(image)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], timeout=30, check=False)


def test_loop_device_is_refused(nvmet_target: Testbed, loop_device: str) -> None:
    with pytest.raises(SafetyError, match="not an NVMe multipath head"):
        require_harness_device(loop_device, nvmet_target.nqn, nvmet_target.serial, nvmet_target.kfs)


def test_decoy_subsystem_is_refused(nvmet_target: Testbed, tmp_path: Path) -> None:
    host = nvmet_target.host
    assert host is not None
    backing = tmp_path / "decoy-ns.img"
    with backing.open("wb") as handle:
        handle.truncate(32 << 20)
    decoy = NvmetTarget(nvmet_target.kfs)
    spec = TargetSpec(
        ports=(PortSpec(DECOY_PORT, "127.0.0.1", DECOY_TRSVCID, subsystems=(DECOY_NQN,)),),
        subsystems=(
            SubsystemSpec(
                DECOY_NQN,
                namespaces=(NamespaceSpec(1, str(backing), buffered_io=True),),
                allow_any_host=True,
                serial=nvmet_target.serial,  # even the same serial must not fool it
            ),
        ),
    )
    decoy.apply(spec)
    try:
        # through nvme-cli, as a user would connect (the run's own paths use /dev/nvme-fabrics)
        decoy_path = PathEndpoint("127.0.0.1", DECOY_TRSVCID)
        host.connect(DECOY_NQN, decoy_path, 1, 1, 5, 1, connect_with="nvme-cli")
        deadline = time.monotonic() + 20
        device = host.find(DECOY_NQN)
        while (device is None or not device.heads) and time.monotonic() < deadline:
            time.sleep(0.1)
            device = host.find(DECOY_NQN)
        assert device is not None and device.heads, "the decoy never showed a head"
        with pytest.raises(SafetyError, match="was not created by this run"):
            require_harness_device(
                device.head_dev, nvmet_target.nqn, nvmet_target.serial, nvmet_target.kfs
            )
        own = nvmet_target.checked_device()
        require_harness_device(
            own.head_dev, nvmet_target.nqn, nvmet_target.serial, nvmet_target.kfs
        )
    finally:
        host.disconnect_all(DECOY_NQN)
        deadline = time.monotonic() + 30
        while host.controllers(DECOY_NQN) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not decoy.teardown()

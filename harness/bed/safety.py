"""The device interlock: IO goes only to a multipath head this run created.

Before fio is started (every iteration) the target device is resolved to its block device
name and looked up in sysfs: it must be an NVMe multipath head (nvmeXnY) of a subsystem
whose NQN carries the harness prefix, is the run's own, and whose serial is the random one
the run gave it. A real disk (/dev/nvme0n1 of the machine, sda, a loop device, a path given
by mistake in a config, a symlink to any of these) is refused before any IO.
"""

from __future__ import annotations

import os

from harness.bed.host import HEAD_RE, SUBSYS_CLASS
from harness.bed.target import NQN_PREFIX
from harness.core.errors import SafetyError
from harness.core.kernelfs import KernelFs


def block_name(dev_path: str) -> str:
    """The kernel name of a block device path (symlinks resolved)."""
    return os.path.basename(os.path.realpath(dev_path))


def require_harness_device(
    dev_path: str, expected_nqn: str, expected_serial: str, kfs: KernelFs
) -> None:
    """Raise SafetyError unless ``dev_path`` is this run's multipath head."""
    name = block_name(dev_path)
    if not HEAD_RE.match(name):
        raise SafetyError(
            f"refusing IO to {dev_path}: {name} is not an NVMe multipath head of this run"
        )
    for subsystem in kfs.listdir(SUBSYS_CLASS):
        base = f"{SUBSYS_CLASS}/{subsystem}"
        if name not in kfs.listdir(base):
            continue
        nqn = kfs.read(f"{base}/subsysnqn", default="")
        serial = kfs.read(f"{base}/serial", default="")
        if not nqn.startswith(NQN_PREFIX) or nqn != expected_nqn:
            raise SafetyError(
                f"refusing IO to {dev_path}: subsystem {nqn or '?'} was not created by this run"
            )
        if serial != expected_serial:
            raise SafetyError(
                f"refusing IO to {dev_path}: serial {serial!r} is not this run's "
                f"({expected_serial!r})"
            )
        return
    raise SafetyError(f"refusing IO to {dev_path}: no NVMe subsystem owns {name}")


def require_harness_devices(
    dev_paths: list[str], expected_nqn: str, expected_serial: str, kfs: KernelFs
) -> None:
    """``require_harness_device`` for each of ``dev_paths`` (every head of a run with several
    namespaces); SafetyError for the first that is not this run's, and for an empty list."""
    if not dev_paths:
        raise SafetyError(f"refusing IO: {expected_nqn} has no head to check")
    for dev_path in dev_paths:
        require_harness_device(dev_path, expected_nqn, expected_serial, kfs)

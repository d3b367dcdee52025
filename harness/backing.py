"""Backing stores for the target's namespace, on a tmpfs of our own:

- ``file``: a sparse file, opened by nvmet with buffered IO (tmpfs has no O_DIRECT on 6.1);
- ``dm``: a device-mapper linear device over a loop device of that file. It can be
  suspended (``dmsetup suspend``): IO to the namespace then stops answering on every path,
  the harness's way to provoke a hang on purpose (fault ``backing_stall``).

The tmpfs is mounted at a path that starts with MOUNT_PREFIX and dm devices are named with
DM_PREFIX so ``clean`` can find them after a killed run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.procs import run

MOUNT_PREFIX = "/run/nvmfh-backing"
NULLB_CONFIGFS = "/sys/kernel/config/nullb"
NULLB_PREFIX = "nvmfh"


DM_PREFIX = "nvmfh-"
DM_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Backing:
    """Where the namespace's data lives and how nvmet must open it."""

    device_path: str
    buffered_io: bool  # a file on tmpfs has no O_DIRECT: nvmet must use buffered IO
    mountpoint: str = ""
    dm_name: str = ""
    loop_device: str = ""


def create_dm_backing(run_id: str, size_mib: int) -> Backing:
    """A dm-linear device over a loop device of a tmpfs file (suspendable)."""
    for module in ("loop", "dm-mod"):  # /dev/loop-control and device-mapper may be modules
        run(["modprobe", module], timeout_s=60)
    file_backing = create_file_backing(run_id, size_mib)
    try:
        loop = run(["losetup", "--find", "--show", file_backing.device_path], timeout_s=30)
        if not loop.ok:
            raise HarnessError(f"losetup failed: {loop.one_line_error()}")
        loop_device = loop.stdout.strip()
        name = f"{DM_PREFIX}{run_id}"
        table = f"0 {size_mib * 2048} linear {loop_device} 0"
        created = run(["dmsetup", "create", name, "--table", table], timeout_s=DM_TIMEOUT_S)
        if not created.ok:
            run(["losetup", "-d", loop_device], timeout_s=30)
            raise HarnessError(
                f"dmsetup create failed: {created.one_line_error()}",
                hint="needs dm-mod and dmsetup (apt-get install dmsetup)",
            )
    except BaseException:
        remove_backing(file_backing)
        raise
    return Backing(
        device_path=f"/dev/mapper/{name}",
        buffered_io=False,
        mountpoint=file_backing.mountpoint,
        dm_name=name,
        loop_device=loop_device,
    )


def suspend(backing: Backing) -> None:
    """Stop the backing device answering: new IO queues in device-mapper."""
    if not backing.dm_name:
        raise HarnessError('backing_stall needs target.backing = "dm"')
    result = run(["dmsetup", "suspend", "--noflush", backing.dm_name], timeout_s=DM_TIMEOUT_S)
    if not result.ok:
        raise HarnessError(f"dmsetup suspend failed: {result.one_line_error()}")


def resume(backing: Backing) -> None:
    if not backing.dm_name:
        return
    result = run(["dmsetup", "resume", backing.dm_name], timeout_s=DM_TIMEOUT_S)
    if not result.ok:
        raise HarnessError(f"dmsetup resume failed: {result.one_line_error()}")


def _dm_names() -> list[str]:
    try:
        result = run(["dmsetup", "ls"], timeout_s=DM_TIMEOUT_S)
    except HarnessError:
        return []  # no dmsetup: we cannot have made dm devices either
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(DM_PREFIX)]


def _remove_dm(name: str) -> list[str]:
    errors: list[str] = []
    run(["dmsetup", "resume", name], timeout_s=DM_TIMEOUT_S)  # a suspended one cannot go
    removed = run(["dmsetup", "remove", "--retry", name], timeout_s=DM_TIMEOUT_S)
    if not removed.ok:
        errors.append(f"dmsetup remove {name}: {removed.one_line_error()}")
    return errors


def _our_loop_devices(prefix: str = MOUNT_PREFIX) -> list[str]:
    """Loop devices whose backing file lies on one of our tmpfs mounts (below ``prefix``)."""
    try:
        result = run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"], 30)
    except HarnessError:
        return []
    found = []
    for line in result.stdout.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[1].strip().startswith(prefix):
            found.append(parts[0])
    return found


def create_file_backing(run_id: str, size_mib: int) -> Backing:
    """Mount a tmpfs for this run and create a sparse backing file of ``size_mib``."""
    mountpoint = f"{MOUNT_PREFIX}-{run_id}"
    os.makedirs(mountpoint, exist_ok=True)
    result = run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib + 16}m,mode=0700", "nvmfh", mountpoint],
        timeout_s=30,
    )
    if not result.ok:
        raise HarnessError(f"cannot mount tmpfs at {mountpoint}: {result.one_line_error()}")
    image = Path(mountpoint) / "ns1.img"
    with image.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    return Backing(str(image), buffered_io=True, mountpoint=mountpoint)


def remove_backing(backing: Backing) -> list[str]:
    errors: list[str] = []
    if backing.dm_name:
        errors += _remove_dm(backing.dm_name)
    if backing.loop_device:
        detached = run(["losetup", "-d", backing.loop_device], timeout_s=30)
        if not detached.ok:
            errors.append(f"losetup -d {backing.loop_device}: {detached.one_line_error()}")
    if backing.mountpoint:
        errors += _unmount(backing.mountpoint)
    return errors


def _unmount(mountpoint: str) -> list[str]:
    errors: list[str] = []
    if mountpoint in our_mounts():
        result = run(["umount", mountpoint], timeout_s=30)
        if not result.ok:
            errors.append(f"umount {mountpoint}: {result.one_line_error()}")
            return errors
    try:
        os.rmdir(mountpoint)
    except FileNotFoundError:
        pass
    except OSError as exc:
        errors.append(f"rmdir {mountpoint}: {exc.strerror}")
    return errors


def our_mounts(mounts_file: str = "/proc/mounts") -> list[str]:
    """Mount points of tmpfs backings made by harness runs."""
    try:
        with open(mounts_file, encoding="utf-8") as handle:
            points = [line.split()[1] for line in handle if len(line.split()) > 1]
    except OSError:
        return []
    return [point for point in points if point.startswith(MOUNT_PREFIX)]


def find_leftovers() -> list[str]:
    found = [f"dm device {name}" for name in _dm_names()]
    found += [f"loop device {dev}" for dev in _our_loop_devices()]
    found += [f"mount {point}" for point in our_mounts()]
    parent = os.path.dirname(MOUNT_PREFIX)
    base = os.path.basename(MOUNT_PREFIX)
    try:
        entries = os.listdir(parent)
    except OSError:
        entries = []
    for entry in entries:
        path = os.path.join(parent, entry)
        if entry.startswith(base) and f"mount {path}" not in found:
            found.append(f"dir {path}")
    return found


def remove_leftovers() -> list[str]:
    errors: list[str] = []
    for name in _dm_names():
        errors += _remove_dm(name)
    for dev in _our_loop_devices():
        detached = run(["losetup", "-d", dev], timeout_s=30)
        if not detached.ok:
            errors.append(f"losetup -d {dev}: {detached.one_line_error()}")
    parent = os.path.dirname(MOUNT_PREFIX)
    base = os.path.basename(MOUNT_PREFIX)
    points = set(our_mounts())
    with contextlib.suppress(OSError):
        points.update(
            os.path.join(parent, entry) for entry in os.listdir(parent) if entry.startswith(base)
        )
    for point in sorted(points):
        errors.extend(_unmount(point))
    return errors


def remove_run(run_id: str) -> list[str]:
    """Remove a run's backing by its names, also when it was never recorded (an interrupt
    between ``mount`` and the return of create_*_backing)."""
    mountpoint = f"{MOUNT_PREFIX}-{run_id}"
    errors: list[str] = []
    name = f"{DM_PREFIX}{run_id}"
    if name in _dm_names():
        errors += _remove_dm(name)
    for dev in _our_loop_devices(mountpoint):
        detached = run(["losetup", "-d", dev], timeout_s=30)
        if not detached.ok:
            errors.append(f"losetup -d {dev}: {detached.one_line_error()}")
    if os.path.lexists(mountpoint):
        errors += _unmount(mountpoint)
    return errors

"""Backing stores for the target's namespace, on a tmpfs of our own:

- ``file``: a sparse file, opened by nvmet with buffered IO (tmpfs has no O_DIRECT on 6.1);
- ``dm``: a device-mapper linear device over a loop device of that file. It can be
  suspended (``dmsetup suspend``): IO to the namespace then stops answering on every path,
  the harness's way to provoke a hang on purpose (fault ``backing_stall``).

With several namespaces (``target.namespaces``) every namespace gets its own file
(``ns<N>.img``) on the run's one tmpfs, and with ``dm`` its own loop and dm device
(``nvmfh-<run id>-ns<N>`` for N > 1). ``resize`` grows or shrinks a backing in place (fault
``ns_resize``).

The tmpfs is mounted at a path that starts with MOUNT_PREFIX and dm devices are named with
DM_PREFIX so ``clean`` can find them after a killed run.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.procs import run

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
    mountpoint: str = ""  # set on the backing that owns the tmpfs (namespace 1's) only
    dm_name: str = ""
    loop_device: str = ""
    image_path: str = ""  # the sparse file below it all ("" in records made before)


def tmpfs_mib(size_mib: int, namespaces: int = 1) -> int:
    """The run's tmpfs size limit in MiB: every namespace's file, each with room to grow by
    RESIZE_HEADROOM_MIB (fault ``ns_resize``), and 16 MiB to spare. Files are sparse: the
    limit only caps what is written."""
    return namespaces * (size_mib + RESIZE_HEADROOM_MIB) + 16


RESIZE_HEADROOM_MIB = 64


def create_dm_backing(
    run_id: str, size_mib: int, namespaces: int = 1, nsid: int = 1, on: Backing | None = None
) -> Backing:
    """A dm-linear device over a loop device of a tmpfs file (suspendable). ``nsid`` > 1:
    another namespace's, its file on the tmpfs of ``on`` (namespace 1's backing)."""
    for module in ("loop", "dm-mod"):  # /dev/loop-control and device-mapper may be modules
        run(["modprobe", module], timeout_s=60)
    if on is None:
        file_backing = create_file_backing(run_id, size_mib, namespaces)
    else:
        file_backing = add_file_backing(on, nsid, size_mib)
    try:
        loop = run(["losetup", "--find", "--show", file_backing.device_path], timeout_s=30)
        if not loop.ok:
            raise HarnessError(f"losetup failed: {loop.one_line_error()}")
        loop_device = loop.stdout.strip()
        name = dm_name(run_id, nsid)
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
        image_path=file_backing.device_path,
    )


def dm_name(run_id: str, nsid: int = 1) -> str:
    """The dm device name of a run's namespace ``nsid`` (all start with DM_PREFIX + run id)."""
    return f"{DM_PREFIX}{run_id}" if nsid == 1 else f"{DM_PREFIX}{run_id}-ns{nsid}"


def size_bytes(backing: Backing) -> int:
    """The backing file's size in bytes; HarnessError when it is gone."""
    try:
        return os.path.getsize(backing.image_path or backing.device_path)
    except OSError as exc:
        raise HarnessError(f"cannot stat {backing.image_path}: {exc.strerror}") from exc


def resize(backing: Backing, new_bytes: int) -> None:
    """Grow or shrink a backing to ``new_bytes`` (a multiple of 512) in place.

    A file: truncate it (nvmet reads i_size at revalidate, io-cmd-file.c:
    nvmet_file_ns_revalidate). dm: the loop device follows its file (``losetup -c``) and the
    dm table is reloaded with the new length (nvmet reads bdev_nr_bytes,
    io-cmd-bdev.c:nvmet_bdev_ns_revalidate); when shrinking, the table shrinks first so it
    never maps past the loop device's end. Raises HarnessError when a step fails.
    """
    if new_bytes <= 0 or new_bytes % 512:
        raise HarnessError(f"cannot resize a backing to {new_bytes} bytes (not sectors)")
    image = backing.image_path or backing.device_path
    growing = new_bytes >= size_bytes(backing)
    if backing.dm_name and not growing:
        _reload_dm(backing, new_bytes)
    try:
        os.truncate(image, new_bytes)
    except OSError as exc:
        raise HarnessError(f"cannot resize {image}: {exc.strerror}") from exc
    if backing.loop_device:
        result = run(["losetup", "--set-capacity", backing.loop_device], timeout_s=30)
        if not result.ok:
            raise HarnessError(f"losetup --set-capacity failed: {result.one_line_error()}")
    if backing.dm_name and growing:
        _reload_dm(backing, new_bytes)


def _reload_dm(backing: Backing, new_bytes: int) -> None:
    table = f"0 {new_bytes // 512} linear {backing.loop_device} 0"
    for argv in (
        ["dmsetup", "reload", backing.dm_name, "--table", table],
        ["dmsetup", "resume", backing.dm_name],
    ):
        result = run(argv, timeout_s=DM_TIMEOUT_S)
        if not result.ok:
            raise HarnessError(f"{' '.join(argv[:2])} failed: {result.one_line_error()}")


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


def create_file_backing(run_id: str, size_mib: int, namespaces: int = 1) -> Backing:
    """Mount a tmpfs for this run (room for ``namespaces`` files, ``tmpfs_mib``) and create
    namespace 1's sparse backing file of ``size_mib``."""
    mountpoint = f"{MOUNT_PREFIX}-{run_id}"
    os.makedirs(mountpoint, exist_ok=True)
    limit = tmpfs_mib(size_mib, namespaces)
    result = run(
        ["mount", "-t", "tmpfs", "-o", f"size={limit}m,mode=0700", "nvmfh", mountpoint],
        timeout_s=30,
    )
    if not result.ok:
        raise HarnessError(f"cannot mount tmpfs at {mountpoint}: {result.one_line_error()}")
    image = Path(mountpoint) / "ns1.img"
    with image.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    return Backing(str(image), buffered_io=True, mountpoint=mountpoint, image_path=str(image))


def add_file_backing(first: Backing, nsid: int, size_mib: int) -> Backing:
    """Namespace ``nsid``'s sparse file of ``size_mib`` on the tmpfs of ``first`` (namespace
    1's backing, which owns the mount: this one has no mountpoint of its own)."""
    directory = os.path.dirname(first.image_path or first.device_path)
    image = Path(directory) / f"ns{nsid}.img"
    try:
        with image.open("wb") as handle:
            handle.truncate(size_mib * 1024 * 1024)
    except OSError as exc:
        raise HarnessError(f"cannot create {image}: {exc.strerror}") from exc
    return Backing(str(image), buffered_io=True, image_path=str(image))


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
    ours = dm_name(run_id)
    for name in _dm_names():  # namespace 1's, then nvmfh-<run id>-ns<N>
        if name == ours or name.startswith(f"{ours}-ns"):
            errors += _remove_dm(name)
    for dev in _our_loop_devices(mountpoint):
        detached = run(["losetup", "-d", dev], timeout_s=30)
        if not detached.ok:
            errors.append(f"losetup -d {dev}: {detached.one_line_error()}")
    if os.path.lexists(mountpoint):
        errors += _unmount(mountpoint)
    return errors

"""Backing stores for the target's namespace: a file on a tmpfs of our own, or null_blk.

The tmpfs is mounted at a path that starts with MOUNT_PREFIX so ``clean`` can find and
unmount it after a killed run.
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


@dataclass(frozen=True)
class Backing:
    """Where the namespace's data lives and how nvmet must open it."""

    device_path: str
    buffered_io: bool  # a file on tmpfs has no O_DIRECT: nvmet must use buffered IO
    mountpoint: str = ""


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
    if not backing.mountpoint:
        return []
    return _unmount(backing.mountpoint)


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
    found = [f"mount {point}" for point in our_mounts()]
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

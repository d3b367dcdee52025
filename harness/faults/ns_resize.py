"""``ns_resize``: a namespace's backing grows under IO and nvmet revalidates its size; the
host must see the new capacity on the head and every per-path disk. Restore shrinks it back.

Kernel facts (6.1): writing ``revalidate_size`` makes nvmet re-read the size (configfs.c:
nvmet_ns_revalidate_size_store -> core.c:nvmet_ns_revalidate) and, when it changed, send a
Namespace Attribute Changed AEN to every controller (core.c:nvmet_ns_changed). The host
rescans (core.c:nvme_scan_work -> nvme_validate_ns -> nvme_update_ns_info_block), sets the
per-path disk's and the head's capacity (set_capacity_and_notify), and marks paths whose
capacity differs from the head's not ready until their own scan ran
(multipath.c:nvme_mpath_revalidate_paths): IO meanwhile waits on the requeue list.
fio keeps to the size it started with, so neither step may fail an IO.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from harness.bed import backing as backing_mod
from harness.bed.testbed import NSID
from harness.core.errors import HarnessError
from harness.faults.base import Fault, Param, register

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed
    from harness.config.campaign import CampaignConfig

POLL_S = 0.05


def disks_of(bed: Testbed, nsid: int) -> tuple[str | None, list[str]]:
    """(head, per-path disks on live controllers) of namespace ``nsid`` now; head None
    when the host has none."""
    assert bed.host is not None
    device = bed.device()
    if device is None:
        return None, []
    paths = [
        disk
        for ctrl in device.controllers
        if ctrl.state == "live"
        for disk in ctrl.path_disks
        if bed.host.nsid(disk) == nsid
    ]
    return device.head_for(nsid), paths


def wait_capacity(bed: Testbed, nsid: int, sectors: int, timeout_s: float) -> float:
    """Wait until namespace ``nsid``'s head and every per-path disk on a live controller show
    ``sectors`` (/sys/block/<disk>/size, 512-byte units); returns the seconds it took.
    Raises HarnessError naming what still showed another size after ``timeout_s``."""
    assert bed.host is not None
    start = time.monotonic()
    while True:
        head, paths = disks_of(bed, nsid)
        sizes = {disk: bed.host.disk_sectors(disk) for disk in ([head] if head else []) + paths}
        if head is not None and paths and all(size == sectors for size in sizes.values()):
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            shown = ", ".join(f"{disk}={size}" for disk, size in sizes.items()) or "no disks"
            raise HarnessError(
                f"namespace {nsid} did not show {sectors} sectors on the host in "
                f"{timeout_s:g} s ({shown})"
            )
        time.sleep(POLL_S)


@register
class NsResize(Fault):
    name = "ns_resize"
    restore_order = 40
    inject_summary = "the namespace's backing grows by grow_mib; nvmet revalidate_size"
    restore_summary = "shrinks back to its size; revalidate_size"
    requires = ("a namespace (target.namespaces >= nsid)",)
    params = {
        "grow_mib": Param(
            int, 16, "MiB the backing grows by", minimum=1, maximum=backing_mod.RESIZE_HEADROOM_MIB
        ),
        "nsid": Param(int, NSID, "the namespace to resize (1 = fio's)", minimum=1, maximum=8),
        "timeout_s": Param(
            float, 15.0, "seconds the host may take to show the new size", minimum=0.1
        ),
    }

    def __init__(self, bed: Testbed) -> None:
        super().__init__(bed)
        self._original: dict[int, int] = {}  # nsid -> backing bytes before the first inject

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        for index, step in enumerate(config.steps):
            nsid = dict(step.args).get("nsid", NSID) if step.fault == cls.name else NSID
            if nsid > config.target.namespaces:
                return (
                    f"steps[{index}]: ns_resize of namespace {nsid} needs target.namespaces "
                    f">= {nsid} (it is {config.target.namespaces})"
                )
        return None

    def inject(self, path: int) -> None:
        nsid = int(self.args["nsid"])
        backing = self.bed.backing_of(nsid)
        original = self._original.setdefault(nsid, backing_mod.size_bytes(backing))
        grown = original + int(self.args["grow_mib"]) * 1024 * 1024
        self._resize(nsid, grown, f"grew from {original // 512} to")

    def restore(self, path: int) -> None:
        nsid = int(self.args["nsid"])
        if nsid not in self._original:
            return
        self._resize(nsid, self._original[nsid], "shrank back to")
        del self._original[nsid]

    def _resize(self, nsid: int, new_bytes: int, how: str) -> None:
        """Resize the backing, revalidate, and wait for the host (a note with the time)."""
        assert self.bed.target is not None
        backing_mod.resize(self.bed.backing_of(nsid), new_bytes)
        self.bed.target.revalidate_size(self.bed.nqn, nsid)
        took = wait_capacity(self.bed, nsid, new_bytes // 512, float(self.args["timeout_s"]))
        self.notes.append(
            f"ns_resize: namespace {nsid} {how} {new_bytes // 512} sectors; "
            f"head and paths showed it after {took:.2f} s"
        )

    def restore_everything(self) -> list[str]:
        errors: list[str] = []
        if self.bed.target is None:
            return errors
        for nsid, original in list(self._original.items()):
            try:
                backing_mod.resize(self.bed.backing_of(nsid), original)
                self.bed.target.revalidate_size(self.bed.nqn, nsid)
                del self._original[nsid]
            except HarnessError as exc:
                errors.append(f"ns_resize restore of namespace {nsid}: {exc}")
        return errors

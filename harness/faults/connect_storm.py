"""``connect_storm``: rapid disconnect/connect cycles of one path's controller.

Each cycle deletes the path's controller through sysfs and connects the path again at once,
with the run's connect options. Waits are only what the kernel needs: the delete is
synchronous (core.c:nvme_sysfs_delete -> nvme_delete_ctrl_sync) but refused with EBUSY
until a new controller has started once (NVME_CTRL_STARTED_ONCE), and the connect returns
once the controller is live (fabrics.c:nvmf_dev_write) with its namespace scan still queued
(core.c:nvme_start_ctrl -> nvme_queue_scan), so the next delete races that scan.
"""

from __future__ import annotations

import time

from harness.core.errors import HarnessError, KernelFsError
from harness.faults.base import Fault, Param, controller_of, register, require_controller

# The kernel reuses the lowest free instance (nvmeX) and nvmet the lowest free cntlid, so a
# cycle's new controller usually has the old one's name: its notes say what each cycle took.
GONE_TIMEOUT_S = 30.0  # a synchronous delete leaves nothing; a stuck one is a finding
BUSY_TIMEOUT_S = 5.0  # EBUSY until the controller has started once
POLL_S = 0.02


@register
class ConnectStorm(Fault):
    name = "connect_storm"
    inject_summary = (
        "args.count (default 5) rapid cycles on the path: host deletes its controller and "
        "connects again at once (each delete races the last connect's namespace scan)"
    )
    restore_summary = "the path connected again if a cycle left it without a controller"
    params = {
        "count": Param(
            int, 5, "delete+connect cycles of the path's controller", minimum=1, maximum=100
        )
    }

    def inject(self, path: int) -> None:
        """``count`` cycles; HarnessError naming the cycle when a delete or connect fails
        (the path may then be left without a controller: restore connects it)."""
        count = int(self.args["count"])
        endpoint = self.bed.endpoints[path]
        ctrl = require_controller(self.bed, path)
        started = time.monotonic()
        made: list[str] = []
        delete_s: list[float] = []
        connect_s: list[float] = []
        for cycle in range(1, count + 1):
            where = f"connect_storm cycle {cycle} of {count} on path {path}"
            began = time.monotonic()
            self._delete(ctrl, where)
            self._wait_gone(path, where)
            deleted = time.monotonic()
            delete_s.append(deleted - began)
            try:
                ctrl = self.bed.connect(endpoint)
            except HarnessError as exc:
                raise HarnessError(f"{where}: {exc.message}", hint=exc.hint) from exc
            connect_s.append(time.monotonic() - deleted)
            made.append(ctrl)
        elapsed = time.monotonic() - started
        self.notes.append(
            f"connect_storm path {path}: {count} cycles in {elapsed:.2f} s, "
            f"delete_s {_seconds(delete_s)}, connect_s {_seconds(connect_s)}, "
            f"controllers {' '.join(made)}"
        )

    def restore(self, path: int) -> None:
        """Connect the path when it has no controller (waiting out one being deleted)."""
        self._wait_gone_or_present(path)
        if controller_of(self.bed, path) is None:
            self.bed.connect(self.bed.endpoints[path])

    def _delete(self, ctrl: str, where: str) -> None:
        host = self.bed.host
        assert host is not None
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                host.delete_controller(ctrl)
                return
            except KernelFsError as exc:
                if "busy" not in exc.message.lower() or time.monotonic() > deadline:
                    raise HarnessError(f"{where}: {exc.message}") from exc
            time.sleep(POLL_S)

    def _wait_gone(self, path: int, where: str) -> None:
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while controller_of(self.bed, path) is not None:
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{where}: the deleted controller is still there after {GONE_TIMEOUT_S:g} s"
                )
            time.sleep(POLL_S)

    def _wait_gone_or_present(self, path: int) -> None:
        """Until the path's controller is not being deleted (or GONE_TIMEOUT_S)."""
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while time.monotonic() < deadline:
            device = self.bed.device()
            ctrl = device.controller_for(self.bed.endpoints[path]) if device else None
            if ctrl is None or not ctrl.state.startswith("deleting"):
                return
            time.sleep(POLL_S)


def _seconds(values: list[float]) -> str:
    """``0.12/0.30/0.08``: seconds per cycle, two decimals."""
    return "/".join(f"{value:.2f}" for value in values)

"""``ctrl_reset``: the host resets one path's controller (it reconnects by itself).

The reset_controller write is synchronous (core.c:nvme_sysfs_reset -> nvme_reset_ctrl_sync
flush_work()s the reset, and tcp.c:nvme_reset_ctrl_work reconnects inside it): it returns
with the controller live again. ``args.wait = false`` writes it from a separate process
instead and returns once the controller has left live, so the next step of a sequence can
wait for the reset's "connecting" and land in it; restore reaps that process.
"""

from __future__ import annotations

import subprocess
import time
from typing import TYPE_CHECKING

from harness.bed.host import CTRL_CLASS
from harness.core.errors import HarnessError
from harness.faults.base import Fault, Param, register, require_controller

LEAVE_LIVE_TIMEOUT_S = 10.0
WRITER_TIMEOUT_S = 60.0
POLL_S = 0.005

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed


@register
class CtrlReset(Fault):
    name = "ctrl_reset"
    inject_summary = "host resets the path's controller (reset_controller)"
    restore_summary = "nothing: the reset reconnects by itself"
    params = {
        "wait": Param(
            bool,
            True,
            "wait for the reset's reconnect (the sysfs write is synchronous); false: write "
            "from another process, return once the controller left live",
        )
    }

    def __init__(self, bed: Testbed) -> None:
        super().__init__(bed)
        self.writers: list[subprocess.Popen[bytes]] = []

    def inject(self, path: int) -> None:
        assert self.bed.host is not None
        ctrl = require_controller(self.bed, path)
        if self.args["wait"]:
            self.bed.host.reset_controller(ctrl)
            return
        attr = str(self.bed.kfs.path(f"{CTRL_CLASS}/{ctrl}/reset_controller"))
        self.writers.append(
            subprocess.Popen(
                ["sh", "-c", 'echo 1 > "$1"', "sh", attr],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        )
        deadline = time.monotonic() + LEAVE_LIVE_TIMEOUT_S
        while time.monotonic() < deadline:
            info = self.bed.host.controller(ctrl)
            if info is None or info.state != "live" or self.writers[-1].poll() is not None:
                return
            time.sleep(POLL_S)
        raise HarnessError(f"{ctrl} still live {LEAVE_LIVE_TIMEOUT_S:g} s after its reset")

    def restore(self, path: int) -> None:
        self.notes += self._reap()

    def restore_everything(self) -> list[str]:
        return self._reap()

    def _reap(self) -> list[str]:
        """Wait for the background reset writes; what each said when it failed."""
        said: list[str] = []
        for proc in self.writers:
            try:
                _, err = proc.communicate(timeout=WRITER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                said.append(f"reset write still blocked after {WRITER_TIMEOUT_S:g} s")
                continue
            if proc.returncode:
                said.append(f"reset write failed: {err.decode(errors='replace').strip()}")
        self.writers = [p for p in self.writers if p.returncode is None]
        return said

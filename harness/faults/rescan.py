"""``rescan``: the path's controller is told to rescan its namespaces, args.count times.

A write to ``/sys/class/nvme/nvmeX/rescan_controller`` queues the controller's scan work and
returns before it runs (core.c:nvme_sysfs_rescan -> nvme_queue_scan), so the next step of a
sequence lands DURING the scan. The kernel queues nothing unless the controller is live with
IO queues (nvme_queue_scan), and a write while the scan is still pending queues no second
one (queue_work on pending work): back-to-back writes coalesce; ``interval_s`` spaces them.
There is no scan state in sysfs to wait for; restore has nothing to undo.
"""

from __future__ import annotations

import time

from harness.faults.base import Fault, Param, register, require_controller


@register
class Rescan(Fault):
    name = "rescan"
    inject_summary = (
        "host tells the path's controller to rescan its namespaces (rescan_controller), "
        "args.count times args.interval_s apart; returns before the scan ran"
    )
    restore_summary = "nothing: the scan finishes by itself"
    params = {
        "count": Param(int, 1, "rescan_controller writes", minimum=1, maximum=1000),
        "interval_s": Param(
            float,
            0.0,
            "seconds between writes (0: back to back; they coalesce)",
            minimum=0.0,
            maximum=10.0,
        ),
    }

    def inject(self, path: int) -> None:
        """HarnessError when the path has no controller or a write fails."""
        host = self.bed.host
        assert host is not None
        ctrl = require_controller(self.bed, path)
        info = host.controller(ctrl)
        if info is not None and info.state != "live":
            self.notes.append(f"rescan {ctrl}: state {info.state}, the kernel queues no scan")
        count, interval_s = int(self.args["count"]), float(self.args["interval_s"])
        for index in range(count):
            if index and interval_s:
                time.sleep(interval_s)
            host.rescan_controller(ctrl)

    def restore(self, path: int) -> None:
        return None

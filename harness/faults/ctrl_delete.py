"""``ctrl_delete``: the host deletes one path's controller, then connects the path again."""

from __future__ import annotations

import time

from harness.faults.base import Fault, controller_of, register, require_controller

GONE_TIMEOUT_S = 30.0


@register
class CtrlDelete(Fault):
    name = "ctrl_delete"
    inject_summary = "host deletes the path's controller (delete_controller, synchronous)"
    restore_summary = "host connects the path again"

    def inject(self, path: int) -> None:
        assert self.bed.host is not None
        self.bed.host.delete_controller(require_controller(self.bed, path))

    def restore(self, path: int) -> None:
        deadline = time.monotonic() + GONE_TIMEOUT_S
        while controller_of(self.bed, path) is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        self.bed.connect(self.bed.endpoints[path])

"""``ctrl_reset``: the host resets one path's controller (it reconnects by itself)."""

from __future__ import annotations

from harness.faults.base import Fault, register, require_controller


@register
class CtrlReset(Fault):
    name = "ctrl_reset"
    inject_summary = "host resets the path's controller (reset_controller)"
    restore_summary = "nothing: the reset reconnects by itself"

    def inject(self, path: int) -> None:
        assert self.bed.host is not None
        self.bed.host.reset_controller(require_controller(self.bed, path))

    def restore(self, path: int) -> None:
        return None

"""``ns_disable``: the target disables the namespace (every path loses it), then enables it."""

from __future__ import annotations

from harness.bed.testbed import NSID
from harness.core.errors import HarnessError
from harness.faults.base import Fault, register


@register
class NsDisable(Fault):
    name = "ns_disable"
    restore_order = 30
    inject_summary = "target disables the namespace (all paths)"
    restore_summary = "enables it again"
    surviving_path = False  # no path can serve the IO: an EIO is a real loss

    def inject(self, path: int) -> None:
        assert self.bed.target is not None
        self.bed.target.set_namespace_enabled(self.bed.nqn, NSID, False)

    def restore(self, path: int) -> None:
        assert self.bed.target is not None
        self.bed.target.set_namespace_enabled(self.bed.nqn, NSID, True)

    def restore_everything(self) -> list[str]:
        if self.bed.target is None:
            return []
        try:
            self.bed.target.set_namespace_enabled(self.bed.nqn, NSID, True)
        except HarnessError as exc:
            return [str(exc)]
        return []

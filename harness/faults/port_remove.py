"""``port_remove``: the target unlinks the subsystem from one port, then links it again."""

from __future__ import annotations

from harness.core.errors import HarnessError
from harness.faults.base import Fault, register


@register
class PortRemove(Fault):
    name = "port_remove"
    restore_order = 10
    inject_summary = "target unlinks the subsystem from the path's port (configfs)"
    restore_summary = "links it again"

    def inject(self, path: int) -> None:
        assert self.bed.target is not None
        self.bed.target.unlink_port(self.bed.portid(path), self.bed.nqn)

    def restore(self, path: int) -> None:
        assert self.bed.target is not None
        self.bed.target.link_port(self.bed.portid(path), self.bed.nqn)

    def restore_everything(self) -> list[str]:
        errors: list[str] = []
        if self.bed.target is None:
            return errors
        for path in range(len(self.bed.endpoints)):
            try:
                self.bed.target.link_port(self.bed.portid(path), self.bed.nqn)
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

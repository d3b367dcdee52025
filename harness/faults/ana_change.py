"""``ana_change``: one port's ANA group goes inaccessible, then optimized again."""

from __future__ import annotations

from harness.errors import HarnessError
from harness.faults.base import Fault, register


@register
class AnaChange(Fault):
    name = "ana_change"
    restore_order = 20
    inject_summary = "the port's ANA group goes inaccessible"
    restore_summary = "back to optimized"

    def inject(self, path: int) -> None:
        assert self.bed.target is not None
        self.bed.target.set_ana_state(self.bed.portid(path), "inaccessible")

    def restore(self, path: int) -> None:
        assert self.bed.target is not None
        self.bed.target.set_ana_state(self.bed.portid(path), "optimized")

    def restore_everything(self) -> list[str]:
        errors: list[str] = []
        if self.bed.target is None:
            return errors
        for path in range(len(self.bed.endpoints)):
            try:
                self.bed.target.set_ana_state(self.bed.portid(path), "optimized")
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

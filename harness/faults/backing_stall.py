"""``backing_stall``: the namespace's device-mapper backing is suspended (a hang on purpose),
then resumed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.bed import backing as backing_mod
from harness.core.errors import HarnessError
from harness.faults.base import Fault, register

if TYPE_CHECKING:
    from harness.config.campaign import CampaignConfig


@register
class BackingStall(Fault):
    name = "backing_stall"
    restore_order = 30
    inject_summary = "the namespace's dm backing is suspended (a hang on purpose)"
    restore_summary = "resumed"
    surviving_path = False  # every path ends on the same stalled backing
    requires = ('target.backing = "dm"', "kernel module dm_mod")

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        if config.target.backing != "dm":
            return (
                'backing_stall needs target.backing = "dm" '
                "(a device-mapper device the harness can suspend)"
            )
        return None

    @classmethod
    def unmet_here(cls, module_exists: Callable[[str], bool]) -> str | None:
        return None if module_exists("dm_mod") else "no dm_mod module in this kernel"

    def inject(self, path: int) -> None:
        assert self.bed.backing is not None
        backing_mod.suspend(self.bed.backing)

    def restore(self, path: int) -> None:
        if self.bed.backing is not None:
            backing_mod.resume(self.bed.backing)

    def restore_everything(self) -> list[str]:
        if self.bed.backing is None:
            return []
        try:
            backing_mod.resume(self.bed.backing)
        except HarnessError as exc:
            return [str(exc)]
        return []

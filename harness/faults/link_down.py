"""``link_down``: one path's host-side link goes down, then up again."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.core.errors import HarnessError
from harness.faults.base import Fault, register

if TYPE_CHECKING:
    from harness.config.campaign import CampaignConfig


@register
class LinkDown(Fault):
    name = "link_down"
    restore_order = 10
    inject_summary = "the path's host-side veth goes down"
    restore_summary = "link up again"
    requires = ('target.network = "netns" (one veth per path) or target.transport = "rdma"',)

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        transport = getattr(config.target, "transport", "tcp")
        if config.target.network == "netns" or transport == "rdma":
            return None
        return (
            'link_down needs target.network = "netns" '
            "(on loopback a link fault would hit every path)"
        )

    def inject(self, path: int) -> None:
        assert self.bed.network is not None
        self.bed.network.set_link(path, up=False)

    def restore(self, path: int) -> None:
        assert self.bed.network is not None
        self.bed.network.set_link(path, up=True)

    def restore_everything(self) -> list[str]:
        network = self.bed.network
        if network is None or network.netns is None:
            return []
        errors = []
        for path in range(len(self.bed.endpoints)):
            try:
                network.set_link(path, True)
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

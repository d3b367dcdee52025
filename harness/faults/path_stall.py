"""``path_stall``: nothing the host sends on one path arrives (netem 100 % loss on its veth),
then the path carries traffic again. The controller stays until keep-alive or an IO timeout
notices (nvme_core io_timeout, keep_alive_tmo), then reconnects; IO meanwhile must fail
over to the other path."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from harness.bed.net import NetemSpec
from harness.core.errors import HarnessError
from harness.faults.base import Fault, register

if TYPE_CHECKING:
    from harness.config.campaign import CampaignConfig


@register
class PathStall(Fault):
    name = "path_stall"
    restore_order = 10  # traffic first: a rescan or reconnect needs it
    inject_summary = "netem drops every packet the host sends on the path (a stall, link up)"
    restore_summary = "the impairment removed"
    requires = ('target.network = "netns" over tcp (one veth per path)', "kernel module sch_netem")

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        if config.target.network != "netns" or config.target.transport != "tcp":
            return 'path_stall needs target.network = "netns" over tcp (one veth per path)'
        return None

    @classmethod
    def unmet_here(cls, module_exists: Callable[[str], bool]) -> str | None:
        return None if module_exists("sch_netem") else "no sch_netem module in this kernel"

    def inject(self, path: int) -> None:
        assert self.bed.network is not None
        self.bed.network.set_netem(path, NetemSpec.stall())

    def restore(self, path: int) -> None:
        assert self.bed.network is not None
        self.bed.network.clear_netem(path)

    def restore_everything(self) -> list[str]:
        network = self.bed.network
        if network is None or network.netns is None or not network.netem:
            return []
        errors = []
        for path in list(network.netem):
            try:
                network.clear_netem(path)
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

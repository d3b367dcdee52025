"""``path_netem``: one path gets slow or lossy (netem on the host side of its veth: a delay
with jitter, and a share of packets dropped), then normal again. Unlike ``path_stall`` the
path keeps working, badly: the host should keep the controller and, with iopolicy
round-robin, keep sending part of the IO there (multipath.c:nvme_round_robin_path has no
notion of latency in 6.1); requests slower than nvme_core io_timeout are aborted and retried
(core.c:nvme_timeout via tcp.c:nvme_tcp_timeout, up to max_retries)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.bed.net import NetemSpec
from harness.faults.base import Param, register
from harness.faults.path_stall import PathStall

if TYPE_CHECKING:
    from harness.config.campaign import CampaignConfig


@register
class PathNetem(PathStall):
    name = "path_netem"
    inject_summary = (
        "netem on the path's host-side veth: args.delay_ms +- args.jitter_ms, args.loss_pct % lost"
    )
    restore_summary = "the impairment removed"
    params = {
        "delay_ms": Param(
            float, 50.0, "delay added to each packet the host sends (ms)", minimum=0, maximum=60_000
        ),
        "jitter_ms": Param(
            float,
            0.0,
            "random +- variation of the delay (ms; needs delay_ms)",
            minimum=0,
            maximum=60_000,
        ),
        "loss_pct": Param(
            float,
            0.0,
            "share of packets dropped (percent; 100 is path_stall)",
            minimum=0,
            maximum=100,
        ),
    }

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        reason = super().unmet(config)
        return reason.replace("path_stall", cls.name) if reason else None

    def spec(self) -> NetemSpec:
        """The impairment of this inject's args (HarnessError for jitter without delay)."""
        return NetemSpec(
            delay_ms=float(self.args["delay_ms"]),
            jitter_ms=float(self.args["jitter_ms"]),
            loss_pct=float(self.args["loss_pct"]),
        )

    def inject(self, path: int) -> None:
        assert self.bed.network is not None
        self.bed.network.set_netem(path, self.spec())

"""Every fault that applies to NVMe/RDMA (soft-RoCE), injected under IO on an rdma bed: each
is restored and recorded with a verdict, and the run says its transport. Path faults that
need a veth of their own per path over tcp (path_stall, path_netem) do not apply: their
config check refuses rdma (faults/path_stall.py:unmet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.campaign.runner import Campaign
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.results import RESULTS_FILE, RUN_FILE, Verdict, read_records

RDMA_FAULTS = ["ctrl_delete", "ctrl_reset", "port_remove", "ana_change", "ns_disable"]
# Seen in both runs (2026-12-01, 6.1.192, TCG): after link_down's link up the rdma controller
# logged "Reconnecting in 1 seconds..." and then nothing for 30 s, not even the removal
# ctrl_loss_tmo 1 asks for (not_recovered): the reconnect attempt itself does not finish. Not
# yet understood (rxe's GID table after a link flap? rdma_cm address resolution?).
LINK_DOWN = pytest.param(
    "link_down",
    marks=pytest.mark.xfail(
        reason="the rdma reconnect after a link flap does not complete (2 of 2 runs)", strict=False
    ),
)


@pytest.mark.extended
@pytest.mark.usefixtures("rdma_modules")
@pytest.mark.parametrize("fault", [*RDMA_FAULTS, LINK_DOWN])
def test_fault_over_rdma(
    smoke_config: CampaignConfig, fault: str, kernel_variant: str, results_dir: Path
) -> None:
    config = config_mod.override(smoke_config, "target", transport="rdma")
    config = config_mod.override(config, "campaign", faults=[fault], iterations=2, hold_s=1.5)
    Campaign(config, results_dir, variant=kernel_variant).run()
    run = json.loads((results_dir / RUN_FILE).read_text())
    assert run["config"]["target"]["transport"] == "rdma", run["config"]["target"]
    records = list(read_records(results_dir / RESULTS_FILE))
    assert [r["fault"] for r in records] == [fault, fault]
    for record in records:
        keys = ("fault", "path", "verdict", "error", "kernel_examples")
        detail = json.dumps({k: record[k] for k in keys})
        assert record["verdict"] not in (Verdict.INFRA_ERROR, Verdict.NOT_RECOVERED), detail
        assert record["recovered"] and not record["hang"], detail
        assert record["fio_read_ios"] + record["fio_write_ios"] > 0, detail
        assert record["kernel_bug_lines"] == 0, detail
        if fault != "ns_disable":  # the one fault that leaves no path
            assert record["app_eio"] == 0, detail
    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["complete"] and not summary["teardown_errors"]

"""Every fault that applies to NVMe/RDMA (soft-RoCE), injected under IO on an rdma bed: each
is restored and recorded with a verdict, and the run says its transport. Path faults that
need a veth of their own per path over tcp (path_stall, path_netem) do not apply: their
config check refuses rdma (faults/path_stall.py:unmet)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import config as config_mod
from harness.campaign import Campaign
from harness.config import CampaignConfig
from harness.results import RESULTS_FILE, RUN_FILE, Verdict, read_records

RDMA_FAULTS = ["ctrl_delete", "ctrl_reset", "port_remove", "ana_change", "link_down", "ns_disable"]


@pytest.mark.extended
@pytest.mark.usefixtures("rdma_modules")
def test_every_fault_over_rdma(
    smoke_config: CampaignConfig, kernel_variant: str, results_dir: Path
) -> None:
    config = config_mod.override(smoke_config, "target", transport="rdma")
    config = config_mod.override(
        config, "campaign", faults=RDMA_FAULTS, iterations=len(RDMA_FAULTS), hold_s=1.5
    )
    Campaign(config, results_dir, variant=kernel_variant).run()
    run = json.loads((results_dir / RUN_FILE).read_text())
    assert run["config"]["target"]["transport"] == "rdma", run["config"]["target"]
    records = list(read_records(results_dir / RESULTS_FILE))
    assert [r["fault"] for r in records] == RDMA_FAULTS
    for record in records:
        detail = json.dumps(
            {k: record[k] for k in ("fault", "verdict", "error", "kernel_examples")}
        )
        assert record["verdict"] not in (Verdict.INFRA_ERROR, Verdict.NOT_RECOVERED), detail
        assert record["recovered"] and not record["hang"], detail
        assert record["fio_read_ios"] + record["fio_write_ios"] > 0, detail
        assert record["kernel_bug_lines"] == 0, detail
        if record["fault"] != "ns_disable":  # the one fault that leaves no path
            assert record["app_eio"] == 0, detail
    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["complete"] and not summary["teardown_errors"]

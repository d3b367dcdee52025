"""Each fault kind, injected under IO, is restored and recorded with a verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.campaign.runner import Campaign
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.results import RESULTS_FILE, Verdict, read_records
from harness.faults import fault_classes

# Faults run by a testcase of their own, with the setup they need; every other fault of the
# registry runs here (a new fault is covered by this testcase until it gets its own).
ELSEWHERE = {
    "backing_stall": "test_006_hang (a hang on purpose)",
    "ana_swap": "test_030_ana_states",
    "ns_remap": "test_034_namespaces (needs several namespaces)",
    "ns_resize": "test_034_namespaces",
    "iopolicy_switch": "test_035_policy_connect_scan",
    "connect_storm": "test_035_policy_connect_scan",
    "rescan": "test_035_policy_connect_scan",
}
# Faults on one path's veth: the netns network, held past keep-alive detection (5 s).
NETWORK_FAULTS = ("link_down", "path_stall", "path_netem")
LOOPBACK_FAULTS = [
    name for name in fault_classes() if name not in ELSEWHERE and name not in NETWORK_FAULTS
]


def _campaign(config: CampaignConfig, fault: str, iterations: int) -> CampaignConfig:
    hold_s = 1.5
    if fault in NETWORK_FAULTS:  # one veth per path; hold past keep-alive detection
        config = config_mod.override(config, "target", network="netns")
        hold_s = 7.0
    return config_mod.override(
        config, "campaign", faults=[str(fault)], iterations=iterations or 2, hold_s=hold_s
    )


# netem faults (path_stall, path_netem) are extended: testcase 021 samples netem in CI
SAMPLED = [
    pytest.param(f, marks=pytest.mark.extended) if f in ("path_stall", "path_netem") else f
    for f in [*LOOPBACK_FAULTS, *NETWORK_FAULTS]
]


@pytest.mark.parametrize("fault", SAMPLED, ids=str)
def test_fault_is_recorded(
    smoke_config: CampaignConfig,
    fault: str,
    iterations: int,
    kernel_variant: str,
    results_dir: Path,
) -> None:
    config = _campaign(smoke_config, fault, iterations)
    Campaign(config, results_dir, variant=kernel_variant).run()
    records = list(read_records(results_dir / RESULTS_FILE))
    assert len(records) == config.campaign.iterations
    for record in records:
        detail = json.dumps({k: record[k] for k in ("verdict", "error", "kernel_examples")})
        assert record["fault"] == str(fault)
        assert record["verdict"] not in (Verdict.INFRA_ERROR, Verdict.NOT_RECOVERED), detail
        assert record["recovered"], detail
        assert record["fio_read_ios"] + record["fio_write_ios"] > 0, detail
        assert record["inject_at_s"] > 0 and record["restore_at_s"] >= record["inject_at_s"]
        assert not record["hang"], detail
        assert record["kernel_bug_lines"] == 0, detail
    # each window's kernel log came from the log's own process, with its CPU cost
    assert sum(record["kmsg_cpu_s"] for record in records) > 0
    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["complete"] and not summary["teardown_errors"]

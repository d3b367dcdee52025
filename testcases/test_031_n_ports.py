"""N ports for real: a target with 4 or 6 ports (blktests nvme/057 uses 4, nvme/058 6), every
path live and ANA optimized, IO on every per-path disk under iopolicy round-robin, one port
removed under fio and linked again, and nothing left behind.

With round-robin the head sends each bio to the next usable path after the last one
(multipath.c:nvme_round_robin_path), so every per-path disk completes IO; a removed port
leaves its controller connecting (then deleted after ctrl_loss_tmo and reconnected by the
harness's recover), and the remaining paths keep carrying the IO meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.bed.testbed import Testbed, new_run_id
from harness.campaign.floor import wait_until
from harness.campaign.runner import Campaign
from harness.campaign.workload import FioJob, FioRun
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.results import RESULTS_FILE, RUN_FILE, Verdict, read_records
from harness.faults import FaultAction, FaultInjector, all_paths_ready

MOVED_IOS = 50  # IOs a path must complete to count as carrying IO
IO_WAIT_S = 90.0  # fio and 6 paths start slowly under TCG on a loaded host


def _config(smoke: CampaignConfig, paths: int, network: str) -> CampaignConfig:
    config = config_mod.override(smoke, "target", paths=paths, network=network)
    return config_mod.override(config, "host", iopolicy="round-robin")


def _moved(bed: Testbed, before: list[int], paths: list[int]) -> Callable[[], bool]:
    def check() -> bool:
        now = bed.path_ios(bed.device())
        return all(now[p] >= before[p] + MOVED_IOS for p in paths)

    return check


@pytest.mark.parametrize(
    ("paths", "network"),
    [
        (4, "loopback"),
        pytest.param(6, "loopback", marks=pytest.mark.extended),
        pytest.param(4, "netns", marks=pytest.mark.extended),
    ],
    ids=str,
)
def test_n_ports_carry_io_and_survive_a_port_removal(
    smoke_config: CampaignConfig, paths: int, network: str, results_dir: Path
) -> None:
    config = _config(smoke_config, paths, network)
    bed = Testbed(config, new_run_id())
    device = bed.up()
    try:
        assert bed.host is not None
        assert len(bed.endpoints) == paths
        assert len({(e.traddr, e.trsvcid) for e in bed.endpoints}) == paths
        assert len(device.controllers) == paths, device
        assert all_paths_ready(bed, device)
        assert bed.host.iopolicy(device) == "round-robin"
        sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size"))
        job = FioJob(filename=device.head_dev, size_bytes=sectors * 512, numjobs=2, iodepth=16)
        run = FioRun(job, results_dir)
        everyone = list(range(paths))
        try:
            start = bed.path_ios(bed.device())
            wait_until(_moved(bed, start, everyone), IO_WAIT_S, "IO on every path")
            victim = paths - 1
            survivors = [p for p in everyone if p != victim]
            injector = FaultInjector(bed)
            injector.inject(FaultAction("port_remove", victim))

            def victim_not_live() -> bool:
                found = bed.device()
                ctrl = found.controller_for(bed.endpoints[victim]) if found else None
                return ctrl is None or ctrl.state != "live"

            wait_until(victim_not_live, 30, f"path {victim} leaving live")
            during = bed.path_ios(bed.device())
            wait_until(_moved(bed, during, survivors), IO_WAIT_S, "IO on the other paths")
            injector.restore(FaultAction("port_remove", victim))
            assert injector.recover(60.0, lambda: False) is not None, "paths did not recover"
            after = bed.path_ios(bed.device())
            wait_until(_moved(bed, after, [victim]), IO_WAIT_S, f"IO on path {victim} again")
            assert run.running(), "fio exited"
        finally:
            result = run.stop()
        assert result.total_errors == 0, result.error_lines[:4]
        assert result.verify_failures == 0
        assert result.read_ios + result.write_ios > 0
        found = bed.device()
        assert found is not None and all_paths_ready(bed, found)
    finally:
        errors = bed.down()
    assert not errors, f"teardown errors: {errors}"
    assert bed.host is not None and not bed.host.controllers(bed.nqn)


@pytest.mark.extended
def test_a_campaign_over_four_ports_counts_io_per_path(
    smoke_config: CampaignConfig, kernel_variant: str, results_dir: Path
) -> None:
    """port_remove walks over the 4 paths (campaign.path alternate); each record counts the
    IO of all 4 paths before the fault, and every one carried some (round-robin)."""
    config = _config(smoke_config, 4, "loopback")
    config = config_mod.override(
        config, "campaign", faults=["port_remove"], iterations=4, path="alternate"
    )
    Campaign(config, results_dir, variant=kernel_variant).run()
    records = list(read_records(results_dir / RESULTS_FILE))
    assert [r["path"] for r in records] == [0, 1, 2, 3]
    for record in records:
        detail = json.dumps({k: record[k] for k in ("verdict", "error", "path_ios_before_fault")})
        assert record["verdict"] == Verdict.PASS, detail
        assert len(record["path_ios_before_fault"]) == 4, detail
        assert all(count > 0 for count in record["path_ios_before_fault"]), detail
        assert record["another_path_live"], detail
    run = json.loads((results_dir / RUN_FILE).read_text())
    assert len(run["paths"]) == 4
    assert len({(p["traddr"], p["trsvcid"]) for p in run["paths"]}) == 4
    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["complete"] and not summary["teardown_errors"]

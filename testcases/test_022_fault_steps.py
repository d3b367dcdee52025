"""Fault sequences ([[steps]]) run for real: a controller deleted while it is reconnecting
(its port went away first), and every path down then one back with IO queued meanwhile.
Each step's wait saw the kernel state it asked for, and everything was restored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.campaign.runner import Campaign
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.results import RESULTS_FILE, Verdict, read_records


def with_steps(config: CampaignConfig, steps: list[dict[str, Any]], **host: Any) -> CampaignConfig:
    data = config_mod.to_dict(config)
    data["campaign"].update(iterations=2, hold_s=0.0, settle_s=0.5, path="first")
    data["host"].update(host)
    data["steps"] = steps
    return config_mod.validate(data)


def run(config: CampaignConfig, variant: str, outdir: Path) -> list[dict[str, Any]]:
    Campaign(config, outdir, variant=variant).run()
    records = list(read_records(outdir / RESULTS_FILE))
    summary = json.loads((outdir / "summary.json").read_text())
    assert summary["complete"] and not summary["teardown_errors"], summary
    assert len(records) == config.campaign.iterations
    return records


def detail(record: dict[str, Any]) -> str:
    keys = ("verdict", "error", "steps", "kernel_examples")
    return json.dumps({k: record[k] for k in keys})


def test_ctrl_delete_while_reconnecting(
    smoke_config: CampaignConfig, kernel_variant: str, results_dir: Path
) -> None:
    config = with_steps(
        smoke_config,
        [
            {
                "fault": "port_remove",
                "paths": "chosen",
                "wait_for": "connecting",
                "wait_timeout_s": 15,
            },
            {"fault": "ctrl_delete", "paths": "chosen", "wait_for": "gone", "wait_timeout_s": 30},
        ],
        ctrl_loss_tmo=30,  # the controller keeps reconnecting until deleted
    )
    for record in run(config, kernel_variant, results_dir):
        assert record["fault"] == "port_remove+ctrl_delete"
        assert record["verdict"] == Verdict.PASS, detail(record)
        first, second, *restores = record["steps"]
        assert first["state"] == {"0": "connecting"}, detail(record)
        assert second["state"] == {"0": "gone"}, detail(record)
        assert [(r["step"], r["fault"]) for r in restores] == [
            (-1, "port_remove"),
            (-1, "ctrl_delete"),
        ]
        assert record["another_path_live"] and record["recovered"]


def test_all_paths_down_then_one_back_queues_io(
    smoke_config: CampaignConfig, kernel_variant: str, results_dir: Path
) -> None:
    # ctrl_loss_tmo -1 and no fast_io_fail_tmo: with no path the head requeues IO
    # (multipath.c:nvme_ns_head_submit_bio, nvme_available_path) until a path is back
    config = with_steps(
        smoke_config,
        [
            {"fault": "port_remove", "paths": "all", "wait_for": "connecting", "hold_s": 1.5},
            {
                "fault": "port_remove",
                "action": "restore",
                "paths": [1],
                "wait_for": "live",
                "wait_timeout_s": 20,
                "hold_s": 0.5,
            },
        ],
        ctrl_loss_tmo=-1,
    )
    records = run(config, kernel_variant, results_dir)
    for record in records:
        assert record["fault"] == "port_remove"
        assert not record["another_path_live"]
        assert record["app_eio"] == 0 and record["verdict"] == Verdict.PASS, detail(record)
        # the IO was held while no path was there (the hold is 1.5 s), not failed
        assert record["max_stall_s"] >= 1.0, detail(record)
        assert [r["step"] for r in record["steps"]] == [0, 1, -1]
        assert record["steps"][1]["state"] == {"1": "live"}
    # the kernel says why: printk-ratelimited (10 per 5 s), so a later iteration within 5 s of
    # the last burst may show none; the first one does
    assert records[0]["kernel_classes"].get("no_usable_path", 0) > 0, detail(records[0])

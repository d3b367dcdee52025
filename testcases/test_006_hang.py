"""A namespace whose backing stops answering: verdict "hang" with the stuck tasks' stacks,
and the campaign stops cleanly instead of hanging itself."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness.campaign.runner import Campaign
from harness.config import campaign as config_mod
from harness.core.results import RESULTS_FILE, Verdict, read_records

REPO = Path(__file__).resolve().parent.parent


def test_backing_stall_is_a_hang(kernel_variant: str, results_dir: Path) -> None:
    config = config_mod.load(REPO / "configs" / "hang-backing-stall.toml")
    started = time.monotonic()
    Campaign(config, results_dir, variant=kernel_variant).run()
    elapsed = time.monotonic() - started
    records = list(read_records(results_dir / RESULTS_FILE))
    assert len(records) == 1, "the campaign must stop after a hang"
    record = records[0]
    assert record["verdict"] == Verdict.HANG, json.dumps(record)
    assert record["hang"] and record["max_stall_s"] >= config.campaign.hang_timeout_s
    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["stop_reason"].startswith("hang")
    assert not summary["teardown_errors"]
    # It ended in bounded time: hold and recovery timeouts plus setup, not forever.
    assert elapsed < 180, f"took {elapsed:.0f} s"

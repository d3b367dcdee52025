"""Regression test for commit 88bac2c1a72b ("nvme-multipath: set BIO_REMAPPED on bios
remapped to per-path namespace disks").

The property the patch under test restores: while another path is live, taking one path
away mid-IO must not fail application IO.

Two ways to take the path away, each its own case:

- ``race-ctrl-delete-widened``: host-side controller deletion under round-robin IO, with the
  BPF race widener holding each remapped bio inside the window between path selection and
  the capacity check;
- ``race-ns-remove-path``: the current path's namespace removed by the host's scan while its
  controller stays live (numa iopolicy, no widener; the identity flip on stock nvmet).

On a kernel without the fix (``--kernel-variant unfixed``) each fails with EIO and the race's
failed bios seen; on a fixed kernel each passes. CI runs both on both variants and checks
every outcome. Where the kernel has BTF, the block-layer witness (BPF) must run and must
have seen a failed bio in every iteration in which the kernel printed the EOD-race line
(it sees more: the line is ratelimited, and since v6.17 not printed at all).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.campaign.runner import Campaign
from harness.campaign.widener import Widener, WidenerConfig
from harness.config import campaign as config_mod
from harness.core.results import RESULTS_FILE, read_records

REPO = Path(__file__).resolve().parent.parent
BTF = Path("/sys/kernel/btf/vmlinux")
RACE_CONFIGS = ["race-ctrl-delete-widened", "race-ns-remove-path"]


@pytest.mark.parametrize("scenario", RACE_CONFIGS)
def test_no_app_eio_while_another_path_is_live(
    scenario: str, iterations: int, kernel_variant: str, results_dir: Path
) -> None:
    config = config_mod.load(REPO / "configs" / f"{scenario}.toml")
    if iterations:
        config = config_mod.override(config, "campaign", iterations=iterations)
    widener = config.widener
    if widener.enabled and shutil.which("bpftrace") is None:
        pytest.skip("needs bpftrace (the widener)")

    def make_widener() -> Widener:
        settings = WidenerConfig(delay_us=widener.delay_us, sample_every=widener.sample_every)
        return Widener(settings, output_dir=results_dir)

    factory = make_widener if widener.enabled else None
    Campaign(config, results_dir, variant=kernel_variant, widener_factory=factory).run()
    records = list(read_records(results_dir / RESULTS_FILE))
    assert len(records) == config.campaign.iterations
    summary = json.loads((results_dir / "summary.json").read_text())
    if BTF.exists():
        assert summary["witness"]["running"], (
            f"the block-layer witness did not run: {summary['witness']['reason']}"
        )
        unseen = [
            r["iteration"] for r in records if r["eod_race_lines"] and not r["witness_events"]
        ]
        assert not unseen, (
            f"witness disagreement: the kernel printed the EOD-race line in iterations {unseen} "
            "but the block-layer witness saw no failed bio"
        )
    failed = [r for r in records if r["app_eio"] and r["another_path_live"]]
    quoted = [
        f"iteration {r['iteration']} ({r['fault']} path {r['path']}, {r['verdict']}): "
        + " | ".join(r["kernel_examples"][:3])
        for r in failed
    ]
    assert not failed, (
        f"application saw EIO while another path was live in {len(failed)} of "
        f"{len(records)} iterations on {records[0]['kernel_release']} "
        f"(nvme_core {records[0]['srcversion']}):\n" + "\n".join(quoted)
    )
    if widener.enabled:
        assert summary["widener"] and summary["widener"]["bios_delayed"] > 0, "no bio held"

"""p99 completion latency from fio's JSON, in FioResult and in the campaign's baseline."""

from __future__ import annotations

import json
import resource
from pathlib import Path
from typing import Any

import pytest

from harness.campaign import runner as campaign_mod
from harness.campaign.io_session import CampaignIo
from harness.campaign.runner import Campaign
from harness.campaign.workload import P99_KEY, FioJob, FioResult, p99_clat_us, parse_result
from harness.config.campaign import CampaignConfig, override
from harness.core.results import SUMMARY_FILE
from tests.test_workload import fio_job, fio_output


def with_clat(
    job: dict[str, Any], read_p99_ns: int | None, write_p99_ns: int | None
) -> dict[str, Any]:
    """Add clat_ns percentiles as fio 3.33 writes them (a few keys of the full set)."""
    for direction, p99 in (("read", read_p99_ns), ("write", write_p99_ns)):
        if p99 is None:
            continue
        job[direction]["clat_ns"] = {
            "min": 1000,
            "max": p99 * 3,
            "mean": p99 / 4,
            "N": job[direction]["total_ios"],
            "percentile": {"50.000000": p99 // 5, P99_KEY: p99, "99.900000": p99 * 2},
        }
    return job


def parsed(tmp_path: Path, *jobs: dict[str, Any]) -> FioResult:
    output = tmp_path / "fio.json"
    output.write_text(fio_output(*jobs))
    return parse_result(output, [], 0, False)


def test_p99_per_direction_is_the_largest_job_p99_in_us(tmp_path: Path) -> None:
    result = parsed(
        tmp_path,
        with_clat(fio_job(100, 100, 50.0, 50.0, 2000), 199_680, 7_840),
        with_clat(fio_job(100, 100, 50.0, 50.0, 2000), 150_000, 12_288),
    )
    assert result.read_p99_clat_us == 199.7
    assert result.write_p99_clat_us == 12.3
    assert result.p99_clat_us == 199.7


def test_p99_skips_a_direction_without_io(tmp_path: Path) -> None:
    # a read-only job: fio still prints a write section, with zero IOs and zero percentiles
    job = with_clat(fio_job(100, 0, 50.0, 0.0, 2000), 80_000, 0)
    result = parsed(tmp_path, job)
    assert result.read_p99_clat_us == 80.0
    assert result.write_p99_clat_us is None
    assert result.p99_clat_us == 80.0


def test_p99_absent_without_percentiles_or_json(tmp_path: Path) -> None:
    assert parsed(tmp_path, fio_job(10, 10, 5.0, 5.0, 2000)).p99_clat_us is None
    missing = parse_result(tmp_path / "none.json", [], None, True)
    assert missing.p99_clat_us is None
    assert missing.read_p99_clat_us is None and missing.write_p99_clat_us is None


@pytest.mark.parametrize(
    "bad", [None, "x", [], {"percentile": "no"}, {"percentile": {P99_KEY: "?"}}]
)
def test_p99_tolerates_malformed_clat(bad: Any) -> None:
    job = fio_job(10, 0, 5.0, 0.0, 1000)
    job["read"]["clat_ns"] = bad
    assert p99_clat_us([job], "read") is None


def test_baseline_and_summary_carry_p99_and_peak_rss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = override(CampaignConfig(), "campaign", baseline_s=2.5)
    campaign = Campaign(config, tmp_path)
    fio = FioResult(
        exit_code=0,
        killed=False,
        total_errors=0,
        eio=0,
        verify_failures=0,
        read_ios=500,
        write_ios=400,
        iops=360.04,
        runtime_s=2.5,
        first_error_at=None,
        read_p99_clat_us=210.5,
        write_p99_clat_us=99.0,
    )
    calls: list[tuple[FioJob, Path, float]] = []

    def fake_bare_fio(job: FioJob, workdir: Path, seconds: float) -> FioResult:
        calls.append((job, workdir, seconds))
        return fio

    job = FioJob("/dev/nvme0n1", 64 * 1024 * 1024)
    monkeypatch.setattr(campaign_mod, "bare_fio", fake_bare_fio)
    monkeypatch.setattr(CampaignIo, "fio_job", lambda self, device: job)
    campaign._baseline(device=None)  # type: ignore[arg-type]
    assert calls == [(job, tmp_path / "baseline", 2.5)]
    assert campaign.baseline is not None
    assert campaign.baseline["iops"] == 360.0
    assert campaign.baseline["p99_clat_us"] == 210.5
    assert campaign.baseline["read_p99_clat_us"] == 210.5
    assert campaign.baseline["write_p99_clat_us"] == 99.0

    campaign._write_summary(False, [], None)
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["baseline"]["p99_clat_us"] == 210.5
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert 0 < summary["max_rss_kib"] <= own

"""The test bed over NVMe/RDMA (soft-RoCE): both paths are rdma controllers, fio on the head
completes without errors, and teardown leaves no rxe device, veth or module it loaded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from harness.bed import rdma
from harness.bed.testbed import Testbed, new_run_id
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.procs import run


@pytest.mark.usefixtures("rdma_modules")
def test_bed_up_over_rdma(smoke_config: CampaignConfig, results_dir: Path) -> None:
    config = config_mod.override(smoke_config, "target", transport="rdma")
    loaded_by_bed: list[str] = []
    bed = Testbed(config, new_run_id())
    started = time.monotonic()
    try:
        device = bed.up()
        up_s = time.monotonic() - started
        assert bed.transport == "rdma"
        transports = {ctrl.name: ctrl.transport for ctrl in device.controllers}
        assert len(transports) == 2 and set(transports.values()) == {"rdma"}, transports
        assert sorted(rdma.rxe_devices()) == ["nvmfh_rxe0", "nvmfh_rxe1"]
        fio = run(
            [
                "fio",
                "--name=nvmf-harness-rdma",
                f"--filename={device.head_dev}",
                "--rw=randrw",
                "--bs=4k",
                "--iodepth=8",
                "--direct=1",
                "--ioengine=libaio",
                "--runtime=3",
                "--time_based",
                "--output-format=json",
            ],
            timeout_s=120,
        )
        assert fio.ok, fio.one_line_error()
        job = json.loads(fio.stdout[fio.stdout.find("{") :])["jobs"][0]
        ios = job["read"]["total_ios"] + job["write"]["total_ios"]
        assert job["error"] == 0 and ios > 0
        loaded_by_bed = list(bed.rdma_modules)
        facts = {
            "up_s": round(up_s, 2),
            "setup_phases": {k: round(v, 2) for k, v in bed.setup_phases.items()},
            "controllers": transports,
            "fio_ios_3s": ios,
            "record": bed.record_fields(),
        }
        (results_dir / "rdma-bed.json").write_text(json.dumps(facts, indent=2) + "\n")
        print(f"rdma bed: {json.dumps(facts)}")
    finally:
        errors = bed.down()
    assert not errors, f"teardown errors: {errors}"
    assert rdma.rxe_devices() == {}
    left = set(loaded_by_bed) & rdma.loaded_modules()
    assert left == set(), f"RDMA modules left loaded: {left}"
    assert rdma.recorded_modules() == []

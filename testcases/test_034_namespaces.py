"""Several namespaces on a real nvmet target: up and torn down, ns_resize under fio,
ns_remap seen by the host (target.namespaces, faults ns_resize and ns_remap).

Measurements go to ``results_dir/ns-measurements.json`` (sizes in sectors, times in s,
fio's IO and error counts) besides the assertions.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.bed import backing as backing_mod
from harness.bed.target import NVMET
from harness.bed.testbed import NSID, Testbed, new_run_id
from harness.campaign.kmsg import KmsgReader
from harness.campaign.runner import Campaign
from harness.campaign.workload import FioJob, FioRun
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.results import RESULTS_FILE, Verdict, read_records
from harness.faults import FaultAction, FaultInjector

NAMESPACES = 3
WAIT_S = 30.0


def _config(smoke: CampaignConfig) -> CampaignConfig:
    config = config_mod.override(smoke, "target", namespaces=NAMESPACES, size_mib=64)
    return config_mod.override(config, "workload", numjobs=1, iodepth=8)


@pytest.fixture
def bed(smoke_config: CampaignConfig) -> Iterator[Testbed]:
    bed = Testbed(_config(smoke_config), new_run_id())
    with bed.running():
        yield bed


def _save(results_dir: Path, name: str, data: dict[str, Any]) -> None:
    path = results_dir / "ns-measurements.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = data
    path.write_text(json.dumps(saved, indent=1, sort_keys=True) + "\n")


def _fio(bed: Testbed, results_dir: Path) -> FioRun:
    device = bed.checked_device()
    sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size"))
    job = FioJob(filename=device.head_dev, size_bytes=sectors * 512, numjobs=1, iodepth=8)
    fio = FioRun(job, results_dir)
    deadline = time.monotonic() + WAIT_S * 2
    assert bed.host is not None
    while sum(bed.host.io_completed(d)[0] for c in device.controllers for d in c.path_disks) < 200:
        assert fio.running() and time.monotonic() < deadline, "fio never got going"
        time.sleep(0.1)
    return fio


def test_three_namespaces_up_and_torn_down(bed: Testbed) -> None:
    assert bed.host is not None and bed.target is not None
    device = bed.checked_device()
    nsids = sorted(bed.host.nsid(head) for head in device.heads)
    assert nsids == [1, 2, 3], device
    assert bed.host.nsid(device.head) == NSID, f"fio's head {device.head} is not namespace 1"
    for ctrl in device.controllers:
        assert ctrl.state == "live" and len(ctrl.path_disks) == NAMESPACES, ctrl
    identities = [bed.target.namespace_identity(bed.nqn, nsid) for nsid in bed.nsids]
    assert len({i.device_uuid for i in identities}) == NAMESPACES
    assert len({i.device_nguid for i in identities}) == NAMESPACES
    assert len({i.device_path for i in identities}) == NAMESPACES
    namespaces = bed.kfs.listdir(f"{NVMET}/subsystems/{bed.nqn}/namespaces")
    assert sorted(namespaces) == ["1", "2", "3"]
    for nsid in bed.nsids:  # the host's uuid of each head is the target's
        head = device.head_for(nsid)
        assert head is not None
        assert bed.host.disk_uuid(head) == identities[nsid - 1].device_uuid


def test_ns_resize_under_fio(bed: Testbed, results_dir: Path) -> None:
    assert bed.host is not None
    head = bed.checked_device().head
    before = bed.host.disk_sectors(head)
    injector = FaultInjector(bed)
    action = FaultAction("ns_resize", 0, (("grow_mib", 16),))
    fio = _fio(bed, results_dir)
    try:
        started = time.monotonic()
        injector.inject(action)
        grown = bed.host.disk_sectors(head)
        time.sleep(2.0)  # IO on the grown namespace
        injector.restore(action)
        shrunk = bed.host.disk_sectors(head)
        time.sleep(2.0)  # and on the shrunk one
        cycle_s = time.monotonic() - started
        assert fio.running(), "fio died"
    finally:
        result = fio.stop()
    notes = injector.take_notes()
    _save(
        results_dir,
        "ns_resize",
        {
            "sectors_before": before,
            "sectors_grown": grown,
            "sectors_after_restore": shrunk,
            "backing_bytes_after": backing_mod.size_bytes(bed.backing_of(NSID)),
            "fio_ios": result.read_ios + result.write_ios,
            "fio_errors": result.total_errors,
            "fio_eio": result.eio,
            "verify_failures": result.verify_failures,
            "cycle_s": round(cycle_s, 2),
            "notes": notes,
        },
    )
    assert grown == before + 16 * 2048, (before, grown)
    assert shrunk == before, (before, shrunk)
    assert result.total_errors == 0 and result.eio == 0, result.error_lines[:5]
    assert result.verify_failures == 0
    assert result.read_ios + result.write_ios > 0
    assert any("grew from" in note for note in notes), notes
    assert any("shrank back" in note for note in notes), notes


@pytest.mark.extended
def test_ns_remap_seen_by_host(bed: Testbed, results_dir: Path) -> None:
    """Namespaces 1 and 2 swap uuid and nguid: the host drops both and brings them back
    under the swapped identities; restoring swaps back. No IO (fio's namespace is one of
    them: test_ns_remap_of_neighbours_under_fio has the IO)."""
    assert bed.host is not None and bed.target is not None
    one = bed.target.namespace_identity(bed.nqn, 1)
    two = bed.target.namespace_identity(bed.nqn, 2)
    injector = FaultInjector(bed)
    action = FaultAction("ns_remap", 0, (("first", 1), ("second", 2)))
    with KmsgReader() as kmsg:
        injector.inject(action)
        device = bed.checked_device()
        head_one, head_two = device.head_for(1), device.head_for(2)
        assert head_one and head_two
        assert bed.host.disk_uuid(head_one) == two.device_uuid
        assert bed.host.disk_uuid(head_two) == one.device_uuid
        for ctrl in device.controllers:
            assert len(ctrl.path_disks) == NAMESPACES, ctrl
        injector.restore(action)
        device = bed.checked_device()
        head_one = device.head_for(1)
        assert head_one and bed.host.disk_uuid(head_one) == one.device_uuid
        time.sleep(0.5)
        lines = [record.text for record in kmsg.read_available()]
    notes = injector.take_notes()
    changed = [line for line in lines if "identifiers changed" in line]
    removed_added = [line for line in lines if "nsid" in line or "IDs" in line]
    _save(
        results_dir,
        "ns_remap",
        {
            "identifiers_changed_lines": len(changed),
            "nsid_lines": removed_added[:20],
            "notes": notes,
        },
    )
    assert bed.target.namespace_identity(bed.nqn, 1) == one
    assert bed.target.namespace_identity(bed.nqn, 2) == two
    assert any("swapped ids of namespaces 1 and 2" in note for note in notes), notes


@pytest.mark.extended
def test_ns_remap_of_neighbours_under_fio(bed: Testbed, results_dir: Path) -> None:
    """Namespaces 2 and 3 swap identifiers three times while fio runs on namespace 1:
    fio must not see an error (its namespace and paths are untouched)."""
    assert bed.host is not None
    injector = FaultInjector(bed)
    action = FaultAction("ns_remap", 0, (("first", 2), ("second", 3)))
    fio = _fio(bed, results_dir)
    cycles: list[float] = []
    try:
        for _ in range(3):
            started = time.monotonic()
            injector.inject(action)
            injector.restore(action)
            cycles.append(round(time.monotonic() - started, 2))
        assert fio.running(), "fio died"
    finally:
        result = fio.stop()
    notes = injector.take_notes()
    _save(
        results_dir,
        "ns_remap_neighbours",
        {
            "cycles_s": cycles,
            "fio_ios": result.read_ios + result.write_ios,
            "fio_errors": result.total_errors,
            "notes": notes,
        },
    )
    assert result.total_errors == 0, result.error_lines[:5]
    assert result.read_ios + result.write_ios > 0


@pytest.mark.extended
def test_ns_resize_campaign(
    smoke_config: CampaignConfig, results_dir: Path, kernel_variant: str
) -> None:
    """The campaign's record of ns_resize: pass, no EIO, the sizes in fault_notes."""
    config = config_mod.override(
        _config(smoke_config), "campaign", faults=["ns_resize"], iterations=2, hold_s=1.5
    )
    Campaign(config, results_dir, variant=kernel_variant).run()
    records = list(read_records(results_dir / RESULTS_FILE))
    assert len(records) == 2
    for record in records:
        detail = json.dumps({k: record.get(k) for k in ("verdict", "error", "fault_notes")})
        assert record["verdict"] == Verdict.PASS, detail
        assert record["app_eio"] == 0, detail
        assert any("grew from" in n for n in record["fault_notes"]), detail

"""The stale-write check (harness/stale_write.py) on a real head.

- Across failovers: a campaign with the check beside fio, ctrl_delete and port_remove on
  alternating paths; every iteration's check did IO and read no stale or foreign block.
- The negative control: the check must see staleness that is really there. Through the head
  a block gets generations 1 and 2 (O_DIRECT|O_DSYNC: acknowledged by the target); the
  target side reads its backing and must hold 2 (nvmet wrote through: with the file backing
  nvmet uses buffered IO into the tmpfs file's page cache, buffered_io=1,
  io-cmd-file.c:nvmet_file_execute_rw; with dm it submits bios to the dm device,
  io-cmd-bdev.c); then generation 1 is written back into the backing on the target side
  (the file with pwrite + fdatasync, the dm device with O_DIRECT), which is what a late
  write of the older generation does. The next cycle's read through the head (O_DIRECT: no
  host page cache) must show generation 1 and count one stale write.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.bed.testbed import Testbed, new_run_id
from harness.campaign.runner import Campaign
from harness.campaign.stale_write import BLOCK_BYTES, DeviceIo, StaleWriteChecker, tail_region
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.results import RESULTS_FILE, read_records

FAULTS = ["ctrl_delete", "port_remove"]


@pytest.mark.extended
def test_no_stale_write_across_ctrl_delete_and_port_remove(
    smoke_config: CampaignConfig, iterations: int, kernel_variant: str, results_dir: Path
) -> None:
    config = config_mod.override(
        smoke_config, "campaign", faults=FAULTS, iterations=iterations or 4, name="stale-write"
    )
    config = config_mod.override(config, "workload", stale_write_check=True, stale_write_blocks=64)
    Campaign(config, results_dir, variant=kernel_variant).run()
    records = list(read_records(results_dir / RESULTS_FILE))
    assert len(records) == config.campaign.iterations
    facts = [
        {
            key: r[key]
            for key in (
                "iteration",
                "fault",
                "path",
                "verdict",
                "stale_writes",
                "stale_write_mismatches",
                "stale_write_ios",
                "stale_write_errors",
                "stale_write_max_io_s",
                "stale_write_examples",
            )
        }
        for r in records
    ]
    print(json.dumps(facts))
    assert {r["fault"] for r in records} == set(FAULTS)
    assert all(r["stale_write_ios"] > 0 for r in records), facts
    assert not [r for r in records if r["stale_writes"] or r["stale_write_mismatches"]], facts
    assert all(r["verdict"] != "stale_write" for r in records), facts


def _target_io(bed: Testbed) -> tuple[DeviceIo, str]:
    """The namespace's backing opened on the target side, and how (file: buffered IO +
    fdatasync, as nvmet's buffered_io=1 file backend sees it; dm: O_DIRECT)."""
    assert bed.backing is not None
    direct = not bed.backing.buffered_io
    io = DeviceIo(bed.backing.device_path, BLOCK_BYTES, direct=direct)
    return io, "O_DIRECT" if direct else "buffered+fdatasync"


@pytest.mark.parametrize("backing", ["file", pytest.param("dm", marks=pytest.mark.extended)])
def test_the_check_sees_an_older_generation_written_on_the_target(
    smoke_config: CampaignConfig, backing: str, results_dir: Path
) -> None:
    config = config_mod.override(smoke_config, "target", backing=backing)
    bed = Testbed(config, new_run_id())
    facts: dict[str, object] = {"backing": backing}
    try:
        device = bed.up()
        sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size"))
        lba_bytes = int(bed.kfs.read(f"/sys/block/{device.head}/queue/logical_block_size"))
        offset, _ = tail_region(sectors * 512, 1, BLOCK_BYTES)
        check = StaleWriteChecker(
            path=device.head_dev, offset=offset, blocks=1, run_id=bed.run_id, lba_bytes=lba_bytes
        )
        head = DeviceIo(device.head_dev, BLOCK_BYTES, direct=True)
        target, how = _target_io(bed)
        facts["target_io"] = how
        try:
            assert check.cycle_block(head, 0)  # generations 1 and 2 through the head
            on_target = check.codec.decode(offset, target.read(offset, BLOCK_BYTES))
            facts["target_holds_after_head_write"] = on_target
            assert on_target == 2, facts
            assert check.take_window().stale == 0
            target.write(offset, check.codec.encode(offset, 1))  # the older write lands late
            facts["head_reads_after_target_write"] = check.codec.decode(
                offset, head.read(offset, BLOCK_BYTES)
            )
            assert check.cycle_block(head, 0)  # its first read must flag it
            stats = check.take_window()
            facts["stale"], facts["examples"] = stats.stale, stats.examples
        finally:
            head.close()
            target.close()
        (results_dir / f"negative-control-{backing}.json").write_text(json.dumps(facts) + "\n")
        print(json.dumps(facts))
        assert facts["head_reads_after_target_write"] == 1, facts
        assert stats.stale == 1 and stats.mismatches == 0 and stats.errors == 0, facts
    finally:
        errors = bed.down()
    assert not errors, f"teardown errors: {errors}"

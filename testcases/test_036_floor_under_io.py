"""The kernel's floor under IO (``nvmf-harness floor --under-io``): bare operations timed
while the pace config's fio and passthrough readers run on the head, each repetition on the
path numa is using. The IO survives every operation (another path is live) and the floor
records what it did."""

from __future__ import annotations

from pathlib import Path

from harness.bed import testbed as testbed_mod
from harness.campaign import floor
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig

PACE = Path(__file__).resolve().parents[1] / "configs" / "pace.toml"


def _floor_under_io(
    config: CampaignConfig, fault: str, variant: str, results_dir: Path
) -> floor.FloorResult:
    result = floor.run_floor(
        testbed_mod.Testbed(config, testbed_mod.new_run_id()),
        2,
        variant=variant,
        names=floor.ops_of_fault_kinds([fault]),
        under_io=lambda bed: floor.start_workload(bed, results_dir),
    )
    floor.write_floor(result, results_dir)
    print(floor.render(result))
    assert result.under_io and result.path == "current" and result.iopolicy == "numa"
    assert not result.restore_errors, "\n".join(result.restore_errors)  # whole, not cut
    for op in result.ops:
        assert op.errors == [] and len(op.total_s) == 2, op
        assert len(op.paths) == 2 and set(op.paths) <= {0, 1}, op
    io = result.io
    assert io["fio_ran_to_the_end"], io
    assert io["fio_read_ios"] + io["fio_write_ios"] > 100, io
    assert io["passthru_commands"] > 0 or config.workload.passthru_readers == 0, io
    if variant != "unfixed":  # without the fix the operations may fail IO (the race)
        # another path stayed live through every operation: the application saw no error
        assert io["app_errors"] == 0 and io["verify_failures"] == 0, io
    return result


def test_floor_under_io_times_a_deletion_on_the_path_carrying_the_io(
    kernel_variant: str, results_dir: Path
) -> None:
    """Without the passthrough readers: on 6.1.192 a passthrough command through the head
    after the deletion of the controller that created the head can deadlock the kernel
    (docs/kernels.md, "Passthrough through the head after its first controller is
    deleted"): seen twice in full local runs of testcases/ on 2026-12-07."""
    config = config_mod.override(config_mod.load(PACE), "campaign", faults=["ctrl_delete"])
    config = config_mod.override(config, "workload", passthru_readers=0)
    result = _floor_under_io(config, "ctrl_delete", kernel_variant, results_dir)
    assert [op.name for op in result.ops] == ["connect", "ctrl_delete"]
    delete = result.ops[1]
    # numa keeps the survivor as its current path: the next deletion is the other path's
    assert sorted(delete.paths) == [0, 1], delete


def test_floor_under_io_times_a_namespace_removal_by_identity_flip(
    kernel_variant: str, results_dir: Path
) -> None:
    config = config_mod.override(config_mod.load(PACE), "campaign", faults=["ns_remove_path"])
    config = config_mod.override(config, "ns_remove_path", mechanism="identity_flip")
    result = _floor_under_io(config, "ns_remove_path", kernel_variant, results_dir)
    assert [op.name for op in result.ops] == ["ns_remove_path", "ns_restore_path"]

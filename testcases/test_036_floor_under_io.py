"""The kernel's floor under IO (``nvmf-harness floor --under-io``): the bare operations of a
controller deletion, timed while the pace config's fio and passthrough readers run on the
head, each repetition on the path numa is using. The IO survives every deletion (another
path is live) and the floor records what it did."""

from __future__ import annotations

from pathlib import Path

from harness import config as config_mod
from harness import floor
from harness import testbed as testbed_mod

PACE = Path(__file__).resolve().parents[1] / "configs" / "pace.toml"


def test_floor_under_io_times_a_deletion_on_the_path_carrying_the_io(
    kernel_variant: str, results_dir: Path
) -> None:
    config = config_mod.override(config_mod.load(PACE), "campaign", faults=["ctrl_delete"])
    result = floor.run_floor(
        testbed_mod.Testbed(config, testbed_mod.new_run_id()),
        2,
        variant=kernel_variant,
        names=floor.ops_of_fault_kinds(["ctrl_delete"]),
        under_io=lambda bed: floor.start_workload(bed, results_dir),
    )
    floor.write_floor(result, results_dir)
    print(floor.render(result))
    assert result.under_io and result.path == "current"
    assert result.restore_errors == []
    assert [op.name for op in result.ops] == ["connect", "ctrl_delete"]
    for op in result.ops:
        assert op.errors == [] and len(op.total_s) == 2, op
        assert len(op.paths) == 2 and set(op.paths) <= {0, 1}, op
    io = result.io
    assert io["fio_read_ios"] + io["fio_write_ios"] > 100, io
    assert io["passthru_commands"] > 0, io
    if kernel_variant != "unfixed":  # without the fix a deletion may fail IO (the race)
        # another path stayed live through every deletion: the application saw no error
        assert io["app_errors"] == 0 and io["verify_failures"] == 0, io

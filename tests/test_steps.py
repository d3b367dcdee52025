"""The step runner (harness/steps.py) on the fake kernel of tests/test_floor.py: actions in
order on the resolved paths, waits on controller and ANA state, holds, the automatic restores
in restore_order, and one-line errors naming the step."""

from __future__ import annotations

import time

import pytest

from harness.campaign.steps import SequenceRunner, sequence_name, step_paths
from harness.config.campaign import Step
from harness.core.errors import HarnessError
from harness.faults import FaultInjector
from tests.test_floor import FakeBed, FakeKernel, FakePath, as_testbed, fake_bed


def runner(bed: FakeBed, *steps: Step) -> SequenceRunner:
    return SequenceRunner(as_testbed(bed), FaultInjector(as_testbed(bed)), steps)


def never() -> bool:
    return False


def test_path_words_resolve_against_the_chosen_path() -> None:
    assert step_paths(Step("ctrl_delete"), chosen=1, paths=4) == [1]
    assert step_paths(Step("ctrl_delete", paths=("others",)), chosen=1, paths=4) == [0, 2, 3]
    assert step_paths(Step("ctrl_delete", paths=("all",)), chosen=1, paths=3) == [0, 1, 2]
    assert step_paths(Step("ctrl_delete", paths=(2, "chosen", 2)), chosen=0, paths=3) == [2, 0]


def test_sequence_name_lists_each_fault_once_in_first_use_order() -> None:
    steps = [Step("port_remove"), Step("ctrl_delete"), Step("port_remove", action="restore")]
    assert sequence_name(steps) == "port_remove+ctrl_delete"


def test_delete_while_reconnecting_then_everything_restored_ports_first() -> None:
    bed = fake_bed()
    run = runner(
        bed,
        Step("port_remove", paths=(0,), wait_for="connecting", wait_timeout_s=2.0),
        Step("ctrl_delete", paths=(0,)),
    ).run(chosen=0, started=time.monotonic(), should_stop=never)
    # the delete came while path 0 was connecting, after the unlink
    assert bed.kernel.log[:2] == ["unlink 6000", "delete nvme0"]
    first, second = run.records[0], run.records[1]
    assert first.wait_for == "connecting" and first.state == {"0": "connecting"}
    assert first.wait_s is not None and second.wait_s is None
    # automatic restores: the port (restore_order 10) before the controller (50)
    restores = [(r.step, r.fault) for r in run.records[2:]]
    assert restores == [(-1, "port_remove"), (-1, "ctrl_delete")]
    assert bed.kernel.log[2:] == ["link 6000", "connect 0"]
    assert run.faulted_paths == [0]
    assert run.spared_live  # path 1 was untouched and live
    assert run.first_inject_at_s is not None and run.last_restore_at_s is not None


def test_a_restore_step_is_not_restored_again() -> None:
    bed = fake_bed()
    runner(
        bed,
        Step("port_remove", paths=("all",)),
        Step("port_remove", action="restore", paths=(1,), wait_for="live"),
    ).run(chosen=0, started=time.monotonic(), should_stop=never)
    assert bed.kernel.log == ["unlink 6000", "unlink 6001", "link 6001", "link 6000"]


def test_all_paths_faulted_is_not_a_spared_path() -> None:
    run = runner(fake_bed(), Step("port_remove", paths=("all",))).run(
        chosen=0, started=time.monotonic(), should_stop=never
    )
    assert not run.spared_live
    # and a fault that takes the namespace from every path spares none either
    run = runner(fake_bed(), Step("ns_disable")).run(0, time.monotonic(), never)
    assert not run.spared_live


def test_args_reach_the_fault() -> None:
    bed = fake_bed()
    # ctrl_delete has no parameters: an unknown one fails at the step, one line
    with pytest.raises(HarnessError, match=r"steps\[0\] \(ctrl_delete inject\): .*no parameter"):
        runner(bed, Step("ctrl_delete", args=(("speed", 3),))).run(0, time.monotonic(), never)


def test_a_wait_that_times_out_names_the_step_and_what_each_path_showed() -> None:
    bed = FakeBed(FakeKernel([FakePath("nvme0"), FakePath("nvme1")], lag=1000))
    with pytest.raises(HarnessError) as caught:
        runner(bed, Step("port_remove", paths=(1,), wait_for="connecting", wait_timeout_s=0.1)).run(
            0, time.monotonic(), never
        )
    message = str(caught.value)
    assert message.startswith("steps[0] (port_remove inject): paths [1] did not reach")
    assert "path 1 live" in message
    # the port was linked again all the same
    assert bed.kernel.log == ["unlink 6001", "link 6001"]


def test_waits_on_ana_state() -> None:
    bed = fake_bed()
    sequence = runner(bed, Step("ana_change", paths=(1,), wait_for="ana:optimized"))
    run = sequence.run(0, time.monotonic(), never)
    assert run.records[0].state == {"1": "ana:optimized"}  # the fake's ANA never changes
    assert sequence.path_state(1, "live") == "live"
    bed.kernel.paths[1].ctrl = None
    assert sequence.path_state(1, "ana:optimized") == "gone"


def test_a_failing_restore_is_reported_after_every_restore_was_tried() -> None:
    bed = fake_bed()

    def refuse(portid: int, nqn: str) -> None:
        raise HarnessError("configfs says no")

    bed.target.link_port = refuse  # type: ignore[method-assign]
    with pytest.raises(HarnessError, match="restoring port_remove on path 0: configfs says no"):
        runner(bed, Step("port_remove", paths=(0,)), Step("ctrl_reset", paths=(1,))).run(
            0, time.monotonic(), never
        )
    assert bed.kernel.log[-1] == "reset nvme1"  # ctrl_reset has nothing to undo


def test_hold_ends_early_on_a_hang() -> None:
    started = time.monotonic()
    runner(fake_bed(), Step("ctrl_reset", paths=(0,), hold_s=30.0)).run(
        0, started, should_stop=lambda: time.monotonic() - started > 0.2
    )
    assert time.monotonic() - started < 5.0

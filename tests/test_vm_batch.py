"""Several campaigns per boot: which runs are done, crashed or go to the next boot.

The boots are fakes that do what the guest's ``run-plan`` does to the run directories
(started marker, exit status, results file), so the host's bookkeeping is tested on the
same files it reads after a real VM.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from harness.cli import app as cli
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE
from harness.vm import batch as vm_batch
from harness.vm.batch import GuestRun, RunState
from harness.vm.boot import guest_status

Behaviour = Callable[[GuestRun], str]  # "ok", "fail", "refused", "crash"


def runs(tmp_path: Path, count: int) -> list[GuestRun]:
    return [
        GuestRun(tmp_path / f"run{index}", ("--out", str(tmp_path / f"run{index}")), 100.0)
        for index in range(count)
    ]


class FakeVm:
    """Plays the guest: per boot, runs the plan in order until one crashes the VM."""

    def __init__(self, behaviour: Callable[[int, GuestRun], str]) -> None:
        self.behaviour = behaviour
        self.boots: list[tuple[list[Path], float]] = []

    def __call__(self, plan: Path, budget_s: float) -> str:
        planned = vm_batch.read_plan(plan)
        self.boots.append(([run.outdir for run in planned], budget_s))
        for run in planned:
            what = self.behaviour(len(self.boots), run)
            if what == "no-boot":
                return "vm-result"
            vm_batch.mark_started(run.outdir)
            if what == "crash":
                (run.outdir / RESULTS_FILE).write_text('{"iteration": 1}\n')
                return "vm-result"
            if what == "refused":
                vm_batch.mark_done(run.outdir, ExitCode.INFRA)
                continue
            (run.outdir / RESULTS_FILE).write_text('{"iteration": 1}\n')
            vm_batch.mark_done(run.outdir, 0 if what == "ok" else 1)
        return "vm-result"


def batch(tmp_path: Path, planned: list[GuestRun], vm: FakeVm) -> vm_batch.BatchOutcome:
    crashes: list[Path] = []

    def on_crash(outdir: Path, result: object) -> None:
        assert result == "vm-result"
        crashes.append(outdir)

    outcome = vm_batch.run_batch(planned, tmp_path, vm, on_crash)
    assert crashes == outcome.crashed
    return outcome


def test_all_runs_in_one_boot(tmp_path: Path) -> None:
    planned = runs(tmp_path, 3)
    vm = FakeVm(lambda boot, run: "fail" if run.outdir.name == "run0" else "ok")
    outcome = batch(tmp_path, planned, vm)
    assert outcome.boots == 1
    assert vm.boots == [([r.outdir for r in planned], 300.0)]
    assert outcome.statuses == {planned[0].outdir: 1, planned[1].outdir: 0, planned[2].outdir: 0}
    assert outcome.crashed == []


def test_a_crash_costs_the_later_runs_nothing(tmp_path: Path) -> None:
    """The stock variant panics the guest: the patched one still runs, in a second boot."""
    planned = runs(tmp_path, 3)
    vm = FakeVm(lambda boot, run: "crash" if run.outdir.name == "run0" else "ok")
    outcome = batch(tmp_path, planned, vm)
    assert outcome.boots == 2
    assert vm.boots[1] == ([planned[1].outdir, planned[2].outdir], 200.0)
    assert outcome.crashed == [planned[0].outdir]
    assert outcome.statuses[planned[0].outdir] == ExitCode.INFRA
    assert outcome.statuses[planned[1].outdir] == 0
    assert outcome.statuses[planned[2].outdir] == 0


def test_a_refused_module_swap_gets_a_fresh_boot(tmp_path: Path) -> None:
    planned = runs(tmp_path, 2)
    vm = FakeVm(lambda boot, run: "refused" if (boot, run.outdir.name) == (1, "run1") else "ok")
    outcome = batch(tmp_path, planned, vm)
    assert outcome.boots == 2
    assert vm.boots[1][0] == [planned[1].outdir]
    assert outcome.statuses == {planned[0].outdir: 0, planned[1].outdir: 0}


def test_refused_as_the_first_run_of_a_boot_is_final(tmp_path: Path) -> None:
    planned = runs(tmp_path, 2)
    vm = FakeVm(lambda boot, run: "refused" if run.outdir.name == "run1" else "ok")
    outcome = batch(tmp_path, planned, vm)
    assert outcome.boots == 2  # one retry, not a loop
    assert outcome.statuses[planned[1].outdir] == ExitCode.INFRA


def test_a_vm_that_never_boots_ends_the_batch(tmp_path: Path) -> None:
    planned = runs(tmp_path, 2)
    vm = FakeVm(lambda boot, run: "no-boot")
    outcome = batch(tmp_path, planned, vm)
    assert outcome.boots == 1
    assert outcome.statuses == {r.outdir: ExitCode.INFRA for r in planned}
    assert outcome.crashed == []
    assert outcome.not_started == planned[0].outdir  # the caller says so in one line


def test_a_later_boot_that_never_starts_names_its_run(tmp_path: Path) -> None:
    planned = runs(tmp_path, 2)

    def behaviour(boot: int, run: GuestRun) -> str:
        if boot == 1:
            return "crash" if run.outdir.name == "run0" else "ok"
        return "no-boot"

    outcome = batch(tmp_path, planned, FakeVm(behaviour))
    assert outcome.boots == 2 and outcome.crashed == [planned[0].outdir]
    assert outcome.not_started == planned[1].outdir


def test_a_batch_that_ran_is_not_a_vm_failure(tmp_path: Path) -> None:
    outcome = batch(tmp_path, runs(tmp_path, 2), FakeVm(lambda boot, run: "ok"))
    assert outcome.not_started is None


def test_run_state(tmp_path: Path) -> None:
    (run,) = runs(tmp_path, 1)
    assert vm_batch.run_state(run, first_in_boot=False) == RunState.PENDING
    vm_batch.mark_started(run.outdir)
    assert vm_batch.run_state(run, first_in_boot=False) == RunState.CRASHED
    vm_batch.mark_done(run.outdir, ExitCode.INFRA)
    assert vm_batch.run_state(run, first_in_boot=False) == RunState.PENDING
    assert vm_batch.run_state(run, first_in_boot=True) == RunState.DONE
    (run.outdir / RESULTS_FILE).write_text("{}\n")  # it ran: an infra error stands
    assert vm_batch.run_state(run, first_in_boot=False) == RunState.DONE
    vm_batch.forget_attempt(run.outdir)
    assert guest_status(run.outdir) is None
    assert not (run.outdir / vm_batch.STARTED_FILE).exists()


def test_plan_round_trip_and_bad_plan(tmp_path: Path) -> None:
    planned = runs(tmp_path, 2)
    vm_batch.write_plan(planned, tmp_path / "plan.json")
    assert vm_batch.read_plan(tmp_path / "plan.json") == planned
    (tmp_path / "bad.json").write_text('{"runs": [{"out": "x"}]}')
    with pytest.raises(HarnessError, match="cannot read the run plan"):
        vm_batch.read_plan(tmp_path / "bad.json")


def test_guest_run_plan_marks_each_run(tmp_path: Path) -> None:
    """The guest side, for real: each run's status lands in its directory, also for a run
    that fails at once (here a missing config: exit 2, one line, the next run still runs)."""
    planned = [
        GuestRun(
            tmp_path / name,
            ("--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / name)),
            10.0,
        )
        for name in ("a", "b")
    ]
    vm_batch.write_plan(planned, tmp_path / "plan.json")
    assert cli.main(["run-plan", str(tmp_path / "plan.json")]) == ExitCode.OK
    for run in planned:
        assert guest_status(run.outdir) == ExitCode.USAGE
        assert (run.outdir / vm_batch.STARTED_FILE).exists()

"""Several campaigns in one VM boot: compare's two module variants, scenarios' configs.

Under qemu TCG a boot costs ~28 s before the first harness line, more than a test bed
(~3 s). So the host writes a plan, a JSON list of ``nvmf-harness run`` argument lists, and
boots once; in the guest ``nvmf-harness run-plan`` runs them back to back (each loads its
module variant: the swap works because a campaign leaves no controller behind), and marks
each run's directory when it starts and when it ends.

After the VM, each run is one of:

- done: it wrote its exit status;
- crashed: it started but wrote no status (the guest died or timed out in it): the caller
  records a ``kernel_crash``/``vm_timeout`` record there, as for a single-run VM;
- pending: it never started (an earlier run took the VM down), or it ended with an
  infrastructure error before writing any result while it was not the first run of its
  boot (a module swap the previous run's kernel state refused). The next boot runs those,
  so a crash on the stock variant never costs the patched one its run.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE, write_json_atomic
from harness.vm.boot import GUEST_EXIT_FILE as STATUS_FILE
from harness.vm.boot import guest_status

STARTED_FILE = "guest-started"


@dataclass(frozen=True)
class GuestRun:
    """One campaign of a plan: its results directory and its ``run`` arguments."""

    outdir: Path
    args: tuple[str, ...]
    budget_s: float  # VM seconds this run may need

    def to_dict(self) -> dict[str, object]:
        return {"out": str(self.outdir), "args": list(self.args), "budget_s": self.budget_s}


class RunState(StrEnum):
    DONE = "done"
    CRASHED = "crashed"
    PENDING = "pending"


def write_plan(runs: Sequence[GuestRun], path: Path) -> None:
    write_json_atomic(path, {"runs": [run.to_dict() for run in runs]})


def read_plan(path: Path) -> list[GuestRun]:
    """The guest's side: the runs of a plan file, checked."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        runs = [
            GuestRun(
                outdir=Path(str(entry["out"])),
                args=tuple(str(arg) for arg in entry["args"]),
                budget_s=float(entry["budget_s"]),
            )
            for entry in data["runs"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(f"cannot read the run plan {path}: {exc}") from exc
    return runs


def mark_started(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / STARTED_FILE).write_text("started\n")


def mark_done(outdir: Path, status: int) -> None:
    tmp = outdir / (STATUS_FILE + ".tmp")
    tmp.write_text(f"{status}\n")
    tmp.replace(outdir / STATUS_FILE)


def run_state(run: GuestRun, first_in_boot: bool) -> RunState:
    """What became of ``run`` in the boot that just ended (see the module docstring)."""
    status = guest_status(run.outdir)
    if status is None:
        return RunState.CRASHED if (run.outdir / STARTED_FILE).exists() else RunState.PENDING
    refused = status == ExitCode.INFRA and not (run.outdir / RESULTS_FILE).exists()
    if refused and not first_in_boot:
        return RunState.PENDING
    return RunState.DONE


def forget_attempt(outdir: Path) -> None:
    """Clear the markers of a run that goes to the next boot."""
    for name in (STARTED_FILE, STATUS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (outdir / name).unlink()


@dataclass
class BatchOutcome:
    statuses: dict[Path, int]  # exit status per run directory (ExitCode.INFRA when it crashed)
    crashed: list[Path]  # runs the guest died in
    boots: int
    # The run a boot ended before (it never started; it and the rest were not run), or None.
    not_started: Path | None = None


def run_batch(
    runs: Sequence[GuestRun],
    plan_dir: Path,
    boot: Callable[[Path, float], object],
    on_crash: Callable[[Path, object], None],
) -> BatchOutcome:
    """Run every campaign of ``runs`` in as few boots as they allow.

    ``boot(plan_file, budget_s)`` boots a VM that runs the plan and returns its result;
    ``on_crash(outdir, result)`` records a run the guest died in.
    """
    outcome = BatchOutcome(statuses={}, crashed=[], boots=0)
    pending = list(runs)
    while pending:
        outcome.boots += 1
        plan = plan_dir / f"plan-{outcome.boots}.json"
        write_plan(pending, plan)
        result = boot(plan, sum(run.budget_s for run in pending))
        still: list[GuestRun] = []
        for index, run in enumerate(pending):
            state = run_state(run, first_in_boot=index == 0)
            if state == RunState.DONE:
                status = guest_status(run.outdir)
                outcome.statuses[run.outdir] = ExitCode.INFRA if status is None else status
            elif state == RunState.CRASHED:
                on_crash(run.outdir, result)
                outcome.statuses[run.outdir] = ExitCode.INFRA
                outcome.crashed.append(run.outdir)
            else:
                forget_attempt(run.outdir)
                still.append(run)
        if still and still[0] == pending[0]:
            # The first run of this boot never started: the VM itself failed. Another boot
            # would fail alike; every remaining run is an infrastructure failure.
            for run in still:
                outcome.statuses[run.outdir] = ExitCode.INFRA
            outcome.not_started = still[0].outdir
            break
        pending = still
    return outcome

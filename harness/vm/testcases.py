"""``nvmf-harness vm-pytest``: pytest testcases/ inside the VM, in one VM or in N workers
(one VM and one group of the testcases each: harness/vm/workers.py)."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from harness.core.console import Say
from harness.core.exits import ExitCode
from harness.vm import workers as vm_workers
from harness.vm.boot import VmSpec, guest_python, run_in_vm
from harness.vm.campaigns import GUEST_CLI, vm_spec
from harness.vm.options import VmOptions

TESTCASES_BUDGET_S = 1500  # VM seconds for the testcases when no --timeout is given
# pytest's last line, with or without -q: "==== 3 passed, 1 skipped in 12.34s (0:00:12) ===="
# or "no tests ran in 0.01s". After it the VM must end within EXIT_GRACE_S (boot.py).
PYTEST_SUMMARY = re.compile(
    r"^(=+ )?((\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed|warnings?|rerun)"
    r"(, )?)+|no tests ran) in \d+(\.\d+)?s( \([\d:]+\))?( =+)?$"
)
WORKER_GRACE_S = 600  # beyond a worker's own VM timeout, before its child is killed


def run_testcases(
    vm: VmOptions, outdir: Path, pytest_args: Sequence[str], workers: int, say: Say
) -> int:
    """pytest testcases/ in the VM (``workers`` VMs when above 1), JUnit in ``outdir``.

    ``pytest_args`` go to the guest's pytest (a ``--`` among them is dropped); files or node
    ids of testcases/ among them run alone, else the whole directory. Returns pytest's exit
    status, or ExitCode.INFRA when the VM died or timed out. Raises HarnessError for a bad
    ``workers`` and the VM options vm_spec refuses.
    """
    vm_workers.check_workers(workers)
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    spec = vm_spec(vm, TESTCASES_BUDGET_S)
    extra = [arg for arg in pytest_args if arg != "--"]
    if workers > 1:
        return _run_workers(spec, vm.boot_timeout_s, outdir, extra, workers, say)
    chosen = any(arg.startswith("testcases/") for arg in extra)
    guest = [guest_python(), "-m", "pytest", *([] if chosen else ["testcases/"])]
    guest += [
        "-p",
        "no:cacheprovider",
        f"--junitxml={outdir / vm_workers.JUNIT_FILE}",
        f"--results-dir={outdir}",
        *extra,
    ]
    say(f"booting {spec.kernel} to run pytest testcases/; console: {outdir}/console.log")
    result = run_in_vm(
        spec,
        outdir,
        guest,
        on_line=print,
        boot_marker="test session starts",
        end_marker=PYTEST_SUMMARY,
    )
    if result.exit_stuck:
        say("pytest printed its summary but did not exit: its JUnit file is complete")
        return ExitCode.INFRA
    if result.crashed or result.timed_out:
        say("the VM died or timed out before pytest finished; see console.log")
        return ExitCode.INFRA
    return result.exit_status if result.exit_status is not None else ExitCode.INFRA


def _run_workers(
    spec: VmSpec,
    boot_timeout_s: float | None,
    outdir: Path,
    extra: list[str],
    workers: int,
    say: Say,
) -> int:
    """``vm-pytest --workers N``: N child vm-pytest runs at once, one VM and one group of
    testcases each; one JUnit file, one console.log and one exit status for all."""
    note = vm_workers.cores_note(workers, spec.cpus, os.cpu_count())
    if note:
        say(note)
    vm_options = ["--kernel", spec.kernel, "--memory", spec.memory, "--cpus", str(spec.cpus)]
    vm_options += ["--accel", spec.accel, "--timeout", str(spec.timeout_s)]
    if boot_timeout_s is not None:
        vm_options += ["--boot-timeout", str(boot_timeout_s)]
    dirs = [vm_workers.worker_dir(outdir, k) for k in range(1, workers + 1)]
    child = [sys.executable, *GUEST_CLI, "vm-pytest", *vm_options]
    argvs = [
        [*child, "--out", str(d), "--", *extra, *vm_workers.split_args(workers, k)]
        for k, d in enumerate(dirs, start=1)
    ]
    say(f"{workers} workers, one VM each ({spec.cpus} CPUs, {spec.memory}): {outdir}/worker-*")
    started = time.monotonic()
    # A worker's own VM timeout ends it first; this only catches a wedged child.
    statuses = vm_workers.run_workers(
        argvs, lambda line: print(line, flush=True), timeout_s=spec.timeout_s + WORKER_GRACE_S
    )
    tests = vm_workers.merge_junit(
        [d / vm_workers.JUNIT_FILE for d in dirs], outdir / vm_workers.JUNIT_FILE
    )
    vm_workers.join_consoles([d / vm_workers.CONSOLE_LOG for d in dirs], outdir / "console.log")
    status = vm_workers.combined_status(statuses, ExitCode.INFRA)
    say(
        f"{workers} workers in {time.monotonic() - started:.0f} s: exit statuses "
        f"{', '.join('killed' if s is None else str(s) for s in statuses)}; {tests} testcases "
        f"in {outdir / vm_workers.JUNIT_FILE}; exit {status}"
    )
    return status

"""``vm-pytest --workers N``: pytest testcases/ in N VMs at once, one group of tests each.

Why N VMs and not pytest-xdist workers in one VM: the testcases share one kernel's nvmet
and nvme state (the fixed ports and NQN of configs/smoke.toml; the autouse fixture
``nothing_left_behind`` refuses any target it did not make), so two tests at once in one
kernel would see each other's target. xdist's remote workers would need a channel into each
guest (execnet over SSH or a socket), which the vng guests do not have. So each worker is a
VM of its own, and pytest-split chooses its tests inside the guest (``--splits N --group K
--splitting-algorithm least_duration``; by ``.test_durations`` in the repository when there is
one, else by count).

Each worker is a child ``nvmf-harness vm-pytest --out OUT/worker-K ...`` (same VM options):
in this process group, so Ctrl-C reaches it and its own handler ends its VM; its output is
printed line by line with a ``[K/N]`` prefix. Afterwards OUT/testcases-junit.xml holds every
worker's testcases (junitparser) and OUT/console.log their consoles one after the other.

Measured on 2 cores under TCG (README): two workers took as long as one (337 s vs 334 s of
wall clock for 5 testcases), so the default stays 1.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from junitparser import JUnitXml, JUnitXmlError

from harness.core.errors import HarnessError

JUNIT_FILE = "testcases-junit.xml"
CONSOLE_LOG = "console.log"
PYTEST_NO_TESTS = 5  # pytest's exit status when a group selected no test
SPLITTING_ALGORITHM = "least_duration"
STOP_GRACE_S = 120.0  # after SIGTERM, seconds for a worker to end its VM


def worker_dir(outdir: Path, number: int) -> Path:
    """``OUT/worker-K`` (K from 1): one worker's results, console.log and vm.json."""
    return outdir / f"worker-{number}"


def split_args(workers: int, number: int) -> list[str]:
    """The pytest-split options that make worker ``number`` (1..workers) run its group."""
    return [
        f"--splits={workers}",
        f"--group={number}",
        f"--splitting-algorithm={SPLITTING_ALGORITHM}",
    ]


def check_workers(workers: int) -> None:
    """HarnessError (one line) unless ``workers`` is at least 1 and, above 1, pytest-split is
    installed (the guest runs this virtualenv's pytest)."""
    if workers < 1:
        raise HarnessError(f"--workers {workers}: give 1 or more")
    if workers > 1 and importlib.util.find_spec("pytest_split") is None:
        raise HarnessError(
            "--workers above 1 needs pytest-split in this virtualenv",
            hint=".venv/bin/pip install -e '.[dev]' or run scripts/setup",
        )


def cores_note(workers: int, cpus: int, cores: int | None) -> str:
    """One line when N VMs of ``cpus`` vCPUs want more cores than the machine has."""
    if workers > 1 and cores is not None and workers * cpus > cores:
        return (
            f"{workers} VMs of {cpus} vCPUs on {cores} cores: under TCG two workers on 2 cores "
            "took as long as one (README); --cpus 1 or fewer workers may be faster"
        )
    return ""


def run_workers(
    argvs: Sequence[Sequence[str]],
    say: Callable[[str], None],
    timeout_s: float,
) -> list[int | None]:
    """Run each argv as a child process at once; print their lines prefixed ``[K/N]``.

    Returns each child's exit status (None when it had to be killed after ``timeout_s``).
    On KeyboardInterrupt (Ctrl-C, or SIGTERM through the CLI's handler) every child gets
    SIGTERM, so it ends its VM, and is waited for before the interrupt goes on.
    """
    total = len(argvs)
    procs: list[subprocess.Popen[str]] = []
    readers: list[threading.Thread] = []
    try:
        for number, argv in enumerate(argvs, start=1):
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            procs.append(proc)
            reader = threading.Thread(
                target=_relay, args=(proc, f"[{number}/{total}]", say), daemon=True
            )
            reader.start()
            readers.append(reader)
        statuses: list[int | None] = []
        for proc in procs:
            try:
                statuses.append(proc.wait(timeout=timeout_s))
            except subprocess.TimeoutExpired:
                _stop(proc)
                statuses.append(None)
        for reader in readers:
            reader.join(timeout=10)
        return statuses
    except KeyboardInterrupt:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _stop(proc)
        raise


def _relay(proc: subprocess.Popen[str], prefix: str, say: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        say(f"{prefix} {line.rstrip()}")


def _stop(proc: subprocess.Popen[str]) -> None:
    """Wait up to STOP_GRACE_S for a worker that was told to stop, then kill it."""
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)


def combined_status(statuses: Sequence[int | None], infra: int) -> int:
    """One exit status for the workers: 1 (failed tests) if any worker had failures; else
    the first other non-zero status (a worker that had to be killed counts as ``infra``);
    a group without tests (pytest's 5) only counts when every group was empty."""
    codes = [infra if s is None else s for s in statuses]
    ran = [c for c in codes if c != PYTEST_NO_TESTS]
    if not ran:
        return PYTEST_NO_TESTS if codes else infra
    if 1 in ran:
        return 1
    return next((c for c in ran if c != 0), 0)


def merge_junit(sources: Sequence[Path], target: Path) -> int:
    """Every worker's JUnit file as one (their suites side by side), written to ``target``.

    A worker that wrote none (its VM died before pytest ended) or an unreadable one is left
    out. Returns the number of testcases written."""
    merged = JUnitXml()
    for path in sources:
        if not path.exists():
            continue
        try:
            merged += JUnitXml.fromfile(str(path))
        except (JUnitXmlError, OSError, SyntaxError):  # ParseError is a SyntaxError
            continue
    merged.write(str(target), pretty=True)
    return int(merged.tests or 0)


def join_consoles(sources: Sequence[Path], target: Path) -> None:
    """The workers' console.log files one after the other, each under a ``# worker`` line."""
    with target.open("w", encoding="utf-8") as out:
        for number, path in enumerate(sources, start=1):
            out.write(f"# worker {number}: {path}\n")
            with contextlib.suppress(OSError):
                out.write(path.read_text(encoding="utf-8", errors="replace"))

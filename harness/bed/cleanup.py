"""Find and remove everything harness runs leave behind, in dependency order.

Order matters: stop fio (it holds the head open), delete our host controllers, remove the
nvmet entries, unmount the backing tmpfs (nvmet held its file), delete our rxe devices and
unload the RDMA modules a run loaded (harness/rdma.py), delete the network, stop bpftrace
widener processes. Every step is idempotent, so ``clean`` can run any time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.bed import backing, net, rdma, target
from harness.bed.host import CTRL_CLASS, CTRL_RE
from harness.core.errors import HarnessError
from harness.core.kernelfs import KernelFs

# Processes the harness starts mark themselves in their command line: fio by its job name,
# the widener's and the witness's bpftrace by a comment in their -e program.
FIO_MARK = "--name=nvmf-harness"
WIDENER_MARK = "nvmf-harness-widener"
WITNESS_MARK = "nvmf-harness-witness"
PROCESS_MARKS = (FIO_MARK, WIDENER_MARK, WITNESS_MARK)


@dataclass
class CleanReport:
    found: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def our_processes(proc: Path = Path("/proc")) -> list[tuple[int, str]]:
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in cmdline for mark in PROCESS_MARKS):
            found.append((int(entry.name), cmdline.strip()[:120]))
    return found


def our_controllers(kfs: KernelFs) -> list[str]:
    found = []
    for name in kfs.listdir(CTRL_CLASS):
        if CTRL_RE.match(name):
            nqn = kfs.read(f"{CTRL_CLASS}/{name}/subsysnqn", default="")
            if nqn.startswith(target.NQN_PREFIX):
                found.append(name)
    return found


def find_all(kfs: KernelFs) -> list[str]:
    """Everything an earlier run left, as one line each (empty when clean)."""
    found = [f"process {pid} {cmd}" for pid, cmd in our_processes()]
    found += [f"controller {name}" for name in our_controllers(kfs)]
    found += target.find_leftovers(kfs)
    found += backing.find_leftovers()
    with contextlib.suppress(Exception):
        found += rdma.find_leftovers()
    with contextlib.suppress(Exception):
        found += net.find_leftovers()
    return found


def clean_all(kfs: KernelFs) -> CleanReport:
    report = CleanReport(found=find_all(kfs))
    for pid, _cmd in our_processes():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    for name in our_controllers(kfs):
        try:
            kfs.write(f"{CTRL_CLASS}/{name}/delete_controller", "1", timeout_s=60)
        except HarnessError as exc:
            report.errors.append(str(exc))
    deadline = time.monotonic() + 30
    while our_controllers(kfs) and time.monotonic() < deadline:
        time.sleep(0.1)
    report.errors += target.remove_leftovers(kfs)
    report.errors += backing.remove_leftovers()
    try:
        report.errors += rdma.remove_leftovers()
    except Exception as exc:
        report.errors.append(f"rdma cleanup: {exc}")
    try:
        report.errors += net.remove_leftovers()
    except Exception as exc:
        report.errors.append(f"network cleanup: {exc}")
    return report

"""Self-tests of the VM runner that need a real guest: crash handling.

``nvmf-harness selftest-crash --out DIR`` boots the kernel, has the guest write two
iteration records (fsynced, as a campaign does), then panics the guest with sysrq-c. The
runner must notice, append a ``kernel_crash`` record with the console tail, and every record
written before the crash must still be readable.
"""

from __future__ import annotations

import sys
from pathlib import Path

from harness.results import RESULTS_FILE, read_records
from harness.vm import VmSpec, record_crash, run_in_vm

GUEST_PROGRAM = """
import sys
from pathlib import Path
from harness.results import JsonlWriter
out = Path(sys.argv[1])
with JsonlWriter(out / "results.jsonl") as writer:
    for i in (1, 2):
        writer.append({"iteration": i, "fault": "selftest", "verdict": "pass", "cycle_s": 0.1})
print("nvmf-harness: selftest records written, crashing the guest", flush=True)
with open("/proc/sys/kernel/sysrq", "w") as f:
    f.write("1")
with open("/proc/sysrq-trigger", "w") as f:
    f.write("c")
"""


def crash_selftest(spec: VmSpec, outdir: Path) -> list[str]:
    """Run the crash self-test; returns the problems found (empty: it works)."""
    outdir.mkdir(parents=True, exist_ok=True)
    guest = [sys.executable, "-c", GUEST_PROGRAM, str(outdir)]
    result = run_in_vm(spec, outdir, guest)
    problems = []
    if not result.crashed:
        problems.append(
            f"the runner did not see a crash (exit {result.exit_status}, "
            f"timed out {result.timed_out})"
        )
    record_crash(outdir, result)
    records = list(read_records(outdir / RESULTS_FILE))
    if [r.get("iteration") for r in records[:2]] != [1, 2]:
        problems.append(f"records written before the crash were lost: {records}")
    if not records or records[-1].get("verdict") != "kernel_crash":
        problems.append("no kernel_crash record after the crash")
    elif not records[-1].get("console_tail"):
        problems.append("the kernel_crash record has no console tail")
    return problems

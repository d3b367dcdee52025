"""Self-tests of the VM runner that need a real guest: crash handling, the KVM fallback.

``nvmf-harness selftest-crash --out DIR`` boots the kernel, has the guest write two
iteration records (fsynced, as a campaign does), then panics the guest with sysrq-c. The
runner must notice, append a ``kernel_crash`` record with the console tail, and every record
written before the crash must still be readable.

``nvmf-harness selftest-kvm-fallback --out DIR`` boots under KVM without the probe and
with an empty KVM answer file: where KVM cannot run the guest, the runner must boot it again
under TCG, run the command and remember the answer; where KVM works, the guest runs under it.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from harness.core.results import RESULTS_FILE, read_records
from harness.vm.boot import AccelCache, VmSpec, kvm_device_present, record_crash, run_in_vm

GUEST_PROGRAM = """
import sys
from pathlib import Path
from harness.core.results import JsonlWriter
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


def kvm_fallback_selftest(spec: VmSpec, outdir: Path) -> tuple[list[str], str]:
    """Boot ``spec.kernel`` with ``--accel auto`` straight into KVM (no probe, an empty
    answer file in ``outdir``) and run ``true``. Returns (problems, one line: "passed: ...",
    "not exercised: ..." when KVM ran the guest, "skipped: ..." without /dev/kvm); no
    problems means the guest ran, under KVM or after one fallback to TCG that was
    remembered."""
    outdir.mkdir(parents=True, exist_ok=True)
    if not kvm_device_present():
        return [], "skipped: no usable /dev/kvm here, nothing to fall back from"
    cache = outdir / "accel.json"
    result = run_in_vm(
        replace(spec, accel="auto", accel_probe=False, accel_cache=cache), outdir, ["true"]
    )
    answers = AccelCache(cache).answers()
    problems = []
    if result.exit_status != 0:
        problems.append(
            f"the guest did not run `true` (exit {result.exit_status}, under {result.accel})"
        )
    if result.accel == "tcg" and not result.fallback:
        problems.append("the guest ran under TCG without a recorded fallback")
    if len(answers) != 1 or answers[0].kvm_boots != (result.accel == "kvm"):
        problems.append(f"the KVM answer was not remembered as seen: {answers}")
    if result.fallback:
        return problems, (
            f"passed: KVM failed ({result.fallback}), the guest ran under TCG and the answer "
            f"was remembered; {result.wall_s:.0f} s in all"
        )
    return problems, f"not exercised: KVM ran the guest here ({result.wall_s:.0f} s)"

"""The VM runner: the vng command line, the guest script's quoting, the default kernel,
crash records, and run_in_vm against a fake `vng` (no VM is booted)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.core.errors import HarnessError, ToolError
from harness.core.results import RESULTS_FILE, SUMMARY_FILE, JsonlWriter, read_records
from harness.kernels import prepared
from harness.kernels.prepared import default_kernel, kernel_release
from harness.vm import boot as vm
from harness.vm.boot import (
    GUEST_EXIT_FILE,
    VmResult,
    VmSpec,
    record_crash,
    run_in_vm,
    vng_argv,
)
from harness.vm.testcases import PYTEST_SUMMARY
from tests.test_results import record_dict

KERNEL = "/boot/vmlinuz-6.1.0-56-amd64"

FAKE_VNG = """\
#!{python}
# A stand-in for vng: "boots", runs the --exec script with bash as the guest would, or not.
import json, os, subprocess, sys, time

args = sys.argv[1:]
script = args[args.index("--exec") + 1]
rwdir = args[args.index("--rwdir") + 1]
mode = os.environ.get("FAKE_VNG_MODE", "ok")
kvm = "--disable-kvm" not in args
with open(os.path.join(rwdir, "fake-vng.json"), "w") as f:
    json.dump({{"argv": args, "pid": os.getpid()}}, f)
with open(os.path.join(rwdir, "fake-vng-boots.txt"), "a") as f:
    f.write(("kvm" if kvm else "tcg") + "\\n")
if mode == "vng-broken":  # virtme-run fails on the host before qemu starts
    print("Traceback (most recent call last):", flush=True)
    print('  File "/usr/lib/python3/dist-packages/virtme/commands/run.py", line 1', flush=True)
    print("FileNotFoundError: [Errno 2] No such file or directory: 'file'", flush=True)
    sys.exit(1)
if mode == "abort-kvm" and kvm:  # qemu aborts under KVM (seen on this machine, 2026-12-01)
    print("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69", flush=True)
    print("qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: "
          "Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.", flush=True)
    sys.exit(134)
if mode == "dies-early" or (mode == "crash-kvm" and kvm):  # dies before the guest speaks;
    sys.exit(0)  # vng sends the kernel console to /dev/null: nothing on the pipe
if mode == "mute" or (mode == "mute-kvm" and kvm):  # qemu runs, the guest never says a word
    time.sleep(30)
    sys.exit(0)
if mode == "late":  # a slow boot: the first line comes after FAKE_VNG_DELAY seconds
    time.sleep(float(os.environ["FAKE_VNG_DELAY"]))
    sys.exit(subprocess.run(["bash", "-c", script]).returncode)
print("[    0.000000] Linux version 6.1.0-56-amd64", flush=True)
if mode in ("ok", "mute-kvm", "abort-kvm", "crash-kvm"):
    sys.exit(subprocess.run(["bash", "-c", script]).returncode)
if mode == "crash":
    print("[   42.000000] Kernel panic - not syncing: Fatal exception", flush=True)
    sys.exit(0)
if mode == "silent":  # a guest that hangs without a word on the console
    time.sleep(20)
if mode == "stuck-after-end":  # pytest's summary, then a process that cannot exit
    print("======= 3 passed, 1 skipped in 12.34s (0:00:12) =======", flush=True)
    time.sleep(30)
if mode == "end-then-more":  # a line like pytest's summary, then more work, then the end
    print("==== 1 passed in 0.01s ====", flush=True)
    time.sleep(0.3)
    print("still working", flush=True)
    time.sleep(1.5)
    sys.exit(subprocess.run(["bash", "-c", script]).returncode)
if mode == "chatty":  # a guest that never finishes but keeps printing
    for _ in range(200):
        print("[   50.000000] nvme nvme1: Reconnecting in 1 seconds...", flush=True)
        time.sleep(0.1)
"""

FAKE_QEMU = """\
#!/bin/sh
# A stand-in for qemu: answers --version (FAKE_QEMU_VERSION), refuses to run a guest.
if [ "$1" = "--version" ]; then
  echo "QEMU emulator version ${FAKE_QEMU_VERSION:-7.2.99 (fake)}"
  exit 0
fi
exit 1
"""


@pytest.fixture
def fake_vng(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake `vng` and `qemu-system-x86_64` first on PATH; returns the bin directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    vng_script = bindir / "vng"
    vng_script.write_text(FAKE_VNG.format(python=sys.executable))
    qemu = bindir / "qemu-system-x86_64"
    qemu.write_text(FAKE_QEMU)
    for path in (vng_script, qemu):
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return bindir


# --- vng_argv ------------------------------------------------------------------------------------


def test_vng_argv_without_kvm(tmp_path: Path, fake_vng: Path) -> None:
    spec = VmSpec(kernel=KERNEL, memory="3G", cpus=4)
    argv = vng_argv(spec, tmp_path / "out", ["true"], use_kvm=False)
    assert argv[0] == str(fake_vng / "vng")
    assert "--disable-kvm" in argv
    assert argv[argv.index("--run") + 1] == KERNEL
    assert argv[argv.index("--memory") + 1] == "3G"
    assert argv[argv.index("--cpus") + 1] == "4"
    assert argv[argv.index("--rwdir") + 1] == str(tmp_path / "out")
    assert argv[-2] == "--exec"


def test_vng_argv_with_kvm(tmp_path: Path, fake_vng: Path) -> None:
    argv = vng_argv(VmSpec(kernel=KERNEL), tmp_path, ["true"], use_kvm=True)
    assert "--disable-kvm" not in argv
    assert argv[argv.index("--run") + 1] == KERNEL


def test_vng_argv_makes_results_directories_outside_the_boot_directory_writable(
    tmp_path: Path, fake_vng: Path
) -> None:
    """A compare across two kernels boots in where/boot-<variant> while its results go to
    where/<variant>: without its own --rwdir the guest's writes there land in the read-only
    overlay and are lost (the run looked as if it never started)."""
    boot, inside, outside = (
        tmp_path / "boot-fixed",
        tmp_path / "boot-fixed" / "r",
        tmp_path / "fixed",
    )
    spec = VmSpec(kernel=KERNEL, writable=(inside, outside))
    argv = vng_argv(spec, boot, ["true"], use_kvm=False)
    rwdirs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--rwdir"]
    assert rwdirs == [str(boot), str(outside)]


@pytest.mark.parametrize(("accel", "kvm"), [("kvm", True), ("tcg", False)])
def test_explicit_accel_is_not_probed(accel: str, kvm: bool) -> None:
    assert VmSpec(kernel=KERNEL, accel=accel).use_kvm() is kvm


NASTY_ARGS = [
    "plain",
    "with space",
    "$HOME",
    "`id`",
    "a; touch /tmp/nvmfh-pwned",
    "it's",
    'say "hi"',
    "back\\slash",
    "new\nline",
    "*",
    "",
]


def test_exec_script_passes_every_argument_unchanged(tmp_path: Path, fake_vng: Path) -> None:
    """Run the --exec script with bash, as the guest does: arguments arrive as given, the
    exit status lands in the rwdir, even when paths hold spaces and shell syntax."""
    rwdir = tmp_path / "results dir; $(echo x) 'q'"
    rwdir.mkdir()
    dump = rwdir / "argv.json"
    code = (
        "import json, os, sys; "
        "json.dump({'argv': sys.argv[2:], 'cwd': os.getcwd()}, open(sys.argv[1], 'w')); "
        "sys.exit(7)"
    )
    guest = [sys.executable, "-c", code, str(dump), *NASTY_ARGS]
    argv = vng_argv(VmSpec(kernel=KERNEL), rwdir, guest, use_kvm=False)
    script = argv[argv.index("--exec") + 1]
    subprocess.run(["bash", "-c", script], check=False, timeout=30)
    seen = json.loads(dump.read_text())
    assert seen["argv"] == NASTY_ARGS
    assert Path(seen["cwd"]) == vm.REPO
    assert (rwdir / GUEST_EXIT_FILE).read_text().strip() == "7"
    assert not Path("/tmp/nvmfh-pwned").exists()


# --- default kernel -------------------------------------------------------------------------------


def prepared_record(tmp_path: Path, release: str, image: Path) -> Path:
    """A build/prepared-kernel.json as scripts/setup writes it."""
    record = prepared.PreparedKernel(
        release=release,
        image=str(image),
        packages={package: "6.1.192-2" for package in prepared.packages_of(release)},
        source_tarball="/usr/src/linux-source-6.1.tar.xz",
        chosen_by="requested (NVMF_HARNESS_RELEASE or argument)",
        prepared_at="2026-12-01T02:00:00+0000",
    )
    path = tmp_path / "build" / "prepared-kernel.json"
    prepared.write(record, path)
    return path


def test_default_kernel_is_the_prepared_one_not_the_newest(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for release in ("6.1.0-47-amd64", "6.1.0-56-amd64", "6.1.0-57-amd64", "6.12.107+deb12-amd64"):
        (boot / f"vmlinuz-{release}").write_text("")
    record = prepared_record(tmp_path, "6.1.0-56-amd64", boot / "vmlinuz-6.1.0-56-amd64")
    assert default_kernel(record) == str(boot / "vmlinuz-6.1.0-56-amd64")


def test_default_kernel_without_a_prepared_kernel(tmp_path: Path) -> None:
    with pytest.raises(HarnessError) as info:
        default_kernel(tmp_path / "build" / "prepared-kernel.json")
    assert "scripts/setup" in str(info.value)
    assert "--kernel" in str(info.value)


def test_default_kernel_whose_image_is_gone(tmp_path: Path) -> None:
    record = prepared_record(
        tmp_path, "6.1.0-57-amd64", tmp_path / "boot" / "vmlinuz-6.1.0-57-amd64"
    )
    with pytest.raises(HarnessError) as info:
        default_kernel(record)
    assert "apt-get install linux-image-6.1.0-57-amd64" in str(info.value)


def test_kernel_release() -> None:
    assert kernel_release(KERNEL) == "6.1.0-56-amd64"
    assert kernel_release("/src/linux/arch/x86/boot/bzImage") == ""


# --- record_crash ---------------------------------------------------------------------------------


def vm_result(timed_out: bool = False, lines: int = 100) -> VmResult:
    return VmResult(
        exit_status=None,
        boot_s=20.0,
        wall_s=300.0,
        crashed=not timed_out,
        timed_out=timed_out,
        console_tail=[f"[  {i}.0] line {i}" for i in range(lines)],
    )


def test_record_crash_appends_and_keeps_earlier_records(tmp_path: Path) -> None:
    with JsonlWriter(tmp_path / RESULTS_FILE) as writer:
        writer.append(record_dict(run_id="run-7", iteration=1, variant="unfixed"))
        writer.append(record_dict(run_id="run-7", iteration=2, variant="unfixed"))
    record_crash(tmp_path, vm_result())
    records = list(read_records(tmp_path / RESULTS_FILE))
    assert [r["iteration"] for r in records] == [1, 2, 3]
    assert records[0] == record_dict(run_id="run-7", iteration=1, variant="unfixed")
    crash = records[2]
    assert crash["verdict"] == "kernel_crash"
    assert crash["run_id"] == "run-7"
    assert crash["variant"] == "unfixed"
    assert crash["kernel_release"] == "6.1.0-56-amd64"
    assert len(crash["console_tail"]) == 30
    assert crash["console_tail"][-1] == "[  99.0] line 99"
    assert "cycle_s" not in crash  # report and compare tell it from iterations by this
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["complete"] is False
    assert summary["crashed"] is True
    assert summary["iterations"] == 2


def test_record_crash_after_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_text(json.dumps(record_dict(iteration=1)) + "\n" + '{"run_id": "run-1", "itera')
    record_crash(tmp_path, vm_result())
    records = list(read_records(path))
    assert [r.get("verdict") for r in records] == ["pass", "kernel_crash"]
    assert records[1]["iteration"] == 2


def test_record_crash_of_a_timeout_with_no_records(tmp_path: Path) -> None:
    record_crash(tmp_path, vm_result(timed_out=True))
    (crash,) = list(read_records(tmp_path / RESULTS_FILE))
    assert crash["verdict"] == "vm_timeout"
    assert crash["iteration"] == 1
    assert json.loads((tmp_path / SUMMARY_FILE).read_text())["timed_out"] is True


def test_record_crash_keeps_a_summary_the_guest_wrote(tmp_path: Path) -> None:
    (tmp_path / SUMMARY_FILE).write_text('{"complete": true}\n')
    record_crash(tmp_path, vm_result())
    assert json.loads((tmp_path / SUMMARY_FILE).read_text()) == {"complete": True}


# --- run_in_vm with a fake vng --------------------------------------------------------------------

GUEST_OK = [sys.executable, "-c", "print('nvmf-harness: campaign started', flush=True); exit(3)"]


def test_run_in_vm_streams_the_console_and_returns_the_guest_status(
    tmp_path: Path, fake_vng: Path
) -> None:
    seen: list[str] = []
    spec = VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60)
    result = run_in_vm(spec, tmp_path / "out", GUEST_OK, on_line=seen.append)
    assert result.exit_status == 3
    assert not result.crashed
    assert not result.timed_out
    assert result.boot_s is not None
    assert 0 < result.boot_s <= result.wall_s
    assert "nvmf-harness: campaign started" in seen
    assert result.console_tail == seen
    console = (tmp_path / "out" / "console.log").read_text()
    assert "nvmf-harness: campaign started" in console
    assert "--disable-kvm" in console.splitlines()[0]  # the command line, for the record


def test_run_in_vm_notices_a_guest_that_died(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "crash")
    out = tmp_path / "out"
    out.mkdir()
    (out / GUEST_EXIT_FILE).write_text("0\n")  # left by an earlier run: must not count
    result = run_in_vm(VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60), out, GUEST_OK)
    assert result.crashed
    assert result.exit_status is None
    assert result.boot_s is None
    assert result.console_tail[-1].endswith("Kernel panic - not syncing: Fatal exception")


def test_vng_that_fails_before_the_guest_is_one_line_not_a_kernel_crash(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """virtme-run's traceback (a fresh Debian without `file`) is a tool error, not a
    kernel_crash verdict that compare would count as an inconclusive run."""
    monkeypatch.setenv("FAKE_VNG_MODE", "vng-broken")
    out = tmp_path / "out"
    with pytest.raises(ToolError, match="vng failed before the guest started: FileNotFoundError"):
        run_in_vm(VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60), out, GUEST_OK)


def test_run_in_vm_times_out_a_guest_that_keeps_printing(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "chatty")
    started = time.monotonic()
    result = run_in_vm(VmSpec(kernel=KERNEL, accel="tcg", timeout_s=1), tmp_path / "o", GUEST_OK)
    assert result.timed_out
    assert not result.crashed
    assert time.monotonic() - started < 10


def test_run_in_vm_ends_a_guest_that_cannot_exit_after_its_end_line(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in testcase 036's hang: pytest printed its summary, a thread of it stayed in
    the kernel, and the VM ran on to the whole-run timeout."""
    monkeypatch.setenv("FAKE_VNG_MODE", "stuck-after-end")
    out = tmp_path / "o"
    started = time.monotonic()
    try:
        result = run_in_vm(
            VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60),
            out,
            GUEST_OK,
            end_marker=PYTEST_SUMMARY,
            exit_grace_s=0.5,
        )
    finally:
        stop_fake_vng(out)
    assert time.monotonic() - started < 20
    assert result.exit_stuck and not result.timed_out and not result.crashed
    assert result.exit_status is None
    runs = json.loads((out / "vm.json").read_text())["runs"]
    assert runs[-1]["boots"][-1]["exit_stuck"] is True


def test_a_line_after_the_end_line_disarms_the_exit_watchdog(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "end-then-more")
    out = tmp_path / "o"
    spec = VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60)
    try:
        result = run_in_vm(spec, out, GUEST_OK, end_marker=PYTEST_SUMMARY, exit_grace_s=0.8)
    finally:
        stop_fake_vng(out)
    assert result.exit_status == 3 and not result.exit_stuck and not result.crashed  # GUEST_OK


@pytest.mark.parametrize(
    "line",
    [
        "======= 3 passed, 1 skipped in 12.34s (0:00:12) =======",
        "1544 passed, 1 skipped in 140.95s (0:02:20)",
        "==== 1 failed, 2 passed, 3 warnings in 5.00s ====",
        "===== no tests ran in 0.01s =====",
        "= 2 errors in 1.2s =",
    ],
)
def test_pytests_summary_line_is_the_end(line: str) -> None:
    assert PYTEST_SUMMARY.search(line)


@pytest.mark.parametrize(
    "line",
    [
        "testcases/test_003_fault_under_io.py::test_fault_is_recorded[link_down] PASSED [ 10%]",
        "nvmf-harness: [3/20] ns_remove_path path 0: pass (cycle 1.6 s)",
        "=========================== short test summary info ============================",
    ],
)
def test_other_lines_are_not_the_end(line: str) -> None:
    assert not PYTEST_SUMMARY.search(line)


def _run_with_guard(spec: VmSpec, rwdir: Path, guard_s: float) -> VmResult | None:
    """run_in_vm in a thread; None when it has not returned after guard_s."""
    box: list[VmResult] = []
    thread = threading.Thread(
        target=lambda: box.append(run_in_vm(spec, rwdir, GUEST_OK)), daemon=True
    )
    thread.start()
    thread.join(guard_s)
    return box[0] if box else None


def test_run_in_vm_times_out_a_silent_guest(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "silent")
    out = tmp_path / "o"
    try:
        result = _run_with_guard(VmSpec(kernel=KERNEL, accel="tcg", timeout_s=1), out, 6)
        assert result is not None, "run_in_vm did not return 5 s after its timeout"
        assert result.timed_out
    finally:  # stop the fake vng this test started (its own process group)
        info = out / "fake-vng.json"
        if info.exists():
            pid = json.loads(info.read_text())["pid"]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


# --- boot watchdog and the KVM fallback -----------------------------------------------------------


def stop_fake_vng(rwdir: Path) -> None:
    """Kill the fake vng a test started (its own process group), if it still runs."""
    info = rwdir / "fake-vng.json"
    if info.exists():
        pid = json.loads(info.read_text())["pid"]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def boots_of(rwdir: Path) -> list[str]:
    """The accelerators the fake vng was started with, in order."""
    return (rwdir / "fake-vng-boots.txt").read_text().split()


@pytest.fixture
def kvm_accepts_qemu(monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/kvm is there and the probe passes (as on a machine whose KVM runs firmware but
    then never boots a kernel, or whose probe passed once in CI on 2026-12-01)."""
    monkeypatch.setattr(vm, "kvm_device_present", lambda: True)
    monkeypatch.setattr(vm, "kvm_usable", lambda: True)
    monkeypatch.setattr(vm, "kvm_starts_kernel", lambda kernel: vm.KernelProbe(True, banner=True))


def test_a_guest_that_never_prints_is_ended_by_the_boot_watchdog(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "mute")
    out = tmp_path / "o"
    said: list[str] = []
    spec = VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60, boot_timeout_s=1)
    started = time.monotonic()
    try:
        result = run_in_vm(spec, out, GUEST_OK, say=said.append)
    finally:
        stop_fake_vng(out)
    assert time.monotonic() - started < 10  # the boot limit, not the 60 s run timeout
    assert result.boot_timed_out and result.timed_out and not result.crashed
    assert result.guest_up_s is None and result.boot_s is None
    assert (result.accel, result.boot_timeout_s, result.fallback) == ("tcg", 1.0, "")
    assert boots_of(out) == ["tcg"]  # --accel tcg: no second boot
    ended = [line for line in said if "no sign of life" in line]
    assert len(ended) == 1, said
    assert "1 s under TCG" in ended[0] and "--boot-timeout" in ended[0]
    assert "# boot watchdog: no sign of life from the guest in 1 s under tcg" in (
        (out / "console.log").read_text()
    )
    (run,) = json.loads((out / vm.VM_RECORD_FILE).read_text())["runs"]
    assert run["boot_timeout_s"] == 1.0
    assert run["boots"][0]["boot_timed_out"] is True
    record_crash(out, result)
    (crash,) = list(read_records(out / RESULTS_FILE))
    assert crash["verdict"] == "vm_timeout"
    assert "no sign of life" in crash["reason"]


def test_a_guest_that_prints_after_a_delay_is_not_ended(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "late")
    monkeypatch.setenv("FAKE_VNG_DELAY", "1.5")
    spec = VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60, boot_timeout_s=4)
    result = run_in_vm(spec, tmp_path / "o", GUEST_OK, say=lambda _line: None)
    assert result.exit_status == 3
    assert not result.boot_timed_out and not result.timed_out
    assert result.guest_up_s is not None and result.guest_up_s >= 1.5
    assert result.boot_s is not None and result.boot_s >= result.guest_up_s
    assert vm.GUEST_UP_MARKER not in result.console_tail  # the runner's marker is its own


def test_a_guest_slower_than_the_limit_is_ended(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "late")
    monkeypatch.setenv("FAKE_VNG_DELAY", "5")
    out = tmp_path / "o"
    spec = VmSpec(kernel=KERNEL, accel="tcg", timeout_s=60, boot_timeout_s=1)
    try:
        result = run_in_vm(spec, out, GUEST_OK, say=lambda _line: None)
    finally:
        stop_fake_vng(out)
    assert result.boot_timed_out and result.exit_status is None


def test_default_boot_limits() -> None:
    spec = VmSpec(kernel=KERNEL)
    assert spec.boot_limit_s(use_kvm=True) == vm.KVM_BOOT_TIMEOUT_S == 60
    assert spec.boot_limit_s(use_kvm=False) == vm.TCG_BOOT_TIMEOUT_S == 180
    assert VmSpec(kernel=KERNEL, boot_timeout_s=7).boot_limit_s(use_kvm=True) == 7


def test_auto_falls_back_to_tcg_and_remembers_it(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch, kvm_accepts_qemu: None
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "mute-kvm")
    cache = tmp_path / "cache" / "accel.json"
    spec = VmSpec(kernel=KERNEL, accel="auto", timeout_s=60, boot_timeout_s=1.5, accel_cache=cache)
    out = tmp_path / "first"
    said: list[str] = []
    try:
        result = run_in_vm(spec, out, GUEST_OK, say=said.append)
    finally:
        stop_fake_vng(out)
    assert boots_of(out) == ["kvm", "tcg"]
    assert result.exit_status == 3 and not result.timed_out and not result.crashed
    assert result.accel == "tcg"
    assert "no sign of life from a KVM guest in 2 s" in result.fallback  # 1.5 s, rounded
    assert len([line for line in said if "booting again under TCG" in line]) == 1
    (judged,) = [line for line in said if "came up under TCG" in line]
    assert "KVM does not boot this kernel here" in judged and str(cache) in judged
    (answer,) = vm.AccelCache(cache).answers()
    assert answer.kvm_boots is False
    assert (answer.kernel, answer.qemu_version) == ("6.1.0-56-amd64", "7.2.99 (fake)")
    (run,) = json.loads((out / vm.VM_RECORD_FILE).read_text())["runs"]
    assert run["accel_requested"] == "auto" and run["accel"] == "tcg"
    assert [boot["accel"] for boot in run["boots"]] == ["kvm", "tcg"]
    assert run["boots"][0]["boot_timed_out"] is True
    assert run["fallback"] == result.fallback
    console = (out / "console.log").read_text().splitlines()
    headers = [line for line in console if line.startswith("# ")]
    probe_passed = "KVM ran the guest's firmware and kernel in the probe"
    assert f"kvm (--accel auto: {probe_passed}; boot watchdog 2 s)" in headers[0]
    assert "--disable-kvm" in headers[-1] and "fallback from KVM" in headers[-1]

    # The next run goes straight to TCG: no 1.5 s of silence first.
    again = tmp_path / "second"
    result = run_in_vm(spec, again, GUEST_OK, say=said.append)
    assert boots_of(again) == ["tcg"]
    assert result.exit_status == 3 and result.fallback == ""
    assert f"remembered in {cache}" in result.accel_reason
    assert spec.use_kvm() is False

    # The answer holds for one qemu version only: a new qemu gets KVM tried again.
    monkeypatch.setenv("FAKE_QEMU_VERSION", "8.0.0 (new)")
    assert spec.use_kvm() is True


def test_auto_falls_back_when_qemu_aborts_under_kvm(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch, kvm_accepts_qemu: None
) -> None:
    """The CI failure of 2026-12-01: the probe passed, then qemu aborted under KVM before the
    kernel printed a line. Not the watchdog's 60 s: the TCG boot follows at once."""
    monkeypatch.setenv("FAKE_VNG_MODE", "abort-kvm")
    cache = tmp_path / "accel.json"
    spec = VmSpec(kernel=KERNEL, accel="auto", timeout_s=60, accel_cache=cache)
    out = tmp_path / "o"
    said: list[str] = []
    started = time.monotonic()
    result = run_in_vm(spec, out, GUEST_OK, say=said.append)
    assert time.monotonic() - started < 30  # no watchdog wait (60 s under KVM)
    assert boots_of(out) == ["kvm", "tcg"]
    assert result.accel == "tcg" and result.exit_status == 3 and not result.crashed
    assert "failed to set MSR 0x10a" in result.fallback
    assert any("booting again under TCG" in line for line in said), said
    (answer,) = vm.AccelCache(cache).answers()
    assert not answer.kvm_boots and "before the guest said a word" in answer.detail
    (run,) = json.loads((out / vm.VM_RECORD_FILE).read_text())["runs"]
    assert [boot["accel"] for boot in run["boots"]] == ["kvm", "tcg"]
    assert run["boots"][0]["boot_timed_out"] is False


def test_a_guest_that_fails_under_tcg_too_is_not_a_kvm_failure(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch, kvm_accepts_qemu: None
) -> None:
    """A kernel that dies before the guest says a word looks, under KVM, like qemu's own
    abort (vng sends the kernel's console to /dev/null): the TCG boot tells them apart, and
    when it fails too nothing is remembered."""
    monkeypatch.setenv("FAKE_VNG_MODE", "dies-early")
    cache = tmp_path / "accel.json"
    out = tmp_path / "o"
    said: list[str] = []
    spec = VmSpec(kernel=KERNEL, accel="auto", timeout_s=60, accel_cache=cache)
    result = run_in_vm(spec, out, GUEST_OK, say=said.append)
    assert boots_of(out) == ["kvm", "tcg"]
    assert result.crashed and result.accel == "tcg"
    assert any("did not come up under TCG either: not a KVM problem" in line for line in said)
    assert not cache.exists()


def test_a_kernel_that_dies_only_under_kvm_is_remembered(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch, kvm_accepts_qemu: None
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "crash-kvm")
    cache = tmp_path / "accel.json"
    out = tmp_path / "o"
    spec = VmSpec(kernel=KERNEL, accel="auto", timeout_s=60, accel_cache=cache)
    result = run_in_vm(spec, out, GUEST_OK, say=lambda _line: None)
    assert boots_of(out) == ["kvm", "tcg"]
    assert result.exit_status == 3 and not result.crashed
    (answer,) = vm.AccelCache(cache).answers()
    assert not answer.kvm_boots


def test_a_vng_failure_under_kvm_is_not_remembered_as_a_kvm_failure(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch, kvm_accepts_qemu: None
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "vng-broken")
    cache = tmp_path / "accel.json"
    spec = VmSpec(kernel=KERNEL, accel="auto", timeout_s=60, accel_cache=cache)
    with pytest.raises(ToolError, match="vng failed before the guest started"):
        run_in_vm(spec, tmp_path / "o", GUEST_OK, say=lambda _line: None)
    assert not cache.exists()


FAKE_PROBE_QEMU = """\
#!/bin/sh
# A stand-in for qemu under the KVM probe; FAKE_PROBE: firmware, silent or abort.
case "$FAKE_PROBE" in
  firmware) echo "SeaBIOS (version 1.16.2-debian-1.16.2-1)"; exec sleep 30 ;;
  silent) exec sleep 30 ;;
  abort) echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; exit 134 ;;
esac
"""


@pytest.mark.parametrize(
    ("mode", "usable", "at_most_s"),
    [("firmware", True, 2.0), ("silent", False, 3.0), ("abort", False, 1.0)],
)
def test_kvm_probe_wants_the_firmware_to_speak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, usable: bool, at_most_s: float
) -> None:
    """Only a line from the guest's firmware is evidence that KVM runs guest code: qemu that
    stays up silently (a loaded machine, a wedged vCPU) is not."""
    qemu = tmp_path / f"qemu-system-{platform.machine()}"
    qemu.write_text(FAKE_PROBE_QEMU)
    qemu.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_PROBE", mode)
    monkeypatch.setattr(vm, "kvm_device_present", lambda: True)
    started = time.monotonic()
    assert vm.kvm_usable(limit_s=1.5) is usable
    assert time.monotonic() - started < at_most_s


FAKE_KERNEL_QEMU = """\
#!/bin/sh
# A stand-in for qemu under the KVM kernel probe; FAKE_PROBE: banner, spin, idle or abort.
case "$FAKE_PROBE" in
  banner) echo "Probing EDD (edd=off to disable)... ok"
          echo "[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)"
          exec sleep 30 ;;
  spin) echo "Probing EDD (edd=off to disable)... ok"; while :; do :; done ;;
  idle) echo "Probing EDD (edd=off to disable)... ok"; exec sleep 30 ;;
  abort) exit 1 ;;
esac
"""


@pytest.mark.parametrize(
    ("mode", "banner", "failed", "said", "at_most_s"),
    [
        ("banner", True, False, "KVM started the kernel", 2.0),
        ("spin", False, True, "its last line 'Probing EDD (edd=off to disable)... ok'", 3.0),
        ("idle", False, False, "qemu had 0.0 s of CPU", 3.0),
        ("abort", False, True, "qemu ended, no output", 1.0),
    ],
)
def test_kvm_kernel_probe_wants_the_kernels_banner(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    banner: bool,
    failed: bool,
    said: str,
    at_most_s: float,
) -> None:
    """Seen on 2026-12-07: KVM ran the firmware and the kernel's setup code ("Probing EDD"),
    then spun; only the kernel's own banner says KVM runs the kernel. A qemu that got no CPU
    (a loaded machine) is no evidence either way: the boot watchdog decides then."""
    qemu = tmp_path / f"qemu-system-{platform.machine()}"
    qemu.write_text(FAKE_KERNEL_QEMU)
    qemu.chmod(0o755)
    image = tmp_path / "vmlinuz-6.1.0-57-amd64"
    image.write_bytes(b"MZ")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_PROBE", mode)
    monkeypatch.setattr(vm, "kvm_device_present", lambda: True)
    started = time.monotonic()
    probe = vm.kvm_starts_kernel(str(image), limit_s=1.5)
    assert time.monotonic() - started < at_most_s
    assert probe.ran and probe.banner is banner and probe.failed is failed, probe
    assert said in probe.describe()
    # No image file: nothing to probe, the boot watchdog decides.
    missing = vm.kvm_starts_kernel(str(tmp_path / "missing"), limit_s=1.5)
    assert not missing.ran and not missing.failed


def test_a_kernel_probe_failure_goes_to_tcg_and_is_remembered_once_tcg_boots(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vm, "kvm_device_present", lambda: True)
    monkeypatch.setattr(vm, "kvm_usable", lambda: True)
    probe = vm.KernelProbe(True, cpu_s=9.9, limit_s=10.0, last_line="Probing EDD")
    monkeypatch.setattr(vm, "kvm_starts_kernel", lambda kernel: probe)
    cache = tmp_path / "accel.json"
    spec = VmSpec(kernel=KERNEL, accel="auto", timeout_s=60, boot_timeout_s=5, accel_cache=cache)
    said: list[str] = []
    out = tmp_path / "o"
    result = run_in_vm(spec, out, GUEST_OK, say=said.append)
    assert boots_of(out) == ["tcg"] and result.exit_status == 3
    assert result.accel_reason == f"--accel auto: {probe.describe()}"
    assert any("KVM does not boot this kernel here" in line for line in said)
    (answer,) = vm.AccelCache(cache).answers()
    assert answer.kvm_boots is False and answer.detail == probe.describe()


def test_a_starved_kernel_probe_leaves_it_to_the_boot_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vm, "kvm_device_present", lambda: True)
    monkeypatch.setattr(vm, "kvm_usable", lambda: True)
    starved = vm.KernelProbe(True, cpu_s=0.4, limit_s=10.0, last_line="Probing EDD")
    monkeypatch.setattr(vm, "kvm_starts_kernel", lambda kernel: starved)
    choice = VmSpec(kernel=KERNEL, accel_cache=tmp_path / "accel.json").choose_accel()
    assert choice.use_kvm and not choice.kvm_failure
    assert "the boot watchdog decides" in choice.reason


def test_a_remembered_kvm_failure_skips_the_probe(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = vm.AccelCache(tmp_path / "accel.json")
    cache.remember(vm.KvmAnswer(False, "6.1.0-56-amd64", "7.2.99 (fake)", "seen", "then"))
    monkeypatch.setattr(vm, "kvm_device_present", lambda: True)

    def probe(limit_s: float | None = None) -> bool:
        raise AssertionError("probed although the answer is remembered")

    monkeypatch.setattr(vm, "kvm_usable", probe)
    choice = VmSpec(kernel=KERNEL, accel_cache=cache.path).choose_accel()
    assert not choice.use_kvm and "remembered in" in choice.reason


def test_auto_remembers_a_kvm_that_boots(
    tmp_path: Path, fake_vng: Path, kvm_accepts_qemu: None
) -> None:
    cache = tmp_path / "accel.json"
    spec = VmSpec(kernel=KERNEL, accel="auto", timeout_s=60, boot_timeout_s=5, accel_cache=cache)
    result = run_in_vm(spec, tmp_path / "o", GUEST_OK, say=lambda _line: None)
    assert result.accel == "kvm" and result.exit_status == 3
    (answer,) = vm.AccelCache(cache).answers()
    assert answer.kvm_boots is True
    assert spec.use_kvm() is True


def test_explicit_kvm_that_never_boots_is_not_retried(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "mute-kvm")
    cache = tmp_path / "accel.json"
    out = tmp_path / "o"
    spec = VmSpec(kernel=KERNEL, accel="kvm", timeout_s=60, boot_timeout_s=1, accel_cache=cache)
    try:
        result = run_in_vm(spec, out, GUEST_OK, say=lambda _line: None)
    finally:
        stop_fake_vng(out)
    assert boots_of(out) == ["kvm"]
    assert result.boot_timed_out and result.accel == "kvm"
    assert not cache.exists()  # only --accel auto learns


def test_check_kvm_boot_records_the_answer(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "mute-kvm")
    monkeypatch.setattr(vm, "KVM_BOOT_TIMEOUT_S", 1.0)
    cache = vm.AccelCache(tmp_path / "accel.json")
    out = tmp_path / "o"
    try:
        answer = vm.check_kvm_boot(KERNEL, out, cache, lambda _line: None)
    finally:
        stop_fake_vng(out)
    assert answer.kvm_boots is False
    assert "no sign of life" in answer.detail
    assert cache.lookup("6.1.0-56-amd64", "7.2.99 (fake)") == answer
    monkeypatch.setenv("FAKE_VNG_MODE", "ok")
    answer = vm.check_kvm_boot(KERNEL, tmp_path / "p", cache, lambda _line: None)
    assert answer.kvm_boots is True
    assert cache.answers() == [answer]  # one answer per kernel and qemu, replaced


def test_accel_cache_ignores_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "accel.json"
    path.write_text("{not json")
    cache = vm.AccelCache(path)
    assert cache.answers() == []
    answer = vm.KvmAnswer(False, "6.1.0-57-amd64", "7.2.22", "silent", "2026-12-01 02:00:00")
    assert cache.remember(answer) == ""
    assert cache.lookup("6.1.0-57-amd64", "7.2.22") == answer
    assert cache.lookup("6.1.0-56-amd64", "7.2.22") is None


def test_accel_cache_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = vm.AccelCache(blocker / "accel.json")  # a directory under a file: cannot exist
    answer = vm.KvmAnswer(False, "6.1.0-57-amd64", "7.2.22", "silent", "2026-12-01 02:00:00")
    assert cache.remember(answer).startswith("not remembered")


def test_default_accel_cache_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vm.ACCEL_CACHE_ENV, str(tmp_path))
    assert vm.default_accel_cache() == tmp_path / "accel.json"
    monkeypatch.delenv(vm.ACCEL_CACHE_ENV)
    expected = (
        Path("/var/cache/nvmf-harness/accel.json")
        if os.geteuid() == 0
        else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        / "nvmf-harness"
        / "accel.json"
    )
    assert vm.default_accel_cache() == expected

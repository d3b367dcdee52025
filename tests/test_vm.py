"""The VM runner: the vng command line, the guest script's quoting, the default kernel,
crash records, and run_in_vm against a fake `vng` (no VM is booted)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from harness import vm
from harness.errors import HarnessError
from harness.results import RESULTS_FILE, SUMMARY_FILE, JsonlWriter, read_records
from harness.vm import (
    GUEST_EXIT_FILE,
    VmResult,
    VmSpec,
    default_kernel,
    kernel_release,
    record_crash,
    run_in_vm,
    vng_argv,
)
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
with open(os.path.join(rwdir, "fake-vng.json"), "w") as f:
    json.dump({{"argv": args, "pid": os.getpid()}}, f)
print("[    0.000000] Linux version 6.1.0-56-amd64", flush=True)
if mode == "ok":
    sys.exit(subprocess.run(["bash", "-c", script]).returncode)
if mode == "crash":
    print("[   42.000000] Kernel panic - not syncing: Fatal exception", flush=True)
    sys.exit(0)
if mode == "silent":  # a guest that hangs without a word on the console
    time.sleep(20)
if mode == "chatty":  # a guest that never finishes but keeps printing
    for _ in range(200):
        print("[   50.000000] nvme nvme1: Reconnecting in 1 seconds...", flush=True)
        time.sleep(0.1)
"""


@pytest.fixture
def fake_vng(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake `vng` and `qemu-system-x86_64` first on PATH; returns the bin directory."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    vng_script = bindir / "vng"
    vng_script.write_text(FAKE_VNG.format(python=sys.executable))
    qemu = bindir / "qemu-system-x86_64"
    qemu.write_text("#!/bin/sh\nexit 1\n")
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


def with_boot(monkeypatch: pytest.MonkeyPatch, boot: Path) -> None:
    """Point default_kernel's /boot at ``boot`` (it has no parameter for it)."""
    real_path = Path

    def fake_path(*parts: Any) -> Path:
        if parts == ("/boot",):
            return boot
        return real_path(*parts)

    monkeypatch.setattr("harness.vm.Path", fake_path)


def test_default_kernel_is_the_newest_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in (
        "vmlinuz-5.10.0-30-amd64",
        "vmlinuz-6.1.0-9-amd64",
        "vmlinuz-6.1.0-56-amd64",  # newer than -9 (numeric, not text order)
        "vmlinuz-6.1.0-10-amd64",
        "config-6.12.0-1-amd64",  # not an image
        "System.map-6.12.0-1-amd64",
        "initrd.img-6.12.0-1-amd64",
    ):
        (boot / name).write_text("")
    with_boot(monkeypatch, boot)
    assert default_kernel() == str(boot / "vmlinuz-6.1.0-56-amd64")
    (boot / "vmlinuz-6.12.3-1-amd64").write_text("")
    assert default_kernel() == str(boot / "vmlinuz-6.12.3-1-amd64")


def test_default_kernel_without_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "config-6.1.0-56-amd64").write_text("")
    with_boot(monkeypatch, boot)
    with pytest.raises(HarnessError) as info:
        default_kernel()
    assert "no kernel image" in str(info.value)
    assert "--kernel" in str(info.value)


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


def test_run_in_vm_times_out_a_guest_that_keeps_printing(
    tmp_path: Path, fake_vng: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VNG_MODE", "chatty")
    started = time.monotonic()
    result = run_in_vm(VmSpec(kernel=KERNEL, accel="tcg", timeout_s=1), tmp_path / "o", GUEST_OK)
    assert result.timed_out
    assert not result.crashed
    assert time.monotonic() - started < 10


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

"""Boot a kernel under test with virtme-ng and run a harness command inside it.

The guest sees the machine's own root file system (read-only overlay), so the repository
and its virtualenv are at the same paths inside. Results go to a directory shared read-write
with ``--rwdir``: every iteration the guest records is on the machine's disk at once, so a
guest crash or panic loses nothing already recorded. The guest's console (kernel log
included) is saved as console.log; if the guest dies before it wrote its summary, the runner
records a "kernel_crash" verdict with the console tail.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError, ToolError
from harness.procs import require_tool
from harness.results import RESULTS_FILE, SUMMARY_FILE, JsonlWriter, read_records, write_json_atomic

REPO = Path(__file__).resolve().parent.parent
KVM_PROBE_S = 1.5
CONSOLE_TAIL_LINES = 60
GUEST_EXIT_FILE = "guest-exit-status"


def default_kernel() -> str:
    """The installed Debian kernel image (newest), the default kernel under test."""
    images = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name))
    if not images:
        raise HarnessError(
            "no kernel image in /boot", hint="apt-get install linux-image-amd64, or pass --kernel"
        )
    return str(images[-1])


def _version_key(name: str) -> list[int]:
    digits = "".join(ch if ch.isdigit() else " " for ch in name)
    return [int(part) for part in digits.split()]


def kernel_release(image: str) -> str:
    name = Path(image).name
    return name.removeprefix("vmlinuz-") if name.startswith("vmlinuz-") else ""


def kvm_usable() -> bool:
    """Whether qemu can start a KVM guest here (``/dev/kvm`` can exist and still fail)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu = f"qemu-system-{platform.machine()}"
    try:
        require_tool(qemu)
    except ToolError:
        return False
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-machine", "q35", "-m", "64"]
    argv += ["-display", "none", "-nodefaults", "-no-reboot", "-serial", "none"]
    argv += ["-monitor", "none"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=KVM_PROBE_S)
        return False  # it exited: KVM refused the guest
    except subprocess.TimeoutExpired:
        return True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class VmSpec:
    kernel: str
    memory: str = "2G"
    cpus: int = 2
    accel: str = "auto"  # auto, kvm, tcg
    timeout_s: float = 1800.0

    def use_kvm(self) -> bool:
        if self.accel == "kvm":
            return True
        if self.accel == "tcg":
            return False
        return kvm_usable()


def vng_argv(spec: VmSpec, rwdir: Path, guest_argv: list[str], use_kvm: bool) -> list[str]:
    """The virtme-ng command line that runs ``guest_argv`` as root in the guest."""
    vng = require_tool("vng")
    exit_file = rwdir / GUEST_EXIT_FILE
    # vng --exec takes one shell command; every piece of it is quoted with shlex.
    script = (
        f"cd {shlex.quote(str(REPO))} && {shlex.join(guest_argv)}; "
        f"echo $? > {shlex.quote(str(exit_file))}"
    )
    argv = [vng, "--run", spec.kernel, "--memory", spec.memory, "--cpus", str(spec.cpus)]
    if not use_kvm:
        argv.append("--disable-kvm")
    # A panic must end the VM (reboot at once; qemu exits instead of rebooting), so the
    # runner sees the crash instead of waiting for its timeout.
    argv += ["--append", "panic=-1", "--qemu-opts=-no-reboot"]
    argv += ["--rwdir", str(rwdir), "--exec", script]
    return argv


@dataclass
class VmResult:
    exit_status: int | None  # the guest command's exit status; None if it never finished
    boot_s: float | None  # seconds from start to the guest's first output line of ours
    wall_s: float
    crashed: bool
    timed_out: bool
    console_tail: list[str]


def run_in_vm(
    spec: VmSpec,
    rwdir: Path,
    guest_argv: list[str],
    on_line: Callable[[str], None] | None = None,
    boot_marker: str = "nvmf-harness:",
) -> VmResult:
    """Boot, run ``guest_argv``, stream the console to ``rwdir/console.log``."""
    require_tool("qemu-system-x86_64")
    rwdir.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (rwdir / GUEST_EXIT_FILE).unlink()
    use_kvm = spec.use_kvm()
    argv = vng_argv(spec, rwdir, guest_argv, use_kvm)
    started = time.monotonic()
    boot_s: float | None = None
    tail: list[str] = []
    timed_out = False
    console = (rwdir / "console.log").open("a", encoding="utf-8")
    console.write(f"# {time.strftime('%F %T')} {'kvm' if use_kvm else 'tcg'}: {shlex.join(argv)}\n")
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
        env=_env_with_venv_path(),
    )
    # A wedged guest may print nothing at all: a timer, not the next console line, ends it.
    expired = threading.Event()

    def on_deadline() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # closes the console pipe: the loop below ends

    watchdog = threading.Timer(spec.timeout_s, on_deadline)
    watchdog.daemon = True
    watchdog.start()
    try:
        assert proc.stdout is not None
        deadline = started + spec.timeout_s
        for line in proc.stdout:
            console.write(line)
            console.flush()
            text = line.rstrip("\n")
            tail = [*tail[-(CONSOLE_TAIL_LINES - 1) :], text]
            if boot_s is None and boot_marker in text:
                boot_s = time.monotonic() - started
            if on_line is not None:
                on_line(text)
            if time.monotonic() > deadline:
                timed_out = True
                break
        timed_out = timed_out or expired.is_set()
        if timed_out:
            _kill(proc)
        proc.wait(timeout=60)
    except KeyboardInterrupt:
        _kill(proc)
        raise
    finally:
        watchdog.cancel()
        console.close()
    status = guest_status(rwdir)
    crashed = status is None and not timed_out
    return VmResult(
        exit_status=status,
        boot_s=boot_s,
        wall_s=time.monotonic() - started,
        crashed=crashed,
        timed_out=timed_out,
        console_tail=tail,
    )


def _env_with_venv_path() -> dict[str, str]:
    """vng runs its helpers (virtme-run) by name: put this venv's bin first in PATH."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=30)


def guest_status(rwdir: Path) -> int | None:
    """The exit status the guest command wrote into ``rwdir``; None if it wrote none."""
    try:
        return int((rwdir / GUEST_EXIT_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def record_crash(outdir: Path, result: VmResult) -> None:
    """After a guest died mid-campaign: a kernel_crash record and a summary that says so."""
    records = list(read_records(outdir / RESULTS_FILE))
    last = records[-1] if records else {}
    with JsonlWriter(outdir / RESULTS_FILE) as writer:
        writer.append(
            {
                "run_id": last.get("run_id", ""),
                "iteration": int(last.get("iteration", 0)) + 1,
                "fault": "unknown",
                "verdict": "kernel_crash" if not result.timed_out else "vm_timeout",
                "kernel_release": last.get("kernel_release", ""),
                "variant": last.get("variant", ""),
                "console_tail": result.console_tail[-30:],
            }
        )
    summary_path = outdir / SUMMARY_FILE
    if not summary_path.exists():
        write_json_atomic(
            summary_path,
            {
                "complete": False,
                "crashed": True,
                "timed_out": result.timed_out,
                "iterations": len(records),
                "console_tail": result.console_tail[-30:],
            },
        )


def guest_python() -> str:
    """The interpreter the guest runs the harness with (this virtualenv's, same path)."""
    return sys.executable

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
import json
import os
import platform
import re
import selectors
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.core.errors import ToolError
from harness.core.paths import REPO_ROOT
from harness.core.procs import require_tool, run
from harness.core.results import (
    RESULTS_FILE,
    SUMMARY_FILE,
    JsonlWriter,
    read_records,
    write_json_atomic,
)
from harness.kernels.prepared import kernel_release

REPO = REPO_ROOT
# Seconds the KVM probe waits for the firmware's first line (KVM prints it in well under 1 s).
KVM_PROBE_S = 5.0
# Seconds the KVM kernel probe waits for the kernel's first printk on the serial port. Under
# KVM the decompressor and start_kernel() take well under a second; under TCG the same line
# took 4.4 s on a 2-core machine (6.1.0-57-amd64). Measured 2026-12-07: a KVM that ran the
# firmware stopped after the setup code's "Probing EDD" and never printed this line.
KVM_KERNEL_PROBE_S = 10.0
# A probe without the banner is evidence against KVM only if qemu had at least this share of
# the probe's time on a CPU (the machine seen spun 9.96 s of 10.1 s in the kernel for KVM).
STUCK_CPU_FRACTION = 0.5
QEMU_KILL_WAIT_S = 10.0
# The kernel's first printk (init/main.c:start_kernel, linux_banner), seen through earlyprintk.
KERNEL_BANNER = b"Linux version "
CONSOLE_TAIL_LINES = 60
GUEST_EXIT_FILE = "guest-exit-status"
VM_RECORD_FILE = "vm.json"
# The guest's --exec script prints this first: the guest booted and runs our command.
GUEST_UP_MARKER = "nvmf-harness-vm: guest up"
# Seconds a guest command may take to exit after its end marker (run_in_vm's end_marker):
# pytest's interpreter exits in seconds, then the guest writes its exit status and powers
# off (a few seconds under TCG).
EXIT_GRACE_S = 120.0
# Boot watchdog: seconds from qemu's start to the guest's first line before the VM is ended.
# Under TCG a boot to the first line takes 20-35 s on a quiet 2-core machine (more when
# loaded); a KVM boot takes a few seconds, so 60 s of silence means it will not come.
KVM_BOOT_TIMEOUT_S = 60.0
TCG_BOOT_TIMEOUT_S = 180.0
ACCEL_CACHE_NAME = "accel.json"
ACCEL_CACHE_ENV = "NVMF_HARNESS_CACHE_DIR"
QEMU_VERSION_TIMEOUT_S = 15.0


def kvm_device_present() -> bool:
    """Whether ``/dev/kvm`` exists and this user may open it read-write."""
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def kvm_usable(limit_s: float | None = None) -> bool:
    """Whether a KVM vCPU runs guest code here (``/dev/kvm`` can exist and still fail).

    qemu starts a bare q35 machine under KVM with SeaBIOS's debug port (0x402) on a pipe;
    KVM is usable when the firmware prints its first line within ``limit_s`` seconds
    (default KVM_PROBE_S). qemu ending first (a refused ioctl, qemu's "failed to set MSR"
    abort) or silence is "not usable": only guest output is evidence, not how long qemu
    stayed up, which on a loaded machine says nothing. A KVM that runs firmware can still
    never boot a kernel: the boot watchdog of run_in_vm catches that and remembers it.
    """
    firmware = ["-machine", "q35", "-m", "64", "-serial", "none", "-chardev", "stdio,id=firmware"]
    firmware += ["-device", "isa-debugcon,iobase=0x402,chardev=firmware"]
    with _kvm_qemu(firmware) as proc:
        if proc is None:
            return False
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            # Readable: the firmware's first bytes, or end of file when qemu ended.
            ready = selector.select(timeout=KVM_PROBE_S if limit_s is None else limit_s)
            return bool(ready) and bool(os.read(proc.stdout.fileno(), 256))


@contextlib.contextmanager
def _kvm_qemu(args: list[str]) -> Iterator[subprocess.Popen[bytes] | None]:
    """A qemu for a KVM probe: ``qemu-system-<arch> -accel kvm -cpu host`` without display,
    devices or monitor, plus ``args``; its stdout is a pipe. Yields None when /dev/kvm or
    qemu is missing. Killed on leaving (waited for at most QEMU_KILL_WAIT_S seconds)."""
    qemu = f"qemu-system-{platform.machine()}"
    if not kvm_device_present():
        yield None
        return
    try:
        require_tool(qemu)
    except ToolError:
        yield None
        return
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-display", "none", "-nodefaults"]
    argv += ["-no-reboot", "-monitor", "none", *args]
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=QEMU_KILL_WAIT_S)
        if proc.stdout is not None:
            proc.stdout.close()


def kernel_image(kernel: str) -> Path | None:
    """The bootable image of ``kernel`` (a bzImage or vmlinuz, or a kdir of build-kernel);
    None when there is no such file."""
    path = Path(kernel)
    if path.is_dir():
        path = path / "arch/x86/boot/bzImage"
    return path if path.is_file() else None


@dataclass(frozen=True)
class KernelProbe:
    """What the KVM kernel probe saw: ``ran`` (there was an image file and qemu to try),
    ``banner`` (the kernel printed it), ``ended`` (qemu ended before that), ``cpu_s`` (CPU
    seconds qemu used, from /proc/PID/stat: utime + stime of all its threads), ``limit_s``
    (seconds it was given) and the last line it printed."""

    ran: bool
    banner: bool = False
    ended: bool = False
    cpu_s: float = 0.0
    limit_s: float = 0.0
    last_line: str = ""

    @property
    def failed(self) -> bool:
        """KVM did not run the kernel to its banner, with evidence: qemu ended first, or it
        had at least STUCK_CPU_FRACTION of the probe's time on a CPU (a vCPU spinning in
        the kernel's setup code). A qemu starved by a loaded machine is not evidence."""
        if not self.ran or self.banner:
            return False
        return self.ended or self.cpu_s >= STUCK_CPU_FRACTION * self.limit_s

    def describe(self) -> str:
        """One phrase for the records."""
        if not self.ran:
            return "no kernel image to probe"
        if self.banner:
            return "KVM started the kernel in the probe"
        last = f"its last line {self.last_line!r}" if self.last_line else "no output"
        how = "qemu ended" if self.ended else f"qemu had {self.cpu_s:.1f} s of CPU"
        return (
            f"KVM did not start the kernel in the probe (no banner in {self.limit_s:g} s, "
            f"{how}, {last})"
        )


def kvm_starts_kernel(kernel: str, limit_s: float | None = None) -> KernelProbe:
    """Whether KVM runs ``kernel`` to its first printk (KernelProbe; ``ran`` False when
    there is no image file or no qemu to try).

    qemu boots the image under KVM with no root file system and ``earlyprintk`` on a serial
    port read through a pipe; the kernel's banner (KERNEL_BANNER) within ``limit_s`` seconds
    (default KVM_KERNEL_PROBE_S) is the answer. A KVM that runs the firmware (kvm_usable)
    may still stop a kernel in its setup code; where it does, this probe costs
    KVM_KERNEL_PROBE_S instead of the boot watchdog's KVM_BOOT_TIMEOUT_S.
    """
    image = kernel_image(kernel)
    if image is None:
        return KernelProbe(ran=False)
    limit = KVM_KERNEL_PROBE_S if limit_s is None else limit_s
    seen = b""
    banner = ended = False
    deadline = time.monotonic() + limit
    boot = ["-m", "256", "-serial", "stdio", "-kernel", str(image)]
    boot += ["-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1"]
    with _kvm_qemu(boot) as proc:
        if proc is None:
            return KernelProbe(ran=False)
        assert proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while not banner:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(timeout=left):
                    break
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    ended = True
                    break
                joined = seen + chunk  # a banner may be split across reads
                banner = KERNEL_BANNER in joined
                seen = joined[-4096:]
        cpu_s = _cpu_seconds(proc.pid)
    lines = [ln.strip() for ln in seen.decode(errors="replace").splitlines() if ln.strip()]
    return KernelProbe(
        ran=True,
        banner=banner,
        ended=ended,
        cpu_s=round(cpu_s, 2),
        limit_s=limit,
        last_line=lines[-1] if lines and not banner else "",
    )


def _cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process; 0.0 when unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def qemu_version() -> str:
    """``7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)`` from ``qemu-system-x86_64 --version``;
    ``""`` when qemu is missing or says nothing usable."""
    try:
        result = run(["qemu-system-x86_64", "--version"], timeout_s=QEMU_VERSION_TIMEOUT_S)
    except ToolError:
        return ""
    lines = result.stdout.strip().splitlines()
    return lines[0].removeprefix("QEMU emulator version ").strip() if result.ok and lines else ""


# --- the KVM answer, remembered per machine ------------------------------------------------------


def default_accel_cache() -> Path:
    """Where the KVM answer is kept: it is a property of this machine (its KVM, its qemu,
    the kernel), shared by every checkout, so not in the repository.

    ``$NVMF_HARNESS_CACHE_DIR/accel.json`` when set; as root (the VM commands run with sudo)
    ``/var/cache/nvmf-harness/accel.json``; else ``$XDG_CACHE_HOME`` or
    ``~/.cache/nvmf-harness/accel.json``.
    """
    if os.environ.get(ACCEL_CACHE_ENV):
        return Path(os.environ[ACCEL_CACHE_ENV]) / ACCEL_CACHE_NAME
    if os.geteuid() == 0:
        return Path("/var/cache/nvmf-harness") / ACCEL_CACHE_NAME
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nvmf-harness" / ACCEL_CACHE_NAME


@dataclass(frozen=True)
class KvmAnswer:
    """Whether a KVM guest of ``kernel`` booted here with qemu ``qemu_version``.

    ``kernel`` is the kernel release (or the image path of a kernel without one);
    ``detail`` says what was seen; ``checked_at`` is local time, ``%Y-%m-%d %H:%M:%S``.
    """

    kvm_boots: bool
    kernel: str
    qemu_version: str
    detail: str
    checked_at: str

    def describe(self) -> str:
        verdict = "boots" if self.kvm_boots else "does NOT boot"
        return (
            f"KVM {verdict} {self.kernel} with qemu {self.qemu_version or '?'} "
            f"({self.detail}; {self.checked_at})"
        )


def kernel_key(image: str) -> str:
    """What a KVM answer is valid for: the kernel release, else the resolved image path."""
    return kernel_release(image) or str(Path(image).resolve())


class AccelCache:
    """A small JSON file of KvmAnswers, one per (kernel, qemu version).

    ``{"answers": [{"kvm_boots": false, "kernel": "6.1.0-57-amd64", "qemu_version": ...,
    "detail": ..., "checked_at": ...}]}``. A missing or unreadable file is an empty cache;
    an answer for another kernel or another qemu is not used.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def answers(self) -> list[KvmAnswer]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [
                KvmAnswer(
                    kvm_boots=bool(entry["kvm_boots"]),
                    kernel=str(entry["kernel"]),
                    qemu_version=str(entry["qemu_version"]),
                    detail=str(entry.get("detail", "")),
                    checked_at=str(entry.get("checked_at", "")),
                )
                for entry in data["answers"]
            ]
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def lookup(self, kernel: str, qemu: str) -> KvmAnswer | None:
        """The answer for this kernel key and qemu version, if one was recorded."""
        for answer in self.answers():
            if answer.kernel == kernel and answer.qemu_version == qemu:
                return answer
        return None

    def remember(self, answer: KvmAnswer) -> str:
        """Store ``answer`` (replacing the one for its kernel and qemu). Returns ``""``, or
        why it could not be written (the run goes on without the cache)."""
        kept = [
            a
            for a in self.answers()
            if (a.kernel, a.qemu_version) != (answer.kernel, answer.qemu_version)
        ]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.path, {"answers": [asdict(a) for a in [*kept, answer]]})
        except OSError as exc:
            return f"not remembered: {exc}"
        return ""


# --- the VM ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VmSpec:
    """How to boot the kernel under test.

    ``timeout_s``: seconds the whole VM may run (per boot). ``boot_timeout_s``: seconds to
    the guest's first line (the boot watchdog); None means 60 s with KVM, 180 s with TCG.
    ``accel_cache``: the KVM answer file (None: default_accel_cache()). ``accel_probe``:
    False makes ``--accel auto`` boot under KVM without asking the probe or the cache first
    (the boot itself is the test: the KVM fallback self-test). ``writable``: more host
    directories the guest may write to besides the run's own directory (everything else it
    sees is a read-only overlay: a write there succeeds in the guest and is lost).
    """

    kernel: str
    memory: str = "2G"
    cpus: int = 2
    accel: str = "auto"  # auto, kvm, tcg
    timeout_s: float = 1800.0
    boot_timeout_s: float | None = None
    accel_cache: Path | None = None
    accel_probe: bool = True
    writable: tuple[Path, ...] = ()

    def boot_limit_s(self, use_kvm: bool) -> float:
        if self.boot_timeout_s is not None:
            return self.boot_timeout_s
        return KVM_BOOT_TIMEOUT_S if use_kvm else TCG_BOOT_TIMEOUT_S

    def cache(self) -> AccelCache:
        return AccelCache(self.accel_cache or default_accel_cache())

    def choose_accel(self) -> AccelChoice:
        """KVM or TCG for this boot, and why (``--accel``, the cached answer, the probe)."""
        if self.accel == "kvm":
            return AccelChoice(True, "--accel kvm")
        if self.accel == "tcg":
            return AccelChoice(False, "--accel tcg")
        if not kvm_device_present():
            return AccelChoice(False, "--accel auto: no usable /dev/kvm")
        if not self.accel_probe:
            return AccelChoice(True, "--accel auto: KVM tried without the probe", qemu_version())
        qemu = qemu_version()
        cache = self.cache()
        answer = cache.lookup(kernel_key(self.kernel), qemu)
        if answer is not None and not answer.kvm_boots:
            return AccelChoice(False, f"--accel auto: remembered in {cache.path}: {answer.detail}")
        if not kvm_usable():
            return AccelChoice(False, "--accel auto: KVM ran no guest code in the probe")
        if answer is not None:  # it boots: remembered
            return AccelChoice(True, f"--accel auto: remembered in {cache.path}: {answer.detail}")
        probe = kvm_starts_kernel(self.kernel)
        if probe.failed:
            detail = probe.describe()
            return AccelChoice(False, f"--accel auto: {detail}", qemu, kvm_failure=detail)
        if probe.banner:
            return AccelChoice(
                True, "--accel auto: KVM ran the guest's firmware and kernel in the probe", qemu
            )
        return AccelChoice(
            True,
            f"--accel auto: KVM ran the guest's firmware in the probe ({probe.describe()}; "
            "the boot watchdog decides)",
            qemu,
        )

    def use_kvm(self) -> bool:
        return self.choose_accel().use_kvm


@dataclass(frozen=True)
class AccelChoice:
    """The accelerator of a boot: ``use_kvm``, ``reason`` (one phrase for people and the
    records), and ``qemu_version`` when it was read (auto with a usable /dev/kvm).
    ``kvm_failure``: what the kernel probe saw when it sent an ``auto`` boot to TCG (the TCG
    boot then decides whether it is remembered)."""

    use_kvm: bool
    reason: str
    qemu_version: str = ""
    kvm_failure: str = ""

    @property
    def name(self) -> str:
        return "kvm" if self.use_kvm else "tcg"


def vng_argv(spec: VmSpec, rwdir: Path, guest_argv: list[str], use_kvm: bool) -> list[str]:
    """The virtme-ng command line that runs ``guest_argv`` as root in the guest.

    The guest's script first prints GUEST_UP_MARKER (the boot watchdog's sign of life), then
    runs ``guest_argv`` in the repository and writes its exit status to ``rwdir``.
    """
    vng = require_tool("vng")
    exit_file = rwdir / GUEST_EXIT_FILE
    # vng --exec takes one shell command; every piece of it is quoted with shlex.
    script = (
        f"echo {shlex.quote(GUEST_UP_MARKER)}; "
        f"cd {shlex.quote(str(REPO))} && {shlex.join(guest_argv)}; "
        f"echo $? > {shlex.quote(str(exit_file))}"
    )
    argv = [vng, "--run", spec.kernel, "--memory", spec.memory, "--cpus", str(spec.cpus)]
    if not use_kvm:
        argv.append("--disable-kvm")
    # A panic must end the VM (reboot at once; qemu exits instead of rebooting), so the
    # runner sees the crash instead of waiting for its timeout.
    argv += ["--append", "panic=-1", "--qemu-opts=-no-reboot"]
    # A fault can flood the kernel log (nvmet logs one "failed cmd" line per IO it fails):
    # with Debian's 128 KiB ring buffer the EOD-race lines of the same second were overwritten
    # before the harness read them. 16 MiB holds ~200,000 such lines.
    argv += ["--append", "log_buf_len=16M"]
    argv += ["--rwdir", str(rwdir)]
    for directory in spec.writable:
        if not directory.resolve().is_relative_to(rwdir.resolve()):
            argv += ["--rwdir", str(directory)]
    argv += ["--exec", script]
    return argv


@dataclass
class VmResult:
    """What became of a VM run (all times in seconds since run_in_vm started).

    ``boot_timed_out``: the (last) boot gave no sign of life within ``boot_timeout_s``
    (``timed_out`` is then set too). ``accel`` is the accelerator of the last boot;
    ``fallback`` says why an earlier boot was given up (``""``: there was none).
    """

    exit_status: int | None  # the guest command's exit status; None if it never finished
    boot_s: float | None  # seconds from start to the guest's first output line of ours
    wall_s: float
    crashed: bool
    timed_out: bool
    console_tail: list[str]
    accel: str = ""
    accel_reason: str = ""
    boot_timeout_s: float = 0.0
    boot_timed_out: bool = False
    guest_up_s: float | None = None  # seconds from the last boot's start to its first line
    fallback: str = ""
    # the guest command printed its end line (run_in_vm's end_marker) but did not exit
    # within exit_grace_s seconds: the VM was ended (a task stuck in the kernel, say)
    exit_stuck: bool = False
    exit_grace_s: float = 0.0


@dataclass
class _Boot:
    """One qemu run inside run_in_vm."""

    accel: str
    boot_timeout_s: float
    started: float
    guest_up_s: float | None = None
    boot_s: float | None = None
    timed_out: bool = False
    boot_timed_out: bool = False
    exit_stuck: bool = False
    wall_s: float = 0.0
    tail: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _EndWatch:
    """The end marker of a run_in_vm and the seconds the guest has to end after it."""

    marker: re.Pattern[str] | None
    grace_s: float

    def matches(self, line: str) -> bool:
        return self.marker is not None and self.marker.search(line) is not None


def _print_line(text: str) -> None:
    print(f"nvmf-harness: {text}", file=sys.stderr, flush=True)


def run_in_vm(
    spec: VmSpec,
    rwdir: Path,
    guest_argv: list[str],
    on_line: Callable[[str], None] | None = None,
    boot_marker: str = "nvmf-harness:",
    say: Callable[[str], None] | None = None,
    end_marker: re.Pattern[str] | None = None,
    exit_grace_s: float = EXIT_GRACE_S,
) -> VmResult:
    """Boot, run ``guest_argv``, stream the console to ``rwdir/console.log``.

    ``end_marker``: a console line that says the guest command has done its work (pytest's
    summary); when the VM has not ended ``exit_grace_s`` seconds after it, it is ended,
    instead of waiting for the whole-run timeout (a process that cannot exit because one of
    its threads is stuck in the kernel), and ``exit_stuck`` is set unless the guest's
    command left its exit status. A later line of the guest disarms it: that was not the
    end.

    A boot watchdog ends a VM whose guest prints no line of ours within the boot limit
    (``spec.boot_limit_s``) and says so in one line through ``say`` (default: stderr). With
    ``accel="auto"`` a KVM boot that gives no sign of life (silent until the watchdog, or
    qemu ended before the guest said a word: kvm_failure) is followed by a TCG boot; when
    the guest comes up under TCG, "KVM does not boot this kernel" is remembered in the
    accel cache. The boots are recorded in ``rwdir/vm.json``.
    Raises ToolError when qemu or vng is missing.
    """
    require_tool("qemu-system-x86_64")
    rwdir.mkdir(parents=True, exist_ok=True)
    notify = say or _print_line
    started = time.monotonic()
    choice = spec.choose_accel()
    origin = _kernel_origin(spec.kernel)
    notify(
        f"VM: kernel {spec.kernel} ({origin}) under {choice.name.upper()} ({choice.reason}); "
        f"boot watchdog {spec.boot_limit_s(choice.use_kvm):.0f} s"
    )
    watch = _EndWatch(end_marker, exit_grace_s)
    boots = [_boot(spec, rwdir, guest_argv, choice, on_line, boot_marker, watch)]
    fallback = ""
    detail = kvm_failure(boots[-1]) if choice.use_kvm and spec.accel == "auto" else ""
    if detail:
        fallback = f"{detail}: booted again under TCG"
        notify(f"{detail}: booting again under TCG")
        qemu = choice.qemu_version or qemu_version()
        choice = AccelChoice(False, f"fallback from KVM ({detail})")
        boots.append(_boot(spec, rwdir, guest_argv, choice, on_line, boot_marker, watch))
        notify(_judge_kvm_by_tcg(spec, qemu, detail, boots[-1], rwdir))
    elif choice.kvm_failure:
        notify(_judge_kvm_by_tcg(spec, choice.qemu_version, choice.kvm_failure, boots[-1], rwdir))
    elif boots[-1].guest_up_s is not None and choice.use_kvm and spec.accel == "auto":
        spec.cache().remember(
            KvmAnswer(
                True,
                kernel_key(spec.kernel),
                choice.qemu_version or qemu_version(),
                f"first line after {boots[-1].guest_up_s:.1f} s",
                time.strftime("%F %T"),
            )
        )
    last = boots[-1]
    if last.boot_timed_out:
        hint = (
            "KVM does not boot this kernel here? --accel auto or tcg"
            if last.accel == "kvm"
            else "a loaded machine? raise --boot-timeout"
        )
        notify(
            f"no sign of life from the guest in {last.boot_timeout_s:.0f} s under "
            f"{last.accel.upper()}: VM ended ({hint}; console: {rwdir / 'console.log'})"
        )
    status = guest_status(rwdir)
    if status is None and last.guest_up_s is None and not last.boot_timed_out:
        _raise_if_vng_failed(last.tail, rwdir)
    result = VmResult(
        exit_status=status,
        boot_s=None if last.boot_s is None else last.boot_s + (last.started - started),
        wall_s=time.monotonic() - started,
        crashed=status is None and not last.timed_out and not last.exit_stuck,
        timed_out=last.timed_out,
        console_tail=last.tail,
        accel=last.accel,
        accel_reason=choice.reason,
        boot_timeout_s=last.boot_timeout_s,
        boot_timed_out=last.boot_timed_out,
        guest_up_s=last.guest_up_s,
        fallback=fallback,
        exit_stuck=last.exit_stuck and status is None,
        exit_grace_s=exit_grace_s,
    )
    if result.exit_stuck:
        notify(
            f"the guest's command printed its end but did not exit in {exit_grace_s:.0f} s: "
            f"VM ended (a task stuck in the kernel? console: {rwdir / 'console.log'})"
        )
    _append_vm_record(rwdir, spec, origin, result, boots)
    return result


def kvm_failure(boot: _Boot) -> str:
    """Why ``boot`` (a KVM boot) may show that KVM does not run this guest here, or ``""``.

    Two signs: the boot watchdog ended a guest that never printed a line of ours, or qemu
    ended before the guest said a word (qemu's "failed to set MSR" abort, a refused ioctl).
    The second looks the same as a kernel that died early, qemu killed on the host or out
    of memory: vng sends the kernel's console to /dev/null unless --verbose. So this only
    starts a TCG boot; _judge_kvm_by_tcg decides what is remembered. The whole-run timeout
    and vng failing on the host (a traceback) are not signs.
    """
    if boot.guest_up_s is not None:
        return ""
    if boot.boot_timed_out:
        return f"no sign of life from a KVM guest in {boot.boot_timeout_s:.0f} s"
    if boot.timed_out or _vng_traceback(boot.tail):
        return ""
    said = [line.strip() for line in boot.tail if line.strip()]
    why = next((line for line in said if "error" in line.lower()), said[-1] if said else "")
    return f"qemu ended under KVM before the guest said a word ({why or 'no output'})"


def _judge_kvm_by_tcg(spec: VmSpec, qemu: str, detail: str, tcg: _Boot, rwdir: Path) -> str:
    """After a KVM boot that failed (``detail``) and the TCG boot that followed: remember
    "KVM does not boot this kernel" only when the guest came up under TCG (so the failure
    was KVM's); returns the line to show."""
    if tcg.guest_up_s is None:
        return (
            "the guest did not come up under TCG either: not a KVM problem, nothing "
            f"remembered (console: {rwdir / 'console.log'})"
        )
    cache = spec.cache()
    problem = cache.remember(
        KvmAnswer(False, kernel_key(spec.kernel), qemu, detail, time.strftime("%F %T"))
    )
    return (
        "the guest came up under TCG: KVM does not boot this kernel here "
        f"({problem or f'remembered in {cache.path}: the next run goes straight to TCG'})"
    )


def _vng_traceback(tail: list[str]) -> bool:
    return any(line.startswith("Traceback (most recent call last)") for line in tail)


def _raise_if_vng_failed(tail: list[str], rwdir: Path) -> None:
    """A Python traceback on the console before the guest said a word is vng/virtme-run
    failing on the host (a missing tool such as ``file``), not a kernel crash: ToolError
    with the traceback's last line instead of a kernel_crash record."""
    if not _vng_traceback(tail):
        return
    last_line = next((line.strip() for line in reversed(tail) if line.strip()), "")
    raise ToolError(
        f"vng failed before the guest started: {last_line}",
        hint=f"see {rwdir / 'console.log'}; nvmf-harness doctor checks the host's tools",
    )


def _kernel_origin(image: str) -> str:
    from harness.kernels import prepared

    return prepared.kernel_origin(image)


def _boot(
    spec: VmSpec,
    rwdir: Path,
    guest_argv: list[str],
    choice: AccelChoice,
    on_line: Callable[[str], None] | None,
    boot_marker: str,
    watch: _EndWatch,
) -> _Boot:
    """One qemu run with its watchdogs: the boot limit, the whole-run timeout and, once the
    guest printed ``watch``'s end marker, its exit grace."""
    with contextlib.suppress(FileNotFoundError):
        (rwdir / GUEST_EXIT_FILE).unlink()
    argv = vng_argv(spec, rwdir, guest_argv, choice.use_kvm)
    boot = _Boot(choice.name, spec.boot_limit_s(choice.use_kvm), time.monotonic())
    console = (rwdir / "console.log").open("a", encoding="utf-8")
    console.write(
        f"# {time.strftime('%F %T')} {choice.name} ({choice.reason}; boot watchdog "
        f"{boot.boot_timeout_s:.0f} s): {shlex.join(argv)}\n"
    )
    console.flush()
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
    # A wedged guest may print nothing at all: timers, not the next console line, end it.
    lock = threading.Lock()
    expired = threading.Event()
    boot_expired = threading.Event()
    alive = threading.Event()

    def on_deadline() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # closes the console pipe: the loop below ends

    def on_boot_deadline() -> None:
        with lock:
            if alive.is_set():
                return
            boot_expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)

    exit_stuck = threading.Event()
    end_timer: threading.Timer | None = None  # armed by the end marker

    def on_exit_deadline() -> None:
        exit_stuck.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)

    timers = [
        threading.Timer(spec.timeout_s, on_deadline),
        threading.Timer(boot.boot_timeout_s, on_boot_deadline),
    ]
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        assert proc.stdout is not None
        deadline = boot.started + spec.timeout_s
        for line in proc.stdout:
            console.write(line)
            console.flush()
            text = line.rstrip("\n")
            now = time.monotonic() - boot.started
            if not alive.is_set() and (GUEST_UP_MARKER in text or boot_marker in text):
                with lock:
                    if not boot_expired.is_set():
                        alive.set()
                        boot.guest_up_s = now
            if GUEST_UP_MARKER in text:
                continue  # the runner's own marker: not part of the guest's output
            boot.tail = [*boot.tail[-(CONSOLE_TAIL_LINES - 1) :], text]
            if boot.boot_s is None and boot_marker in text:
                boot.boot_s = now
            if on_line is not None:
                on_line(text)
            if watch.matches(text):
                if end_timer is None:
                    end_timer = threading.Timer(watch.grace_s, on_exit_deadline)
                    end_timer.daemon = True
                    end_timer.start()
                    timers.append(end_timer)
            elif end_timer is not None:  # the guest printed on: that was not its end
                end_timer.cancel()
                end_timer = None
            if time.monotonic() > deadline:
                boot.timed_out = True
                break
        boot.boot_timed_out = boot_expired.is_set()
        boot.exit_stuck = exit_stuck.is_set() and not expired.is_set()
        boot.timed_out = boot.timed_out or expired.is_set() or boot.boot_timed_out
        if boot.timed_out:
            _kill(proc)
        proc.wait(timeout=60)
    except KeyboardInterrupt:
        _kill(proc)
        raise
    finally:
        for timer in timers:
            timer.cancel()
        if boot.boot_timed_out:
            console.write(
                f"# boot watchdog: no sign of life from the guest in "
                f"{boot.boot_timeout_s:.0f} s under {boot.accel}: VM ended\n"
            )
        console.close()
    boot.wall_s = time.monotonic() - boot.started
    return boot


def _append_vm_record(
    rwdir: Path, spec: VmSpec, origin: str, result: VmResult, boots: list[_Boot]
) -> None:
    """Add this run to ``rwdir/vm.json`` (``{"runs": [...]}``, one entry per run_in_vm)."""
    path = rwdir / VM_RECORD_FILE
    try:
        runs = list(json.loads(path.read_text(encoding="utf-8"))["runs"])
    except (OSError, ValueError, KeyError, TypeError):
        runs = []
    runs.append(
        {
            "started": time.strftime("%F %T", time.localtime(time.time() - result.wall_s)),
            "kernel": spec.kernel,
            "kernel_release": kernel_release(spec.kernel),
            "kernel_origin": origin,
            "accel_requested": spec.accel,
            "accel": result.accel,
            "accel_reason": result.accel_reason,
            "fallback": result.fallback,
            "boot_timeout_s": result.boot_timeout_s,
            "timeout_s": spec.timeout_s,
            "boots": [
                {
                    "accel": boot.accel,
                    "boot_timeout_s": boot.boot_timeout_s,
                    "guest_up_s": None if boot.guest_up_s is None else round(boot.guest_up_s, 3),
                    "boot_timed_out": boot.boot_timed_out,
                    "timed_out": boot.timed_out,
                    "exit_stuck": boot.exit_stuck,
                    "wall_s": round(boot.wall_s, 3),
                }
                for boot in boots
            ],
            "exit_status": result.exit_status,
            "crashed": result.crashed,
            "timed_out": result.timed_out,
            "wall_s": round(result.wall_s, 3),
        }
    )
    write_json_atomic(path, {"runs": runs})


def check_kvm_boot(
    image: str, workdir: Path, cache: AccelCache, say: Callable[[str], None]
) -> KvmAnswer:
    """Boot ``image`` under KVM with a trivial command (``true``) and remember the answer.

    ``workdir`` receives the console.log and vm.json of that boot. Returns the answer stored
    in ``cache``. Raises ToolError when qemu or vng is missing.
    """
    spec = VmSpec(
        kernel=image,
        memory="1G",
        accel="kvm",
        timeout_s=KVM_BOOT_TIMEOUT_S + 60,
        accel_cache=cache.path,
    )
    result = run_in_vm(spec, workdir, ["true"], say=say)
    if result.guest_up_s is not None and result.exit_status == 0:
        detail = f"`true` ran, first line after {result.guest_up_s:.1f} s"
    elif result.guest_up_s is not None:
        detail = f"booted, but the command ended with {result.exit_status}"
    elif result.boot_timed_out:
        detail = f"no sign of life from a KVM guest in {result.boot_timeout_s:.0f} s"
    else:
        detail = "qemu ended before the guest printed a line"
    answer = KvmAnswer(
        result.guest_up_s is not None,
        kernel_key(image),
        qemu_version(),
        detail,
        time.strftime("%F %T"),
    )
    problem = cache.remember(answer)
    if problem:
        say(f"KVM answer {problem}")
    return answer


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
                **_boot_timeout_reason(result),
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


def _boot_timeout_reason(result: VmResult) -> dict[str, str]:
    if not result.boot_timed_out:
        return {}
    return {
        "reason": f"no sign of life from the guest in {result.boot_timeout_s:.0f} s under "
        f"{result.accel} (boot watchdog)"
    }


def guest_python() -> str:
    """The interpreter the guest runs the harness with (this virtualenv's, same path)."""
    return sys.executable

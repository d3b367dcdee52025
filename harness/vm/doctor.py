"""`doctor`: is everything needed here, and if not, the command that installs it."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.bed.module_records import default_cache_dir, load_nvmet_record
from harness.bed.nvmet_modules import loaded_nvmet
from harness.core.errors import HarnessError, ToolError
from harness.core.procs import PACKAGE_OF_TOOL, require_tool, run
from harness.kernels import prepared
from harness.vm import boot as vm

APT = "apt-get install -y"
SETUP = "sudo scripts/setup"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    optional: bool = False


def _tool(name: str, version_argv: list[str], optional: bool = False) -> Check:
    try:
        require_tool(name)
    except ToolError:
        package = PACKAGE_OF_TOOL.get(name, name)
        fix = f"pip install {package.split()[0]}" if "pip" in package else f"{APT} {package}"
        return Check(name, False, "not installed", fix, optional)
    try:
        result = run([name, *version_argv], timeout_s=20)
    except ToolError as exc:
        return Check(name, False, exc.message, optional=optional)
    text = (result.stdout or result.stderr).strip().splitlines()
    return Check(name, True, text[0] if text else "installed", optional=optional)


def _module(release: str, name: str) -> Check:
    try:
        result = run(["modinfo", "-k", release, "-F", "filename", name], timeout_s=20)
    except ToolError as exc:
        return Check(f"module {name}", False, exc.message, f"{APT} kmod")
    if result.ok and result.stdout.strip():
        return Check(f"module {name} ({release})", True, result.stdout.strip())
    return Check(
        f"module {name} ({release})",
        False,
        "not available for this kernel",
        f"{APT} linux-image-amd64, or build a kernel with NVME_TCP/NVME_TARGET_TCP",
    )


def newest_release() -> str:
    releases = sorted(p.name for p in Path("/lib/modules").glob("*") if (p / "kernel").is_dir())
    return releases[-1] if releases else platform.release()


def prepared_kernel_check(record_path: Path = prepared.RECORD_FILE) -> tuple[Check, str | None]:
    """The kernel under test scripts/setup recorded, and whether its packages are still the
    recorded versions. Returns the check and the prepared release (None: none usable)."""
    try:
        record = prepared.load(record_path)
    except HarnessError as exc:
        return Check("kernel under test", False, exc.message, exc.hint or SETUP), None
    if not prepared.still_installed(record):
        found = prepared.installed_versions(list(record.packages))
        changed = ", ".join(
            f"{package} {found.get(package, 'not installed')} (was {version})"
            for package, version in record.packages.items()
            if found.get(package) != version
        )
        return Check("kernel under test", False, f"{record.release}: {changed}", SETUP), None
    return Check("kernel under test", True, prepared.describe(record)), record.release


def kvm_answer_check(image: str | None, cache: vm.AccelCache, qemu: str, kvm_usable: bool) -> Check:
    """What ``--accel auto`` will do with ``image``: the remembered KVM answer, if any."""
    if not kvm_usable:
        return Check(
            "kvm",
            False,
            "no usable /dev/kvm (missing, or KVM ran no guest code in the probe): guests run "
            "under TCG",
            optional=True,
        )
    if image is None:
        return Check("kvm", True, "KVM runs the firmware (no kernel prepared to ask about)")
    answer = cache.lookup(vm.kernel_key(image), qemu)
    if answer is None:
        return Check(
            "kvm",
            True,
            f"KVM runs the firmware; whether it boots {vm.kernel_key(image)} is not known "
            f"yet (the first --accel auto run finds out, or: nvmf-harness doctor --test-kvm; "
            f"answers kept in {cache.path})",
        )
    where = f"remembered in {cache.path}"
    if answer.kvm_boots:
        return Check("kvm", True, f"{answer.describe()}, {where}")
    return Check(
        "kvm",
        False,
        f"{answer.describe()}, {where}: --accel auto uses TCG",
        "nvmf-harness doctor --test-kvm re-tests it",
        optional=True,
    )


def retest_kvm(say: Callable[[str], None], record_path: Path = prepared.RECORD_FILE) -> None:
    """``doctor --test-kvm``: boot the prepared kernel under KVM with ``true`` (at most
    about 2 min) and remember the answer. Raises HarnessError when no kernel is prepared or
    KVM runs no guest code in the probe."""
    image = prepared.load(record_path).image
    if not vm.kvm_usable():
        raise HarnessError(
            "/dev/kvm is missing or KVM ran no guest code in the probe: nothing to test, "
            "guests run under TCG"
        )
    cache = vm.AccelCache(vm.default_accel_cache())
    with tempfile.TemporaryDirectory(prefix="nvmfh-kvm-test-") as workdir:
        answer = vm.check_kvm_boot(image, Path(workdir), cache, say)
    say(f"{answer.describe()}; remembered in {cache.path}")


def run_checks(release: str | None = None) -> list[Check]:
    """Every check, in the order doctor prints them. ``release``: the kernel whose modules are
    checked (default: the prepared one, else the newest in /lib/modules)."""
    kernel_check, prepared_rel = prepared_kernel_check()
    rel = release or prepared_rel or newest_release()
    checks = [
        kernel_check,
        Check("root", os.geteuid() == 0, f"euid {os.geteuid()}", "run as root (sudo)"),
        _tool("nvme", ["version"]),
        _tool("fio", ["--version"]),
        _tool("bpftrace", ["--version"], optional=True),
        _tool("qemu-system-x86_64", ["--version"]),
        _tool("vng", ["--version"]),
        _tool("ip", ["-V"]),
        _module(rel, "nvme-tcp"),
        _module(rel, "nvmet-tcp"),
        _module(rel, "null_blk"),
    ]
    image = Path(f"/boot/vmlinuz-{rel}")
    checks.append(
        Check(
            "kernel image",
            image.exists(),
            str(image),
            f"{APT} linux-image-{rel} (or pass --kernel)",
        )
    )
    checks.append(_fio_version(checks))
    for package in ("pyroute2", "paramiko", "rich"):
        found = importlib.util.find_spec(package) is not None
        checks.append(
            Check(
                f"python {package}",
                found,
                "importable" if found else "missing",
                f"pip install {package}",
            )
        )
    checks += nvmet_checks(rel)
    cache = vm.AccelCache(vm.default_accel_cache())
    known_image = str(image) if image.exists() else None
    checks.append(kvm_answer_check(known_image, cache, vm.qemu_version(), vm.kvm_usable()))
    return checks


def nvmet_checks(release: str) -> list[Check]:
    """Our nvmet test patch (ns_remove_path's hidden* mechanisms): built for ``release``?
    And, where nvmet is loaded (in the VM), which nvmet it is (harness/bed/nvmet_modules.py)."""
    try:
        build = load_nvmet_record(default_cache_dir(), release)
    except HarnessError:
        build = None
    checks = [
        Check(
            "nvmet test patch",
            build is not None,
            f"built for {release}, nvmet srcversion {build.srcversion}"
            if build is not None
            else f"not built for {release} (built on demand before a boot that needs it)",
            f"nvmf-harness build-nvmet --release {release}",
            optional=True,
        )
    ]
    loaded = loaded_nvmet()
    if loaded.loaded:
        checks.append(Check("nvmet loaded", True, loaded.describe()))
    return checks


def _fio_version(checks: list[Check]) -> Check:
    fio = next(c for c in checks if c.name == "fio")
    match = re.search(r"fio-(\d+)\.(\d+)", fio.detail)
    if not match:
        return Check("fio >= 3.16", False, "unknown version", f"{APT} fio", optional=True)
    ok = (int(match.group(1)), int(match.group(2))) >= (3, 16)
    return Check("fio >= 3.16", ok, fio.detail, f"{APT} fio")

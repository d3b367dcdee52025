"""`doctor`: is everything needed here, and if not, the command that installs it."""

from __future__ import annotations

import importlib.util
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ToolError
from harness.procs import PACKAGE_OF_TOOL, require_tool, run

APT = "apt-get install -y"


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


def run_checks(release: str | None = None) -> list[Check]:
    rel = release or newest_release()
    checks = [
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
            f"{APT} linux-image-amd64 (or pass --kernel)",
        )
    )
    checks.append(_fio_version(checks))
    for package in ("pyroute2", "pyudev", "paramiko", "rich"):
        found = importlib.util.find_spec(package) is not None
        checks.append(
            Check(
                f"python {package}",
                found,
                "importable" if found else "missing",
                f"pip install {package}",
            )
        )
    from harness.vm import kvm_usable

    kvm = kvm_usable()
    checks.append(
        Check(
            "kvm",
            kvm,
            "usable" if kvm else "not usable: guests run under TCG (slower)",
            optional=True,
        )
    )
    return checks


def _fio_version(checks: list[Check]) -> Check:
    fio = next(c for c in checks if c.name == "fio")
    match = re.search(r"fio-(\d+)\.(\d+)", fio.detail)
    if not match:
        return Check("fio >= 3.16", False, "unknown version", f"{APT} fio", optional=True)
    ok = (int(match.group(1)), int(match.group(2))) >= (3, 16)
    return Check("fio >= 3.16", ok, fio.detail, f"{APT} fio")

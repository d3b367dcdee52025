"""Run external programs with argument lists and timeouts; never through a shell."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from harness.core.errors import MissingToolError, ToolError
from harness.core.paths import TOOLS_BIN_DIR

# How long to wait for a killed child to exit before giving up on it.
KILL_WAIT_S = 1.0

# Debian package that provides each tool we call, for one-line "install it" errors.
PACKAGE_OF_TOOL: dict[str, str] = {
    "nvme": "nvme-cli",
    "fio": "fio",
    "bpftrace": "bpftrace",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "modprobe": "kmod",
    "insmod": "kmod",
    "rmmod": "kmod",
    "modinfo": "kmod",
    "qemu-system-x86_64": "qemu-system-x86",
    "tc": "iproute2",
    "vng": "virtme-ng (pip)",
    "tee": "coreutils",
    # Debian has it in sid only; on Debian 12 and 13 scripts/setup fetches sid's package
    # into build/tools/ (nvmf-harness fetch-nvmetcli) instead of installing it.
    "nvmetcli": "python3-configshell-fb, then nvmf-harness fetch-nvmetcli",
}


@dataclass(frozen=True)
class ProcResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def one_line_error(self) -> str:
        text = (self.stderr or self.stdout).strip().splitlines()
        last = text[-1] if text else f"exit status {self.returncode}"
        return f"{' '.join(self.argv[:3])}: {last}"


def find_tool(name: str) -> str | None:
    """The path of ``name``: on PATH, beside the interpreter (tools installed by pip, such as
    vng, when the venv is not activated), or in build/tools/bin (tools the harness fetched
    itself: nvmetcli on Debian 12 and 13, harness.kernels.nvmetcli_tool). None when absent."""
    return (
        shutil.which(name)
        or shutil.which(name, path=os.path.dirname(sys.executable))
        or shutil.which(name, path=str(TOOLS_BIN_DIR))
    )


def require_tool(name: str) -> str:
    """Return the path of ``name`` (find_tool) or raise a ToolError that says which package
    to install."""
    path = find_tool(name)
    if path is None:
        package = PACKAGE_OF_TOOL.get(name, name)
        raise MissingToolError(f"'{name}' not found", hint=f"install it: apt-get install {package}")
    return path


def run(
    argv: Sequence[str],
    timeout_s: float,
    input_text: str | None = None,
    check: bool = False,
) -> ProcResult:
    """Run ``argv`` (a list, never a shell string) with a timeout.

    Raises ToolError when the program is missing, times out, or (with ``check``) fails.
    """
    args = tuple(argv)
    executable = require_tool(args[0])
    process = subprocess.Popen(
        (executable, *args[1:]),
        stdin=subprocess.DEVNULL if input_text is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(input_text, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        process.kill()
        # A child stuck in the kernel (D state) dies only when it returns: don't wait for it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=KILL_WAIT_S)
        raise ToolError(f"{' '.join(args[:4])} did not finish in {timeout_s:g} s") from exc
    result = ProcResult(args, process.returncode, stdout, stderr)
    if check and not result.ok:
        raise ToolError(result.one_line_error())
    return result

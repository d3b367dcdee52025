"""Debian's nvmetcli, fetched and unpacked under build/tools/, never installed.

``target.backend = "nvmetcli"`` (harness.bed.nvmetcli_backend) runs ``nvmetcli restore``.
Debian packages nvmetcli (0.9-1, ``Architecture: all``, pure Python) in sid only: neither
Debian 12 nor Debian 13 nor trixie-backports has it (checked 2026-12-07 in their Packages
indexes). Its one dependency, ``python3-configshell-fb``, is in both 12 and 13. So where the
host's own apt has no nvmetcli, this takes sid's package through the harness's private apt
configuration (harness.kernels.debian_archive: signed indexes, the host's apt sources and
packages untouched), unpacks it into ``build/tools/nvmetcli_<version>/root`` and writes
``build/tools/bin/nvmetcli``, a wrapper that runs it with the system python3
(harness.core.procs.find_tool looks there after PATH). The guest shares the checkout, so the
VM finds the same wrapper.

``nvmf-harness fetch-nvmetcli`` runs it; scripts/setup calls that on a host without the
package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import ToolError
from harness.core.paths import TOOLS_BIN_DIR
from harness.core.procs import run
from harness.kernels.debian_archive import PrivateApt, choose_version

PACKAGE = "nvmetcli"
DEPENDENCY = "python3-configshell-fb"
RECORD = "nvmetcli.json"
UNPACK_TIMEOUT_S = 120.0
CHECK_TIMEOUT_S = 30.0
SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class FetchedNvmetcli:
    """The unpacked package and the wrapper that runs it."""

    version: str
    root: Path
    wrapper: Path
    downloaded: bool  # False when it was there already


def wrapper_text(root: Path, version: str) -> str:
    """The ``nvmetcli`` wrapper: the unpacked ``usr/bin/nvmetcli`` with its own ``nvmet``
    package on PYTHONPATH, run by the system python3 (which has configshell from apt)."""
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    script = root / "usr" / "bin" / "nvmetcli"
    return (
        "#!/bin/sh\n"
        f"# Debian's nvmetcli {version} (sid), unpacked by nvmf-harness fetch-nvmetcli; "
        "not installed\n"
        f'PYTHONPATH="{site}${{PYTHONPATH:+:$PYTHONPATH}}" exec {SYSTEM_PYTHON} "{script}" "$@"\n'
    )


def check_runs(wrapper: Path) -> None:
    """Raise ToolError (hint: the apt command) unless the system python3 can import what
    nvmetcli 0.9 imports: ``nvmet`` from the unpacked package, ``configshell`` from
    python3-configshell-fb."""
    text = wrapper.read_text()
    match = re.search(r'PYTHONPATH="([^"$]+)', text)
    site = match.group(1) if match else ""
    result = run(
        [
            "env",
            f"PYTHONPATH={site}",
            SYSTEM_PYTHON,
            "-c",
            "import configshell, nvmet.nvme",
        ],
        timeout_s=CHECK_TIMEOUT_S,
    )
    if not result.ok:
        raise ToolError(
            f"the fetched nvmetcli cannot run: {result.one_line_error()}",
            hint=f"apt-get install {DEPENDENCY}",
        )


def fetch_nvmetcli(
    apt: PrivateApt | None = None, tools_bin: Path = TOOLS_BIN_DIR
) -> FetchedNvmetcli:
    """Debian's newest nvmetcli from the private suites (sid), unpacked once under
    ``tools_bin``'s parent, with the wrapper ``tools_bin/nvmetcli`` checked to run. A second
    call with the same version downloads nothing. Raises ToolError (a one-line reason and
    what to do) when the mirror, the unpack or the check fails."""
    apt = apt or PrivateApt()
    version = choose_version(PACKAGE, None, apt.versions(PACKAGE))
    tools = tools_bin.parent
    directory = tools / re.sub(r"[^\w.+-]", "_", f"{PACKAGE}_{version}")
    root = directory / "root"
    wrapper = tools_bin / PACKAGE
    record = directory / RECORD
    downloaded = False
    if not (record.is_file() and (root / "usr" / "bin" / PACKAGE).is_file()):
        deb = apt.download(PACKAGE, version, directory)
        shutil.rmtree(root, ignore_errors=True)
        result = run(["dpkg-deb", "-x", str(deb), str(root)], timeout_s=UNPACK_TIMEOUT_S)
        if not result.ok or not (root / "usr" / "bin" / PACKAGE).is_file():
            raise ToolError(
                f"{deb.name} did not unpack to usr/bin/{PACKAGE}: "
                f"{result.one_line_error() if not result.ok else 'no such file'}"
            )
        tmp = directory / (RECORD + ".tmp")
        tmp.write_text(
            json.dumps(
                {"package": PACKAGE, "version": version, "deb": deb.name, "root": str(root)},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        os.replace(tmp, record)
        deb.unlink()
        downloaded = True
    tools_bin.mkdir(parents=True, exist_ok=True)
    tmp_wrapper = tools_bin / (PACKAGE + ".tmp")
    tmp_wrapper.write_text(wrapper_text(root, version))
    tmp_wrapper.chmod(0o755)
    os.replace(tmp_wrapper, wrapper)
    check_runs(wrapper)
    return FetchedNvmetcli(version, root, wrapper, downloaded)

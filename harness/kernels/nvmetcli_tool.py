"""Debian's nvmetcli, fetched and unpacked under build/tools/, never installed.

``target.backend = "nvmetcli"`` (harness.bed.nvmetcli_backend) runs ``nvmetcli restore``.
Debian packages nvmetcli (0.9-1, ``Architecture: all``, pure Python) in sid only: neither
Debian 12 nor Debian 13 nor trixie-backports has it (checked 2026-12-07 in their Packages
indexes). Its one dependency, ``python3-configshell-fb``, is in both 12 and 13. So where the
host's own apt has no nvmetcli, this takes sid's package from Debian's pool, checked against
the SHA-256 that sid's signed index gave for it (PINNED_SHA256), or, once the pool has
dropped that version, the newest one through the harness's private apt configuration
(harness.kernels.debian_archive: signed indexes; the host's apt sources and packages are
untouched). It unpacks it into ``build/tools/nvmetcli_<version>/root`` and writes
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

from harness.bed.module_records import sha256_of
from harness.core.errors import HarnessError, ToolError
from harness.core.paths import TOOLS_BIN_DIR
from harness.core.procs import run
from harness.kernels.debian_archive import PrivateApt, choose_version

PACKAGE = "nvmetcli"
# sid's nvmetcli as its signed index (InRelease of 2026-10-30) lists it: Filename
# pool/main/n/nvmetcli/nvmetcli_0.9-1_all.deb, Size 21884. The pool needs no index, so this
# works while a mirror's sid index is past its Valid-Until (as this project's was, 2026-12-07).
PINNED_VERSION = "0.9-1"
PINNED_SHA256 = "19d96b2e631f5e55c3be2d3cc8541feee0a0b297ae95ac60aa68b0bc23a54de6"
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
    verified_by: str  # "pinned sha256" or "signed index"


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


def download(apt: PrivateApt, tools: Path) -> tuple[str, Path, str]:
    """(version, .deb, how it was verified): the pinned version from the pool when its
    SHA-256 matches, else the newest the private suites' signed indexes offer. Raises
    ToolError (UsageError when no suite offers it) with both reasons."""
    directory = tools / f"{PACKAGE}_{PINNED_VERSION}"
    try:
        deb = apt.download_from_pool(PACKAGE, PINNED_VERSION, directory, pool=PACKAGE, arch="all")
    except ToolError as exc:
        pool_error = exc.message
    else:
        digest = sha256_of(deb)
        if digest == PINNED_SHA256:
            return PINNED_VERSION, deb, "pinned sha256"
        deb.unlink()
        pool_error = f"{deb.name} has sha256 {digest}, not the pinned {PINNED_SHA256}"
    try:
        version = choose_version(PACKAGE, None, apt.versions(PACKAGE))
        directory = tools / re.sub(r"[^\w.+-]", "_", f"{PACKAGE}_{version}")
        return version, apt.download(PACKAGE, version, directory), "signed index"
    except HarnessError as exc:
        raise type(exc)(f"{exc.message}; and from the pool: {pool_error}", exc.hint) from exc


def cached(tools: Path) -> tuple[str, Path, str] | None:
    """(version, unpacked root, verified_by) of an earlier fetch under ``tools``, or None."""
    for record in sorted(tools.glob(f"{PACKAGE}_*/{RECORD}"), reverse=True):
        try:
            data = json.loads(record.read_text())
            root = Path(data["root"])
            if (root / "usr" / "bin" / PACKAGE).is_file():
                return str(data["version"]), root, str(data.get("verified_by", ""))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def fetch_nvmetcli(
    apt: PrivateApt | None = None, tools_bin: Path = TOOLS_BIN_DIR
) -> FetchedNvmetcli:
    """Debian's nvmetcli (sid's package, :func:`download`), unpacked once under
    ``tools_bin``'s parent, with the wrapper ``tools_bin/nvmetcli`` checked to run. A second
    call downloads nothing. Raises ToolError (a one-line reason and what to do) when the
    mirror, the unpack or the check fails."""
    apt = apt or PrivateApt()
    tools = tools_bin.parent
    found = cached(tools)
    downloaded = found is None
    if found is None:
        version, deb, verified_by = download(apt, tools)
        root = deb.parent / "root"
        shutil.rmtree(root, ignore_errors=True)
        result = run(["dpkg-deb", "-x", str(deb), str(root)], timeout_s=UNPACK_TIMEOUT_S)
        if not result.ok or not (root / "usr" / "bin" / PACKAGE).is_file():
            raise ToolError(
                f"{deb.name} did not unpack to usr/bin/{PACKAGE}: "
                f"{result.one_line_error() if not result.ok else 'no such file'}"
            )
        record = {
            "package": PACKAGE,
            "version": version,
            "deb": deb.name,
            "root": str(root),
            "verified_by": verified_by,
        }
        tmp = deb.parent / (RECORD + ".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, deb.parent / RECORD)
        deb.unlink()
    else:
        version, root, verified_by = found
    tools_bin.mkdir(parents=True, exist_ok=True)
    tmp_wrapper = tools_bin / (PACKAGE + ".tmp")
    tmp_wrapper.write_text(wrapper_text(root, version))
    tmp_wrapper.chmod(0o755)
    os.replace(tmp_wrapper, tools_bin / PACKAGE)
    check_runs(tools_bin / PACKAGE)
    return FetchedNvmetcli(version, root, tools_bin / PACKAGE, downloaded, verified_by)

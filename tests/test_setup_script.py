"""scripts/setup on a fresh machine: what it installs, and one line (exit 2) when a step fails.

The script runs with fake ``id``, ``dpkg-query``, ``apt-get`` and ``apt-cache`` first in PATH
and a fake virtualenv (no root, no apt, no network); the real ones are never called.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETUP = REPO / "scripts" / "setup"
RELEASE_LINE = "6.1.0-57-amd64\t6.1.192-3\tmatches linux-source-6.1 6.1.192-3"
# What virtme-ng runs on the machine before or while it boots a guest: `file -L` on busybox
# (a fresh Debian 12 has no `file`: virtme-run died with a traceback), busybox, depmod and
# modprobe (kmod), qemu.
VIRTME_HOST_PACKAGES = ("file", "busybox-static", "kmod", "qemu-system-x86")


def apt_packages() -> list[str]:
    """The script's APT_PACKAGES array, as bash reads it."""
    text = SETUP.read_text(encoding="utf-8")
    start = text.index("APT_PACKAGES=(")
    block = text[start : text.index("\n)\n", start) + 3]
    script = block + 'printf "%s\\n" "${APT_PACKAGES[@]}"\n'
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True
    )
    return result.stdout.split()


def fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)


def fake_machine(tmp_path: Path, *, installed: bool, apt_install_rc: int) -> dict[str, str]:
    """A PATH of fakes: root, every package installed (or none), apt-get install exiting
    ``apt_install_rc``, a prepared kernel, and a virtualenv whose python lacks the harness
    and whose pip fails. Returns the environment to run scripts/setup with."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake(bin_dir, "id", "echo 0")
    if installed:
        fake(
            bin_dir,
            "dpkg-query",
            'case "$*" in *Status*) echo "install ok installed";; *) echo 6.1.192-3;; esac',
        )
    else:
        fake(bin_dir, "dpkg-query", "exit 1")
    fake(
        bin_dir,
        "apt-get",
        'case "$*" in *" install "*) echo "E: Unable to locate package file" >&2;'
        f" exit {apt_install_rc};; esac; exit 0",
    )
    fake(bin_dir, "apt-cache", "exit 100")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake(venv / "bin", "python", "exit 1")
    fake(venv / "bin", "pip", 'echo "ERROR: Could not find a version that satisfies" >&2; exit 1')
    os_release = tmp_path / "os-release"
    os_release.write_text("ID=debian\nVERSION_ID=12\nVERSION_CODENAME=bookworm\n")
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "NVMF_HARNESS_VENV": str(venv),
        "NVMF_HARNESS_OS_RELEASE": str(os_release),  # whatever this machine runs
    }


def run_setup(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SETUP)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_installs_what_virtme_ng_runs_on_the_machine() -> None:
    packages = apt_packages()
    assert "python3-venv" in packages
    missing = [pkg for pkg in VIRTME_HOST_PACKAGES if pkg not in packages]
    assert not missing, f"scripts/setup does not install {missing}"


def test_failed_apt_install_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = run_setup(fake_machine(tmp_path, installed=False, apt_install_rc=100))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("setup: could not install python3 ")
    assert "apt-get install" in last


def test_failed_pip_install_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """Exit 2 (a prerequisite missing: nothing ran), not pip's 1: scripts/reproduce's 1 means
    a verdict."""
    result = run_setup(fake_machine(tmp_path, installed=True, apt_install_rc=0))
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("setup: pip could not install the harness into ")
    assert "pypi.org" in last
    assert os.fspath(tmp_path / "venv") in last


def test_an_illegal_instruction_on_import_names_the_cpu_not_pip(tmp_path: Path) -> None:
    """A VM with qemu64's CPU: numpy's wheels die on SIGILL (exit 132 through bash). pip
    would reinstall in vain; setup says what to change (seen under vagrant-libvirt's TCG)."""
    env = fake_machine(tmp_path, installed=True, apt_install_rc=0)
    fake(Path(env["NVMF_HARNESS_VENV"]) / "bin", "python", "kill -ILL $$")
    result = run_setup(env)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("setup: Python died on an illegal instruction")
    assert "x86-64-v2" in last and "Nehalem" in last
    assert "pip install" not in result.stdout

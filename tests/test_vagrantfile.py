"""The Vagrantfile (Debian 12 box, libvirt and virtualbox, provisioned by scripts/setup) and
the scripts that boot it for real (scripts/vagrant-box, scripts/vagrant-test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VAGRANTFILE = REPO / "Vagrantfile"


def test_vagrantfile_settings() -> None:
    text = VAGRANTFILE.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    # Debian's public box by default, a local one (scripts/vagrant-box) by name
    assert 'config.vm.box = ENV.fetch("NVMF_HARNESS_BOX", "debian/bookworm64")' in code
    for provider in ("libvirt", "virtualbox"):
        block = re.search(rf'provider "{provider}" do \|(\w+)\|(.*?)\n  end', code, re.S)
        assert block, provider
        var, body = block.group(1), block.group(2)
        assert f"{var}.cpus = 2" in body and f"{var}.memory = 4096" in body
    assert 'synced_folder ".", "/vagrant"' in code
    assert 'inline: "/vagrant/scripts/setup"' in code
    assert "cd /vagrant && sudo .venv/bin/pytest testcases/" in text  # documented usage


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed")
@pytest.mark.parametrize("driver", ["", "qemu"])
def test_vagrant_validate(tmp_path: Path, driver: str) -> None:
    """`vagrant validate` on a copy (it writes .vagrant/ beside the file).

    Provider settings are checked when a provider plugin is installed (Debian's
    vagrant-libvirt); without one, vagrant can only check the rest (--ignore-provider).
    """
    shutil.copy(VAGRANTFILE, tmp_path / "Vagrantfile")
    plugins = subprocess.run(
        ["vagrant", "plugin", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    argv = ["vagrant", "validate"]
    env = {**os.environ, "NVMF_HARNESS_LIBVIRT_DRIVER": driver}  # "qemu": TCG settings
    if "vagrant-libvirt" in plugins:
        env["VAGRANT_DEFAULT_PROVIDER"] = "libvirt"
    else:
        argv.append("--ignore-provider")
    done = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout


SCRIPTS = sorted(
    path
    for path in [*(REPO / "scripts").iterdir(), REPO / ".ci" / "run", REPO / "benchmarks" / "run"]
    if path.is_file() and path.read_text().startswith("#!/bin/bash")
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_scripts_pass_shellcheck(script: Path, shellcheck: str) -> None:
    """Every bash script of the project, at shellcheck's warning level (scripts/vagrant-box
    and scripts/vagrant-test run as root: a quoting slip there deletes the wrong thing)."""
    done = subprocess.run(
        [shellcheck, "--severity=warning", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_vagrant_box_takes_setup_packages() -> None:
    """The local box installs exactly what scripts/setup would (its --list-packages), so that
    the offline provisioning in the box finds them all installed."""
    listed = subprocess.run(
        [str(REPO / "scripts" / "setup"), "--list-packages"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert {"nvme-cli", "fio", "python3-venv", "bpftrace"} <= set(listed)
    box = (REPO / "scripts" / "vagrant-box").read_text()
    assert '"$REPO/scripts/setup" --list-packages' in box

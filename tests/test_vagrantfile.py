"""The Vagrantfile: Debian 12 box, libvirt and virtualbox, provisioned by scripts/setup."""

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
    assert 'config.vm.box = "debian/bookworm64"' in code
    for provider in ("libvirt", "virtualbox"):
        block = re.search(rf'provider "{provider}" do \|(\w+)\|(.*?)\n  end', code, re.S)
        assert block, provider
        var, body = block.group(1), block.group(2)
        assert f"{var}.cpus = 2" in body and f"{var}.memory = 4096" in body
    assert 'synced_folder ".", "/vagrant"' in code
    assert 'inline: "/vagrant/scripts/setup"' in code
    assert "cd /vagrant && sudo .venv/bin/pytest testcases/" in text  # documented usage


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed")
def test_vagrant_validate(tmp_path: Path) -> None:
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
    env = None
    if "vagrant-libvirt" in plugins:
        env = {**os.environ, "VAGRANT_DEFAULT_PROVIDER": "libvirt"}
    else:
        argv.append("--ignore-provider")
    done = subprocess.run(
        argv, cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout

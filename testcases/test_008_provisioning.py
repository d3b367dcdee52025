"""The provisioning script (scripts/setup, also the Vagrant box's provisioner) runs in the
VM against the machine it provisioned: it must find everything installed, change nothing,
and report ready (idempotence; the guest has no network, so any install would fail)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_setup_is_idempotent_on_a_provisioned_machine() -> None:
    env = dict(os.environ, NVMF_HARNESS_VENV=str(Path(sys.executable).parent.parent))
    result = subprocess.run(
        [str(REPO / "scripts" / "setup")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "setup: ready:" in output, output
    assert "apt-get install" not in output and "pip install" not in output, output

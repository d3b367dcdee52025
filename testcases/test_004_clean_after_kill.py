"""`clean` after a kill -9 mid-campaign leaves no controllers, nvmet entries, mounts or fio."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness import cleanup
from harness.kernelfs import KernelFs

REPO = Path(__file__).resolve().parent.parent


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


@pytest.mark.parametrize("kill_after_s", [0.5, 4.0, 9.0])
def test_clean_after_kill(kill_after_s: float, results_dir: Path) -> None:
    proc = subprocess.Popen(
        _harness("run", "--out", str(results_dir), "--iterations", "3", "--quiet"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not (results_dir / "run.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # the test bed is up once run.json is written
    time.sleep(kill_after_s)
    assert proc.poll() is None, "the campaign ended before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    kfs = KernelFs()
    left_by_kill = cleanup.find_all(kfs)
    assert left_by_kill, "a killed run should leave its test bed (else this test tests nothing)"
    clean = subprocess.run(
        _harness("clean"), cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert cleanup.find_all(kfs) == []
    # A new campaign starts cleanly afterwards.
    again = subprocess.run(
        _harness("run", "--out", str(results_dir / "after"), "--iterations", "1", "--quiet"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert again.returncode == 0, again.stdout + again.stderr

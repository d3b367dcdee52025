"""`clean` after a kill -9 mid-campaign leaves no controllers, nvmet entries, mounts or fio."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.bed import cleanup
from harness.core.kernelfs import KernelFs

REPO = Path(__file__).resolve().parent.parent


def _harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *args]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """--chaos-points N kill points, spread by a seeded generator over setup and the first
    iterations of a campaign (the first point falls inside the test bed's setup)."""
    if "kill_after_s" in metafunc.fixturenames:
        count = int(metafunc.config.getoption("--chaos-points"))
        rng = random.Random(20261128)
        points = [0.3, *sorted(round(rng.uniform(0.5, 20.0), 2) for _ in range(count - 1))]
        metafunc.parametrize("kill_after_s", points[:count])


def test_clean_after_kill(kill_after_s: float, results_dir: Path) -> None:
    proc = subprocess.Popen(
        _harness("run", "--out", str(results_dir), "--iterations", "4", "--quiet"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(kill_after_s)
    assert proc.poll() is None, "the campaign ended before the kill"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    kfs = KernelFs()
    left_by_kill = cleanup.find_all(kfs)
    clean = subprocess.run(
        _harness("clean"), cwd=REPO, capture_output=True, text=True, timeout=180, check=False
    )
    remaining = cleanup.find_all(kfs)
    record = {"kill_after_s": kill_after_s, "left_by_kill": left_by_kill, "remaining": remaining}
    (results_dir / "chaos.json").write_text(json.dumps(record, indent=2) + "\n")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert remaining == []
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

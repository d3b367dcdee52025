"""Ctrl-C during a campaign: fio stops, the fault is restored, the test bed is removed, a
partial summary is written and the exit status is non-zero (130)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_sigint_mid_campaign(results_dir: Path) -> None:
    out = results_dir / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", "run", "--out", str(out), "--iterations", "6"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (out / "results.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(4)  # inside a later iteration, most likely mid-fault
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 130, output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and not summary["complete"], summary
    assert not summary["teardown_errors"], summary
    assert "interrupted" in output
    # The autouse fixture checks that nothing (controllers, nvmet, mounts, fio) is left.

"""Shared fixtures: a fake /sys tree builder, and skipping of tests that need root."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from tests.fakes import FakeSysfs


def pytest_configure(config: pytest.Config) -> None:
    """Tests stop fake tools (shell scripts standing in for fio, bpftrace) with SIGINT, as the
    harness stops the real ones. A shell cannot trap a signal it was started ignoring, and a
    test run started in the background of a non-interactive shell (`cmd &`, nohup) passes
    SIGINT ignored to every child: take Python's default handler back, so children start
    with SIGINT at its default as they would from a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def fake_sysfs(tmp_path: Path) -> FakeSysfs:
    """An empty fake /sys below tmp_path/root; build controllers with its methods."""
    return FakeSysfs(tmp_path / "root")


@pytest.fixture
def shellcheck() -> str:
    """shellcheck's path. Required with CI=true (scripts/setup installs it): a failure there,
    a skip elsewhere."""
    path = shutil.which("shellcheck")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is missing in CI: apt-get install shellcheck (scripts/setup)")
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    return path

"""Shared fixtures: a fake /sys tree builder, and skipping of tests that need root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakes import FakeSysfs


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.skip("needs root")


@pytest.fixture
def fake_sysfs(tmp_path: Path) -> FakeSysfs:
    """An empty fake /sys below tmp_path/root; build controllers with its methods."""
    return FakeSysfs(tmp_path / "root")

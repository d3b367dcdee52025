"""Testbed.running: up for the with block, down after it, teardown errors raised."""

from __future__ import annotations

from typing import Any

import pytest

from harness.bed import testbed as testbed_mod
from harness.config.campaign import CampaignConfig
from harness.core.errors import HarnessError

DEVICE: Any = object()


class Recorder(testbed_mod.Testbed):
    """A Testbed whose up/down only record that they ran."""

    def __init__(self, teardown_errors: list[str]) -> None:
        super().__init__(CampaignConfig(), "unit")
        self.calls: list[str] = []
        self.teardown_errors = teardown_errors

    def up(self) -> Any:
        self.calls.append("up")
        return DEVICE

    def down(self) -> list[str]:
        self.calls.append("down")
        return list(self.teardown_errors)


def test_running_brings_the_bed_up_and_down() -> None:
    bed = Recorder([])
    with bed.running() as device:
        assert device is DEVICE and bed.calls == ["up"]
    assert bed.calls == ["up", "down"]


def test_teardown_errors_are_raised_after_a_clean_block() -> None:
    bed = Recorder(["rmdir ports/6000: Device or resource busy"])
    with pytest.raises(HarnessError, match="teardown errors: rmdir ports/6000"), bed.running():
        pass
    assert bed.calls == ["up", "down"]


def test_the_block_error_wins_and_the_bed_still_comes_down() -> None:
    bed = Recorder(["something left"])
    with pytest.raises(ValueError, match="the test's own"), bed.running():
        raise ValueError("the test's own")
    assert bed.calls == ["up", "down"]

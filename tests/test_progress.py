"""Progress lines from the guest: counted and passed through in plain mode."""

from __future__ import annotations

import pytest

from harness.vm.progress import VmProgress

LINE = (
    "nvmf-harness: [4/10] ctrl_delete path 1: eio_race (app EIO 2, EOD-race lines 2, "
    "recover 0.018 s, cycle 4.4 s, 1938 IOPS) | total EIO 2"
)


def test_plain_mode_passes_harness_lines_and_counts_eio(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with VmProgress("nvmf-harness:", force_plain=True) as progress:
        progress.line(LINE)
        progress.line("[   12.3] some kernel line")
        progress.line(LINE.replace("app EIO 2", "app EIO 0"))
    out = capsys.readouterr().out.splitlines()
    assert out == [LINE, LINE.replace("app EIO 2", "app EIO 0")]
    assert progress.eio == 2


def test_tracebacks_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    with VmProgress("nvmf-harness:", force_plain=True) as progress:
        progress.line("Traceback (most recent call last):")
    assert "Traceback" in capsys.readouterr().out

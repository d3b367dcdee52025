"""harness.campaign.widener: program text, output parsing (a real capture), and the process handling
(with a fake bpftrace on PATH)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.campaign.widener import (
    END_MARK,
    MAX_TURNS,
    READY_MARK,
    STATS_MARK,
    Widener,
    WidenerConfig,
    kernel_devt,
    parse_output,
    program_text,
)
from harness.core.errors import ConfigError, ToolError

# Captured in the VM (6.1.0-56-amd64, TCG, bpftrace 0.17): delay_us=200, sample_every=4,
# dd of 2000 4 KiB direct writes to a partition of a loop device. This run predates the
# @turn_limited map, so that line is absent (and must read as 0).
CAPTURED = """Attaching 3 probes...
WIDENER READY
WIDENER STATS
@seen: 2000
@delayed: 500
@delay_sum_us: 207744
@delay_max_us: 7598
@delay_hist_us:
[128, 256)           417 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|
[256, 512)            33 |@@@@                                                |
[512, 1K)             22 |@@                                                  |
[1K, 2K)               4 |                                                    |
[2K, 4K)              20 |@@                                                  |
[4K, 8K)               4 |                                                    |

WIDENER END





@delayed: 0
@seen: 0

""".replace("@delay_hist_us:\n", "@delay_hist_us: \n")  # bpftrace prints a trailing space

# What bpftrace prints when no bio was remapped: empty maps print nothing.
CAPTURED_EMPTY = """Attaching 3 probes...
WIDENER READY
WIDENER STATS
@seen: 0
@delayed: 0



WIDENER END
"""

FAKE_BPFTRACE = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_BT_DIR/args"
echo $$ > "$FAKE_BT_DIR/pid"
case "$FAKE_BT_MODE" in
  fail) echo "ERROR: the verifier said no" >&2; exit 1;;
  hang) trap '' INT; while :; do sleep 0.05; done;;
esac
trap 'cat "$FAKE_BT_DIR/sample"; exit 0' INT
echo "Attaching 3 probes..."
[ "$FAKE_BT_MODE" = deaf ] && trap '' INT
echo "WIDENER READY"
while :; do sleep 0.05; done
"""


def test_program_holds_every_bio_with_a_clock_read_each_turn() -> None:
    text = program_text(WidenerConfig(delay_us=300))
    assert "tracepoint:block:block_bio_remap\n" in text
    assert f"while ($i < {MAX_TURNS})" in text
    # each turn calls a helper (nsecs), or LLVM deletes the loop
    loop = text[text.index("while") : text.index("$i++")]
    assert "nsecs - $t0 >= 300000" in loop
    assert "%" not in text and "@turn =" not in text
    for name in ("@seen", "@delayed", "@delay_sum_us", "@delay_max_us", "@delay_hist_us"):
        assert f"print({name});" in text
    assert text.index(STATS_MARK) < text.index("print(@seen)") < text.index(END_MARK)
    assert f'BEGIN {{ printf("{READY_MARK}\\n"); }}' in text


def test_program_samples_every_nth_bio() -> None:
    text = program_text(WidenerConfig(delay_us=50, sample_every=7, max_turns=200))
    assert "if ($n % 7 == 0)" in text
    assert "while ($i < 200)" in text and "50000" in text
    assert "clear(@turn);" in text
    assert text.count("{") == text.count("}")


def test_program_filters_by_device() -> None:
    devt = kernel_devt(259, 1)
    assert devt == (259 << 20) | 1
    text = program_text(WidenerConfig(old_dev=devt))
    assert f"tracepoint:block:block_bio_remap /args->old_dev == {devt}/" in text


@pytest.mark.parametrize(
    "kwargs",
    [{"delay_us": 0}, {"sample_every": 0}, {"max_turns": MAX_TURNS + 1}, {"max_turns": 0}],
)
def test_config_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigError):
        WidenerConfig(**kwargs)


def test_parse_captured_output() -> None:
    stats = parse_output(CAPTURED)
    assert (stats.bios_seen, stats.bios_delayed, stats.bios_turn_limited) == (2000, 500, 0)
    assert stats.max_delay_us == 7598
    assert stats.mean_delay_us == pytest.approx(207744 / 500)
    assert stats.histogram[0] == (128, 256, 417)
    assert stats.histogram[2] == (512, 1024, 22)
    assert stats.histogram[-1] == (4096, 8192, 4)
    assert sum(c for _, _, c in stats.histogram) == 500
    assert stats.median_bucket_us == (128, 256)


def test_parse_ignores_the_maps_bpftrace_prints_after_end() -> None:
    # after END bpftrace prints the cleared maps again (@delayed: 0): not the result
    assert parse_output(CAPTURED).bios_delayed == 500


def test_parse_empty_run() -> None:
    stats = parse_output(CAPTURED_EMPTY)
    assert (stats.bios_seen, stats.bios_delayed, stats.max_delay_us) == (0, 0, 0)
    assert stats.histogram == () and stats.median_bucket_us is None
    assert stats.mean_delay_us == 0.0


def test_parse_single_value_buckets_and_median() -> None:
    text = f"{STATS_MARK}\n@delayed: 4\n@delay_hist_us:\n[0]  1 |@|\n[1]  1 |@|\n"
    text += f"[2, 4)  2 |@@|\n[1M, 2M)  0 | |\n{END_MARK}\n"
    stats = parse_output(text)
    assert stats.histogram == ((0, 1, 1), (1, 2, 1), (2, 4, 2), (1 << 20, 2 << 20, 0))
    assert stats.median_bucket_us == (1, 2)


def test_parse_without_stats_is_an_error() -> None:
    with pytest.raises(ToolError, match="no widener statistics: ERROR: boom"):
        parse_output("Attaching 3 probes...\nERROR: boom\n")


# --- the process, with a fake bpftrace ------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "bpftrace").write_text(FAKE_BPFTRACE)
    (bindir / "bpftrace").chmod(0o755)
    (tmp_path / "sample").write_text(CAPTURED)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_BT_DIR", str(tmp_path))
    monkeypatch.setenv("FAKE_BT_MODE", "ok")
    yield tmp_path
    # a failing test must not leave its fake bpftrace behind
    pid_file = tmp_path / "pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def gone(pid_file: Path) -> bool:
    pid = int(pid_file.read_text())
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # a zombie still answers kill(0); its state in /proc says so
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and re.search(r"\) Z ", stat.read_text()):
            return True
        time.sleep(0.05)
    return False


def test_start_and_stop(fake: Path) -> None:
    config = WidenerConfig(delay_us=200, sample_every=4)
    widener = Widener(config, attach_timeout_s=10, stop_timeout_s=10)
    widener.start()
    assert widener.running
    args = (fake / "args").read_text().splitlines()
    assert args[:3] == ["-B", "none", "-e"]
    assert "\n".join(args[3:]).rstrip() == program_text(config).rstrip()
    stats = widener.stop()
    assert not widener.running
    assert stats.bios_delayed == 500 and widener.stats == stats
    assert gone(fake / "pid")
    assert widener.output_path is None  # temporary output removed
    assert STATS_MARK in widener.output_text()


def test_context_manager_keeps_output_in_output_dir(fake: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    with Widener(output_dir=outdir, attach_timeout_s=10) as widener:
        assert widener.running
    assert widener.stats is not None and widener.stats.bios_seen == 2000
    assert [p.suffix for p in outdir.iterdir()] == [".out"]


def test_context_manager_kills_on_error(fake: Path) -> None:
    widener = Widener(attach_timeout_s=10)
    with pytest.raises(RuntimeError), widener:
        raise RuntimeError("the fault run failed")
    assert not widener.running and gone(fake / "pid")
    assert widener.stats is None


def test_exit_before_attach_is_an_error(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BT_MODE", "fail")
    with pytest.raises(ToolError, match="before attaching: ERROR: the verifier said no"):
        Widener(attach_timeout_s=10).start()


def test_attach_timeout_kills_bpftrace(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BT_MODE", "hang")
    widener = Widener(attach_timeout_s=0.5)
    with pytest.raises(ToolError, match="did not attach"):
        widener.start()
    assert not widener.running and gone(fake / "pid")


def test_stop_timeout_kills_bpftrace(fake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_BT_MODE", "deaf")
    widener = Widener(attach_timeout_s=10, stop_timeout_s=0.5)
    widener.start()
    with pytest.raises(ToolError, match="did not stop"):
        widener.stop()
    assert not widener.running and gone(fake / "pid")


def test_missing_bpftrace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="apt-get install bpftrace"):
        Widener().start()

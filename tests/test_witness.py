"""harness.campaign.witness: the block-layer witness's program, its lines, its windows, and
a whole run against a fake bpftrace (a script printing the lines the real one prints)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, cast

import pytest

from harness.campaign import witness
from harness.campaign.witness import Witness, WitnessEvent, WitnessWindow
from harness.core.errors import ToolError


def test_the_program_probes_the_submission_and_its_end() -> None:
    program = witness.PROGRAM
    assert program.startswith(f"// {witness.PROCESS_MARK}")
    for probe in ("kprobe:submit_bio_noacct", "kprobe:bio_endio", "kretprobe:submit_bio_noacct"):
        assert probe in program
    assert "bd_nr_sectors == 0" in program and "bi_size > 0" in program
    assert f"interval:ms:{witness.TICK_MS}" in program


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("WITNESS EOD 5000000000 nvme0c1n1 15096 8 10", ("nvme0c1n1", 15096, 8, 10, True)),
        ("WITNESS EOD 5000000000 nvme0n1 8 8 10", ("nvme0n1", 8, 8, 10, False)),  # the head
        ("WITNESS EOD 5000000000 nvme0c0n1 8 8 1", ("nvme0c0n1", 8, 8, 1, False)),  # not IOERR
    ],
)
def test_event_lines(line: str, event: tuple[str, int, int, int, bool]) -> None:
    parsed = witness.parse_event(line)
    assert parsed is not None and parsed.ts_s == 5.0
    assert (parsed.disk, parsed.sector, parsed.sectors, parsed.status, parsed.is_race) == event


def test_other_lines_are_not_events() -> None:
    assert witness.parse_event("Attaching 5 probes...") is None
    assert witness.parse_event("WITNESS TICK 12") is None
    assert witness.parse_tick("WITNESS TICK 2500000000") == 2.5
    assert witness.parse_tick("WITNESS READY 1000000000") == 1.0
    assert witness.parse_tick("WITNESS EOD 1 nvme0c1n1 0 8 10") is None


def test_window_counts_race_events_and_the_rest_apart() -> None:
    window = WitnessWindow()
    window.add(WitnessEvent(1.0, "nvme0c1n1", 8, 8, 10))
    window.add(WitnessEvent(1.5, "nvme0c1n1", 16, 8, 10))
    window.add(WitnessEvent(2.0, "nvme0c0n1", 24, 8, 10))
    window.add(WitnessEvent(2.5, "vda", 24, 8, 10))
    assert (window.events, window.disks, window.first_ts_s) == (3, ["nvme0c1n1", "nvme0c0n1"], 1.0)
    assert window.other_events == 1 and len(window.examples) == 3


def test_unavailable_reasons(tmp_path: Path) -> None:
    present = tmp_path / "present"
    present.touch()
    missing = tmp_path / "missing"
    assert witness.unavailable_reason(present, present, bpftrace=sys.executable) is None
    reason = witness.unavailable_reason(missing, present, bpftrace=sys.executable)
    assert reason is not None and "no BTF" in reason
    reason = witness.unavailable_reason(present, missing, bpftrace=sys.executable)
    assert reason is not None and "no kprobes" in reason
    reason = witness.unavailable_reason(present, present, bpftrace="no-such-bpftrace-here")
    assert reason is not None and "not found" in reason


FAKE = """\
#!{python}
# A fake bpftrace: ready, then a heartbeat every 20 ms; events from $EVENTS, each
# "offset_s disk status" printed with the time the script started plus offset_s.
import os, sys, time
start = time.monotonic_ns()
if os.environ.get("FAIL"):
    print("ERROR: Could not resolve symbol: submit_bio_noacct", flush=True)
    sys.exit(1)
print(f"WITNESS READY {{start}}", flush=True)
events = [e.split() for e in os.environ.get("EVENTS", "").split(",") if e]
lost_at = float(os.environ.get("LOST_AT", "-1"))
stall_after = float(os.environ.get("STALL_AFTER", "-1"))
while True:
    now = time.monotonic_ns()
    if 0 <= stall_after <= (now - start) / 1e9:
        time.sleep(0.02)  # a bpftrace that gets no CPU: no heartbeat
        continue
    if 0 <= lost_at <= (now - start) / 1e9:
        print("Lost 7 events", flush=True)
        lost_at = -1
    for offset, disk, status in list(events):
        at = start + int(float(offset) * 1e9)
        if at <= now:
            print(f"WITNESS EOD {{at}} {{disk}} 8 8 {{status}}", flush=True)
            events.remove([offset, disk, status])
    print(f"WITNESS TICK {{now}}", flush=True)
    time.sleep(0.02)
"""


@pytest.fixture
def fake_bpftrace(tmp_path: Path) -> Path:
    path = tmp_path / "bpftrace"
    path.write_text(textwrap.dedent(FAKE.format(python=sys.executable)))
    path.chmod(0o755)
    return path


def test_windows_take_the_events_of_their_time(
    fake_bpftrace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTS", "0.3 nvme0c1n1 10,0.35 nvme0c1n1 10,0.9 nvme0c0n1 10,0.95 vda 10")
    with Witness(tmp_path / "witness.out", bpftrace=str(fake_bpftrace)) as seen:
        start = time.monotonic()
        first = seen.take(start + 0.6)
        second = seen.take(start + 1.2)
        third = seen.take(time.monotonic())
    assert (first.events, first.disks) == (2, ["nvme0c1n1"])
    assert (second.events, second.disks, second.other_events) == (1, ["nvme0c0n1"], 1)
    assert third.events == 0
    assert seen.total.events == 3 and not seen.running


def test_dropped_events_and_a_stall_make_a_window_incomplete(
    fake_bpftrace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bpftrace's "Lost N events" (its ring buffer was full) is counted in the window it is
    read in; a window taken before bpftrace caught up says so. Neither says "no race bio"
    (compare.witness_complete)."""
    monkeypatch.setenv("LOST_AT", "0.3")
    monkeypatch.setenv("STALL_AFTER", "2.0")
    monkeypatch.setattr(witness, "CATCH_UP_TIMEOUT_S", 1.5)
    with Witness(tmp_path / "witness.out", bpftrace=str(fake_bpftrace)) as seen:
        start = time.monotonic()
        assert seen._proc is not None
        seen_pid = seen._proc.pid
        if os.geteuid() == 0:
            assert os.getpriority(os.PRIO_PROCESS, seen_pid) == witness.NICE
        first = seen.take(start + 0.6)
        second = seen.take(start + 3.0)
    assert (first.lost, first.caught_up, first.complete) == (7, True, False)
    assert (second.lost, second.caught_up, second.complete) == (0, False, False)
    assert seen.total.lost == 7
    assert witness.parse_lost("Lost 1060 events") == 1060 and witness.parse_lost("x") == 0
    assert witness.bpftrace_environment()["BPFTRACE_PERF_RB_PAGES"] == "1024"


def test_a_bpftrace_that_refuses_is_one_line(
    fake_bpftrace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL", "1")
    found = Witness(tmp_path / "witness.out", bpftrace=str(fake_bpftrace))
    found.launch()
    with pytest.raises(ToolError, match="Could not resolve symbol") as info:
        found.wait_attached()
    assert "\n" not in str(info.value) and not found.running


def test_start_or_say_why_without_bpftrace(tmp_path: Path) -> None:
    found, reason = witness.start_or_say_why(tmp_path / "w.out", bpftrace="no-such-bpftrace")
    assert found is None and "not found" in reason


def test_bpftrace_is_pointed_at_a_tree_kernels_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/lib/modules/<release>/build is a kdir with a source link: bpftrace gets both."""
    monkeypatch.setattr("harness.campaign.witness.platform.release", lambda: "7.3.4")
    source = tmp_path / "src"
    (source / "include/linux").mkdir(parents=True)
    (source / "include/linux/kconfig.h").touch()
    kdir = tmp_path / "kdir"
    kdir.mkdir()
    (kdir / "source").symlink_to(source)
    (tmp_path / "modules/7.3.4").mkdir(parents=True)
    (tmp_path / "modules/7.3.4/build").symlink_to(kdir)
    env = witness.bpftrace_environment(tmp_path / "modules")
    assert env["BPFTRACE_KERNEL_SOURCE"] == str(source) and env["BPFTRACE_KERNEL_BUILD"] == str(
        kdir
    )
    (kdir / "include/linux").mkdir(parents=True)
    (kdir / "include/linux/kconfig.h").touch()  # a full build directory: nothing to set
    assert "BPFTRACE_KERNEL_BUILD" not in witness.bpftrace_environment(tmp_path / "modules")


class FailingRead:
    """A file whose read fails once, after moving past what it read (as FileIO.readall
    does when a later read(2) of it fails)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def read(self) -> bytes:
        self.stream.read()
        raise OSError(5, "Input/output error")

    def close(self) -> None:
        self.stream.close()


def test_a_failed_read_of_the_output_loses_no_event(tmp_path: Path) -> None:
    output = tmp_path / "witness.out"
    now = time.monotonic_ns()
    output.write_text(f"WITNESS TICK {now}\n")
    seen = Witness(output)
    seen._read()
    with output.open("a") as out:
        out.write(f"WITNESS EOD {now + 1} nvme0c1n1 8 8 10\nWITNESS TICK {now + 2}\n")
    assert seen._stream is not None
    seen._stream = cast(Any, FailingRead(seen._stream))
    seen._read()  # fails: nothing parsed, the file is opened again next time
    assert seen._pending == []
    seen._read()
    assert [event.disk for event in seen._pending] == ["nvme0c1n1"]

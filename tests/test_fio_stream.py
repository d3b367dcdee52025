"""One fio per campaign: status documents split from stdout, per-window results from two
snapshots, and a fake fio that answers SIGUSR1 (as fio does) driven for real."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from harness.campaign.fio_stream import (
    FioSnapshot,
    FioStream,
    FioStreamError,
    JobCounters,
    JsonDocuments,
    percentile_ns,
    snapshot_of,
    window_result,
)
from harness.campaign.workload import FioJob, StampedLine

MIB = 1024 * 1024
EIO_LINE = "fio: io_u error on file /dev/nvme1n1: Input/output error: write offset=8192, buflen=512"
VERIFY_LINE = "verify: bad magic header 0, wanted acca at file /dev/nvme1n1 offset 1048576"


def document(
    ios: tuple[int, int], err: int = 0, first: int = 0, last: int = 0, ts: int = 1000, **bins: Any
) -> dict[str, Any]:
    """A trimmed fio 3.33 json+ status document with one job."""

    def direction(n: int, name: str) -> dict[str, Any]:
        return {"total_ios": n, "clat_ns": {"bins": bins.get(name, {})}}

    return {
        "timestamp_ms": ts,
        "jobs": [
            {
                "read": direction(ios[0], "read"),
                "write": direction(ios[1], "write"),
                "total_err": err,
                "first_error": first,
                "error": last,
            }
        ],
    }


def snap(at: float, **kwargs: Any) -> FioSnapshot:
    return snapshot_of(document(**kwargs), at)


def test_documents_are_split_only_when_complete() -> None:
    first = json.dumps(document((1, 2)), indent=1) + "\n"
    second = json.dumps(document((3, 4)), indent=1) + "\n"
    stream = "fio: note before\n" + first + second
    splitter = JsonDocuments()
    found = []
    lines = stream.splitlines(keepends=True)
    for index, line in enumerate(lines):
        got = splitter.feed(line)
        if got:
            found.extend(got)
            # a document is parsed at its closing line, not before
            assert line.strip() == "}", (index, line)
    assert [d["jobs"][0]["read"]["total_ios"] for d in found] == [1, 3]


def test_percentile_of_bins() -> None:
    assert percentile_ns({}, 0.99) is None
    bins = {1000: 98, 5000: 1, 90000: 1}
    assert percentile_ns(bins, 0.50) == 1000
    assert percentile_ns(bins, 0.99) == 5000
    assert percentile_ns(bins, 1.0) == 90000


def test_window_counts_are_differences_of_the_snapshots() -> None:
    start = snap(10.0, ios=(100, 50), ts=1000, read={"1000": 100}, write={"2000": 50})
    end = snap(
        12.0,
        ios=(400, 250),
        ts=3000,
        read={"1000": 298, "800000": 2},
        write={"2000": 250},
    )
    result = window_result(start, end, [])
    assert (result.read_ios, result.write_ios) == (300, 200)
    assert result.iops == pytest.approx(250.0)  # 500 IOs in fio's 2.000 s
    assert result.runtime_s == 2.0
    # the window's own latencies: 298 at 1 us, 2 at 800 us -> p99 = 1 us... of 300: 297th
    assert result.read_p99_clat_us == 1.0
    assert result.write_p99_clat_us == 2.0
    assert result.total_errors == result.eio == result.verify_failures == 0
    assert result.first_error_at is None


def test_window_p99_sees_only_the_windows_slow_ios() -> None:
    start = snap(0.0, ios=(1000, 0), read={"1000": 1000})
    end = snap(1.0, ios=(1100, 0), read={"1000": 1090, "50000000": 10})
    # over the whole run p99 would be 1 us; in this window 10 of 100 IOs took 50 ms
    assert window_result(start, end, []).read_p99_clat_us == 50000.0


def test_window_owns_the_errors_stamped_inside_it() -> None:
    start = snap(10.0, ios=(100, 100), err=1, first=5, last=5)
    end = snap(20.0, ios=(200, 200), err=4, first=5, last=5)
    lines = [StampedLine(11.0, EIO_LINE), StampedLine(12.5, EIO_LINE), StampedLine(13.0, "x")]
    result = window_result(start, end, lines)
    assert result.total_errors == 3  # 4 - 1 counted; 2 lines: the JSON count wins
    assert result.eio == 3  # last errno EIO and first EIO: every new error is an EIO
    assert result.first_error_at == 11.0
    assert result.error_lines == [EIO_LINE, EIO_LINE]


def test_window_eio_lower_bounds() -> None:
    start = snap(0.0, ios=(1, 1), err=2, first=95, last=95)
    end = snap(1.0, ios=(2, 2), err=5, first=95, last=5)
    # the first error of the run was EOPNOTSUPP: of 3 new errors, at least the last was EIO
    assert window_result(start, end, []).eio == 1
    # ...unless more EIO lines were printed in the window
    lines = [StampedLine(0.5, EIO_LINE)] * 3
    assert window_result(start, end, lines).eio == 3


def test_window_verify_failures() -> None:
    start = snap(0.0, ios=(1, 1))
    end = snap(1.0, ios=(2, 2), err=1, first=84, last=84)
    assert window_result(start, end, []).verify_failures == 1  # EILSEQ, no line
    assert window_result(start, end, [StampedLine(0.2, VERIFY_LINE)] * 2).verify_failures == 2


def test_window_without_fio_clock_uses_monotonic_time() -> None:
    start = snap(5.0, ios=(0, 0), ts=0)
    end = snap(7.0, ios=(100, 100), ts=0)
    assert window_result(start, end, []).iops == pytest.approx(100.0)


def test_counters_of_a_document_without_bins() -> None:
    counters = snapshot_of(document((7, 8), err=1, first=5, last=5), 1.0).jobs[0]
    assert counters == JobCounters(7, 8, 1, 5, 5, {}, {})


# --- FioStream with a fake fio ------------------------------------------------------------------

FAKE_FIO = """\
#!{python}
# A stand-in for fio: a status document on stdout per SIGUSR1 (counters growing), an io_u
# error line on stderr after the first status, the final document on SIGINT.
import json, os, signal, sys, time

mode = os.environ.get("FAKE_FIO_MODE", "normal")
state = {{"n": 0}}
with open("fake-fio-argv.json", "w") as f:
    json.dump(sys.argv[1:], f)

state["owed"] = 0  # (mode "late") error lines counted in a document, printed later

def status(final=False):
    state["n"] += 1
    n = state["n"]
    errors = (0 if n == 1 else n + 1) if mode == "late" else n - 1
    doc = {{"timestamp_ms": 1000 * n, "jobs": [{{"read": {{"total_ios": 100 * n}},
            "write": {{"total_ios": 50 * n}}, "total_err": errors,
            "first_error": 5 if n > 1 else 0, "error": 5 if n > 1 else 0}}]}}
    print("fio: a note on stdout", flush=True)
    print(json.dumps(doc, indent=1), flush=True)
    if mode == "late":
        state["owed"] += {{1: 0, 2: 3}}.get(n, 1)
    elif n == 1:
        print({eio!r}, file=sys.stderr, flush=True)

def usr1(signum, frame):
    if mode == "mute":
        return
    # The harness sends the next SIGUSR1 as soon as it has read a whole document, which can
    # be before print() has returned: unmasked, the handler ran again inside its own print
    # ("RuntimeError: reentrant call inside <_io.BufferedWriter name='<stdout>'>", seen with
    # Python 3.13 on Debian 13 under load); SIGINT likewise. Real fio does not mind; the
    # fake holds both off while it prints.
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    try:
        status()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
    if mode == "die":
        sys.exit(3)

def stop(signum, frame):
    signal.pthread_sigmask(signal.SIG_BLOCK, HELD)
    status(final=True)
    sys.exit(0)

HELD = {{signal.SIGUSR1, signal.SIGINT}}

signal.signal(signal.SIGUSR1, usr1)
signal.signal(signal.SIGINT, stop)
open("ready", "w").close()
while True:
    time.sleep(0.05)
    if state["owed"]:
        time.sleep(0.5)  # the burst's lines arrive well after the document that counted them
        for _ in range(state["owed"]):
            print({eio!r}, file=sys.stderr, flush=True)
        state["owed"] = 0
"""


@pytest.fixture
def fake_fio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "fio"
    script.write_text(FAKE_FIO.format(python=sys.executable, eio=EIO_LINE))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return tmp_path / "fio"


def wait_ready(workdir: Path) -> None:
    """Until the fake has its signal handlers (before that SIGUSR1 would kill it)."""
    deadline = time.monotonic() + 20
    while not (workdir / "ready").exists():
        assert time.monotonic() < deadline, "the fake fio did not start"
        time.sleep(0.02)


def test_stream_windows_from_sigusr1_status(fake_fio: Path) -> None:
    job = FioJob("/dev/nvme1n1", 64 * MIB)
    stream = FioStream(job, fake_fio)
    try:
        wait_ready(fake_fio)
        first = stream.snapshot(timeout_s=5)
        deadline = time.monotonic() + 10  # the error line printed after the first status
        while not stream.lines and time.monotonic() < deadline:
            time.sleep(0.02)
        second = stream.snapshot(timeout_s=5)
        window = window_result(first, second, stream.lines_between(first.at, second.at))
    finally:
        code, killed = stream.stop(timeout_s=5)
    assert (window.read_ios, window.write_ios) == (100, 50)
    assert window.eio == 1 and window.total_errors == 1
    assert window.iops == pytest.approx(150.0)
    assert (code, killed) == (0, False)
    assert len(stream.snapshots) == 3  # two asked for, one at exit
    assert json.loads((fake_fio / "fio.json").read_text())["timestamp_ms"] == 3000
    argv = json.loads((fake_fio / "fake-fio-argv.json").read_text())
    assert "--output-format=json+" in argv and "--error_dump=1" in argv
    assert not any(arg.startswith("--output=") for arg in argv)  # documents go to stdout


def test_error_lines_that_arrive_after_their_window_still_count_in_it(
    fake_fio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on 7.3.4 under TCG: a burst of 673 EIOs whose io_u error lines arrived after
    the status document that counted them; by the time they were read, 450 of them fell into
    the next window, which counted them again. Lines are taken by fio's count instead."""
    monkeypatch.setenv("FAKE_FIO_MODE", "late")
    stream = FioStream(FioJob("/dev/nvme1n1", 64 * MIB), fake_fio)
    try:
        wait_ready(fake_fio)
        first = stream.snapshot(timeout_s=5)
        second = stream.snapshot(timeout_s=5)  # counts 3 errors; their lines come 0.5 s later
        assert not stream.error_lines
        window = window_result(first, second, stream.window_lines(first, second, timeout_s=5))
        time.sleep(0.1)
        third = stream.snapshot(timeout_s=5)  # 1 more, again late
        late = window_result(second, third, stream.window_lines(second, third, timeout_s=5))
        by_time = stream.lines_between(second.at, third.at)  # what the old count took
    finally:
        stream.stop(timeout_s=5)
    assert (window.eio, late.eio) == (3, 1)
    assert len(by_time) == 3  # the first window's burst, read in the second
    assert window_result(second, third, by_time).eio == 3  # counted twice


def test_window_lines_give_up_after_their_timeout(
    fake_fio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fio that printed no line for its counted errors (error_dump off, a lost pipe): the
    window takes what there is after the timeout and the JSON count still holds."""
    monkeypatch.setenv("FAKE_FIO_MODE", "late")
    stream = FioStream(FioJob("/dev/nvme1n1", 64 * MIB), fake_fio)
    try:
        wait_ready(fake_fio)
        first = stream.snapshot(timeout_s=5)
        second = stream.snapshot(timeout_s=5)
        began = time.monotonic()
        lines = stream.window_lines(first, second, timeout_s=0.1)
        waited = time.monotonic() - began
    finally:
        stream.stop(timeout_s=5)
    assert lines == [] and waited < 0.4
    assert window_result(first, second, lines).eio == 3


def test_stream_that_exits_raises_and_keeps_its_last_document(
    fake_fio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FIO_MODE", "die")
    stream = FioStream(FioJob("/dev/nvme1n1", 64 * MIB), fake_fio)
    try:
        wait_ready(fake_fio)
        last = stream.snapshot(timeout_s=5)  # it answers, then exits with status 3
        stream.proc.wait(timeout=5)
        with pytest.raises(FioStreamError, match="exited with status 3"):
            stream.snapshot(timeout_s=5)
    finally:
        stream.stop(timeout_s=5)
    assert stream.snapshots[-1] == last


def test_stream_that_does_not_answer_is_a_clear_error(
    fake_fio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FIO_MODE", "mute")
    stream = FioStream(FioJob("/dev/nvme1n1", 64 * MIB), fake_fio)
    try:
        wait_ready(fake_fio)
        with pytest.raises(FioStreamError, match=r"no status within 0\.3 s"):
            stream.snapshot(timeout_s=0.3)
    finally:
        stream.stop(timeout_s=5)


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_documents_from_chunks_of_any_size(size: int) -> None:
    stream = "fio: note\n" + "".join(
        json.dumps(document((n, n)), indent=1) + "\n" for n in range(1, 4)
    )
    splitter = JsonDocuments()
    found = []
    for start in range(0, len(stream), size):
        found += splitter.feed(stream[start : start + size])
    assert [d["jobs"][0]["read"]["total_ios"] for d in found] == [1, 2, 3]

"""fio: the job's command line, its results (JSON + stderr), and a run stopped with SIGINT."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.campaign.workload import FioJob, FioRun, StampedLine, bare_fio, parse_result
from harness.core.errors import HarnessError, ToolError

MIB = 1024 * 1024
MULTIPLE_WRITERS = (
    "fio: multiple writers may overwrite blocks that belong to other jobs. "
    "This can cause verification failures.\n"
)
EIO_LINE = (
    "fio: io_u error on file /dev/nvme0n1: Input/output error: write offset=81866752, buflen=4096"
)
ENOSPC_LINE = (
    "fio: io_u error on file /dev/nvme0n1: No space left on device: write offset=8192, buflen=4096"
)
CRC_LINE = (
    "crc32c: verify failed at file /dev/nvme0n1 offset 3407872, length 4096 "
    "(requested block: offset=3407872, length=4096, flags=88)"
)
MAGIC_LINE = (
    "verify: bad magic header 0, wanted acca at file /dev/nvme0n1 offset 1048576, length 4096 "
    "(requested block: offset=1048576, length=4096)"
)


def fio_job(
    read_ios: int,
    write_ios: int,
    read_iops: float,
    write_iops: float,
    runtime_ms: int,
    total_err: int = 0,
    first_error: int = 0,
    error: int = 0,
) -> dict[str, Any]:
    """One job of fio 3.33's JSON (group_reporting=0, continue_on_error set), trimmed."""

    def direction(ios: int, iops: float) -> dict[str, Any]:
        return {
            "io_bytes": ios * 4096,
            "io_kbytes": ios * 4,
            "bw": int(iops * 4),
            "iops": iops,
            "runtime": runtime_ms + 1,
            "total_ios": ios,
            "short_ios": 0,
            "drop_ios": 0,
        }

    return {
        "jobname": "nvmf-harness",
        "groupid": 0,
        "error": error,
        "eta": 2147483647,
        "elapsed": runtime_ms // 1000 + 1,
        "job options": {
            "name": "nvmf-harness",
            "filename": "/dev/nvme0n1",
            "rw": "randrw",
            "numjobs": "2",
            "continue_on_error": "all",
        },
        "read": direction(read_ios, read_iops),
        "write": direction(write_ios, write_iops),
        "job_runtime": runtime_ms,
        "usr_cpu": 3.1,
        "sys_cpu": 9.6,
        "total_err": total_err,
        "first_error": first_error,
    }


def fio_output(*jobs: dict[str, Any]) -> str:
    """The --output file as fio 3.33 writes it: notes first, then the JSON document."""
    document = {
        "fio version": "fio-3.33",
        "timestamp": 1795879718,
        "timestamp_ms": 1795879718624,
        "time": "Sat Nov 28 15:28:38 2026",
        "jobs": list(jobs),
        "disk_util": [],
    }
    return MULTIPLE_WRITERS + json.dumps(document, indent=2) + "\n"


def lines(*texts: str, start: float = 100.0) -> list[StampedLine]:
    return [StampedLine(start + index, text) for index, text in enumerate(texts)]


# --- FioJob.argv -------------------------------------------------------------------------------


def options(argv: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in argv[1:])


def test_argv_runs_fio_on_the_device(tmp_path: Path) -> None:
    job = FioJob(filename="/dev/nvme0n1", size_bytes=256 * MIB)
    argv = job.argv(tmp_path / "fio.json")
    assert argv[0] == "fio"
    opts = options(argv)
    assert opts["filename"] == "/dev/nvme0n1"
    assert opts["output"] == str(tmp_path / "fio.json")
    assert opts["output-format"] == "json"
    assert opts["continue_on_error"] == "all"
    assert opts["direct"] == "1"
    assert opts["time_based"] == "1"
    assert opts["name"] == "nvmf-harness"  # the mark `clean` looks for
    assert opts["rw"] == "randrw"
    assert opts["bs"] == "4k"
    assert opts["iodepth"] == "32"
    assert opts["numjobs"] == "2"
    assert opts["ioengine"] == "libaio"
    assert opts["group_reporting"] == "0"  # one JSON job per fio job


def test_argv_verify_options(tmp_path: Path) -> None:
    with_verify = options(FioJob("/dev/nvme0n1", 64 * MIB).argv(tmp_path / "o"))
    assert with_verify["verify"] == "crc32c"
    assert with_verify["verify_fatal"] == "0"  # a bad block is counted, the job goes on
    assert "verify_backlog" in with_verify
    without = options(FioJob("/dev/nvme0n1", 64 * MIB, verify=False).argv(tmp_path / "o"))
    assert not any(key.startswith("verify") for key in without)


@given(
    size_mib=st.integers(1, 65536),
    extra=st.integers(0, MIB - 1),
    numjobs=st.integers(1, 64),
)
def test_argv_regions_are_disjoint_and_inside_the_device(
    size_mib: int, extra: int, numjobs: int
) -> None:
    size = size_mib * MIB + extra
    if size // numjobs < MIB:
        return  # too small for one MiB per job: see the test below
    opts = options(FioJob("/dev/nvme0n1", size, numjobs=numjobs).argv(Path("/o")))
    region, step = int(opts["size"]), int(opts["offset_increment"])
    assert region > 0
    assert region % MIB == 0
    assert step >= region  # job i writes [i * step, i * step + region): no overlap
    assert (numjobs - 1) * step + region <= size  # the last job ends inside the device


def test_argv_refuses_a_device_too_small_for_its_jobs(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="numjobs"):
        FioJob("/dev/nvme0n1", 16 * MIB, numjobs=17).argv(tmp_path / "o")


# --- parse_result ------------------------------------------------------------------------------


def test_parse_a_clean_run(tmp_path: Path) -> None:
    output = tmp_path / "fio.json"
    output.write_text(
        fio_output(
            fio_job(19613, 9805, 19593.406593, 9795.204795, 1000),
            fio_job(24588, 12416, 24563.436563, 12403.596404, 1001),
        )
    )
    result = parse_result(output, lines(MULTIPLE_WRITERS.strip()), exit_code=0, killed=False)
    assert result.json_ok
    assert result.exit_code == 0
    assert not result.killed
    assert result.read_ios == 19613 + 24588
    assert result.write_ios == 9805 + 12416
    assert result.iops == pytest.approx(19593.406593 + 9795.204795 + 24563.436563 + 12403.596404)
    assert result.runtime_s == pytest.approx(1.001)
    assert result.total_errors == 0
    assert result.eio == 0
    assert result.verify_failures == 0
    assert result.first_error_at is None  # the warning on stderr is not an error
    assert result.error_lines == []


def test_parse_counts_eio_and_other_errors(tmp_path: Path) -> None:
    output = tmp_path / "fio.json"
    output.write_text(
        fio_output(
            fio_job(100, 100, 10.0, 10.0, 5000, total_err=2, first_error=5),
            fio_job(100, 100, 10.0, 10.0, 5000, total_err=1, first_error=28),
        )
    )
    stderr = lines(MULTIPLE_WRITERS.strip(), EIO_LINE, ENOSPC_LINE, EIO_LINE, start=50.0)
    result = parse_result(output, stderr, exit_code=0, killed=False)
    assert result.total_errors == 3
    assert result.eio == 2  # the ENOSPC line is an error, not an EIO
    assert result.first_error_at == 51.0
    assert result.error_lines == [EIO_LINE, ENOSPC_LINE, EIO_LINE]


def test_total_errors_is_at_least_the_lines_printed(tmp_path: Path) -> None:
    output = tmp_path / "fio.json"
    output.write_text(fio_output(fio_job(1, 1, 1.0, 1.0, 10, total_err=1, first_error=5)))
    result = parse_result(output, lines(EIO_LINE, EIO_LINE, EIO_LINE), 0, False)
    assert result.total_errors == 3
    assert result.eio == 3


@pytest.mark.parametrize(
    ("first_errors", "printed", "eio"),
    [
        ((5, 0), 0, 1),  # fio printed nothing, but a job's first error was EIO
        ((5, 5), 0, 2),
        ((5, 0), 3, 3),  # lines printed win when there are more of them
        ((28, 0), 0, 0),  # ENOSPC first
        ((0, 0), 0, 0),
    ],
)
def test_eio_is_a_lower_bound_from_lines_or_first_errors(
    tmp_path: Path, first_errors: tuple[int, int], printed: int, eio: int
) -> None:
    output = tmp_path / "fio.json"
    jobs = [
        fio_job(10, 10, 1.0, 1.0, 100, total_err=1 if code else 0, first_error=code)
        for code in first_errors
    ]
    output.write_text(fio_output(*jobs))
    result = parse_result(output, lines(*[EIO_LINE] * printed), 0, False)
    assert result.eio == eio


@pytest.mark.parametrize(
    ("first_error", "error", "total_err", "eio"),
    [
        (5, 5, 7, 7),  # first and last errno EIO: every counted error is taken as EIO
        (5, 5, 0, 1),
        (5, 28, 7, 1),  # only one of them EIO: at least one
        (28, 5, 7, 1),
        (28, 28, 7, 0),
    ],
)
def test_eio_from_first_and_last_errno(
    tmp_path: Path, first_error: int, error: int, total_err: int, eio: int
) -> None:
    output = tmp_path / "fio.json"
    job = fio_job(10, 10, 1.0, 1.0, 100, total_err=total_err, first_error=first_error, error=error)
    output.write_text(fio_output(job))
    assert parse_result(output, [], 0, False).eio == eio


def test_job_error_counts_when_first_error_is_absent(tmp_path: Path) -> None:
    job = fio_job(10, 10, 1.0, 1.0, 100, error=5)
    del job["first_error"], job["total_err"]  # fio writes these only with continue_on_error
    output = tmp_path / "fio.json"
    output.write_text(fio_output(job))
    assert parse_result(output, [], 0, False).eio == 1


def test_verify_failures_from_stderr(tmp_path: Path) -> None:
    output = tmp_path / "fio.json"
    output.write_text(fio_output(fio_job(10, 10, 1.0, 1.0, 100, total_err=2, first_error=84)))
    stderr = lines("       Expected CRC: 7d5b8a0b", CRC_LINE, MAGIC_LINE, start=10.0)
    result = parse_result(output, stderr, 0, False)
    assert result.verify_failures == 2
    assert result.eio == 0
    assert result.first_error_at == 11.0
    assert result.error_lines == [CRC_LINE, MAGIC_LINE]


def test_verify_failure_from_eilseq_in_the_json(tmp_path: Path) -> None:
    output = tmp_path / "fio.json"
    output.write_text(fio_output(fio_job(10, 10, 1.0, 1.0, 100, total_err=1, first_error=84)))
    result = parse_result(output, [], 0, False)
    assert result.verify_failures == 1
    assert result.eio == 0


def test_error_lines_are_capped(tmp_path: Path) -> None:
    result = parse_result(tmp_path / "none.json", lines(*[EIO_LINE] * 20), 0, False)
    assert result.eio == 20
    assert len(result.error_lines) == 8


@pytest.mark.parametrize(
    "content",
    [None, "", "fio: engine libaio not loadable\n", '{"jobs": [', "[1, 2]", '{"jobs": []}'],
)
def test_missing_or_broken_json(tmp_path: Path, content: str | None) -> None:
    output = tmp_path / "fio.json"
    if content is not None:
        output.write_text(content)
    result = parse_result(output, lines(EIO_LINE), exit_code=None, killed=True)
    assert not result.json_ok
    assert result.killed
    assert result.exit_code is None
    assert (result.read_ios, result.write_ios, result.iops, result.runtime_s) == (0, 0, 0.0, 0.0)
    assert result.eio == 1  # stderr still counts
    assert result.total_errors == 1


# --- FioRun with a fake fio ----------------------------------------------------------------------

FAKE_FIO = """\
#!{python}
# A stand-in for fio: prints an io_u error on stderr, writes its JSON on SIGINT.
import json, os, signal, sys, time

args = sys.argv[1:]
output = next(a.split("=", 1)[1] for a in args if a.startswith("--output="))
mode = os.environ.get("FAKE_FIO_MODE", "normal")
with open(os.path.join(os.path.dirname(output), "fake-fio-argv.json"), "w") as f:
    json.dump({{"argv": args, "cwd": os.getcwd()}}, f)

def stop(signum, frame):
    with open(output, "w") as f:
        f.write({doc!r})
    sys.exit(0)

if mode == "exit":
    sys.exit(1)
signal.signal(signal.SIGINT, signal.SIG_IGN if mode == "ignore" else stop)
print({warning!r}, file=sys.stderr, flush=True)
time.sleep(0.05)
print({eio!r}, file=sys.stderr, flush=True)
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def fake_fio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `fio` first on PATH; returns the work directory for FioRun."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "fio"
    doc = fio_output(
        fio_job(300, 200, 150.0, 100.0, 2000, total_err=1, first_error=5),
        fio_job(310, 190, 155.0, 95.0, 2000),
    )
    script.write_text(
        FAKE_FIO.format(
            python=sys.executable, doc=doc, warning=MULTIPLE_WRITERS.strip(), eio=EIO_LINE
        )
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    workdir = tmp_path / "work"
    workdir.mkdir()
    return workdir


def wait_for(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_fio_run_stops_on_sigint_and_parses(fake_fio: Path) -> None:
    job = FioJob("/dev/nvme0n1", 64 * MIB)
    run = FioRun(job, fake_fio)
    try:
        wait_for(lambda: any("io_u error" in line.text for line in run.lines))
        assert run.running()
        result = run.stop(timeout_s=10)
    finally:
        run.kill()
    stopped = time.monotonic()
    assert not run.running()
    assert not result.killed
    assert result.exit_code == 0
    assert result.json_ok
    assert result.read_ios == 610
    assert result.write_ios == 390
    assert result.eio == 1
    assert result.total_errors == 1
    assert result.first_error_at is not None
    assert run.started_at <= result.first_error_at <= stopped
    assert result.error_lines == [EIO_LINE]
    # fio got the job's command line and ran in the work directory (its verify state files)
    called = json.loads((fake_fio / "fake-fio-argv.json").read_text())
    assert called["argv"] == job.argv(fake_fio / "fio.json")[1:]
    assert Path(called["cwd"]).resolve() == fake_fio.resolve()
    # stderr is kept with the time of each line since fio started
    kept = (fake_fio / "fio.stderr").read_text().splitlines()
    assert len(kept) == 2
    stamp, text = kept[1].split(maxsplit=1)
    assert re.fullmatch(r"\d+\.\d{3}", stamp)
    assert float(stamp) == pytest.approx(result.first_error_at - run.started_at, abs=0.002)
    assert text == EIO_LINE


def test_fio_run_that_ignores_sigint_is_killed(
    fake_fio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FIO_MODE", "ignore")
    run = FioRun(FioJob("/dev/nvme0n1", 64 * MIB), fake_fio)
    try:
        wait_for(lambda: len(run.lines) >= 2)
        started = time.monotonic()
        result = run.stop(timeout_s=0.5)
        took = time.monotonic() - started
    finally:
        run.kill()
    assert result.killed
    assert result.exit_code == -9
    assert not result.json_ok  # no JSON from a SIGKILLed fio
    assert result.eio == 1  # stderr still tells
    assert 0.5 <= took < 5
    assert not run.running()


def test_fio_missing_is_a_tool_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(sys, "executable", str(empty / "python"))
    with pytest.raises(ToolError, match="fio"):
        FioRun(FioJob("/dev/nvme0n1", 64 * MIB), tmp_path)


def test_bare_fio_runs_for_the_given_time(fake_fio: Path) -> None:
    started = time.monotonic()
    result = bare_fio(FioJob("/dev/nvme0n1", 64 * MIB), fake_fio, seconds=0.3)
    assert time.monotonic() - started >= 0.3
    assert result.json_ok
    assert not result.killed


def test_bare_fio_that_exits_early_is_an_error(
    fake_fio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FIO_MODE", "exit")
    with pytest.raises(ToolError, match="exited early"):
        bare_fio(FioJob("/dev/nvme0n1", 64 * MIB), fake_fio, seconds=0.5)

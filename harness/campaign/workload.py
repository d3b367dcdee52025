"""fio on the multipath head: started per iteration, stopped with SIGINT, JSON results.

fio runs with ``continue_on_error=all`` so one EIO does not end the job: every error is
counted (``total_err`` in the JSON, one ``io_u error`` line on stderr each) and the job keeps
the IO going through the rest of the fault. Each job writes its own region (``offset_increment``)
so crc32c verification never sees another job's data. stderr is read live by a thread that
timestamps each line, which gives the time the application first saw an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from harness.bed.cleanup import FIO_MARK
from harness.core.errors import HarnessError, ToolError
from harness.core.priority import fio_nice_option
from harness.core.procs import require_tool

EIO_RE = re.compile(r"Input/output error|error=5\b|err=5\b")
VERIFY_RE = re.compile(r"verify: bad|verify failed|bad magic header|crc32c: verify", re.I)
IO_U_ERROR_RE = re.compile(r"io_u error|fio: pid=\d+, err=")
STOP_TIMEOUT_S = 30.0
P99_KEY = "99.000000"  # fio's name for the 99th percentile in clat_ns.percentile


@dataclass(frozen=True)
class FioJob:
    """One fio invocation against a block device the harness created."""

    filename: str
    size_bytes: int
    rw: str = "randrw"
    bs: str = "4k"
    iodepth: int = 32
    numjobs: int = 2
    verify: bool = True
    ioengine: str = "libaio"
    runtime_s: int = 3600  # stopped with SIGINT long before this

    def region_bytes(self) -> int:
        """Bytes each job writes (whole MiBs); job i covers [i * region, (i + 1) * region),
        so fio never touches bytes at or beyond ``numjobs * region_bytes()``."""
        region = self.size_bytes // self.numjobs
        return region - region % (1024 * 1024)

    def argv(self, output: Path | None, output_format: str = "json") -> list[str]:
        """fio's argument list; results as ``output_format`` into ``output`` (stdout when
        None). Every IO error is one stderr line (``error_dump``), also the non-fatal ones.
        Built where fio starts: its jobs' ``--nice`` depends on the calling thread's
        (harness.core.priority.fio_nice_option)."""
        region = self.region_bytes()
        if region <= 0:  # fio reads --size=0 as "the whole device": jobs would overlap
            raise HarnessError(
                f"{self.filename}: {self.size_bytes} bytes cannot hold {self.numjobs} fio jobs "
                "of 1 MiB each",
                hint="lower workload.numjobs or raise target.size_mib",
            )
        args = [
            "fio",
            FIO_MARK,
            f"--filename={self.filename}",
            f"--rw={self.rw}",
            f"--bs={self.bs}",
            f"--iodepth={self.iodepth}",
            f"--numjobs={self.numjobs}",
            f"--ioengine={self.ioengine}",
            "--direct=1",
            "--time_based=1",
            f"--runtime={self.runtime_s}",
            f"--size={region}",
            f"--offset_increment={region}",
            "--continue_on_error=all",
            "--error_dump=1",
            "--group_reporting=0",
            f"--output-format={output_format}",
            "--eta=never",
        ]
        if output is not None:
            args.append(f"--output={output}")
        if self.verify:
            args += ["--verify=crc32c", "--verify_backlog=64", "--verify_fatal=0"]
        return args + fio_nice_option()  # the jobs at the workload's nice (core.priority)


@dataclass(frozen=True)
class StampedLine:
    at: float  # time.monotonic() when the line was read
    text: str


@dataclass
class FioResult:
    """What fio reported for one run."""

    exit_code: int | None
    killed: bool  # did not stop on SIGINT; SIGKILLed
    total_errors: int  # every IO error fio counted (continue_on_error)
    eio: int  # errors that were EIO (from stderr lines or the JSON first error)
    verify_failures: int
    read_ios: int
    write_ios: int
    iops: float
    runtime_s: float
    first_error_at: float | None  # time.monotonic() of the first error line
    error_lines: list[str] = field(default_factory=list)
    json_ok: bool = True
    # 99th percentile completion latency (clat) in microseconds, the largest over the jobs
    # (fio's JSON has no merged percentile with group_reporting=0); None when no IO completed.
    read_p99_clat_us: float | None = None
    write_p99_clat_us: float | None = None

    @property
    def p99_clat_us(self) -> float | None:
        """The larger of the read and write p99 completion latencies."""
        values = [v for v in (self.read_p99_clat_us, self.write_p99_clat_us) if v is not None]
        return max(values) if values else None


class FioRun:
    """A running fio; ``stop`` ends it and returns the parsed result."""

    def __init__(self, job: FioJob, workdir: Path) -> None:
        require_tool("fio")
        self.job = job
        self.output = workdir / "fio.json"
        self.stderr_path = workdir / "fio.stderr"
        self.lines: list[StampedLine] = []
        self._stderr_file: IO[str] = self.stderr_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            job.argv(self.output),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd=workdir,  # fio writes its verify state files into the working directory
        )
        self.started_at = time.monotonic()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for text in self.proc.stderr:
            line = StampedLine(time.monotonic(), text.rstrip("\n"))
            self.lines.append(line)
            self._stderr_file.write(f"{line.at - self.started_at:10.3f} {line.text}\n")
            self._stderr_file.flush()

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> FioResult:
        """SIGINT fio (it writes its JSON), SIGKILL it if it does not stop in time."""
        killed = interrupt_then_kill(self.proc, timeout_s)
        self._reader.join(timeout=5)
        self._stderr_file.close()
        return parse_result(self.output, self.lines, self.proc.returncode, killed)

    def kill(self) -> None:
        kill_group(self.proc)


def interrupt_then_kill(proc: subprocess.Popen[Any], timeout_s: float) -> bool:
    """SIGINT a running fio (it reports and exits), SIGKILL its process group when it has
    not exited after ``timeout_s``; returns whether it had to be killed."""
    if proc.poll() is not None:
        return False
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        # A process stuck in D state ignores SIGKILL until the IO completes.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout_s)
        return True
    return False


def kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def parse_result(
    output: Path, lines: list[StampedLine], exit_code: int | None, killed: bool
) -> FioResult:
    """Combine fio's JSON (counts, IOPS) with its stderr (which error, when)."""
    error_lines = [line for line in lines if IO_U_ERROR_RE.search(line.text)]
    eio_lines = [line for line in error_lines if EIO_RE.search(line.text)]
    verify_lines = [line for line in lines if VERIFY_RE.search(line.text)]
    data = _load_json(output)
    jobs = data.get("jobs", []) if isinstance(data, dict) else []
    total_err = sum(int(job.get("total_err", 0)) for job in jobs)
    first_errors = [int(job.get("first_error", 0) or job.get("error", 0) or 0) for job in jobs]
    read_ios = sum(int(job.get("read", {}).get("total_ios", 0)) for job in jobs)
    write_ios = sum(int(job.get("write", {}).get("total_ios", 0)) for job in jobs)
    iops = sum(
        float(job.get("read", {}).get("iops", 0.0)) + float(job.get("write", {}).get("iops", 0.0))
        for job in jobs
    )
    runtime_ms = max((int(job.get("job_runtime", 0)) for job in jobs), default=0)
    # With continue_on_error fio prints few of the errors it counts (often none); its JSON
    # gives per job the count and the first and last errno. A job whose first and last
    # errors were EIO counts all its errors as EIO, one with only one of them at least 1.
    eio_from_json = 0
    for job in jobs:
        first, last = int(job.get("first_error", 0) or 0), int(job.get("error", 0) or 0)
        if first == 5 and last == 5:
            eio_from_json += int(job.get("total_err", 0)) or 1
        elif 5 in (first, last):
            eio_from_json += 1
    eio = max(len(eio_lines), eio_from_json)
    verify_failures = len(verify_lines)
    if verify_failures == 0 and 84 in first_errors:  # EILSEQ is fio's verify error
        verify_failures = 1
    stamped = [line.at for line in (*error_lines, *verify_lines)]
    return FioResult(
        exit_code=exit_code,
        killed=killed,
        total_errors=max(total_err, len(error_lines)),
        eio=eio,
        verify_failures=verify_failures,
        read_ios=read_ios,
        write_ios=write_ios,
        iops=iops,
        runtime_s=runtime_ms / 1000,
        first_error_at=min(stamped) if stamped else None,
        error_lines=[line.text for line in (*error_lines, *verify_lines)][:8],
        json_ok=bool(jobs),
        read_p99_clat_us=p99_clat_us(jobs, "read"),
        write_p99_clat_us=p99_clat_us(jobs, "write"),
    )


def p99_clat_us(jobs: list[Any], direction: str) -> float | None:
    """The largest per-job p99 completion latency of one direction, in microseconds.

    fio reports ``jobs[].<direction>.clat_ns.percentile["99.000000"]`` in nanoseconds; a job
    that completed no IO in that direction has no (or an all-zero) percentile and is skipped.
    """
    found: list[float] = []
    for job in jobs:
        stats = job.get(direction) if isinstance(job, dict) else None
        if not isinstance(stats, dict) or not int(stats.get("total_ios", 0) or 0):
            continue
        clat = stats.get("clat_ns")
        percentiles = clat.get("percentile") if isinstance(clat, dict) else None
        if not isinstance(percentiles, dict):
            continue
        try:
            value = float(percentiles.get(P99_KEY, 0) or 0)
        except (TypeError, ValueError):
            continue
        if value > 0:
            found.append(value / 1000)
    return round(max(found), 1) if found else None


def _load_json(output: Path) -> Any:
    """fio's JSON file; fio may print notes before the document, so find its start."""
    try:
        text = output.read_text(errors="replace")
    except OSError:
        return {}
    start = text.find("{")
    if start < 0:
        return {}
    try:
        return json.loads(text[start:])
    except json.JSONDecodeError:
        return {}


def bare_fio(job: FioJob, workdir: Path, seconds: float) -> FioResult:
    """Plain fio for a fixed time with no faults (the baseline for harness overhead)."""
    run = FioRun(job, workdir)
    time.sleep(seconds)
    early = not run.running()
    result = run.stop()  # also when it exited early: closes the log, joins the reader
    if early:
        raise ToolError(f"fio exited early: see {run.stderr_path}")
    return result

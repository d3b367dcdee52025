"""One fio for a whole campaign, cut into per-iteration windows by status snapshots.

Starting and stopping fio costs about 1.4 s per iteration under TCG (process start, file
layout, verify state, the final report). Instead one fio runs from the first iteration to
the last, and each iteration reads what happened in its own time window:

- **counts** (IOs per direction, errors, completion-latency bins): fio prints its complete
  status as one JSON document (``--output-format=json+``: with the ``clat_ns.bins``
  histogram) on stdout each time it receives SIGUSR1 (fio's ``sig_show_status`` ->
  ``show_running_run_stats``; about 3 ms on the host). Counters are cumulative, so a window's
  counts are the difference of the snapshots at its two ends: exact at those instants.
- **which error, when**: with ``continue_on_error=all`` fio prints an ``io_u error`` line
  only with ``error_dump=1`` (io_u.c:__io_u_log_error returns early for a non-fatal error
  otherwise); with it every error is one stderr line, which a thread stamps with
  ``time.monotonic()`` when it reads it. A window owns the lines stamped inside it.
- **p99 completion latency** of a window: from the difference of the two snapshots'
  latency bins (nanoseconds), the largest over jobs, as for a whole run.

A fio that exits (a fatal errno ends its jobs: only EIO and EILSEQ are non-fatal under
``continue_on_error``, td_error.c) or stops answering SIGUSR1 raises FioStreamError; its last
document (fio prints one at exit) still closes the window.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harness.campaign.workload import (
    EIO_RE,
    IO_U_ERROR_RE,
    STOP_TIMEOUT_S,
    VERIFY_RE,
    FioJob,
    FioResult,
    StampedLine,
    interrupt_then_kill,
)
from harness.core.errors import HarnessError
from harness.core.procs import require_tool

READ_CHUNK_BYTES = 1 << 16
SNAPSHOT_TIMEOUT_S = 30.0  # fio answers once each job is between IOs: slow mid-fault
LINES_TIMEOUT_S = 10.0  # a window's error lines, behind its status document
EILSEQ = 84  # fio's errno for a verify failure
EIO = 5


class FioStreamError(HarnessError):
    """fio exited or did not answer a status request."""


@dataclass(frozen=True)
class JobCounters:
    """One fio job's cumulative counters in one status document.

    ``*_bins`` map a completion latency in nanoseconds to the number of IOs in that bin
    (json+ ``clat_ns.bins``); ``first_error``/``error`` are errnos (0: none).
    """

    read_ios: int
    write_ios: int
    total_err: int
    first_error: int
    error: int
    read_bins: Mapping[int, int]
    write_bins: Mapping[int, int]


@dataclass(frozen=True)
class FioSnapshot:
    """fio's status at one instant: ``at`` is time.monotonic() when the document was read,
    ``timestamp_ms`` fio's own clock (ms since the epoch) when it wrote it."""

    at: float
    timestamp_ms: int
    jobs: tuple[JobCounters, ...]

    @property
    def ios(self) -> int:
        return sum(job.read_ios + job.write_ios for job in self.jobs)

    @property
    def errors(self) -> int:
        """Errors fio counted by then, over all jobs (``total_err``): with
        ``error_dump=1`` it printed one ``io_u error`` line for each."""
        return sum(job.total_err for job in self.jobs)


def _bins(direction: Any) -> dict[int, int]:
    clat = direction.get("clat_ns") if isinstance(direction, dict) else None
    bins = clat.get("bins") if isinstance(clat, dict) else None
    if not isinstance(bins, dict):
        return {}
    return {int(k): int(v) for k, v in bins.items()}


def snapshot_of(document: Mapping[str, Any], at: float) -> FioSnapshot:
    """A FioSnapshot from one fio JSON document (``jobs[]`` with read/write/total_err...)."""
    jobs = []
    for job in document.get("jobs", []):
        read, write = job.get("read", {}), job.get("write", {})
        jobs.append(
            JobCounters(
                read_ios=int(read.get("total_ios", 0)),
                write_ios=int(write.get("total_ios", 0)),
                total_err=int(job.get("total_err", 0) or 0),
                first_error=int(job.get("first_error", 0) or 0),
                error=int(job.get("error", 0) or 0),
                read_bins=_bins(read),
                write_bins=_bins(write),
            )
        )
    return FioSnapshot(at=at, timestamp_ms=int(document.get("timestamp_ms", 0)), jobs=tuple(jobs))


class JsonDocuments:
    """Splits a stream of concatenated JSON documents (with fio's notes between them) into
    documents as their text arrives."""

    def __init__(self) -> None:
        self._buffer = ""
        self._decoder = json.JSONDecoder()

    def feed(self, text: str) -> list[dict[str, Any]]:
        """Add text (any chunk of the stream); return the documents completed by it (in
        order). A document is only parsed once a line that starts with ``}`` arrived (fio's
        documents end so), not at every chunk of its ~80 KB."""
        tail = self._buffer[-1:]
        self._buffer += text
        found: list[dict[str, Any]] = []
        if "\n}" not in tail + text and not self._buffer.startswith("}"):
            return found
        while True:
            start = self._document_start()
            if start < 0:
                self._buffer = ""
                return found
            try:
                document, end = self._decoder.raw_decode(self._buffer, start)
            except json.JSONDecodeError:
                self._buffer = self._buffer[start:]  # incomplete: wait for more text
                return found
            self._buffer = self._buffer[end:]
            if isinstance(document, dict):
                found.append(document)

    def _document_start(self) -> int:
        """Index of the next ``{`` that starts a line (fio's documents do), or -1."""
        if self._buffer.startswith("{"):
            return 0
        index = self._buffer.find("\n{")
        return index + 1 if index >= 0 else -1


def percentile_ns(bins: Mapping[int, int], fraction: float) -> int | None:
    """The smallest latency (ns) with at least ``fraction`` of the IOs at or below it."""
    total = sum(bins.values())
    if total <= 0:
        return None
    wanted = fraction * total
    seen = 0
    for value in sorted(bins):
        seen += bins[value]
        if seen >= wanted:
            return value
    return max(bins)


def _bins_between(after: Mapping[int, int], before: Mapping[int, int]) -> dict[int, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}


def _p99_us(start: FioSnapshot, end: FioSnapshot, direction: str) -> float | None:
    found = []
    for first, last in zip(start.jobs, end.jobs, strict=False):
        before = first.read_bins if direction == "read" else first.write_bins
        after = last.read_bins if direction == "read" else last.write_bins
        value = percentile_ns(_bins_between(after, before), 0.99)
        if value is not None:
            found.append(value / 1000)
    return round(max(found), 1) if found else None


def window_result(
    start: FioSnapshot,
    end: FioSnapshot,
    lines: list[StampedLine],
    exit_code: int | None = None,
    killed: bool = False,
) -> FioResult:
    """What the application saw between two snapshots of one fio.

    ``lines`` are fio's stderr lines stamped inside the window. Counts are the differences
    of the snapshots' counters; EIO is the larger of the EIO lines and what the JSON says (a
    job whose last errno is EIO counts its new errors as EIO, one whose first is, one);
    a verify failure is a verify line (or a job's last errno EILSEQ).
    """
    error_lines = [line for line in lines if IO_U_ERROR_RE.search(line.text)]
    eio_lines = [line for line in error_lines if EIO_RE.search(line.text)]
    verify_lines = [line for line in lines if VERIFY_RE.search(line.text)]
    new_errors = eio_from_json = 0
    eilseq = False
    for first, last in zip(start.jobs, end.jobs, strict=False):
        added = max(0, last.total_err - first.total_err)
        new_errors += added
        if added and last.error == EIO:
            eio_from_json += added if last.first_error == EIO else 1
        eilseq = eilseq or (added > 0 and last.error == EILSEQ)
    read_ios = sum(b.read_ios - a.read_ios for a, b in zip(start.jobs, end.jobs, strict=False))
    write_ios = sum(b.write_ios - a.write_ios for a, b in zip(start.jobs, end.jobs, strict=False))
    seconds = max(0.0, (end.timestamp_ms - start.timestamp_ms) / 1000)
    if seconds <= 0:
        seconds = max(0.0, end.at - start.at)
    verify_failures = len(verify_lines) or (1 if eilseq else 0)
    stamped = [line.at for line in (*error_lines, *verify_lines)]
    return FioResult(
        exit_code=exit_code,
        killed=killed,
        total_errors=max(new_errors, len(error_lines)),
        eio=max(len(eio_lines), eio_from_json),
        verify_failures=verify_failures,
        read_ios=max(0, read_ios),
        write_ios=max(0, write_ios),
        iops=(read_ios + write_ios) / seconds if seconds > 0 else 0.0,
        runtime_s=round(seconds, 3),
        first_error_at=min(stamped) if stamped else None,
        error_lines=[line.text for line in (*error_lines, *verify_lines)][:8],
        json_ok=bool(end.jobs),
        read_p99_clat_us=_p99_us(start, end, "read"),
        write_p99_clat_us=_p99_us(start, end, "write"),
    )


class FioStream:
    """A fio that runs until ``stop``, asked for its status with ``snapshot``.

    stderr goes to ``workdir/fio.stderr`` (each line prefixed with seconds since the start),
    the last status document to ``workdir/fio.json`` at stop. Raises ToolError when fio is
    not installed.
    """

    def __init__(self, job: FioJob, workdir: Path) -> None:
        require_tool("fio")
        workdir.mkdir(parents=True, exist_ok=True)
        self.job = job
        self.workdir = workdir
        self.stderr_path = workdir / "fio.stderr"
        self.lines: list[StampedLine] = []
        self.error_lines: list[StampedLine] = []  # the io_u error lines, in fio's order
        self.snapshots: list[FioSnapshot] = []
        self.last_document: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._stderr_file: IO[str] = self.stderr_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            job.argv(None, output_format="json+"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd=workdir,  # fio writes its verify state files into the working directory
        )
        self.started_at = time.monotonic()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        documents = JsonDocuments()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, READ_CHUNK_BYTES)  # a document is ~80 KB: few reads, not lines
            if not chunk:
                break
            for document in documents.feed(decoder.decode(chunk)):
                snapshot = snapshot_of(document, time.monotonic())
                with self._cond:
                    self.last_document = document
                    self.snapshots.append(snapshot)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for text in self.proc.stderr:
            line = StampedLine(time.monotonic(), text.rstrip("\n"))
            with self._cond:
                self.lines.append(line)
                if IO_U_ERROR_RE.search(line.text):
                    self.error_lines.append(line)
                    self._cond.notify_all()
            self._stderr_file.write(f"{line.at - self.started_at:10.3f} {line.text}\n")
            self._stderr_file.flush()

    def running(self) -> bool:
        return self.proc.poll() is None

    def snapshot(self, timeout_s: float = SNAPSHOT_TIMEOUT_S) -> FioSnapshot:
        """fio's status now (SIGUSR1, then wait for its document).

        Raises FioStreamError when fio has exited (its last document is in
        ``self.snapshots[-1]``, if it printed one) or printed nothing within ``timeout_s``.
        """
        with self._cond:
            count = len(self.snapshots)
        if self.proc.poll() is not None:
            raise self._exited()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while len(self.snapshots) == count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise FioStreamError(
                        f"fio printed no status within {timeout_s:g} s of SIGUSR1",
                        hint=f"see {self.stderr_path}",
                    )
                if self.proc.poll() is not None and not self._readers[0].is_alive():
                    break
                self._cond.wait(min(left, 0.05))
            if len(self.snapshots) > count:
                return self.snapshots[-1]
        raise self._exited()

    def _exited(self) -> FioStreamError:
        return FioStreamError(
            f"fio exited with status {self.proc.returncode} in the middle of the campaign",
            hint=f"see {self.stderr_path}",
        )

    def lines_between(self, start: float, end: float) -> list[StampedLine]:
        """stderr lines read at time.monotonic() instants in [start, end)."""
        with self._cond:
            return [line for line in self.lines if start <= line.at < end]

    def window_lines(
        self, start: FioSnapshot, end: FioSnapshot | None, timeout_s: float = LINES_TIMEOUT_S
    ) -> list[StampedLine]:
        """The stderr lines of the window between two snapshots of this fio (``end`` None:
        to the end of its output).

        The io_u error lines are taken by count, not by the time they were read: fio
        counted ``end.errors`` errors by ``end`` and printed a line for each, but the lines
        reach this process through another pipe, seconds later when a burst of hundreds
        meets a loaded guest; by time, such a burst's tail fell into the next window and was
        counted twice (the next window's JSON and lines). Waits at most ``timeout_s``
        seconds for the lines to catch up, then takes those there are. Other lines (verify
        messages) by the time they were read."""
        last = None if end is None else end.errors
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while last is not None and len(self.error_lines) < last:
                left = deadline - time.monotonic()
                if left <= 0 or not self._readers[1].is_alive():
                    break
                self._cond.wait(min(left, 0.05))
            errors = self.error_lines[start.errors : last]
            end_at = float("inf") if end is None else end.at
            others = [
                line
                for line in self.lines
                if start.at <= line.at < end_at and not IO_U_ERROR_RE.search(line.text)
            ]
        return sorted([*others, *errors], key=lambda line: line.at)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> tuple[int | None, bool]:
        """SIGINT fio (it prints its final document), SIGKILL it if it does not stop in time.
        Returns (exit status, killed). The final document is ``self.snapshots[-1]``."""
        killed = interrupt_then_kill(self.proc, timeout_s)
        for reader in self._readers:
            reader.join(timeout=5)
        self._stderr_file.close()
        if self.last_document:
            (self.workdir / "fio.json").write_text(json.dumps(self.last_document, indent=1))
        return self.proc.returncode, killed

"""The child process that reads and classifies the kernel log for a campaign.

Why a process: /dev/kmsg hands out one record per read(2), and a fault can make the kernel
print thousands (nvmet logs one "failed cmd" line per IO it fails in the identity flip's
disable window). Read from a thread of the campaign, every record was a GIL handoff with the
passthrough reader threads: about 10 ms per line under TCG, seconds per iteration. This
process has its own interpreter: it reads and classifies each record as it arrives, in
parallel with the campaign, and hands over one iteration's summary when asked.

Run as ``python -m harness.campaign.kmsg_child``. It opens /dev/kmsg at its end, prints one
ready line, then answers one JSON request per line on stdin with one JSON line on stdout:

    {"cmd": "take", "path": DIR/kmsg.txt}  the records since the last request: their lines
                                           written to ``path``, their summary answered
        -> {"summary": {...KernelLogSummary...}, "records": N, "cpu_s": S, "caught_up": B}
        (S: this process's CPU seconds since the last request: reading, classifying and
        writing this window)
    {"cmd": "skip"}                        forget the records since the last request
        -> {"records": N, "caught_up": B}

Before answering, it reads every record the kernel has (so a window ends when asked), for at
most TAKE_BUDGET_S: in a flood it answers anyway, ``caught_up`` false, and the records not
yet read count in the next window.
``lost`` in a summary counts records the ring buffer overwrote before they were read, from
the gaps in their sequence numbers (exact). The process exits when its stdin closes.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import selectors
import sys
import time
from pathlib import Path
from typing import IO, Any

from harness.campaign.kmsg import (
    CHILD_READY,
    KMSG,
    KernelLogSummary,
    format_line,
    format_record,
    match_flood_record,
    parse_record,
)

READY = CHILD_READY
# A flood (nvmet's "failed cmd" lines under a busy host) can come faster than one process
# reads it: the serve loop reads for at most DRAIN_SLICE_S between looks at the requests,
# and a take catches up for at most TAKE_BUDGET_S before it answers (well inside the
# campaign's CHILD_TIMEOUT_S); the clock is read every DEADLINE_EVERY records.
DRAIN_SLICE_S = 0.05
TAKE_BUDGET_S = 5.0
DEADLINE_EVERY = 64


class Window:
    """The records of one window: their summary and their lines."""

    def __init__(self) -> None:
        self.summary = KernelLogSummary()
        self.lines: list[str] = []
        self.records = 0


class KmsgChild:
    """Reads kernel log records from ``fd`` (non-blocking, one record per read: /dev/kmsg
    opened at its end by :func:`open_kmsg`) into windows."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.window = Window()
        self.last_seq: int | None = None
        self.cpu_at_last_request = time.process_time()

    def _read(self) -> bytes:
        """One record (one read(2) of /dev/kmsg); BlockingIOError when there is none."""
        return os.read(self.fd, 8192)

    def drain(self, budget_s: float | None = None) -> bool:
        """Read and classify the records the kernel has now, for at most ``budget_s``
        seconds (None: until none is left). Returns whether it caught up: a flood faster
        than the reading must not starve the requests (the rest is read on the next call,
        into the window then open; nothing is lost)."""
        window = self.window
        deadline = None if budget_s is None else time.monotonic() + budget_s
        count = 0
        while True:
            count += 1
            if (
                deadline is not None
                and count % DEADLINE_EVERY == 0
                and time.monotonic() >= deadline
            ):
                return False
            try:
                chunk = self._read()
            except BlockingIOError:
                return True
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten: the next seq shows how many
                    continue
                raise
            if not chunk:
                return True
            flood = match_flood_record(chunk)  # most records of a flood: counted, not parsed
            if flood is not None:
                seq, ts_us, text, fine = flood
                self._follow(seq)
                window.summary.classes[fine] = window.summary.classes.get(fine, 0) + 1
                window.lines.append(format_line(ts_us, text))
                window.records += 1
                continue
            record = parse_record(chunk.decode("utf-8", errors="replace"))
            if record is None:
                continue
            self._follow(record.seq)
            window.summary.add(record)
            window.lines.append(format_record(record))
            window.records += 1

    def _follow(self, seq: int) -> None:
        """Count the records between the last one read and ``seq`` as lost (overwritten)."""
        if self.last_seq is not None and seq > self.last_seq + 1:
            self.window.summary.lost += seq - self.last_seq - 1
        self.last_seq = seq

    def take(self, path: str | None) -> dict[str, Any]:
        """End the window: write its lines to ``path`` (None: drop them); its reply. Catches
        up for at most TAKE_BUDGET_S first (``caught_up`` in the reply says whether)."""
        caught_up = self.drain(TAKE_BUDGET_S)
        window, self.window = self.window, Window()
        if path is not None:
            Path(path).write_text("\n".join(window.lines) + "\n")
        cpu_s = time.process_time() - self.cpu_at_last_request
        self.cpu_at_last_request += cpu_s
        if path is None:
            return {"records": window.records, "caught_up": caught_up}
        return {
            "summary": dataclasses.asdict(window.summary),
            "records": window.records,
            "cpu_s": round(cpu_s, 4),
            "caught_up": caught_up,
        }

    def serve(self, requests: IO[str], replies: IO[str]) -> None:
        """Read records as they come, answer requests, until ``requests`` closes."""
        selector = selectors.DefaultSelector()
        selector.register(self.fd, selectors.EVENT_READ, "kmsg")
        selector.register(requests, selectors.EVENT_READ, "request")
        replies.write(READY + "\n")
        replies.flush()
        while True:
            for key, _events in selector.select():
                if key.data == "kmsg":
                    self.drain(DRAIN_SLICE_S)  # then look at the requests again
                    continue
                line = requests.readline()
                if not line:
                    return
                request = json.loads(line)
                path = request.get("path") if request.get("cmd") == "take" else None
                replies.write(json.dumps(self.take(path)) + "\n")
                replies.flush()


def open_kmsg(path: str = KMSG) -> int:
    """/dev/kmsg opened non-blocking at its end (only records from now on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def main() -> int:
    KmsgChild(open_kmsg()).serve(sys.stdin, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

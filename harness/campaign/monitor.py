"""Hang detection: a thread samples the paths' completed IOs for the whole campaign; no
progress for ``hang_timeout_s`` is a hang, and the tasks stuck in the kernel then are kept.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MONITOR_PERIOD_S = 0.5  # hang detection's resolution; each sample reads every path's stat


@dataclass
class ProgressMonitor:
    """Samples IO completions on a disk; notices when IO stops making progress."""

    read_stat: Callable[[], tuple[int, int]]
    hang_timeout_s: float
    period_s: float = MONITOR_PERIOD_S
    max_stall_s: float = 0.0
    hang: bool = False
    stuck: list[str] = field(default_factory=list)  # D-state tasks when the hang was seen
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_count, _ = self.read_stat()
        last_change = time.monotonic()
        while not self._stop.wait(self.period_s):
            count, _inflight = self.read_stat()
            now = time.monotonic()
            self.samples.append((now, count))
            if count != last_count:
                last_count, last_change = count, now
            stall = now - last_change
            self.max_stall_s = max(self.max_stall_s, stall)
            if stall >= self.hang_timeout_s and not self.hang:
                self.stuck = stuck_tasks()  # while they are stuck, before any restore
                self.hang = True

    def begin_window(self) -> None:
        """Start a new iteration's window: ``max_stall_s`` counts from here (a hang stays)."""
        self.max_stall_s = 0.0

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def rate(self, start: float, end: float) -> float:
        """Completed IOs per second between two time.monotonic() instants."""
        window = [(t, n) for t, n in list(self.samples) if start <= t <= end]
        if len(window) < 2 or window[-1][0] <= window[0][0]:
            return 0.0
        return max(0, window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])

    def completed(self) -> int:
        return self.samples[-1][1] if self.samples else 0


def stuck_tasks(limit: int = 16) -> list[str]:
    """Tasks in uninterruptible sleep (D) with their kernel stacks, for a hang verdict."""
    found: list[str] = []
    for pid in sorted(os.listdir("/proc"), key=lambda p: (len(p), p)):
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            if state != "D":
                continue
            comm = stat.split("(", 1)[1].rsplit(")", 1)[0]
            stack = Path(f"/proc/{pid}/stack").read_text().strip().replace("\n", " <- ")
        except (OSError, IndexError):
            continue
        found.append(f"{pid} {comm}: {stack}")
        if len(found) >= limit:
            break
    return found

"""Progress of a campaign running in the VM, from the lines the guest prints.

On a terminal: a rich progress bar (iteration, fault, EIO so far, IOPS); elsewhere (CI
logs, pipes): the guest's own one-line-per-iteration messages, unchanged.
"""

from __future__ import annotations

import re
import sys
from types import TracebackType
from typing import Any

ITERATION_RE = re.compile(
    r"\[(?P<done>\d+)/(?P<total>\d+)\] (?P<fault>\S+) path (?P<path>\d+): (?P<verdict>\S+) "
    r"\(app EIO (?P<eio>\d+).*?(?P<iops>\d+) IOPS\)"
)


class VmProgress:
    """Feed it console lines; it shows progress (bar on a TTY, plain lines otherwise)."""

    def __init__(self, prefix: str, force_plain: bool = False) -> None:
        self.prefix = prefix
        self.plain = force_plain or not sys.stdout.isatty()
        self.eio = 0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> VmProgress:
        if not self.plain:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
            )
            self._progress.start()
            self._task = self._progress.add_task("booting VM", total=None, status="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()

    def line(self, text: str) -> None:
        if not (text.startswith(self.prefix) or "Traceback" in text):
            return
        match = ITERATION_RE.search(text)
        if self.plain or match is None:
            if self._progress is not None:
                self._progress.console.print(text, markup=False, highlight=False)
            else:
                print(text, flush=True)
            if match is None:
                return
        self.eio += int(match.group("eio"))
        if self._progress is not None:
            self._progress.update(
                self._task,
                description="campaign",
                completed=int(match.group("done")),
                total=int(match.group("total")),
                status=(
                    f"{match.group('fault')} path {match.group('path')}: "
                    f"{match.group('verdict')} | EIO so far {self.eio} | "
                    f"{match.group('iops')} IOPS"
                ),
            )

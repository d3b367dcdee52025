"""Run a fault sequence (a config's ``[[steps]]``) as one iteration's fault window.

Each step applies one fault's ``inject`` or ``restore`` to its paths (in the listed order),
then waits until every one of those paths shows the step's ``wait_for`` (a controller state
from /sys/class/nvme/nvmeX/state, "gone" when the host has no controller on the path, or
"ana:<state>" for the path's per-path disk), then holds. What the sequence injected and did
not restore is restored after its last step, in the faults' ``restore_order`` (ports and
links before controllers), newest first within one order. So "delete the controller while
it is reconnecting" is: port_remove wait_for connecting, then ctrl_delete; the port is
linked again and the path reconnected afterwards.

``SequenceRun.records`` says what each step did and when (seconds from the iteration's
start), for the iteration's record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from harness.bed.testbed import Testbed
from harness.config.campaign import Step
from harness.core.errors import HarnessError
from harness.faults import FaultAction, FaultInjector, fault_class

POLL_S = 0.01  # a controller passes through "connecting" in well under 0.1 s on a quick reconnect


def sequence_name(steps: Sequence[Step]) -> str:
    """The iteration's fault name for a sequence: its faults in first-use order, "+"-joined
    (``port_remove+ctrl_delete``)."""
    return "+".join(dict.fromkeys(str(step.fault) for step in steps))


def step_paths(step: Step, chosen: int, paths: int) -> list[int]:
    """The path indices of ``step`` for an iteration whose chosen path is ``chosen``, of
    ``paths`` paths: "chosen", "others" (every other path), "all", or indices; in the listed
    order, each once."""
    out: list[int] = []
    for item in step.paths:
        if item == "chosen":
            out.append(chosen)
        elif item == "others":
            out += [p for p in range(paths) if p != chosen]
        elif item == "all":
            out += list(range(paths))
        else:
            out.append(int(item))
    return list(dict.fromkeys(out))


@dataclass
class StepRecord:
    """What one step did: ``at_s`` seconds after the iteration's start it began, its action
    took ``action_s``, its wait ``wait_s`` (None without ``wait_for``), and ``state`` is what
    each path showed when the wait ended (path index as a string -> state)."""

    step: int
    fault: str
    action: str
    paths: list[int]
    at_s: float
    action_s: float = 0.0
    wait_for: str = ""
    wait_s: float | None = None
    state: dict[str, str] = field(default_factory=dict)
    error: str = ""


@dataclass
class SequenceRun:
    """One iteration's sequence: its step records, then the automatic restores (``step`` -1),
    and whether a path no step faulted stayed live (``spared_live``)."""

    records: list[StepRecord] = field(default_factory=list)
    spared_live: bool = False
    faulted_paths: list[int] = field(default_factory=list)
    first_inject_at_s: float | None = None
    last_restore_at_s: float | None = None

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(record) for record in self.records]


class SequenceRunner:
    """Runs ``steps`` on one bed through one campaign's FaultInjector."""

    def __init__(self, bed: Testbed, injector: FaultInjector, steps: Sequence[Step]) -> None:
        self.bed = bed
        self.injector = injector
        self.steps = tuple(steps)
        # (fault, path) -> the action that injected it, in injection order
        self.pending: dict[tuple[str, int], FaultAction] = {}
        self.last: SequenceRun | None = None  # the latest run, also when it raised

    def run(self, chosen: int, started: float, should_stop: Callable[[], bool]) -> SequenceRun:
        """Run every step for the chosen path ``chosen`` (``started``: the iteration's
        time.monotonic() start), then restore what is left. Raises HarnessError naming the
        step when an action fails or a wait times out; the restores still run (the error
        of the step wins)."""
        result = SequenceRun()
        self.last = result
        paths = len(self.bed.endpoints)
        result.spared_live = self._spared_live(chosen)
        try:
            for index, step in enumerate(self.steps):
                if should_stop():
                    break
                self._run_step(index, step, step_paths(step, chosen, paths), started, result)
                _sleep_unless(step.hold_s, should_stop)
        finally:
            restore_error = self.restore_pending(started, result)
        if restore_error:
            raise HarnessError(restore_error)
        return result

    def _spared_live(self, chosen: int) -> bool:
        """Whether some path that no inject step touches has a live controller now, and
        every injected fault spares fio's other paths (``Fault.spares_io``)."""
        paths = len(self.bed.endpoints)
        faulted: set[int] = set()
        for step in self.steps:
            if step.action != "inject":
                continue
            if not fault_class(str(step.fault)).spares_io(dict(step.args)):
                return False
            faulted.update(step_paths(step, chosen, paths))
        device = self.bed.device()
        if device is None:
            return False
        for path in set(range(paths)) - faulted:
            ctrl = device.controller_for(self.bed.endpoints[path])
            if ctrl is not None and ctrl.state == "live":
                return True
        return False

    def _run_step(
        self, index: int, step: Step, paths: list[int], started: float, result: SequenceRun
    ) -> None:
        fault = str(step.fault)
        record = StepRecord(index, fault, step.action, paths, round(time.monotonic() - started, 4))
        result.records.append(record)
        began = time.monotonic()
        try:
            for path in paths:
                action = FaultAction(fault, path, step.args)
                if step.action == "inject":
                    if result.first_inject_at_s is None:
                        result.first_inject_at_s = record.at_s
                    self.pending[(fault, path)] = action
                    result.faulted_paths = sorted({*result.faulted_paths, path})
                    self.injector.inject(action)
                else:
                    self.injector.restore(action)
                    self.pending.pop((fault, path), None)
                    result.last_restore_at_s = round(time.monotonic() - started, 4)
            record.action_s = round(time.monotonic() - began, 4)
            if step.wait_for:
                record.wait_for = step.wait_for
                waited = time.monotonic()
                reached, record.state = self.wait_for(paths, step.wait_for, step.wait_timeout_s)
                record.wait_s = round(time.monotonic() - waited, 4)
                if not reached:
                    raise HarnessError(
                        f"steps[{index}] ({fault} {step.action}): paths {paths} did not reach "
                        f"{step.wait_for!r} within {step.wait_timeout_s:g} s (now: "
                        + ", ".join(f"path {p} {s}" for p, s in record.state.items())
                        + ")"
                    )
        except HarnessError as exc:
            record.error = str(exc)
            if str(exc).startswith(f"steps[{index}]"):
                raise
            raise HarnessError(f"steps[{index}] ({fault} {step.action}): {exc}") from exc

    def path_state(self, path: int, what: str) -> str:
        """What ``path`` shows for a ``wait_for`` of kind ``what``: its controller's state
        ("gone" without one), or for "ana:..." its per-path disk's ANA state ("gone" without
        a disk) as "ana:<state>"."""
        device = self.bed.device()
        ctrl = device.controller_for(self.bed.endpoints[path]) if device else None
        if ctrl is None:
            return "gone"
        if not what.startswith("ana:"):
            return ctrl.state
        if not ctrl.path_disks:
            return "gone"
        assert self.bed.host is not None
        return "ana:" + self.bed.host.ana_state(ctrl.path_disks[0])

    def wait_for(
        self, paths: list[int], what: str, timeout_s: float
    ) -> tuple[bool, dict[str, str]]:
        """Poll every POLL_S until each path shows ``what`` (see ``path_state``) or
        ``timeout_s`` seconds pass. Returns (reached, {path: last state seen})."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = {str(path): self.path_state(path, what) for path in paths}
            if all(state == what for state in states.values()):
                return True, states
            if time.monotonic() >= deadline:
                return False, states
            time.sleep(POLL_S)

    def restore_pending(self, started: float, result: SequenceRun) -> str:
        """Restore what the sequence left injected, ports and links first (restore_order),
        the newest first within one order. Returns the first error ("" when none); every
        restore is tried."""
        # within one restore_order, newest first: a stable sort of the reversed list
        newest_first = list(reversed(list(self.pending.items())))
        order = sorted(newest_first, key=lambda item: fault_class(item[0][0]).restore_order)
        first_error = ""
        for (fault, path), action in order:
            record = StepRecord(-1, fault, "restore", [path], round(time.monotonic() - started, 4))
            began = time.monotonic()
            try:
                self.injector.restore(action)
            except HarnessError as exc:
                record.error = str(exc)
                first_error = first_error or f"restoring {fault} on path {path}: {exc}"
            record.action_s = round(time.monotonic() - began, 4)
            result.records.append(record)
            result.last_restore_at_s = round(time.monotonic() - started, 4)
        self.pending.clear()
        return first_error


def _sleep_unless(seconds: float, stop: Callable[[], bool]) -> None:
    """Sleep ``seconds``, in 0.05 s slices, ending early when ``stop()`` (a hang)."""
    deadline = time.monotonic() + seconds
    while not stop():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.05))

"""Path faults: one module per fault in this package, found by a registry (faults/base.py).

Guest code: may import ``harness.bed`` and ``harness.core`` only.

| fault          | inject                                     | restore                           |
|----------------|--------------------------------------------|-----------------------------------|
| ctrl_delete    | host deletes the path's controller         | host connects the path again      |
| ctrl_reset     | host resets the path's controller          | (the reset reconnects by itself)  |
| port_remove    | target unlinks the subsystem from a port   | link it again                     |
| ns_disable     | target disables the namespace (all paths)  | enable it again                   |
| link_down      | the path's host-side veth goes down        | link up again                     |
| path_stall     | netem drops all the host sends on the path | impairment removed                |
| path_netem     | netem delay/jitter/loss on the path        | impairment removed                |
| ana_change     | the port's ANA groups go to args.state     | back to args.restore_state        |
| ana_swap       | several ports change ANA state in one step | every port optimized              |
| backing_stall  | the namespace's dm backing is suspended    | resumed (a hang on purpose)       |
| ns_remove_path | the namespace leaves one path only; its    | it comes back to that path        |
|                | controller stays live (path_removal.py)    |                                   |
| ns_resize      | the backing grows, nvmet revalidate_size   | shrinks back, revalidates         |
| ns_remap       | two namespaces swap uuid/nguid (or backing)| they swap back                    |
| iopolicy_switch| the subsystem's iopolicy changes           | the configured one again          |
| connect_storm  | rapid delete+connect cycles of the path    | the path connected again          |
| rescan         | the controller rescans its namespaces      | nothing                           |

Parameters (``Fault.params``) come from a config step's ``args``; a ``[[steps]]`` sequence
(harness/campaign/steps.py) combines faults on chosen paths with waits on kernel state.

``nvmf-harness faults`` prints this list from the registry, with what each fault needs and
whether this kernel has it. After a restore, ``FaultInjector.recover`` waits for every path
to be live and optimized again and reconnects a path whose controller the host gave up on
(ctrl_loss_tmo expired).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness.bed.host import MultipathDevice
from harness.bed.testbed import Testbed
from harness.core.errors import HarnessError
from harness.faults.base import Fault, fault_class, fault_classes
from harness.faults.ns_remove_path import NsRemovePath, make_path_removal

__all__ = [
    "Fault",
    "FaultAction",
    "FaultInjector",
    "all_paths_ready",
    "fault_class",
    "fault_classes",
    "make_path_removal",
]


@dataclass(frozen=True)
class FaultAction:
    """One fault (its registry name) on one path (index into the bed's endpoints), with the
    fault's parameters (``Fault.params``; ``()`` for the defaults) as sorted (name, value)
    pairs."""

    kind: str
    path: int
    args: tuple[tuple[str, Any], ...] = ()


class FaultInjector:
    """Injects and restores the registry's faults on one test bed (one instance per fault
    kind and campaign, so a fault can keep state between inject and restore)."""

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self._faults: dict[str, Fault] = {}

    def fault(self, kind: str) -> Fault:
        """This campaign's instance of fault ``kind``; HarnessError for an unknown name."""
        if kind not in self._faults:
            try:
                cls = fault_class(str(kind))
            except KeyError as exc:
                raise HarnessError(f"unknown fault {kind}") from exc
            self._faults[kind] = cls(self.bed)
        return self._faults[kind]

    def path_removal(self) -> object:
        """The ``ns_remove_path`` mechanism of this run (made on first use)."""
        fault = self.fault(NsRemovePath.name)
        assert isinstance(fault, NsRemovePath)
        return fault.removal()

    def take_notes(self) -> list[str]:
        """What the faults noted since the last call (e.g. a path that lost the namespace
        too and was repaired)."""
        notes: list[str] = []
        for fault in self._faults.values():
            notes += fault.take_notes()
        return notes

    def prepare(self, action: FaultAction) -> None:
        """Before the warmup, what a fault can do before its path is chosen (the identity
        flip's uuid change: its gap moves the current path, so it must come first)."""
        self.fault(action.kind).prepare(action.path)

    def inject(self, action: FaultAction) -> None:
        self._require_bed()
        self._with_args(action).inject(action.path)

    def restore(self, action: FaultAction) -> None:
        self._require_bed()
        self._with_args(action).restore(action.path)

    def _with_args(self, action: FaultAction) -> Fault:
        fault = self.fault(action.kind)
        fault.args = fault.check_args(dict(action.args), f"{action.kind}.args")
        return fault

    def restore_everything(self) -> list[str]:
        """Undo any fault that may be in place (used after errors and on Ctrl-C): every
        registered fault's own undo, whether or not this campaign used it."""
        if self.bed.target is None or self.bed.network is None:
            return []
        errors: list[str] = []
        classes = sorted(fault_classes().values(), key=lambda cls: (cls.restore_order, cls.name))
        for name in (cls.name for cls in classes):
            try:
                errors += self.fault(name).restore_everything()
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

    def _require_bed(self) -> None:
        bed = self.bed
        if bed.host is None or bed.target is None or bed.network is None:
            raise HarnessError("the test bed is not up")

    def recover(self, timeout_s: float, should_stop: Callable[[], bool]) -> float | None:
        """Wait until every path is live again, reconnecting paths whose controller the host
        deleted (ctrl_loss_tmo expired). Returns the seconds it took, or None on timeout."""
        bed = self.bed
        assert bed.host is not None
        start = time.monotonic()
        deadline = start + timeout_s
        # A controller only gives up after ctrl_loss_tmo; reconnect a missing one at once.
        while time.monotonic() < deadline and not should_stop():
            device = bed.device()
            if device is not None and device.heads and all_paths_ready(bed, device):
                return time.monotonic() - start
            for endpoint in bed.endpoints:
                if device is None or device.controller_for(endpoint) is None:
                    try:
                        bed.connect(endpoint)
                    except HarnessError:
                        time.sleep(0.5)  # target not reachable yet; try again
            time.sleep(0.02)
        return None


def all_paths_ready(bed: Testbed, device: MultipathDevice) -> bool:
    """Every endpoint has a live controller with a per-path disk for each of the run's
    namespaces (target.namespaces), every one ANA optimized."""
    assert bed.host is not None
    namespaces = bed.config.target.namespaces
    for endpoint in bed.endpoints:
        ctrl = device.controller_for(endpoint)
        if ctrl is None or ctrl.state != "live" or len(ctrl.path_disks) < namespaces:
            return False
        for disk in ctrl.path_disks:
            if bed.host.ana_state(disk) not in ("optimized", ""):
                return False
    return True

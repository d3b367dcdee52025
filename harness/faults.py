"""Path faults: each one an inject and a restore, aimed at one path of the test bed.

| fault        | inject                                   | restore                          |
|--------------|------------------------------------------|----------------------------------|
| ctrl_delete  | host deletes the path's controller       | host connects the path again     |
| ctrl_reset   | host resets the path's controller        | (the reset reconnects by itself) |
| port_remove  | target unlinks the subsystem from a port | link it again                    |
| ns_disable   | target disables the namespace (all paths)| enable it again                  |
| link_down    | the path's host-side veth goes down      | link up again                    |
| ana_change   | the port's ANA group goes inaccessible   | back to optimized                |
| backing_stall| the namespace's dm backing is suspended  | resumed (a hang on purpose)      |
| ns_remove_path| the namespace leaves one path only; its | it comes back to that path       |
|              | controller stays live (path_removal.py)  |                                  |

After a restore, ``recover`` waits for every path to be live and optimized again and
reconnects a path whose controller the host gave up on (ctrl_loss_tmo expired).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from harness import backing as backing_mod
from harness import path_removal
from harness.config import FaultKind
from harness.errors import HarnessError
from harness.host import MultipathDevice
from harness.testbed import NSID, Testbed


@dataclass(frozen=True)
class FaultAction:
    kind: FaultKind
    path: int


class FaultInjector:
    """Injects and restores faults on a test bed."""

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self._path_removal: path_removal.PathRemoval | None = None

    def path_removal(self) -> path_removal.PathRemoval:
        """The ``ns_remove_path`` mechanism of this run (made on first use)."""
        if self._path_removal is None:
            self._path_removal = make_path_removal(self.bed)
        return self._path_removal

    def take_notes(self) -> list[str]:
        """What the faults noted since the last call (e.g. a path that lost the namespace
        too and was repaired)."""
        if self._path_removal is None:
            return []
        notes = list(self._path_removal.notes)
        self._path_removal.notes.clear()
        return notes

    def _ctrl_name(self, path: int) -> str | None:
        device = self.bed.device()
        if device is None:
            return None
        ctrl = device.controller_for(self.bed.endpoints[path])
        return ctrl.name if ctrl else None

    def prepare(self, action: FaultAction) -> None:
        """Before the warmup, what a fault can do before its path is chosen (the identity
        flip's uuid change: its gap moves the current path, so it must come first)."""
        if action.kind is FaultKind.NS_REMOVE_PATH:
            self.path_removal().prepare()

    def inject(self, action: FaultAction) -> None:
        bed, path = self.bed, action.path
        assert bed.host is not None and bed.target is not None and bed.network is not None
        kind = action.kind
        if kind is FaultKind.CTRL_DELETE:
            name = self._require_ctrl(path)
            bed.host.delete_controller(name)
        elif kind is FaultKind.CTRL_RESET:
            bed.host.reset_controller(self._require_ctrl(path))
        elif kind is FaultKind.PORT_REMOVE:
            bed.target.unlink_port(bed.portid(path), bed.nqn)
        elif kind is FaultKind.NS_DISABLE:
            bed.target.set_namespace_enabled(bed.nqn, NSID, False)
        elif kind is FaultKind.LINK_DOWN:
            bed.network.set_link(path, up=False)
        elif kind is FaultKind.ANA_CHANGE:
            bed.target.set_ana_state(bed.portid(path), "inaccessible")
        elif kind is FaultKind.BACKING_STALL:
            assert bed.backing is not None
            backing_mod.suspend(bed.backing)
        elif kind is FaultKind.NS_REMOVE_PATH:
            self.path_removal().remove(self._require_ctrl(path), bed.portid(path))
        else:  # pragma: no cover - FaultKind is closed
            raise HarnessError(f"unknown fault {kind}")

    def restore(self, action: FaultAction) -> None:
        bed, path = self.bed, action.path
        assert bed.host is not None and bed.target is not None and bed.network is not None
        kind = action.kind
        if kind is FaultKind.CTRL_DELETE:
            self._wait_ctrl_gone(path, timeout_s=30)
            bed.connect(bed.endpoints[path])
        elif kind is FaultKind.CTRL_RESET:
            pass
        elif kind is FaultKind.PORT_REMOVE:
            bed.target.link_port(bed.portid(path), bed.nqn)
        elif kind is FaultKind.NS_DISABLE:
            bed.target.set_namespace_enabled(bed.nqn, NSID, True)
        elif kind is FaultKind.LINK_DOWN:
            bed.network.set_link(path, up=True)
        elif kind is FaultKind.ANA_CHANGE:
            bed.target.set_ana_state(bed.portid(path), "optimized")
        elif kind is FaultKind.BACKING_STALL and bed.backing is not None:
            backing_mod.resume(bed.backing)
        elif kind is FaultKind.NS_REMOVE_PATH:
            self.path_removal().restore(self._require_ctrl(path), bed.portid(path))

    def restore_everything(self) -> list[str]:
        """Undo any fault that may be in place (used after errors and on Ctrl-C)."""
        bed = self.bed
        errors: list[str] = []
        target, network = bed.target, bed.network
        if target is None or network is None:
            return errors
        for path in range(len(bed.endpoints)):
            _attempt(errors, target.link_port, bed.portid(path), bed.nqn)
            _attempt(errors, target.set_ana_state, bed.portid(path), "optimized")
            if network.netns is not None:
                _attempt(errors, network.set_link, path, True)
        _attempt(errors, target.set_namespace_enabled, bed.nqn, NSID, True)
        if bed.backing is not None:
            _attempt(errors, backing_mod.resume, bed.backing)
        if self._path_removal is not None:
            errors += self._path_removal.restore_all()
        return errors

    def _require_ctrl(self, path: int) -> str:
        name = self._ctrl_name(path)
        if name is None:
            raise HarnessError(f"path {path} has no controller to fault")
        return name

    def _wait_ctrl_gone(self, path: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._ctrl_name(path) is not None and time.monotonic() < deadline:
            time.sleep(0.05)

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
            time.sleep(0.05)
        return None


def make_path_removal(bed: Testbed) -> path_removal.PathRemoval:
    """The ``ns_remove_path`` mechanism the run's config asks for."""
    assert bed.host is not None and bed.target is not None and bed.spec is not None
    settings = bed.config.ns_remove_path
    paths = path_removal.PathSet(bed.host, bed.nqn)
    if settings.mechanism in path_removal.VISIBILITY_OF_MECHANISM:
        return path_removal.PortVisibility(
            paths,
            bed.kfs,
            path_removal.VISIBILITY_OF_MECHANISM[settings.mechanism],
            timeout_s=settings.removal_timeout_s,
        )
    namespace = bed.spec.subsystems[0].namespaces[0]
    return path_removal.IdentityFlip(
        paths,
        bed.target,
        namespace.nsid,
        namespace.device_uuid,
        timeout_s=settings.removal_timeout_s,
    )


def all_paths_ready(bed: Testbed, device: MultipathDevice) -> bool:
    """Every endpoint has a live controller whose per-path disk is ANA optimized."""
    assert bed.host is not None
    for endpoint in bed.endpoints:
        ctrl = device.controller_for(endpoint)
        if ctrl is None or ctrl.state != "live" or not ctrl.path_disks:
            return False
        for disk in ctrl.path_disks:
            if bed.host.ana_state(disk) not in ("optimized", ""):
                return False
    return True


def _attempt(errors: list[str], func: Callable[..., object], *args: object) -> None:
    try:
        func(*args)
    except HarnessError as exc:
        errors.append(str(exc))

"""One path's namespace goes away while its controller stays live, then comes back.

This is the ``ns_remove_path`` fault. The host's scan of ONE controller removes that path's
per-path disk (core.c:nvme_ns_remove) while the controller stays LIVE, and the other paths
keep the namespace. With iopolicy numa, multipath.c:nvme_find_path() keeps returning the
cached current_path while its controller is LIVE and ANA optimized: it never looks at
NVME_NS_READY. So when the removed path is the current one, every bio submitted during
nvme_ns_remove()'s SRCU grace periods goes to a disk whose capacity is already 0, and on a
kernel without the fix each fails bio_check_eod() (block/blk-core.c) with EIO. Removing a
path that is not the current one is the negative control. docs/ns-remove-path.md has the
code reading and the measurements behind this.

Two mechanisms (``[ns_remove_path] mechanism``):

- ``identity_flip`` (stock nvmet): mask Namespace Attribute Notices on every controller of
  the subsystem (so no controller rescans by itself), give the namespace a new uuid on the
  target, rescan only the chosen controller ("identifiers changed": core.c:nvme_validate_ns
  removes the namespace); to restore, put the uuid back and rescan it again (the path rejoins
  the head). If another controller rescans while the uuid differs (a reconnect resets the
  mask), it drops the namespace too: that is noted and repaired at restore.
- ``visibility``: our test patch to nvmet (patches/nvmet-ns-visibility/) hides the namespace
  from one port and sends the Namespace Attribute Changed AEN to that port's controllers only
  (see harness/ns_visibility.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from harness.bed import ns_visibility
from harness.bed.host import NvmeHost
from harness.bed.target import DEFAULT_ANA_GROUP, NvmetTarget
from harness.core.errors import HarnessError
from harness.core.kernelfs import KernelFs

# Asynchronous Event Configuration with only ANA Change Notices (bit 11) enabled: the
# Namespace Attribute Notices (bit 8) that would make every controller rescan are masked.
AEN_ANA_CHANGE_ONLY = 1 << 11
POLL_S = 0.01


class PathRemoval(Protocol):
    """Removes one path's namespace (controller stays live) and restores it."""

    notes: list[str]

    def prepare(self) -> None:
        """Whatever can be done before the path is chosen (called at the start of the
        warmup, so the current path is measured after it)."""

    def remove(self, ctrl: str, portid: int) -> None:
        """Make the namespace vanish from controller ``ctrl`` (connected to nvmet port
        ``portid``) only; returns when its per-path disk is gone. Raises HarnessError when it
        does not go in time."""

    def restore(self, ctrl: str, portid: int) -> None:
        """Bring the namespace back to ``ctrl`` (and to any path that lost it too); returns
        when every live controller has its per-path disk again."""

    def restore_all(self) -> list[str]:
        """Undo whatever is in place (after an error or Ctrl-C); returns errors."""


@dataclass
class PathSet:
    """The controllers of one subsystem, as the removal mechanisms need to see them."""

    host: NvmeHost
    nqn: str

    def live_controllers(self) -> list[str]:
        return [c.name for c in self.host.controllers(self.nqn) if c.state == "live"]

    def without_disk(self) -> list[str]:
        """Live controllers that have no per-path disk of the namespace."""
        return [c for c in self.live_controllers() if not self.host.path_disks(c)]

    def wait(self, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Poll ``condition`` every 10 ms until true; HarnessError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise HarnessError(f"{what} within {timeout_s:g} s", hint="see kmsg.txt")
            time.sleep(POLL_S)

    def wait_disk_gone(self, ctrl: str, timeout_s: float) -> None:
        self.wait(
            lambda: not self.host.path_disks(ctrl),
            timeout_s,
            f"the per-path disk of {ctrl} did not go away",
        )

    def lost_elsewhere(self, removed: str, others: list[str]) -> list[str]:
        """Which of ``others`` (controllers other than ``removed``) lost the namespace too."""
        return [c for c in others if c != removed and not self.host.path_disks(c)]

    def wait_disks_back(self, timeout_s: float) -> None:
        """Until every live controller has its per-path disk. Polls only the controllers
        live at the start (one directory listing each); the full scan of every controller
        runs once that holds (and again if it finds one without): each poll competes for the
        guest's CPUs with the kernel's scan it waits for."""
        live = self.live_controllers()

        def back() -> bool:
            for ctrl in live:
                if not self.host.path_disks(ctrl) and self.host.ctrl_state(ctrl) == "live":
                    return False  # what without_disk() would say, for two reads
            return not self.without_disk()

        self.wait(back, timeout_s, "a live controller did not get its per-path disk back")


@dataclass
class IdentityFlip:
    """The ``identity_flip`` mechanism on stock nvmet (see the module docstring)."""

    paths: PathSet
    target: NvmetTarget
    nsid: int
    original_uuid: str
    timeout_s: float = 10.0
    notes: list[str] = field(default_factory=list)
    _masked: dict[str, str] = field(default_factory=dict)  # controller -> cntlid masked
    _flipped: bool = False

    def mask_notices(self) -> None:
        """Mask Namespace Attribute Notices on every live controller not masked yet. A
        controller that reconnected has a new cntlid (and the default mask): masked again."""
        host = self.paths.host
        for ctrl in self.paths.live_controllers():
            cntlid = host.cntlid(ctrl)
            if self._masked.get(ctrl) != cntlid:
                host.set_async_event_config(ctrl, AEN_ANA_CHANGE_ONLY)
                self._masked[ctrl] = cntlid

    def prepare(self) -> None:
        """Mask the notices and change the uuid. The change's gap (namespace disabled for a
        moment) fails IO over, which clears the cached current path
        (multipath.c:nvme_failover_req): the path chosen after it is the current one."""
        self.mask_notices()
        if not self._flipped:
            self.target.set_namespace_uuid(self.paths.nqn, self.nsid, str(uuid.uuid4()))
            self._flipped = True

    def remove(self, ctrl: str, portid: int) -> None:
        if not self.paths.host.path_disks(ctrl):
            raise HarnessError(f"{ctrl} has no per-path disk to remove")
        self.prepare()
        others = [c for c in self.paths.live_controllers() if c != ctrl]
        self.paths.host.rescan_controller(ctrl)
        self.paths.wait_disk_gone(ctrl, self.timeout_s)
        lost = self.paths.lost_elsewhere(ctrl, others)
        if lost:
            self.notes.append(f"the namespace also left {', '.join(lost)} (repaired at restore)")

    def restore(self, ctrl: str, portid: int) -> None:
        self._restore_uuid()
        for name in self.paths.without_disk():
            self.paths.host.rescan_controller(name)
        self.paths.wait_disks_back(self.timeout_s)

    def _restore_uuid(self) -> None:
        if self._flipped or (
            self.target.namespace_uuid(self.paths.nqn, self.nsid) != self.original_uuid
        ):
            self.target.set_namespace_uuid(self.paths.nqn, self.nsid, self.original_uuid)
        self._flipped = False

    def restore_all(self) -> list[str]:
        errors: list[str] = []
        try:
            self._restore_uuid()
            for name in self.paths.without_disk():
                self.paths.host.rescan_controller(name)
        except HarnessError as exc:
            errors.append(str(exc))
        return errors


# What each visibility mechanism sets the port's ANA group to (harness/ns_visibility.py).
VISIBILITY_OF_MECHANISM = {
    "hidden": ns_visibility.HIDDEN,
    "hidden_path_error": ns_visibility.HIDDEN_PATH_ERROR,
    "hidden_invalid_ns": ns_visibility.HIDDEN_INVALID_NS,
}


@dataclass
class PortVisibility:
    """The ``hidden*`` mechanisms: our nvmet test patch hides the namespace's ANA group from
    one port and tells only that port's controllers (Namespace Attribute Changed AEN), whose
    scan then removes the per-path disk; ``visible`` again brings it back the same way.
    ``visibility`` is what the port answers to IO meanwhile (see harness/ns_visibility.py).
    Needs the patched nvmet loaded (harness/nvmet_variant.py)."""

    paths: PathSet
    kfs: KernelFs
    visibility: str
    grpid: int = DEFAULT_ANA_GROUP
    timeout_s: float = 10.0
    notes: list[str] = field(default_factory=list)
    _hidden: set[int] = field(default_factory=set)  # port ids hidden now

    def prepare(self) -> None:
        """Nothing: hiding a port needs no preparation and has no gap."""

    def remove(self, ctrl: str, portid: int) -> None:
        if not self.paths.host.path_disks(ctrl):
            raise HarnessError(f"{ctrl} has no per-path disk to remove")
        others = [c for c in self.paths.live_controllers() if c != ctrl]
        ns_visibility.set_visibility(self.kfs, portid, self.visibility, self.grpid)
        self._hidden.add(portid)
        self.paths.wait_disk_gone(ctrl, self.timeout_s)
        lost = self.paths.lost_elsewhere(ctrl, others)
        if lost:
            self.notes.append(f"the namespace also left {', '.join(lost)}")

    def restore(self, ctrl: str, portid: int) -> None:
        ns_visibility.set_visibility(self.kfs, portid, ns_visibility.VISIBLE, self.grpid)
        self._hidden.discard(portid)
        for name in self.paths.without_disk():  # one that missed the event: scan it again
            if name != ctrl:
                self.paths.host.rescan_controller(name)
        self.paths.wait_disks_back(self.timeout_s)

    def restore_all(self) -> list[str]:
        errors = ns_visibility.make_all_visible(self.kfs, sorted(self._hidden))
        self._hidden.clear()
        return errors

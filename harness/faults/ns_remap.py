"""``ns_remap``: two namespaces of the subsystem swap their identifiers (uuid and nguid),
their backing (device_path) or both on the target (disable both, write, enable both), as a
storage array remapping volumes; restore swaps back.

What the host does (6.1): the disable and the enable each send a Namespace Attribute Changed
AEN (nvmet core.c:nvmet_ns_changed) and the host rescans (core.c:nvme_scan_work). A scan that
runs while a namespace is disabled removes it from that controller (not in the active list:
nvme_remove_invalid_namespaces); one that finds it enabled with other identifiers logs
"identifiers changed for nsid N" and removes it (nvme_validate_ns, nvme_ns_ids_equal); the
head goes with its last path (nvme_ns_remove). A later scan adds it back under its new
identity, as a new head (nvme_alloc_ns -> nvme_init_ns_head). Controllers scan
independently: a new namespace whose identifiers another head still holds is refused
("duplicate IDs", "IDs don't match for shared namespace") until that head is gone, the race
blktests nvme/058 exercises. ``inject`` waits until every live controller shows both
namespaces with their new uuid; when the host has not got there in half ``timeout_s`` it
rescans the controllers that still lack them, again every RESCAN_EVERY_S (noted in the
record with the count; ``rescan = false``: never) and waits for the rest. Measured on
6.1.192 under TCG (testcases/test_034, 2 paths): after 4 of 6 id swaps one controller kept
lacking both namespaces ("duplicate IDs in subsystem for nsid 1", "IDs don't match for
shared namespace 2") until rescanned: the host retries nothing
(core.c:nvme_validate_ns "TODO: we should probably schedule a delayed retry here").

Swapping ``device_path`` alone keeps the identifiers: the host cannot notice, the data under
the namespace changes (fio verify fails; that is the point of that variant).

``surviving_path`` is False: the remapped namespaces lose every path at once. With the
default pair (1, 2) that includes fio's namespace 1, so its EIO is a real loss; a pair that
leaves namespace 1 out (e.g. 2 and 3) is the neighbour test: ``spares_io`` says so, the
record's ``another_path_live`` stays true and an EIO on namespace 1 is a multipath bug.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from harness.bed.target import NamespaceIdentity
from harness.bed.testbed import NSID
from harness.core.errors import HarnessError
from harness.faults.base import Fault, Param, register

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed
    from harness.config.campaign import CampaignConfig

POLL_S = 0.05
RESCAN_EVERY_S = 2.0  # between rescans of controllers that still lack the new identity
SWAPS = ("ids", "device_path", "both")


def swapped(a: NamespaceIdentity, b: NamespaceIdentity, what: str) -> NamespaceIdentity:
    """What namespace a gets from b: b's uuid and nguid (``ids``), its device_path
    (``device_path``) or all three (``both``); the rest stays a's (empty = unchanged)."""
    ids = what in ("ids", "both")
    data = what in ("device_path", "both")
    return NamespaceIdentity(
        device_uuid=b.device_uuid if ids else "",
        device_nguid=b.device_nguid if ids else "",
        device_path=b.device_path if data else "",
    )


def host_uuids(bed: Testbed, nsids: tuple[int, ...]) -> dict[str, dict[int, str]]:
    """For every live controller of the bed, the uuid the host shows for each of ``nsids``
    on that controller's per-path disks ("" where the controller has no disk for it)."""
    assert bed.host is not None
    device = bed.device()
    found: dict[str, dict[int, str]] = {}
    for ctrl in device.controllers if device else ():
        if ctrl.state != "live":
            continue
        shown = dict.fromkeys(nsids, "")
        for disk in ctrl.path_disks:
            nsid = bed.host.nsid(disk)
            if nsid in shown:
                shown[nsid] = bed.host.disk_uuid(disk).lower()
        found[ctrl.name] = shown
    return found


def missing(bed: Testbed, expected: dict[int, str]) -> list[str]:
    """What the host does not show yet: "nvme2: nsid 1" for a live controller without that
    namespace or with another uuid, "no live controller" when it has none."""
    shown = host_uuids(bed, tuple(expected))
    if len(shown) < len(bed.endpoints):
        return [f"{len(bed.endpoints) - len(shown)} path(s) without a live controller"]
    return [
        f"{ctrl}: nsid {nsid}"
        for ctrl, uuids in sorted(shown.items())
        for nsid, uuid in expected.items()
        if uuids[nsid] != uuid.lower()
    ]


@register
class NsRemap(Fault):
    name = "ns_remap"
    restore_order = 85
    inject_summary = "two namespaces swap uuid/nguid (or device_path) on the target"
    restore_summary = "they swap back"
    surviving_path = False  # the remapped namespaces leave every path at once
    requires = ("target.namespaces >= 2",)
    params = {
        "first": Param(int, NSID, "one namespace of the pair (1 = fio's)", minimum=1, maximum=8),
        "second": Param(int, NSID + 1, "the other namespace", minimum=1, maximum=8),
        "swap": Param(str, "ids", "what they swap", choices=SWAPS),
        "timeout_s": Param(
            float, 20.0, "seconds the host may take to show the new ids", minimum=0.1
        ),
        # 6.1's host does not retry a namespace it failed to add ("duplicate IDs in
        # subsystem", "IDs don't match for shared namespace": core.c:nvme_init_ns_head)
        # until the next AEN; False leaves it so (the wait then fails: the finding).
        "rescan": Param(bool, True, "rescan lagging controllers from half of timeout_s on"),
    }

    @classmethod
    def spares_io(cls, args: Mapping[str, Any]) -> bool:
        """A pair without fio's namespace (NSID 1), e.g. 2 and 3, leaves fio every path:
        an EIO on the head then is a multipath bug."""
        return NSID not in (args.get("first", 1), args.get("second", 2))

    def __init__(self, bed: Testbed) -> None:
        super().__init__(bed)
        # nsid -> identity before the first inject (what restore puts back)
        self._original: dict[int, NamespaceIdentity] = {}

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        count = config.target.namespaces
        if count < 2:
            return f"ns_remap needs target.namespaces >= 2 (it is {count})"
        for index, step in enumerate(config.steps):
            if step.fault != cls.name:
                continue
            args = cls.check_args(dict(step.args), f"steps[{index}].args")
            pair = (args["first"], args["second"])
            if pair[0] == pair[1] or max(pair) > count:
                return (
                    f"steps[{index}].args: ns_remap of namespaces {pair[0]} and {pair[1]} needs "
                    f"two different NSIDs of 1-{count} (target.namespaces)"
                )
        return None

    def _pair(self) -> tuple[int, int]:
        first, second = int(self.args["first"]), int(self.args["second"])
        if first == second:
            raise HarnessError(f"ns_remap: namespaces {first} and {second} are one namespace")
        return first, second

    def inject(self, path: int) -> None:
        assert self.bed.target is not None
        first, second = self._pair()
        target, nqn = self.bed.target, self.bed.nqn
        now = {nsid: target.namespace_identity(nqn, nsid) for nsid in (first, second)}
        for nsid, identity in now.items():
            self._original.setdefault(nsid, identity)
        what = str(self.args["swap"])
        changes = {
            first: swapped(now[first], now[second], what),
            second: swapped(now[second], now[first], what),
        }
        self._apply(changes, now, f"swapped {what} of namespaces {first} and {second}")

    def restore(self, path: int) -> None:
        """Put back every namespace an inject changed (whatever pair this step names: a
        half-restored pair would leave two namespaces with one uuid)."""
        assert self.bed.target is not None
        target, nqn = self.bed.target, self.bed.nqn
        back = dict(self._original)
        if not back:
            return
        now = {nsid: target.namespace_identity(nqn, nsid) for nsid in back}
        if now == back:
            return
        # the target is as it was once written, whether or not the host follows
        self._apply(
            back,
            now,
            f"namespaces {' and '.join(map(str, back))} back as they were",
            written=self._original.clear,
        )

    def _apply(
        self,
        changes: dict[int, NamespaceIdentity],
        before: dict[int, NamespaceIdentity],
        what: str,
        written: Callable[[], None] = lambda: None,
    ) -> None:
        """Write ``changes`` on the target (then call ``written``), and wait for the host to
        show the resulting uuids on every live controller. With ``rescan``, controllers that
        still lack them are rescanned at half of timeout_s and again every RESCAN_EVERY_S
        (a rescan that runs while another controller still holds the old head is refused
        again: "IDs don't match for shared namespace"). HarnessError after timeout_s."""
        assert self.bed.target is not None and self.bed.host is not None
        self.bed.target.set_namespace_identities(self.bed.nqn, changes)
        written()
        expected = {
            nsid: (changes[nsid].device_uuid or before[nsid].device_uuid) for nsid in changes
        }
        timeout_s = float(self.args["timeout_s"])
        start = time.monotonic()
        next_rescan = timeout_s / 2
        rescans = 0
        while left := missing(self.bed, expected):
            elapsed = time.monotonic() - start
            if elapsed > timeout_s:
                raise HarnessError(
                    f"ns_remap: {what}, but after {timeout_s:g} s and {rescans} rescan(s) the "
                    "host still lacks " + ", ".join(left)
                )
            if self.args["rescan"] and elapsed > next_rescan:
                if not rescans:
                    self.notes.append(
                        f"ns_remap: {what}: after {elapsed:.1f} s the host still lacked "
                        f"{', '.join(left)}; rescanning those controllers"
                    )
                rescans += 1
                next_rescan = elapsed + RESCAN_EVERY_S
                self._rescan(sorted({item.split(":")[0] for item in left}))
            time.sleep(POLL_S)
        took = time.monotonic() - start
        fio_ns = NSID in changes
        self.notes.append(
            f"ns_remap: {what}; every live controller showed the new uuids after {took:.2f} s"
            + (f" and {rescans} rescan(s)" if rescans else " without a rescan")
            + (
                f" (fio's namespace {NSID} among them: its EIO is a real loss)"
                if fio_ns
                else f" (fio's namespace {NSID} untouched: an EIO on it is a multipath bug)"
            )
        )

    def _rescan(self, ctrls: list[str]) -> None:
        """Queue a namespace scan on each of ``ctrls`` (controller names; a path without a
        live controller is left to recover)."""
        assert self.bed.host is not None
        for ctrl in ctrls:
            if ctrl.startswith("nvme"):
                # one that went away meanwhile: the wait names what is missing
                with contextlib.suppress(HarnessError):
                    self.bed.host.rescan_controller(ctrl)

    def restore_everything(self) -> list[str]:
        if self.bed.target is None or not self._original:
            return []
        target, nqn = self.bed.target, self.bed.nqn
        back = dict(self._original)
        try:
            now = {nsid: target.namespace_identity(nqn, nsid) for nsid in back}
            if now != back:
                target.set_namespace_identities(nqn, back)
        except HarnessError as exc:
            return [f"ns_remap restore: {exc}"]
        self._original.clear()
        return []

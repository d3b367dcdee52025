"""``iopolicy_switch``: the subsystem's iopolicy changes mid-run, then the configured one
(``host.iopolicy``) comes back.

The iopolicy belongs to the subsystem (``/sys/class/nvme-subsystem/<subsys>/iopolicy``), not
to one path: the fault's path is ignored. The kernel takes the new policy at once and has
nothing to wait for (multipath.c:nvme_subsys_iopolicy_store is one WRITE_ONCE of
``subsys->iopolicy``; the next bio's nvme_find_path reads it). In 6.1 the store does not
clear the heads' cached current paths either, so numa after round-robin keeps the path
round-robin used last. The names 6.1 knows are numa and round-robin
(multipath.c:nvme_iopolicy_names); queue-depth arrived in 6.11, and 6.1 refuses it with
EINVAL: a one-line error at inject. The new policy is read back and checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.core.errors import HarnessError
from harness.faults.base import Fault, Param, register

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed

# What ``policy = "other"`` switches between (both exist in every kernel with multipath).
SWITCHABLE = ("numa", "round-robin")
OTHER = "other"


def other_policy(configured: str) -> str:
    """The one of numa/round-robin that ``configured`` is not (numa for queue-depth)."""
    return "round-robin" if configured == "numa" else "numa"


@register
class IopolicySwitch(Fault):
    name = "iopolicy_switch"
    restore_order = 60  # after links, ports and ANA: it only needs the subsystem
    inject_summary = (
        "the subsystem's iopolicy changes to args.policy (default: the other of numa and "
        "round-robin than host.iopolicy); nothing to wait for in the kernel"
    )
    restore_summary = "the configured iopolicy (host.iopolicy) again, read back"
    requires = ("policy queue-depth: Linux 6.11 or newer (6.1 refuses it)",)
    params = {
        "policy": Param(
            str,
            OTHER,
            "iopolicy to switch to; 'other' = the one of numa/round-robin host.iopolicy is not",
            choices=(OTHER, "numa", "round-robin", "queue-depth"),
        )
    }

    def policy_to_set(self) -> str:
        """``args.policy`` with ``other`` resolved against the config's host.iopolicy."""
        policy = str(self.args["policy"])
        return other_policy(self.bed.config.host.iopolicy) if policy == OTHER else policy

    def __init__(self, bed: Testbed) -> None:
        super().__init__(bed)
        self.switched = False  # an inject changed the policy and no restore followed yet

    def inject(self, path: int) -> None:
        self.switched = True  # set first: a failed write may still have changed it
        self._switch(self.policy_to_set())

    def restore(self, path: int) -> None:
        self._switch(self.bed.config.host.iopolicy)
        self.switched = False

    def restore_everything(self) -> list[str]:
        """The configured iopolicy back after an inject without its restore, where the
        subsystem still exists and shows another policy; nothing otherwise."""
        if not self.switched or self.bed.host is None:
            return []
        device = self.bed.device()
        configured = self.bed.config.host.iopolicy
        if device is not None and self.bed.host.iopolicy(device) not in ("", configured):
            try:
                self._switch(configured)
            except HarnessError as exc:
                return [str(exc)]
        self.switched = False
        return []

    def _switch(self, policy: str) -> None:
        """Write ``policy`` to the subsystem's iopolicy and read it back. HarnessError when
        there is no subsystem, the kernel refuses the name, or the read-back differs."""
        host = self.bed.host
        assert host is not None
        device = self.bed.device()
        if device is None:
            raise HarnessError(f"no subsystem {self.bed.nqn} to switch the iopolicy of")
        before = host.iopolicy(device)
        host.set_iopolicy(device, policy)
        after = host.iopolicy(device)
        if after != policy:
            raise HarnessError(
                f"iopolicy of {device.subsystem} reads {after!r} after writing {policy!r}"
            )
        self.notes.append(f"iopolicy {before} -> {after} ({device.subsystem})")

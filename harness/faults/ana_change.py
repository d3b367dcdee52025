"""``ana_change``: one port's ANA groups go to an ANA state, then back.

The target side is ``ports/<portid>/ana_groups/<grpid>/ana_state`` in nvmet's configfs: it
takes the five state names (configfs.c:nvmet_ana_state, nvmet_ana_group_ana_state_store;
anything else is EINVAL) and sends an ANA change AEN to that port's controllers
(nvmet_port_send_ana_event). From then on IO to a namespace of that group through that port
is answered with an ANA status for inaccessible (0x302), persistent-loss (0x301) and change
(0x303) (core.c:nvmet_check_ana_state); optimized and non-optimized are served.

What the host (6.1) does with each state of a per-path disk (drivers/nvme/host/multipath.c):

- the ANA statuses are path errors without DNR (nvme.h:nvme_is_ana_error): the request is
  failed over to the head's requeue list, the path marked ANA-pending and the ANA log read
  again (nvme_failover_req, nvme_ana_work); so no application error while another path can
  serve;
- the path selectors use a path only when it is optimized, or non-optimized when no path is
  optimized (__nvme_find_path, nvme_round_robin_path); inaccessible, persistent-loss and
  change are all skipped alike: 6.1 treats persistent-loss as one more unusable state and
  keeps the per-path disk (nothing removes it), so restoring it to optimized brings the path
  back although the spec means the loss to be permanent;
- change arms the ANA transition timer, 2 x ANATT = 20 s with nvmet's ANATT of 10 s
  (admin-cmd.c:nvmet_execute_identify_ctrl), after which the host resets the controller
  ("ANATT timeout, resetting controller", nvme_anatt_timeout): hold change shorter than that
  unless the reset is what you want;
- with every path unusable by ANA state the head queues IO rather than failing it while some
  controller is live (nvme_available_path looks at controller states only).

So another port that stays optimized always serves (``surviving_path``): an application EIO
under this fault is a multipath bug for every state, persistent-loss included.

Parameters (``[[steps]]`` args): ``state`` (inject; default inaccessible), ``restore_state``
(default optimized), ``group`` (the ANA group id; 0, the default, means every group of the
port: ``target.ana_groups``). The iteration's recovery waits for every path to be optimized
again, so a ``restore_state`` other than optimized needs a later step that makes it so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.bed.target import ANA_STATES, MAX_ANA_GROUPS, port_ana_groups
from harness.core.errors import HarnessError
from harness.faults.base import Fault, Param, register

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed

GROUP_PARAM = Param(
    int,
    0,
    "ANA group id on the port; 0: every group of the port (target.ana_groups)",
    minimum=0,
    maximum=MAX_ANA_GROUPS,
)


def path_ana_groups(bed: Testbed, path: int, group: int) -> tuple[int, ...]:
    """The ANA group ids of ``path``'s port that a fault with parameter ``group`` acts on:
    all of the port's groups for 0, else ``(group,)``. HarnessError when the port has no
    such group (nvmet: no ana_groups/<grpid> directory to write)."""
    assert bed.target is not None
    # NvmetTarget.spec: what apply() was asked to create; None before and after (group 1).
    groups = port_ana_groups(getattr(bed.target, "spec", None), bed.portid(path))
    if group == 0:
        return groups
    if group not in groups:
        raise HarnessError(
            f"path {path} has no ANA group {group} (its port has groups "
            f"{', '.join(map(str, groups))}: target.ana_groups)"
        )
    return (group,)


def set_path_ana(bed: Testbed, path: int, state: str, groups: tuple[int, ...]) -> None:
    """Write ``state`` to each of ``groups`` of ``path``'s port (HarnessError from the
    write, e.g. nvmet refusing it)."""
    assert bed.target is not None
    for grpid in groups:
        bed.target.set_ana_state(bed.portid(path), state, grpid)


@register
class AnaChange(Fault):
    name = "ana_change"
    restore_order = 20
    inject_summary = "the port's ANA groups go to args.state (inaccessible)"
    restore_summary = "back to args.restore_state (optimized)"
    params = {
        "state": Param(
            str, "inaccessible", "ANA state the path's port goes to", choices=ANA_STATES
        ),
        "restore_state": Param(
            str, "optimized", "ANA state the restore leaves it in", choices=ANA_STATES
        ),
        "group": GROUP_PARAM,
    }

    def inject(self, path: int) -> None:
        groups = path_ana_groups(self.bed, path, self.args["group"])
        set_path_ana(self.bed, path, self.args["state"], groups)

    def restore(self, path: int) -> None:
        groups = path_ana_groups(self.bed, path, self.args["group"])
        set_path_ana(self.bed, path, self.args["restore_state"], groups)

    def restore_everything(self) -> list[str]:
        """Every group of every port optimized (what the bed was set up with)."""
        errors: list[str] = []
        if self.bed.target is None:
            return errors
        for path in range(len(self.bed.endpoints)):
            try:
                set_path_ana(self.bed, path, "optimized", path_ana_groups(self.bed, path, 0))
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

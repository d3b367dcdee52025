"""``ana_swap``: every port's ANA state changes in one step (a failover), then all optimized.

Inject on path ``p`` of ``n``: ``p``'s port goes to ``state`` (default inaccessible) and
every other port to ``others`` (default optimized), so on two ports the optimized path moves
to the other one at once. ``layout`` names the states of several ports relative to ``p``:
item ``i`` is the state of path ``(p + i) % n``, ports past its end get ``others``. blktests
nvme/057's failover over 4 ports (ports 0-1 inaccessible, 2 optimized, 3 non-optimized) is
``layout = "inaccessible,inaccessible,optimized,non-optimized"`` injected on path 0; its
failback is ``"optimized,non-optimized,inaccessible,inaccessible"``. With ``campaign.path``
walking over the paths each iteration rotates the layout to another port.

The writes of one inject go in this order: ports becoming optimized, then non-optimized, then
the unusable states (inaccessible, persistent-loss, change), so the host is never told of a
lost path before it has been told where to go. Each write sends its own ANA change AEN to the
port's controllers (configfs.c:nvmet_ana_group_ana_state_store, nvmet_port_send_ana_event);
the host reads each controller's ANA log on its own (multipath.c:nvme_ana_work), so "one
step" is back-to-back configfs writes, not one atomic change: a request can still meet an
old state and is failed over (see ana_change.py for what the host does with each state).

Restore (or the end of a step sequence): every port of the bed optimized. A layout that
leaves no port optimized or non-optimized makes the head queue IO until the restore
(multipath.c:nvme_available_path counts live controllers, not ANA states), so an
application EIO is a multipath bug with any layout (``surviving_path``).

Parameters (``[[steps]]`` args): ``state``, ``others``, ``layout`` (comma-separated ANA
states; not together with ``state``), ``group`` (0, the default: every ANA group of the
port).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.bed.target import ANA_STATES
from harness.core.errors import ConfigError, HarnessError
from harness.faults.ana_change import GROUP_PARAM, path_ana_groups, set_path_ana
from harness.faults.base import Fault, Param, register

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed

MAX_LAYOUT = 8  # target.paths is at most 8 (config.BOUNDS)
# Write order within one inject: states a path selector uses first (multipath.c:
# __nvme_find_path prefers optimized, falls back to non-optimized, skips the rest).
WRITE_ORDER = {"optimized": 0, "non-optimized": 1}


def parse_layout(text: str, where: str = "layout") -> tuple[str, ...]:
    """``"inaccessible, optimized"`` -> ("inaccessible", "optimized"); "" -> (). ConfigError
    (one line naming ``where``) for an unknown state, an empty item or more than 8 items."""
    if not text.strip():
        return ()
    items = tuple(item.strip() for item in text.split(","))
    for index, item in enumerate(items):
        if item not in ANA_STATES:
            raise ConfigError(
                f"{where}: item {index} is {item!r}, expected one of {', '.join(ANA_STATES)}"
            )
    if len(items) > MAX_LAYOUT:
        raise ConfigError(f"{where}: {len(items)} states, at most {MAX_LAYOUT} (one per path)")
    return items


def swap_states(
    path: int, paths: int, state: str, others: str, layout: tuple[str, ...]
) -> dict[int, str]:
    """The ANA state of every path (index -> state) for an inject on ``path`` of ``paths``:
    ``layout`` item i for path (path + i) % paths, else ``state`` for ``path`` itself and
    ``others`` for the rest. HarnessError when the layout names more paths than there are."""
    if len(layout) > paths:
        raise HarnessError(
            f"ana_swap layout has {len(layout)} states but the bed has {paths} paths"
        )
    states = {p: others for p in range(paths)}
    states[path] = state
    for offset, item in enumerate(layout):
        states[(path + offset) % paths] = item
    return states


@register
class AnaSwap(Fault):
    name = "ana_swap"
    restore_order = 20
    inject_summary = "the path's port goes to args.state (inaccessible), the others to optimized"
    restore_summary = "every port optimized"
    params = {
        "state": Param(str, "inaccessible", "ANA state of the path's port", choices=ANA_STATES),
        "others": Param(
            str, "optimized", "ANA state of every other port (not in layout)", choices=ANA_STATES
        ),
        "layout": Param(
            str,
            "",
            "comma-separated ANA states, item i for path (path + i) % paths; overrides state",
        ),
        "group": GROUP_PARAM,
    }

    def __init__(self, bed: Testbed) -> None:
        super().__init__(bed)
        self._touched: set[int] = set()  # paths an inject wrote to (restore_everything)

    @classmethod
    def check_args(cls, raw: Mapping[str, Any], where: str = "args") -> dict[str, Any]:
        """Fault.check_args, and ``layout`` parsed (ConfigError naming ``where.layout``);
        ``layout`` and ``state`` together are refused (which one would the path get?)."""
        args = super().check_args(raw, where)
        parse_layout(args["layout"], f"{where}.layout")
        if "layout" in raw and "state" in raw and args["layout"].strip():
            raise ConfigError(
                f"{where}: give layout or state, not both (layout's first item is the path's)"
            )
        return args

    def inject(self, path: int) -> None:
        paths = len(self.bed.endpoints)
        layout = parse_layout(self.args["layout"])
        states = swap_states(path, paths, self.args["state"], self.args["others"], layout)
        groups = {p: path_ana_groups(self.bed, p, self.args["group"]) for p in states}
        self._touched.update(states)
        for p, state in sorted(states.items(), key=lambda kv: (WRITE_ORDER.get(kv[1], 2), kv[0])):
            set_path_ana(self.bed, p, state, groups[p])

    def restore(self, path: int) -> None:
        for p in range(len(self.bed.endpoints)):
            set_path_ana(self.bed, p, "optimized", path_ana_groups(self.bed, p, self.args["group"]))
        self._touched.clear()

    def restore_everything(self) -> list[str]:
        """Every group of each port an inject wrote to, optimized again."""
        errors: list[str] = []
        if self.bed.target is None:
            return errors
        for path in sorted(self._touched):
            try:
                set_path_ana(self.bed, path, "optimized", path_ana_groups(self.bed, path, 0))
            except HarnessError as exc:
                errors.append(str(exc))
            else:
                self._touched.discard(path)
        return errors

"""The kernel's own floor: how long each bare path operation takes, idle or under IO.

A fault iteration can never be faster than the kernel operations it is made of. This module
builds the test bed (``Testbed.up``), then times N repetitions of each operation alone with
``time.monotonic`` (inside the VM, as root), and writes ``floor.json``:

| op               | timed action                              | done when                     |
|------------------|-------------------------------------------|-------------------------------|
| connect          | connect one path as the harness does      | every path live (disk too)    |
|                  | (host.connect_with: /dev/nvme-fabrics)    |                               |
| connect_nvme_cli | the same through ``nvme connect``         | every path live (disk too)    |
| ctrl_delete      | write ``delete_controller`` (synchronous) | the controller is gone        |
| ctrl_reset       | write ``reset_controller`` (synchronous)  | every path live and optimized |
| port_unlink      | configfs unlink of the port's subsystem   | that controller leaves live   |
| port_link        | configfs link again                       | every path live and optimized |
| ana_inaccessible | write ``ana_state`` = inaccessible        | the host's path disk says so  |
| ana_optimized    | write ``ana_state`` = optimized           | every path live and optimized |
| ns_remove_path   | the config's ns_remove_path mechanism     | that path's per-path disk is  |
|                  | removes the namespace from the path       | gone (controller still live)  |
| ns_restore_path  | ...and brings it back                     | every live controller has its |
|                  |                                           | per-path disk again           |

Per op two figures: ``action_s`` (the write or command alone) and ``total_s`` (until the
done condition held, which is what a fault iteration waits for). What a repetition needs
before it (a deleted controller before ``connect``) and after it (a reconnect after
``ctrl_delete``) is done untimed, each ending with every path ready again.

**Under IO** (``nvmf-harness floor --under-io``): the same operations while the config's
workload runs on the head the whole time (one fio as in a campaign, and its passthrough
readers), each repetition on the path that carries the IO (iopolicy numa's current path,
from the per-path disks' completed IOs over ``CURRENT_SAMPLE_S``, untimed). Under TCG the
kernel's work competes with fio for the same two vCPUs and a deleted path's IO has to fail
over, so each operation takes longer than idle: this is the least a fault iteration under
that IO can take, the floor the harness's own overhead is judged against. ``floor.json``
then also holds what fio and the readers did meanwhile (an application error there is a
finding, not a timing).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.bed.path_removal import PathRemoval
from harness.bed.testbed import Testbed
from harness.bed.variants import kernel_info
from harness.campaign.fio_stream import FioSnapshot, FioStream, FioStreamError, window_result
from harness.campaign.io_session import (
    fio_job,
    start_passthru,
    stuck_readers_error,
    wait_io_flowing,
)
from harness.campaign.passthru import PassthruReaders
from harness.campaign.plan import resolve_path
from harness.core.errors import HarnessError
from harness.core.results import write_json_atomic
from harness.faults import FaultInjector, all_paths_ready, make_path_removal

FLOOR_FILE = "floor.json"
DONE_TIMEOUT_S = 30.0
POLL_S = 0.01
OP_NAMES = (
    "connect",
    "connect_nvme_cli",
    "ctrl_delete",
    "ctrl_reset",
    "port_unlink",
    "port_link",
    "ana_inaccessible",
    "ana_optimized",
)
# Timed only for a config whose faults include ns_remove_path (ops_for_config): they use its
# mechanism (identity_flip on stock nvmet, or our patched nvmet's visibility).
NS_OP_NAMES = ("ns_remove_path", "ns_restore_path")
KNOWN_OPS = OP_NAMES + NS_OP_NAMES
# The floor of one fault iteration: the bare operations its inject and restore consist of.
FLOOR_OPS_OF_FAULT: dict[str, tuple[str, ...]] = {
    "ctrl_delete": ("ctrl_delete", "connect"),
    "ctrl_reset": ("ctrl_reset",),
    "port_remove": ("port_unlink", "port_link"),
    "ana_change": ("ana_inaccessible", "ana_optimized"),
    "ns_remove_path": ("ns_remove_path", "ns_restore_path"),
}
CURRENT_SAMPLE_S = 0.1  # under IO: how long the per-path IO counts are sampled, seconds


def ops_for_faults(faults: Sequence[str]) -> tuple[str, ...]:
    """The ops to time for a campaign of ``faults``: the path ops, and the namespace ops
    when ``ns_remove_path`` is among them."""
    return OP_NAMES + (NS_OP_NAMES if "ns_remove_path" in faults else ())


def ops_of_fault_kinds(faults: Sequence[str]) -> tuple[str, ...]:
    """Only the ops that make up ``faults``' iterations (FLOOR_OPS_OF_FAULT), in OP order:
    what ``--under-io`` times by default (each costs a failover under IO)."""
    wanted = {op for fault in faults for op in FLOOR_OPS_OF_FAULT.get(fault, ())}
    return tuple(op for op in KNOWN_OPS if op in wanted)


def choose_ops(faults: Sequence[str], ops: Sequence[str], under_io: bool) -> list[str]:
    """The ops ``nvmf-harness floor`` times: ``ops`` when given, else under IO those that
    make up ``faults``' iterations, else ops_for_faults. Raises HarnessError when under IO
    none of ``faults`` has a floor op."""
    if ops:
        return list(ops)
    if not under_io:
        return list(ops_for_faults(faults))
    chosen = list(ops_of_fault_kinds(faults))
    if not chosen:
        raise HarnessError(
            f"floor --under-io: no floor op is part of the config's faults ({', '.join(faults)})",
            hint=f"name them with --ops (known: {', '.join(KNOWN_OPS)})",
        )
    return chosen


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class FloorOp:
    """One kernel operation to time: ``action`` is timed, then ``done`` is polled."""

    name: str
    action: Callable[[], None]
    done: Callable[[], bool]
    prepare: Callable[[], None] = _nothing  # untimed, before each repetition
    cleanup: Callable[[], None] = _nothing  # untimed, after each repetition
    # untimed, before each repetition and before its path is chosen (under IO): what does not
    # depend on the path and may move the IO (the identity flip's uuid change)
    setup: Callable[[], None] = _nothing


@dataclass(frozen=True)
class OpStats:
    """N repetitions of one operation; times in seconds."""

    name: str
    repeat: int
    action_s: list[float]
    total_s: list[float]
    errors: list[str] = field(default_factory=list)
    # under IO: the path chosen for each repetition, failed ones included (repetition k,
    # as the errors number it, is paths[k - 1])
    paths: list[int] = field(default_factory=list)

    @property
    def median_action_s(self) -> float | None:
        return round(statistics.median(self.action_s), 4) if self.action_s else None

    @property
    def median_total_s(self) -> float | None:
        return round(statistics.median(self.total_s), 4) if self.total_s else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["median_action_s"] = self.median_action_s
        data["median_total_s"] = self.median_total_s
        data["min_total_s"] = round(min(self.total_s), 4) if self.total_s else None
        data["max_total_s"] = round(max(self.total_s), 4) if self.total_s else None
        return data


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll ``condition`` until it holds; a HarnessError naming ``what`` after ``timeout_s``."""
    deadline = clock() + timeout_s
    while not condition():
        if clock() > deadline:
            raise HarnessError(f"{what}: not done after {timeout_s:g} s")
        sleep(POLL_S)


def measure(
    op: FloorOp,
    repeat: int,
    timeout_s: float = DONE_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> OpStats:
    """Time ``repeat`` repetitions of ``op``; a failed repetition is recorded, not timed.

    After two failures in a row the op is given up (the bed is probably broken for it).
    """
    action_s: list[float] = []
    total_s: list[float] = []
    errors: list[str] = []
    failures_in_a_row = 0
    for index in range(repeat):
        try:
            op.setup()
            op.prepare()
            start = clock()
            op.action()
            acted = clock()
            wait_until(op.done, timeout_s, f"{op.name} #{index + 1}", clock, sleep)
            finished = clock()
            action_s.append(round(acted - start, 6))
            total_s.append(round(finished - start, 6))
            op.cleanup()
            failures_in_a_row = 0
        except HarnessError as exc:
            errors.append(f"#{index + 1}: {exc}")
            failures_in_a_row += 1
            if failures_in_a_row >= 2:
                errors.append(f"gave up after {index + 1} of {repeat} repetitions")
                break
    return OpStats(op.name, repeat, action_s, total_s, errors)


# --- the operations on a real test bed -----------------------------------------------------------


def floor_ops(bed: Testbed, path: int = 0, timeout_s: float = DONE_TIMEOUT_S) -> list[FloorOp]:
    """The operations of the table above, aimed at ``path`` of a test bed that is up."""
    host, target = bed.host, bed.target
    if host is None or target is None:
        raise HarnessError("the test bed is not up")
    endpoint = bed.endpoints[path]
    portid = bed.portid(path)

    def ctrl_name() -> str | None:
        device = bed.device()
        ctrl = device.controller_for(endpoint) if device else None
        return ctrl.name if ctrl else None

    def require_ctrl() -> str:
        name = ctrl_name()
        if name is None:
            raise HarnessError(f"path {path} has no controller")
        return name

    def ctrl_state() -> str:
        device = bed.device()
        ctrl = device.controller_for(endpoint) if device else None
        return ctrl.state if ctrl else "gone"

    def ready() -> bool:
        device = bed.device()
        return device is not None and bool(device.heads) and all_paths_ready(bed, device)

    def wait_ready() -> None:
        # recover() also reconnects a controller the host gave up on (ctrl_loss_tmo)
        if FaultInjector(bed).recover(timeout_s, lambda: False) is None:
            raise HarnessError(f"path {path} not ready again after {timeout_s:g} s")

    def wait_gone() -> None:
        wait_until(lambda: ctrl_name() is None, timeout_s, f"path {path} controller gone")

    def delete() -> None:
        host.delete_controller(require_ctrl())

    def connect() -> None:
        bed.connect(endpoint)

    def connect_nvme_cli() -> None:
        bed.connect(endpoint, connect_with="nvme-cli")

    def reconnect() -> None:
        connect()
        wait_ready()

    def wait_live() -> None:
        # Delete only a live controller: 6.1 leaves a controller's IO queues quiesced after a
        # reset or a failed reconnect, and its nvme_remove_namespaces() does not unquiesce
        # them (upstream 1b95e8179160, v6.5, "nvme: fix possible hang when removing a
        # controller during error recovery"): a request parked there never ends, and a
        # passthrough reader waiting for it holds the head's SRCU, so synchronize_srcu() in
        # nvme_ns_remove() hangs the deletion of both paths (read from the source). The
        # deletions that hung both paths in testcase 036 on 6.1.192 had another cause, seen
        # in the blocked tasks' stacks: docs/kernels.md, "Passthrough through the head
        # after its first controller is deleted".
        wait_until(lambda: ctrl_state() == "live", timeout_s, f"path {path} controller live")

    def delete_and_wait() -> None:
        wait_live()
        delete()
        wait_gone()

    def path_disks_ana(state: str) -> bool:
        device = bed.device()
        ctrl = device.controller_for(endpoint) if device else None
        if ctrl is None or not ctrl.path_disks:
            return False
        return all(host.ana_state(disk) == state for disk in ctrl.path_disks)

    def unlink() -> None:
        target.unlink_port(portid, bed.nqn)

    def link() -> None:
        target.link_port(portid, bed.nqn)

    def relink() -> None:
        link()
        wait_ready()

    def unlink_and_wait() -> None:
        unlink()
        wait_until(lambda: ctrl_state() != "live", timeout_s, f"path {path} leaves live")

    def inaccessible() -> None:
        target.set_ana_state(portid, "inaccessible")

    def optimized() -> None:
        target.set_ana_state(portid, "optimized")

    def optimize_and_wait() -> None:
        optimized()
        wait_ready()

    def inaccessible_and_wait() -> None:
        inaccessible()
        wait_until(lambda: path_disks_ana("inaccessible"), timeout_s, f"path {path} inaccessible")

    def reset() -> None:
        host.reset_controller(require_ctrl())

    return [
        FloorOp("connect", connect, ready, prepare=delete_and_wait),
        FloorOp("connect_nvme_cli", connect_nvme_cli, ready, prepare=delete_and_wait),
        FloorOp(
            "ctrl_delete", delete, lambda: ctrl_name() is None, prepare=wait_live, cleanup=reconnect
        ),
        FloorOp("ctrl_reset", reset, ready),
        FloorOp("port_unlink", unlink, lambda: ctrl_state() != "live", cleanup=relink),
        FloorOp("port_link", link, ready, prepare=unlink_and_wait),
        FloorOp(
            "ana_inaccessible",
            inaccessible,
            lambda: path_disks_ana("inaccessible"),
            cleanup=optimize_and_wait,
        ),
        FloorOp("ana_optimized", optimized, ready, prepare=inaccessible_and_wait),
    ]


def ns_floor_ops(bed: Testbed, path: int = 0, removal: PathRemoval | None = None) -> list[FloorOp]:
    """NS_OP_NAMES on ``path`` of a test bed that is up, with the config's mechanism
    (``removal``: one shared by the ops of every path, as a campaign has one)."""
    host = bed.host
    if host is None:
        raise HarnessError("the test bed is not up")
    endpoint = bed.endpoints[path]
    portid = bed.portid(path)

    def require_ctrl() -> str:
        device = bed.device()
        ctrl = device.controller_for(endpoint) if device else None
        if ctrl is None:
            raise HarnessError(f"path {path} has no controller")
        return ctrl.name

    # its remove/restore return once the kernel shows it
    mechanism = removal if removal is not None else make_path_removal(bed)

    def remove_path() -> None:
        mechanism.remove(require_ctrl(), portid)

    def restore_path() -> None:
        mechanism.restore(require_ctrl(), portid)

    return [
        FloorOp(
            "ns_remove_path",
            remove_path,
            lambda: True,  # remove() returns when the per-path disk is gone
            setup=mechanism.prepare,  # untimed: the identity flip's uuid change
            cleanup=restore_path,
        ),
        FloorOp(
            "ns_restore_path",
            restore_path,
            lambda: True,
            setup=mechanism.prepare,
            prepare=remove_path,
        ),
    ]


# --- under IO ------------------------------------------------------------------------------------


@dataclass
class WorkloadIo:
    """The config's workload running on the head during a floor under IO."""

    fio: FioStream
    readers: PassthruReaders | None
    first: FioSnapshot

    def require_running(self) -> None:
        """HarnessError when fio exited: what follows would be timed without IO."""
        if not self.fio.running():
            raise HarnessError(
                "fio exited during the floor under IO", hint=f"see {self.fio.stderr_path}"
            )

    def stop(self) -> dict[str, Any]:
        """Stop the readers and fio (fio is stopped whatever else fails); what they did
        since IO flowed: fio's IOs (counts), IOPS, application errors (all, and EIO), verify
        failures, whether fio was still running at the end, passthrough commands, failures
        and readers still in a command after their stop timeout."""
        still_running = self.fio.running()
        try:
            try:
                end = self.fio.snapshot()
            except FioStreamError:
                end = self.fio.snapshots[-1] if self.fio.snapshots else self.first
            passthru = self.readers.stop() if self.readers is not None else None
        finally:
            exit_code, killed = self.fio.stop()
        lines = self.fio.lines_between(self.first.at, float("inf"))
        result = window_result(self.first, end, lines, exit_code, killed)
        return {
            "fio_read_ios": result.read_ios,
            "fio_write_ios": result.write_ios,
            "fio_iops": round(result.iops, 1),
            "app_errors": result.total_errors,
            "app_eio": result.eio,
            "verify_failures": result.verify_failures,
            "fio_exit_code": exit_code,
            "fio_ran_to_the_end": still_running,
            "passthru_commands": passthru.commands if passthru else 0,
            "passthru_errors": passthru.errors if passthru else 0,
            "passthru_stuck": passthru.stuck if passthru else 0,
        }


def start_workload(bed: Testbed, outdir: Path) -> WorkloadIo:
    """Start the config's fio (over the whole head: no stale-write region, no checker) and its
    passthrough readers (threads of this process, as in a campaign) on the bed's head,
    checked by the device interlock (campaign.fio_job, start_passthru); returns once IO
    completes on the paths. HarnessError when fio exits or no IO flows
    (campaign.wait_io_flowing)."""

    device = bed.checked_device()
    stream = FioStream(fio_job(bed, bed.config, device), outdir / "fio")
    readers: PassthruReaders | None = None
    try:
        wait_io_flowing(stream, lambda: sum(bed.path_ios(bed.device())))
        readers = start_passthru(bed, bed.config, device)
        first = stream.snapshot()
    except BaseException:
        if readers is not None:
            readers.stop()
        stream.stop()
        raise
    return WorkloadIo(stream, readers, first)


def current_path(
    bed: Testbed, sample_s: float = CURRENT_SAMPLE_S, sleep: Callable[[float], None] = time.sleep
) -> int:
    """The path the config's campaign.path names from the IO now: "current" (the default,
    and for a fixed choice) is the one whose per-path disks completed the most IOs over
    ``sample_s`` seconds, "other" the one with the fewest (campaign.resolve_path; ties to
    the lower index). HarnessError when no path completed any IO in that time."""

    device = bed.device()
    before = bed.path_ios(device)
    sleep(sample_s)
    after = bed.path_ios(device)
    if sum(after) <= sum(before):
        raise HarnessError(f"no IO completed on any path in {sample_s:g} s")
    return resolve_path(_path_choice(bed), before, after)[0]


def on_chosen_path(
    name: str,
    ops_by_path: dict[int, dict[str, FloorOp]],
    choose: Callable[[], int],
    chosen: list[int],
) -> FloorOp:
    """Op ``name`` on the path ``choose()`` names before each repetition (untimed), after
    the op's path-independent ``setup``; each choice is appended to ``chosen``."""

    def op() -> FloorOp:
        return ops_by_path[chosen[-1]][name]

    def prepare() -> None:
        ops_by_path[next(iter(ops_by_path))][name].setup()  # path-independent, may move IO
        chosen.append(choose())
        op().prepare()

    return FloorOp(
        name,
        action=lambda: op().action(),
        done=lambda: op().done(),
        prepare=prepare,
        cleanup=lambda: op().cleanup(),
    )


@dataclass
class FloorResult:
    kernel_release: str
    variant: str
    srcversion: str
    repeat: int
    path: int | str  # under IO "current" or "other": each repetition's path chosen from the IO
    setup_s: float
    ops: list[OpStats]
    restore_errors: list[str] = field(default_factory=list)
    under_io: bool = False
    io: dict[str, Any] = field(default_factory=dict)  # under IO: WorkloadIo.stop()
    iopolicy: str = ""  # host.iopolicy of the config: which path carries the IO

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ops"] = [op.to_dict() for op in self.ops]
        return data

    def io_problem(self) -> str | None:
        """What went wrong with the IO under the ops (fio's IO errors or verify failures,
        or fio ending before the floor did), or None."""
        if self.io.get("app_errors") or self.io.get("verify_failures"):
            return (
                f"fio saw {self.io.get('app_errors', 0)} IO errors and "
                f"{self.io.get('verify_failures', 0)} verify failures under the ops (floor.json io)"
            )
        if self.under_io and not self.io.get("fio_ran_to_the_end", True):
            return "fio exited before the end of the floor under IO (floor.json io)"
        return None

    @property
    def failed(self) -> bool:
        """An op never completed, a restore failed, or the IO under the ops went wrong."""
        stuck = any(not op.total_s for op in self.ops)
        return stuck or bool(self.restore_errors) or self.io_problem() is not None


def run_floor(
    bed: Testbed,
    repeat: int,
    variant: str = "distro",
    path: int = 0,
    names: Sequence[str] = OP_NAMES,
    on_op: Callable[[OpStats], None] | None = None,
    under_io: Callable[[Testbed], WorkloadIo] | None = None,
    choose_path: Callable[[Testbed], int] = current_path,
) -> FloorResult:
    """Bring the bed up, time each op, always tear it down.

    With ``under_io`` (start_workload, or a fake): the IO it starts runs from before the
    first op to after the last, and each repetition runs on ``choose_path(bed)`` (the path
    carrying the IO) instead of ``path``."""

    unknown = [name for name in names if name not in KNOWN_OPS]
    if unknown:
        raise HarnessError(f"unknown floor op(s): {', '.join(unknown)} (known: {KNOWN_OPS})")
    started = time.monotonic()
    bed.up()
    setup_s = time.monotonic() - started
    results: list[OpStats] = []
    errors: list[str] = []
    io_summary: dict[str, Any] = {}
    io: WorkloadIo | None = None
    removal: PathRemoval | None = None
    try:
        paths = range(len(bed.endpoints)) if under_io is not None else [path]
        removal = make_path_removal(bed) if any(n in NS_OP_NAMES for n in names) else None
        ops_by_path = {p: _ops_on(bed, p, names, removal) for p in paths}
        if under_io is not None:
            io = under_io(bed)

        def choose() -> int:
            assert io is not None
            io.require_running()
            return choose_path(bed)

        for name in names:
            chosen: list[int] = []
            op = (
                on_chosen_path(name, ops_by_path, choose, chosen)
                if under_io is not None
                else ops_by_path[path][name]
            )
            stats = replace(measure(op, repeat), paths=chosen)
            results.append(stats)
            if on_op is not None:
                on_op(stats)
            _restore(bed, errors)  # a failed repetition must not spoil the next op
    finally:
        try:
            try:
                if removal is not None:  # a failed repetition may have left it removed
                    errors += removal.restore_all()
            finally:
                if io is not None:  # fio stops even when the restore failed
                    io_summary = io.stop()
                    stuck = io_summary.get("passthru_stuck", 0)
                    if stuck:
                        errors.append(stuck_readers_error(stuck, bed.kfs))
        except HarnessError as exc:  # the timings stay; the error is reported with them
            errors.append(f"restoring the namespace or stopping the IO: {exc}")
        finally:
            errors += bed.down()  # whatever failed before
    kernel = kernel_info(variant)
    return FloorResult(
        kernel_release=kernel.release,
        variant=kernel.variant,
        srcversion=kernel.srcversion,
        repeat=repeat,
        path=_path_choice(bed) if under_io is not None else path,
        setup_s=round(setup_s, 3),
        ops=results,
        restore_errors=errors,
        under_io=under_io is not None,
        io=io_summary,
        iopolicy=bed.config.host.iopolicy,
    )


def _path_choice(bed: Testbed) -> str:
    """How a floor under IO chooses its paths (current_path): campaign.path when it is one
    the IO decides ("current", "other"), else "current"."""
    from harness.config.campaign import DYNAMIC_PATH_CHOICES

    choice = bed.config.campaign.path
    return choice if choice in DYNAMIC_PATH_CHOICES else "current"


def _ops_on(
    bed: Testbed, path: int, names: Sequence[str], removal: PathRemoval | None
) -> dict[str, FloorOp]:
    ops = {op.name: op for op in floor_ops(bed, path)}
    if any(name in NS_OP_NAMES for name in names):
        ops.update((op.name, op) for op in ns_floor_ops(bed, path, removal))
    return ops


def _restore(bed: Testbed, errors: list[str]) -> None:
    injector = FaultInjector(bed)
    errors += injector.restore_everything()
    if injector.recover(DONE_TIMEOUT_S, lambda: False) is None:
        errors.append(f"paths not ready again after {DONE_TIMEOUT_S:g} s")


def write_floor(result: FloorResult, outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / FLOOR_FILE
    write_json_atomic(path, result.to_dict())
    return path


def render(result: FloorResult | dict[str, Any]) -> str:
    """A plain table of the medians (from a FloorResult or its floor.json)."""
    data = result.to_dict() if isinstance(result, FloorResult) else result
    lines = []
    if data.get("under_io"):
        io = data.get("io", {})
        lines.append(
            f"under IO: each repetition on the path carrying it; fio "
            f"{io.get('fio_read_ios', 0) + io.get('fio_write_ios', 0)} IOs, "
            f"{io.get('app_errors', 0)} errors; passthrough {io.get('passthru_commands', 0)} "
            f"commands, {io.get('passthru_errors', 0)} failed"
        )
    lines.append(f"{'op':<18} {'n':>3} {'action s':>9} {'total s':>9}  errors")
    for op in data.get("ops", []):
        action, total = op.get("median_action_s"), op.get("median_total_s")
        lines.append(
            f"{op['name']:<18} {len(op.get('total_s', [])):>3} "
            f"{'-' if action is None else f'{action:.3f}':>9} "
            f"{'-' if total is None else f'{total:.3f}':>9}  {len(op.get('errors', []))}"
        )
    return "\n".join(lines)

"""The floor: timing bare operations (fake clock), and the operations on a fake test bed."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from harness.bed import testbed as testbed_mod
from harness.bed.host import ControllerInfo, MultipathDevice, PathEndpoint
from harness.campaign import floor
from harness.campaign.floor import (
    FloorOp,
    OpStats,
    floor_ops,
    measure,
    render,
    run_floor,
    write_floor,
)
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.errors import HarnessError

# --- measure with a fake clock -------------------------------------------------------------------


@dataclass
class FakeClock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_measure_times_the_action_and_the_wait_apart() -> None:
    clock = FakeClock()
    calls: list[str] = []

    def action() -> None:
        calls.append("action")
        clock.now += 0.25
        done_at.append(clock.now + 1.0)  # the kernel finishes 1 s after the write returns

    done_at: list[float] = []
    op = FloorOp(
        "x",
        action,
        lambda: clock.now >= done_at[-1],
        prepare=lambda: calls.append("prepare"),
        cleanup=lambda: calls.append("cleanup"),
    )
    stats = measure(op, 3, clock=clock, sleep=clock.sleep)
    assert calls == ["prepare", "action", "cleanup"] * 3
    assert stats.action_s == [0.25, 0.25, 0.25]
    assert all(1.25 <= t <= 1.25 + floor.POLL_S + 1e-9 for t in stats.total_s)
    assert stats.errors == []
    assert stats.median_action_s == 0.25
    data = stats.to_dict()
    assert data["median_total_s"] == stats.median_total_s
    assert data["min_total_s"] <= data["max_total_s"]


def test_measure_records_a_timeout_and_gives_up_after_two_failures_in_a_row() -> None:
    clock = FakeClock()
    cleaned: list[int] = []
    op = FloorOp("never", lambda: None, lambda: False, cleanup=lambda: cleaned.append(1))
    stats = measure(op, 5, timeout_s=2.0, clock=clock, sleep=clock.sleep)
    assert stats.total_s == [] and stats.action_s == []
    assert len(stats.errors) == 3
    assert "not done after 2 s" in stats.errors[0]
    assert stats.errors[-1] == "gave up after 2 of 5 repetitions"
    assert cleaned == []  # a failed repetition is not cleaned up as if it had worked
    assert stats.median_total_s is None


def test_measure_keeps_going_after_one_failure() -> None:
    clock = FakeClock()
    attempts: list[int] = []

    def action() -> None:
        attempts.append(1)
        if len(attempts) == 2:
            raise HarnessError("write failed")

    stats = measure(FloorOp("flaky", action, lambda: True), 4, clock=clock, sleep=clock.sleep)
    assert len(attempts) == 4
    assert len(stats.total_s) == 3
    assert stats.errors == ["#2: write failed"]


# --- the operations on a fake test bed ---------------------------------------------------------


@dataclass
class FakePath:
    ctrl: str | None
    state: str = "live"
    ana: str = "optimized"
    linked: bool = True


@dataclass
class FakeKernel:
    """Paths of one subsystem; an operation takes effect after ``lag`` reads of the state."""

    paths: list[FakePath]
    lag: int = 2
    log: list[str] = field(default_factory=list)
    pending: list[tuple[int, Any]] = field(default_factory=list)
    next_ctrl: int = 10

    def later(self, change: Any) -> None:
        self.pending.append((self.lag, change))

    def tick(self) -> None:
        due = [(n - 1, change) for n, change in self.pending]
        self.pending = [(n, c) for n, c in due if n > 0]
        for n, change in due:
            if n <= 0:
                change()


class FakeHost:
    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel

    def _path(self, ctrl: str) -> FakePath:
        return next(p for p in self.kernel.paths if p.ctrl == ctrl)

    def delete_controller(self, ctrl: str, timeout_s: float = 30.0) -> None:
        self.kernel.log.append(f"delete {ctrl}")
        self._path(ctrl).ctrl = None  # synchronous, like the sysfs write

    def reset_controller(self, ctrl: str) -> None:
        self.kernel.log.append(f"reset {ctrl}")
        path = self._path(ctrl)
        path.state = "resetting"
        self.kernel.later(lambda: setattr(path, "state", "live"))

    def ana_state(self, disk: str) -> str:
        index = int(disk.split("c")[1].split("n", maxsplit=1)[0]) % 10
        return self.kernel.paths[index].ana


class FakeTarget:
    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel

    def unlink_port(self, portid: int, nqn: str) -> None:
        self.kernel.log.append(f"unlink {portid}")
        path = self.kernel.paths[portid - 6000]
        path.linked = False
        self.kernel.later(lambda: setattr(path, "state", "connecting"))

    def link_port(self, portid: int, nqn: str) -> None:
        self.kernel.log.append(f"link {portid}")
        path = self.kernel.paths[portid - 6000]
        path.linked = True

        def reconnected() -> None:
            if path.linked and path.ctrl is not None:
                path.state = "live"

        self.kernel.later(reconnected)

    def set_namespace_enabled(self, nqn: str, nsid: int, enabled: bool) -> None:
        self.kernel.log.append(f"ns {nsid} {'on' if enabled else 'off'}")

    def set_ana_state(self, portid: int, state: str, grpid: int = 1) -> None:
        self.kernel.log.append(f"ana {portid} {state}")
        path = self.kernel.paths[portid - 6000]
        self.kernel.later(lambda: setattr(path, "ana", state))


class FakeNetwork:
    netns = None


class FakeBed:
    nqn = "nqn.2026-11.io.nvmf-harness:subsys-test"
    network = FakeNetwork()
    backing = None
    config = CampaignConfig()  # one namespace

    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.host = FakeHost(kernel)
        self.target = FakeTarget(kernel)
        self.endpoints = [
            PathEndpoint("127.0.0.1", str(4421 + i)) for i in range(len(kernel.paths))
        ]
        self.ups = 0
        self.downs = 0

    def portid(self, path: int) -> int:
        return 6000 + path

    def device(self) -> MultipathDevice:
        self.kernel.tick()
        ctrls = tuple(
            ControllerInfo(
                name=p.ctrl,
                state=p.state,
                transport="tcp",
                traddr=self.endpoints[i].traddr,
                trsvcid=self.endpoints[i].trsvcid,
                subsysnqn=self.nqn,
                path_disks=(f"nvme0c{p.ctrl.removeprefix('nvme')}{i}n1",),
            )
            for i, p in enumerate(self.kernel.paths)
            if p.ctrl is not None
        )
        return MultipathDevice("nvme-subsys0", self.nqn, ("nvme0n1",), ctrls)

    def connect(self, endpoint: PathEndpoint, connect_with: str | None = None) -> str:
        index = self.endpoints.index(endpoint)
        path = self.kernel.paths[index]
        if not path.linked:
            raise HarnessError("connection refused")
        name = f"nvme{self.kernel.next_ctrl}"
        self.kernel.next_ctrl += 1
        self.kernel.log.append(f"connect {index}" + (f" {connect_with}" if connect_with else ""))
        path.ctrl, path.state = name, "live"
        return name

    def up(self) -> MultipathDevice:
        self.ups += 1
        return self.device()

    def down(self) -> list[str]:
        self.downs += 1
        return []


def fake_bed(lag: int = 2) -> FakeBed:
    return FakeBed(FakeKernel([FakePath("nvme0"), FakePath("nvme1")], lag=lag))


def as_testbed(bed: FakeBed) -> testbed_mod.Testbed:
    return cast(testbed_mod.Testbed, bed)


def ops_by_name(bed: FakeBed) -> dict[str, FloorOp]:
    return {op.name: op for op in floor_ops(as_testbed(bed), path=1, timeout_s=5.0)}


def test_floor_ops_are_the_documented_ones() -> None:
    assert [op.name for op in floor_ops(as_testbed(fake_bed()))] == list(floor.OP_NAMES)


def test_every_op_completes_on_the_fake_kernel_and_leaves_all_paths_ready() -> None:
    bed = fake_bed()
    for name, op in ops_by_name(bed).items():
        stats = measure(op, 2, timeout_s=5.0)
        assert stats.errors == [], name
        assert len(stats.total_s) == 2, name
        assert all(
            total >= action for total, action in zip(stats.total_s, stats.action_s, strict=True)
        )
        for path in bed.kernel.paths:
            assert (path.ctrl is not None, path.state, path.ana, path.linked) == (
                True,
                "live",
                "optimized",
                True,
            ), name


def test_ctrl_delete_is_done_when_the_controller_is_gone_then_reconnects() -> None:
    bed = fake_bed()
    op = ops_by_name(bed)["ctrl_delete"]
    op.action()
    assert bed.kernel.log == ["delete nvme1"]
    assert op.done()
    op.cleanup()
    assert bed.kernel.log == ["delete nvme1", "connect 1"]
    assert bed.kernel.paths[0].ctrl == "nvme0"  # the other path is never touched


def test_connect_op_deletes_first_untimed() -> None:
    bed = fake_bed()
    op = ops_by_name(bed)["connect"]
    op.prepare()
    assert bed.kernel.paths[1].ctrl is None
    op.action()
    assert bed.kernel.log == ["delete nvme1", "connect 1"]
    assert op.done()


def test_port_unlink_waits_for_the_host_to_notice() -> None:
    bed = fake_bed(lag=3)
    op = ops_by_name(bed)["port_unlink"]
    op.action()
    assert bed.kernel.log == ["unlink 6001"]
    polls = 0
    while not op.done():
        polls += 1
    assert polls >= 2  # not done while the controller is still live
    op.cleanup()
    assert bed.kernel.log[-1] == "link 6001"
    assert bed.kernel.paths[1].state == "live"


def test_ana_ops_wait_for_the_host_to_see_the_state() -> None:
    bed = fake_bed(lag=3)
    ops = ops_by_name(bed)
    ops["ana_inaccessible"].action()
    assert not ops["ana_inaccessible"].done()
    while not ops["ana_inaccessible"].done():
        pass
    assert bed.kernel.paths[1].ana == "inaccessible"
    ops["ana_inaccessible"].cleanup()
    assert bed.kernel.paths[1].ana == "optimized"
    assert bed.kernel.log == ["ana 6001 inaccessible", "ana 6001 optimized"]


def test_floor_ops_need_a_bed_that_is_up() -> None:
    bed = fake_bed()
    bed.host = None  # type: ignore[assignment]
    with pytest.raises(HarnessError, match="not up"):
        floor_ops(as_testbed(bed))


def test_run_floor_writes_floor_json(tmp_path: Path) -> None:
    bed = fake_bed()
    seen: list[OpStats] = []
    result = run_floor(as_testbed(bed), 2, variant="unfixed", path=1, on_op=seen.append)
    assert bed.ups == 1 and bed.downs == 1
    assert [s.name for s in seen] == list(floor.OP_NAMES)
    assert result.restore_errors == []
    path = write_floor(result, tmp_path / "floor")
    data = json.loads(path.read_text())
    assert data["repeat"] == 2 and data["path"] == 1 and data["variant"] == "unfixed"
    assert [op["name"] for op in data["ops"]] == list(floor.OP_NAMES)
    assert all(len(op["total_s"]) == 2 and op["median_total_s"] >= 0 for op in data["ops"])
    text = render(data)
    assert text.splitlines()[0].split()[:2] == ["op", "n"]
    assert len(text.splitlines()) == 1 + len(floor.OP_NAMES)
    assert render(result) == text


@dataclass
class FakeWorkload:
    """Stands in for floor.start_workload: records when it ran against the bed's ups/downs."""

    bed: FakeBed
    events: list[str] = field(default_factory=list)

    running: bool = True

    def __call__(self, bed: testbed_mod.Testbed) -> FakeWorkload:
        self.events.append(f"io start (ups {self.bed.ups})")
        return self

    def require_running(self) -> None:
        if not self.running:
            raise HarnessError("fio exited during the floor under IO")

    def stop(self) -> dict[str, Any]:
        self.events.append(f"io stop (downs {self.bed.downs})")
        return {"fio_read_ios": 10, "fio_write_ios": 5, "app_errors": 0}


def test_run_floor_under_io_runs_each_repetition_on_the_chosen_path(tmp_path: Path) -> None:
    bed = fake_bed()
    workload = FakeWorkload(bed)
    choices = iter([1, 0, 1, 1, 0, 0, 1, 0])
    result = run_floor(
        as_testbed(bed),
        2,
        names=["ctrl_delete", "connect"],
        under_io=cast(Any, workload),
        choose_path=lambda _bed: next(choices),
    )
    # the IO runs from after the bed is up to before it is torn down
    assert workload.events == ["io start (ups 1)", "io stop (downs 0)"]
    assert [(op.name, op.paths, len(op.total_s)) for op in result.ops] == [
        ("ctrl_delete", [1, 0], 2),
        ("connect", [1, 1], 2),
    ]
    deletes = [line for line in bed.kernel.log if line.startswith("delete")]
    assert deletes[:2] == ["delete nvme1", "delete nvme0"]  # path 1's controller, then path 0's
    data = json.loads(write_floor(result, tmp_path).read_text())
    assert data["under_io"] is True and data["path"] == "current"
    assert data["io"]["fio_read_ios"] == 10
    assert render(data).startswith("under IO: each repetition on the path carrying it; fio 15 IOs")


def test_a_dead_fio_fails_the_repetitions_instead_of_timing_them_idle() -> None:
    bed = fake_bed()
    workload = FakeWorkload(bed, running=False)
    result = run_floor(
        as_testbed(bed),
        3,
        names=["ctrl_delete"],
        under_io=cast(Any, workload),
        choose_path=lambda _: 0,
    )
    (op,) = result.ops
    assert op.total_s == [] and "fio exited" in op.errors[0]
    assert op.errors[-1] == "gave up after 2 of 3 repetitions"
    assert bed.downs == 1 and workload.events[-1] == "io stop (downs 0)"


@dataclass
class CountingBed:
    """What current_path reads: the per-path completed IOs, advancing per read."""

    steps: list[list[int]]
    path_choice: str = "current"
    config: Any = None

    def __post_init__(self) -> None:
        self.config = config_mod.override(CampaignConfig(), "campaign", path=self.path_choice)

    def device(self) -> None:
        return None

    def path_ios(self, device: object) -> list[int]:
        return self.steps.pop(0)


def test_current_path_follows_the_io_and_the_config_choice() -> None:
    def choose(steps: list[list[int]], choice: str = "current") -> int:
        bed = cast(testbed_mod.Testbed, CountingBed(steps, choice))
        return floor.current_path(bed, sleep=lambda _s: None)

    assert choose([[100, 50], [100, 90]]) == 1  # path 1 completed 40, path 0 none
    assert choose([[100, 50], [180, 50]], "other") == 1
    assert choose([[100, 50], [180, 50]], "alternate") == 0  # a fixed choice: the current one
    with pytest.raises(HarnessError, match="no IO completed on any path"):
        choose([[100, 50], [100, 50]])


def test_ops_of_fault_kinds_are_the_ops_of_those_faults_only() -> None:
    assert floor.ops_of_fault_kinds(["ns_remove_path", "ctrl_delete"]) == (
        "connect",
        "ctrl_delete",
        "ns_remove_path",
        "ns_restore_path",
    )
    assert floor.ops_of_fault_kinds(["io_timeout"]) == ()


def test_choose_ops_as_the_floor_command_does() -> None:
    faults = ["ns_remove_path", "ctrl_delete"]
    assert floor.choose_ops(faults, ["connect"], under_io=True) == ["connect"]  # --ops
    assert floor.choose_ops(faults, [], under_io=False) == list(floor.ops_for_faults(faults))
    assert floor.choose_ops(faults, [], under_io=True) == list(floor.ops_of_fault_kinds(faults))
    with pytest.raises(HarnessError, match="no floor op is part of the config's faults"):
        floor.choose_ops(["io_timeout"], [], under_io=True)


def floor_result(total_s: list[float], under_io: bool, io: dict[str, Any]) -> floor.FloorResult:
    op = floor.OpStats("connect", 1, [0.1], total_s)
    return floor.FloorResult("6.1.0-57-amd64", "fixed", "X", 1, 0, 0.5, [op], [], under_io, io)


def test_a_floor_fails_on_a_stuck_op_or_on_the_io_under_it() -> None:
    assert not floor_result([0.2], False, {}).failed
    assert floor_result([], False, {}).failed  # the op never completed
    errors = floor_result([0.2], True, {"app_errors": 2, "fio_ran_to_the_end": True})
    assert errors.failed
    assert errors.io_problem() == (
        "fio saw 2 IO errors and 0 verify failures under the ops (floor.json io)"
    )
    ended = floor_result([0.2], True, {"fio_ran_to_the_end": False})
    assert ended.failed and ended.io_problem() is not None
    assert "fio exited before the end" in str(ended.io_problem())
    assert floor_result([0.2], True, {"fio_ran_to_the_end": True}).io_problem() is None


def test_run_floor_refuses_unknown_ops_before_touching_anything() -> None:
    bed = fake_bed()
    with pytest.raises(HarnessError, match="unknown floor op"):
        run_floor(as_testbed(bed), 1, names=["connect", "teleport"])
    assert bed.ups == 0


def test_run_floor_tears_down_when_an_op_raises() -> None:
    bed = fake_bed()

    def broken(_bed: Any, _path: int = 0) -> list[FloorOp]:
        raise RuntimeError("boom")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(floor, "floor_ops", broken)
        with pytest.raises(RuntimeError):
            run_floor(as_testbed(bed), 1)
    assert bed.downs == 1

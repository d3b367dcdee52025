"""The campaign's pure parts: the seeded plan, jitters, verdicts, and the progress monitor."""

from __future__ import annotations

import threading
import time
import types
from collections import Counter
from typing import Any

import pytest

from harness.campaign import iteration
from harness.campaign.monitor import ProgressMonitor, stuck_tasks
from harness.campaign.plan import jitters, plan, resolve_path
from harness.campaign.verdict import verdict
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.errors import HarnessError
from harness.core.results import IterationRecord, Verdict
from harness.faults import FaultAction, fault_classes
from tests.test_results import make_record

FAULTS = ["ctrl_delete", "ctrl_reset", "port_remove"]


def make_config(
    iterations: int = 12,
    seed: int = 1,
    faults: list[str] | None = None,
    order: str = "round_robin",
    path: str = "alternate",
    paths: int = 2,
    jitter_s: float = 0.5,
) -> CampaignConfig:
    return config_mod.validate(
        {
            "campaign": {
                "iterations": iterations,
                "seed": seed,
                "faults": faults or FAULTS,
                "order": order,
                "path": path,
                "jitter_s": jitter_s,
            },
            "target": {"paths": paths},
        }
    )


# --- plan ----------------------------------------------------------------------------------------


def test_round_robin_walks_the_faults_in_order() -> None:
    actions = plan(make_config(iterations=7))
    assert [str(a.kind) for a in actions] == [*FAULTS, *FAULTS, FAULTS[0]]
    assert all(isinstance(a, FaultAction) and a.kind in fault_classes() for a in actions)


def test_alternate_walks_each_fault_over_the_paths() -> None:
    actions = plan(make_config(iterations=18, paths=3))
    by_fault: dict[str, list[int]] = {}
    for action in actions:
        by_fault.setdefault(str(action.kind), []).append(action.path)
    assert by_fault == {fault: [0, 1, 2, 0, 1, 2] for fault in FAULTS}


def test_alternate_with_one_fault_alternates_paths() -> None:
    actions = plan(make_config(iterations=5, faults=["ctrl_delete"]))
    assert [a.path for a in actions] == [0, 1, 0, 1, 0]


@pytest.mark.parametrize(("choice", "expected"), [("first", 0), ("last", 3)])
def test_first_and_last_path(choice: str, expected: int) -> None:
    actions = plan(make_config(iterations=20, path=choice, paths=4))
    assert {a.path for a in actions} == {expected}


def test_random_path_is_in_range_and_covers_the_paths() -> None:
    actions = plan(make_config(iterations=200, path="random", paths=3))
    counts = Counter(a.path for a in actions)
    assert set(counts) == {0, 1, 2}
    assert min(counts.values()) > 30  # roughly uniform
    assert [str(a.kind) for a in actions[:3]] == FAULTS  # the order of faults is unchanged


def test_random_order_uses_every_fault_and_only_those() -> None:
    actions = plan(make_config(iterations=200, order="random"))
    counts = Counter(str(a.kind) for a in actions)
    assert set(counts) == set(FAULTS)
    assert min(counts.values()) > 40
    kinds = [str(a.kind) for a in actions]
    assert kinds != [FAULTS[i % 3] for i in range(200)]  # not round robin


@pytest.mark.parametrize(
    ("order", "path"), [("random", "random"), ("random", "alternate"), ("round_robin", "random")]
)
def test_the_plan_is_reproducible_from_the_seed(order: str, path: str) -> None:
    first = plan(make_config(iterations=50, seed=7, order=order, path=path))
    again = plan(make_config(iterations=50, seed=7, order=order, path=path))
    other = plan(make_config(iterations=50, seed=8, order=order, path=path))
    assert first == again
    assert first != other


def test_the_plan_has_one_action_per_iteration() -> None:
    assert len(plan(make_config(iterations=1))) == 1
    assert len(plan(make_config(iterations=333, order="random", path="random"))) == 333


# --- jitters -----------------------------------------------------------------------------------


def test_jitters_are_seeded_and_within_bounds() -> None:
    values = jitters(make_config(iterations=500, seed=3, jitter_s=0.5))
    assert len(values) == 500
    assert all(0.0 <= value <= 0.5 for value in values)
    assert max(values) > 0.45
    assert min(values) < 0.05
    assert values == jitters(make_config(iterations=500, seed=3, jitter_s=0.5))
    assert values != jitters(make_config(iterations=500, seed=4, jitter_s=0.5))


def test_zero_jitter() -> None:
    assert jitters(make_config(iterations=5, jitter_s=0)) == [0.0] * 5


def test_jitters_do_not_shift_the_plan() -> None:
    """Changing jitter_s must not change which faults hit which paths (same seed)."""
    a = plan(make_config(iterations=40, order="random", path="random", jitter_s=0.0))
    b = plan(make_config(iterations=40, order="random", path="random", jitter_s=3.0))
    assert a == b


# --- verdict -------------------------------------------------------------------------------------


def judged(**changes: Any) -> str:
    record: IterationRecord = make_record(**changes)
    return verdict(record)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, Verdict.PASS),
        # the harness failed before any IO: nothing else can be judged
        (
            {"error": "no IO on the head", "fio_read_ios": 0, "fio_write_ios": 0, "app_eio": 3},
            Verdict.INFRA_ERROR,
        ),
        # a kernel bug outranks a hang, EIO and everything else
        (
            {"kernel_bug_lines": 1, "hang": True, "app_eio": 2, "eod_race_lines": 2},
            Verdict.KERNEL_BUG,
        ),
        ({"hang": True, "app_eio": 2, "eod_race_lines": 2, "recovered": False}, Verdict.HANG),
        # a fault's kernel write never returned while IO went on elsewhere: a hang
        (
            {"kernel_write_hung": True, "error": "write '1' to ... hung for 30 s"},
            Verdict.HANG,
        ),
        # a step's kernel write blocked and IO stopped, with stuck tasks: a hang, not infra
        (
            {
                "hang": True,
                "stuck_tasks": ["265 python3: blk_mq_freeze_queue_wait <- del_gendisk"],
                "error": "steps[1] (ctrl_delete inject): write '1' to ... hung for 30 s",
                "fio_read_ios": 0,
                "fio_write_ios": 0,
            },
            Verdict.HANG,
        ),
        # EIO with the EOD-race signature: the bug when another path was live; with none
        # (every path down, the last one going away under requeued IO) nothing could fail
        # over: expected (the race line still counts in eod_race_lines)
        ({"app_eio": 1, "eod_race_lines": 1, "another_path_live": True}, Verdict.EIO_RACE),
        # the race's EIO seen by the stale-write checker only (fio's IO went elsewhere)
        (
            {"stale_write_errors": 2, "eod_race_lines": 2, "another_path_live": True},
            Verdict.EIO_RACE,
        ),
        ({"app_eio": 1, "eod_race_lines": 1, "another_path_live": False}, Verdict.EXPECTED_EIO),
        ({"app_eio": 1, "eod_race_lines": 1, "verify_failures": 4}, Verdict.EIO_RACE),
        # EIO while no path was usable (ns_disable): real loss of the namespace
        ({"app_eio": 5, "another_path_live": False}, Verdict.EXPECTED_EIO),
        # EIO while another path was live, without the signature
        ({"app_eio": 5, "another_path_live": True, "recovered": False}, Verdict.EIO),
        ({"verify_failures": 1, "recovered": False}, Verdict.VERIFY_FAIL),
        ({"recovered": False}, Verdict.NOT_RECOVERED),
        # did not recover because the harness failed mid-iteration (after IO ran)
        ({"recovered": False, "error": "restore failed"}, Verdict.INFRA_ERROR),
        # counted kernel lines that are not errors of the application
        ({"eod_race_lines": 3, "io_error_lines": 9, "path_event_lines": 40}, Verdict.PASS),
        # another errno (EOPNOTSUPP from an Invalid Namespace + DNR answer) while another path
        # was live: IO failed that the other path could have served
        ({"app_other_errors": 7, "another_path_live": True}, Verdict.APP_ERROR),
        ({"app_other_errors": 7, "another_path_live": False}, Verdict.PASS),
        ({"app_eio": 1, "app_other_errors": 7, "eod_race_lines": 1}, Verdict.EIO_RACE),
    ],
)
def test_verdict_precedence(changes: dict[str, Any], expected: str) -> None:
    assert judged(**changes) == expected


def test_every_verdict_is_reachable() -> None:
    names = {value for key, value in vars(Verdict).items() if key.isupper()}
    cases: list[dict[str, Any]] = [
        {},
        {"error": "x", "fio_read_ios": 0, "fio_write_ios": 0},
        {"kernel_bug_lines": 1},
        {"hang": True},
        {"app_eio": 1, "eod_race_lines": 1},
        {"app_eio": 1, "another_path_live": False},
        {"app_eio": 1},
        {"verify_failures": 1},
        {"recovered": False},
        {"app_other_errors": 1, "another_path_live": True},
        {"stale_writes": 1},
    ]
    assert {judged(**case) for case in cases} == names


# --- ProgressMonitor -----------------------------------------------------------------------------


class FakeStat:
    """A disk's completed-IO counter that a test advances (or not)."""

    def __init__(self) -> None:
        self.count = 0
        self.moving = True
        self.lock = threading.Lock()

    def __call__(self) -> tuple[int, int]:
        with self.lock:
            if self.moving:
                self.count += 10
            return self.count, 4


def test_monitor_sees_progress_and_no_hang() -> None:
    stat = FakeStat()
    monitor = ProgressMonitor(stat, hang_timeout_s=0.5, period_s=0.2)
    monitor.start()
    time.sleep(1.0)
    monitor.stop()
    assert not monitor.hang
    assert monitor.max_stall_s < 0.5
    assert len(monitor.samples) >= 3
    counts = [count for _at, count in monitor.samples]
    assert counts == sorted(counts)
    assert monitor.completed() == counts[-1] > 0


def test_monitor_detects_a_hang() -> None:
    stat = FakeStat()
    monitor = ProgressMonitor(stat, hang_timeout_s=0.5, period_s=0.2)
    monitor.start()
    time.sleep(0.3)
    with stat.lock:
        stat.moving = False
    stopped_at = time.monotonic()
    deadline = stopped_at + 5
    while not monitor.hang and time.monotonic() < deadline:
        time.sleep(0.05)
    noticed = time.monotonic() - stopped_at
    monitor.stop()
    assert monitor.hang
    assert 0.4 <= noticed < 2.0
    assert monitor.max_stall_s >= 0.5


def test_monitor_hang_is_not_cleared_when_io_resumes() -> None:
    stat = FakeStat()
    stat.moving = False
    monitor = ProgressMonitor(stat, hang_timeout_s=0.5, period_s=0.2)
    monitor.start()
    deadline = time.monotonic() + 5
    while not monitor.hang and time.monotonic() < deadline:
        time.sleep(0.05)
    with stat.lock:
        stat.moving = True
    time.sleep(0.5)
    monitor.stop()
    assert monitor.hang  # the iteration saw a hang, even if IO came back later


def test_monitor_without_samples() -> None:
    monitor = ProgressMonitor(FakeStat(), hang_timeout_s=1)
    assert monitor.completed() == 0
    monitor.stop()  # never started: nothing to join


# --- stuck_tasks ----------------------------------------------------------------------------------


def test_stuck_tasks_returns_lines_without_crashing() -> None:
    tasks = stuck_tasks()
    assert isinstance(tasks, list)
    assert all(isinstance(task, str) for task in tasks)
    assert len(stuck_tasks(limit=1)) <= 1


# --- the path choices "current" and "other" -------------------------------------------------


@pytest.mark.parametrize(
    ("choice", "before", "after", "expected"),
    [
        # numa: all IO on one path; "current" is it, "other" the idle one
        ("current", [100, 50], [100, 950], (1, 1)),
        ("other", [100, 50], [100, 950], (0, 1)),
        ("current", [0, 0], [700, 0], (0, 0)),
        ("other", [0, 0], [700, 0], (1, 0)),
        # round-robin: both carry IO; the larger is current, ties to the lower index
        ("current", [0, 0], [400, 410], (1, 1)),
        ("current", [0, 0], [400, 400], (0, 0)),
        ("other", [0, 0], [400, 400], (1, 0)),
        # a path whose disk went away (counter reset) carried nothing, not a negative amount
        ("current", [900, 10], [0, 500], (1, 1)),
        # four paths: "other" is the one that carried least
        ("other", [0, 0, 0, 0], [10, 900, 3, 40], (2, 1)),
    ],
)
def test_resolve_path(
    choice: str, before: list[int], after: list[int], expected: tuple[int, int]
) -> None:
    assert resolve_path(choice, before, after) == expected


def test_resolve_path_needs_counts() -> None:
    with pytest.raises(HarnessError, match="per-path IO"):
        resolve_path("current", [], [])


def test_plan_holds_path_zero_for_choices_made_at_fault_time() -> None:
    config = config_mod.validate(
        {"campaign": {"faults": ["ns_remove_path"], "path": "current", "iterations": 3}}
    )
    assert [a.path for a in plan(config)] == [0, 0, 0]


def test_the_next_fault_waits_out_the_eod_printk_ratelimit() -> None:
    """Only while the kernel line is the only witness: the BPF witness needs no wait."""
    owner = types.SimpleNamespace(
        last_eod_line_at=time.monotonic() - iteration.EOD_RATELIMIT_S + 0.3, witness=None
    )
    waiter = types.SimpleNamespace(campaign=owner)
    started = time.monotonic()
    iteration.Iteration.wait_for_eod_ratelimit(waiter)  # type: ignore[arg-type]
    assert 0.25 <= time.monotonic() - started < 2
    owner.last_eod_line_at = time.monotonic() - iteration.EOD_RATELIMIT_S - 1
    started = time.monotonic()
    iteration.Iteration.wait_for_eod_ratelimit(waiter)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.1
    owner.last_eod_line_at = time.monotonic()  # a line just now, but the witness runs
    owner.witness = object()
    started = time.monotonic()
    iteration.Iteration.wait_for_eod_ratelimit(waiter)  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.1


def test_phase_clock_adds_up_the_phases_in_order() -> None:
    clock = iter([1.5, 1.75, 4.0, 4.5])
    phases = iteration.PhaseClock(1.0, clock=lambda: next(clock))
    for name in ("window_open", "warmup", "inject", "warmup"):
        phases.mark(name)
    assert phases.seconds == {"window_open": 0.5, "warmup": 0.75, "inject": 2.25}
    assert list(phases.seconds) == ["window_open", "warmup", "inject"]

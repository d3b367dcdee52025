"""All paths down: the queue-or-fail prediction from the host knobs (harness/all_paths_down.py),
what an iteration's kernel classes say the head did, and the EIO verdict with no path left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.campaign import all_paths_down as apd
from harness.campaign.kmsg import KernelLogSummary, KmsgRecord
from harness.config import campaign as config_mod
from harness.core.results import Verdict


@pytest.mark.parametrize(
    ("ctrl_loss_tmo", "reconnect_delay", "after"),
    [(-1, 1, None), (0, 1, 0.0), (1, 1, 1.0), (2, 1, 2.0), (5, 2, 6.0), (600, 10, 600.0)],
)
def test_ctrl_loss_after_counts_whole_reconnect_delays(
    ctrl_loss_tmo: int, reconnect_delay: int, after: float | None
) -> None:
    assert apd.ctrl_loss_after_s(ctrl_loss_tmo, reconnect_delay) == after


def test_ctrl_loss_after_refuses_a_zero_reconnect_delay() -> None:
    with pytest.raises(ValueError, match="reconnect_delay must be >= 1"):
        apd.ctrl_loss_after_s(5, 0)


@pytest.mark.parametrize(
    ("knobs", "down_s", "outcome", "fail_after"),
    [
        ((-1, 1, -1), 5.0, apd.QUEUE, None),  # reconnect forever, never fail fast
        ((-1, 1, 2), 5.0, apd.FAIL_FAST, 2.0),
        ((-1, 1, 10), 2.0, apd.QUEUE, None),  # the paths are back before failfast
        ((-1, 1, 0), 1.0, apd.FAIL_FAST, 0.0),  # fail at once
        ((2, 1, -1), 5.0, apd.FAIL_CTRL_LOSS, 2.0),
        ((2, 1, 1), 5.0, apd.FAIL_FAST, 1.0),  # failfast expires before the loss
        ((1, 1, 3), 5.0, apd.FAIL_CTRL_LOSS, 1.0),  # the loss comes first
        ((30, 1, -1), 5.0, apd.QUEUE, None),
        ((600, 10, 2), 5.0, apd.FAIL_FAST, 2.0),
    ],
)
def test_the_first_timer_to_expire_decides(
    knobs: tuple[int, int, int], down_s: float, outcome: str, fail_after: float | None
) -> None:
    expectation = apd.expect(*knobs, down_s=down_s)
    assert expectation.outcome == outcome
    assert expectation.fail_after_s == fail_after
    assert expectation.eio_expected == (outcome != apd.QUEUE)
    assert ".c:" in expectation.why  # says which kernel function


@pytest.mark.parametrize(
    ("classes", "seen"),
    [
        ({"no_usable_path": 3}, apd.SEEN_QUEUED),
        ({"no_available_path": 1, "ctrl_failfast": 2}, apd.SEEN_FAILED),
        ({"no_usable_path": 10, "no_available_path": 1}, apd.SEEN_QUEUED_THEN_FAILED),
        ({"ctrl_reconnect": 4, "no_usable_path": 0}, apd.SEEN_NEITHER),
        ({}, apd.SEEN_NEITHER),
    ],
)
def test_observed_reads_the_two_multipath_messages(classes: dict[str, int], seen: str) -> None:
    assert apd.observed(classes) == seen


def classes_of(*texts: str) -> dict[str, int]:
    """Kernel classes of log lines, as an iteration's record has them (kmsg.py)."""
    log = KernelLogSummary()
    for seq, text in enumerate(texts):
        log.add(KmsgRecord(seq, seq * 1000, 4, text))
    return log.classes


REQUEUE = "block nvme0n1: no usable path - requeuing I/O"
FAILING = "block nvme0n1: no available path - failing I/O"
FAILFAST = "nvme nvme1: failfast expired"
REMOVING = "nvme nvme1: Removing controller..."


def test_the_kernel_lines_land_in_the_classes_observed_reads() -> None:
    classes = classes_of(REQUEUE, FAILFAST, FAILING, REMOVING)
    assert classes["no_usable_path"] == 1 and classes["no_available_path"] == 1
    assert classes["ctrl_failfast"] == 1 and classes["ctrl_delete"] == 1
    assert apd.observed(classes) == apd.SEEN_QUEUED_THEN_FAILED


QUEUE = apd.expect(-1, 1, -1, 5.0)
FAIL_FAST = apd.expect(-1, 1, 2, 5.0)
CTRL_LOSS = apd.expect(2, 1, -1, 5.0)


@pytest.mark.parametrize(
    ("expectation", "eio", "lines", "problems"),
    [
        (QUEUE, 0, (REQUEUE,), []),
        (QUEUE, 4, (REQUEUE, FAILING), ["4 application EIO", "the kernel failed IO"]),
        (QUEUE, 0, (REQUEUE, FAILFAST), ["failfast expired where"]),
        (FAIL_FAST, 7, (REQUEUE, FAILFAST, FAILING), []),
        (FAIL_FAST, 0, (REQUEUE,), ["no application EIO", "no 'failfast expired'"]),
        (FAIL_FAST, 3, (FAILING,), ["no 'failfast expired'"]),
        (CTRL_LOSS, 2, (REQUEUE, REMOVING, FAILING), []),
        (CTRL_LOSS, 2, (REQUEUE,), ["no controller removal"]),
    ],
)
def test_mismatches_name_each_departure(
    expectation: apd.Expectation, eio: int, lines: tuple[str, ...], problems: list[str]
) -> None:
    record = {"app_eio": eio, "kernel_classes": classes_of(*lines)}
    found = apd.mismatches(expectation, record)
    assert len(found) == len(problems), found
    for line, start in zip(found, problems, strict=True):
        assert line.startswith(start), (line, start)


@pytest.mark.parametrize(
    ("eio", "eod", "another_live", "verdict"),
    [
        (0, 0, True, None),
        (0, 5, False, None),
        (3, 0, False, Verdict.EXPECTED_EIO),
        (3, 2, False, Verdict.EXPECTED_EIO),  # all paths down: not a race
        (3, 2, True, Verdict.EIO_RACE),
        (3, 0, True, Verdict.EIO),
    ],
)
def test_an_eio_with_no_path_left_is_expected_not_a_race(
    eio: int, eod: int, another_live: bool, verdict: str | None
) -> None:
    assert apd.eio_verdict(eio, eod, another_live) == verdict


REPO = Path(__file__).resolve().parent.parent
# what each shipped scenario's comments promise, by file name
SCENARIOS = {
    "scenario-all-paths-down-queue.toml": apd.QUEUE,
    "scenario-all-paths-down-failfast.toml": apd.FAIL_FAST,
    "scenario-all-paths-down-failfast-late.toml": apd.QUEUE,
    "scenario-all-paths-down-ctrl-loss.toml": apd.FAIL_CTRL_LOSS,
}


def test_every_all_paths_down_scenario_is_listed() -> None:
    shipped = {p.name for p in (REPO / "configs").glob("scenario-all-paths-down-*.toml")}
    assert shipped == set(SCENARIOS)


@pytest.mark.parametrize(("name", "outcome"), sorted(SCENARIOS.items()))
def test_each_scenario_takes_every_path_down_and_its_knobs_give_its_outcome(
    name: str, outcome: str
) -> None:
    """The first step unlinks every port and holds; the host knobs, over that hold (a lower
    bound of the time down), give the outcome the file promises; a later step brings the
    chosen path back first, and the rest come back after the last step."""
    config = config_mod.load(REPO / "configs" / name)
    first, *rest = config.steps
    assert (first.fault, first.action, first.paths) == ("port_remove", "inject", ("all",))
    assert rest and rest[0].action == "restore" and rest[0].paths == ("chosen",)
    host = config.host
    down_s = first.hold_s
    expectation = apd.expect(
        host.ctrl_loss_tmo, host.reconnect_delay, host.fast_io_fail_tmo, down_s
    )
    assert expectation.outcome == outcome, expectation.why
    if outcome == apd.QUEUE:
        # the slowest way back: the hold, a wait, one reconnect_delay, stays under every timer
        slack = down_s + 2 * host.reconnect_delay + 2
        assert (
            apd.expect(
                host.ctrl_loss_tmo, host.reconnect_delay, host.fast_io_fail_tmo, slack
            ).outcome
            == apd.QUEUE
        )
        assert config.workload.verify
    assert config.campaign.hang_timeout_s > down_s + 10


def test_tally_counts_iterations_per_outcome_and_skips_other_records() -> None:
    records: list[dict[str, Any]] = [
        {"kernel_classes": classes_of(REQUEUE)},
        {"kernel_classes": classes_of(REQUEUE, FAILFAST, FAILING)},
        {"kernel_classes": classes_of(REQUEUE)},
        {"kernel_classes": {}},
        {"kind": "kernel_crash"},  # the VM runner's record, not an iteration
    ]
    assert apd.tally(records) == {
        apd.SEEN_QUEUED: 2,
        apd.SEEN_FAILED: 0,
        apd.SEEN_QUEUED_THEN_FAILED: 1,
        apd.SEEN_NEITHER: 1,
    }

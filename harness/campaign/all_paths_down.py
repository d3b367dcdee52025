"""All paths down, then back: whether the host queues IO or fails it, predicted from the host's
timeout knobs and read back from an iteration's kernel log classes.

What Linux 6.1 does when every controller of a namespace loses its transport (a port removed,
a link down) -- drivers/nvme/host/:

- tcp.c:nvme_tcp_error_recovery_work tears the queues down and moves the controller to
  CONNECTING; requests it had in flight fail over to the head's requeue list
  (multipath.c:nvme_failover_req).
- multipath.c:nvme_ns_head_submit_bio finds no usable path; while
  multipath.c:nvme_available_path sees a controller LIVE, RESETTING or CONNECTING without
  NVME_CTRL_FAILFAST_EXPIRED, the bio waits on the requeue list ("no usable path -
  requeuing I/O"); once none is left, it fails with EIO ("no available path - failing
  I/O").
- core.c:nvme_change_ctrl_state starts the failfast timer on RESETTING -> CONNECTING when
  fast_io_fail_tmo >= 0; core.c:nvme_failfast_work sets NVME_CTRL_FAILFAST_EXPIRED after
  fast_io_fail_tmo seconds ("failfast expired") and kicks the requeue list, so queued and
  new IO fails from then on. Going LIVE again stops the timer and clears the flag.
- tcp.c:nvme_tcp_reconnect_or_remove retries every reconnect_delay seconds while
  fabrics.c:nvmf_should_reconnect allows (max_reconnects = ceil(ctrl_loss_tmo /
  reconnect_delay), fabrics.c:nvmf_parse_options; ctrl_loss_tmo < 0: forever), then deletes
  the controller ("Removing controller..."); when the last path of a head goes, the head
  disk goes too (core.c:nvme_ns_remove -> multipath.c:nvme_mpath_shutdown_disk) and its IO
  fails. The harness then reconnects the paths (faults/__init__.py:FaultInjector.recover): a
  new head.

So an application EIO in such a window is the kernel doing what it was told, not a multipath
race: no other path was there to fail over to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# How the host treats IO while no path is usable (Expectation.outcome).
QUEUE = "queue"  # requeued until a path is back; no EIO
FAIL_FAST = "fail_fast"  # fast_io_fail_tmo expired first: EIO, controllers stay
FAIL_CTRL_LOSS = "fail_ctrl_loss"  # ctrl_loss_tmo expired first: controllers deleted, EIO

# What an iteration's kernel log shows (observed()).
SEEN_QUEUED = "queued"  # "no usable path - requeuing I/O" only
SEEN_FAILED = "failed"  # "no available path - failing I/O" only
SEEN_QUEUED_THEN_FAILED = "queued_then_failed"  # both
SEEN_NEITHER = "neither"  # no all-paths-down message (e.g. no IO came in the window)

# kernel classes (harness/kmsg.py) that tell it
REQUEUE_CLASS = "no_usable_path"
FAIL_CLASS = "no_available_path"
FAILFAST_CLASS = "ctrl_failfast"
DELETE_CLASS = "ctrl_delete"


@dataclass(frozen=True)
class Expectation:
    """What the kernel should do with IO while every path is down for ``down_s`` seconds.

    ``outcome``: QUEUE, FAIL_FAST or FAIL_CTRL_LOSS. ``fail_after_s``: seconds after the
    paths went down when IO starts failing (None for QUEUE). ``eio_expected``: whether an
    application EIO is the kernel's answer here. ``why``: one line with the kernel function.
    """

    outcome: str
    eio_expected: bool
    fail_after_s: float | None
    why: str


def ctrl_loss_after_s(ctrl_loss_tmo: int, reconnect_delay: int) -> float | None:
    """Seconds in CONNECTING before the host deletes the controller (None: never).

    fabrics.c:nvmf_parse_options: max_reconnects = DIV_ROUND_UP(ctrl_loss_tmo,
    reconnect_delay); tcp.c:nvme_tcp_reconnect_or_remove deletes once nr_reconnects reaches
    it, attempts reconnect_delay seconds apart. ctrl_loss_tmo < 0: reconnect forever.
    Raises ValueError for reconnect_delay < 1.
    """
    if reconnect_delay < 1:
        raise ValueError(f"reconnect_delay must be >= 1, got {reconnect_delay}")
    if ctrl_loss_tmo < 0:
        return None
    return float(math.ceil(ctrl_loss_tmo / reconnect_delay) * reconnect_delay)


def expect(
    ctrl_loss_tmo: int, reconnect_delay: int, fast_io_fail_tmo: int, down_s: float
) -> Expectation:
    """The kernel's answer to every path being down ``down_s`` seconds (see the module
    docstring), for the host knobs of a config's [host] section. The timer that expires
    first within ``down_s`` decides; none expiring means the IO is queued."""
    loss = ctrl_loss_after_s(ctrl_loss_tmo, reconnect_delay)
    fast = None if fast_io_fail_tmo < 0 else float(fast_io_fail_tmo)
    if fast is not None and fast < down_s and (loss is None or fast <= loss):
        return Expectation(
            FAIL_FAST,
            True,
            fast,
            f"fast_io_fail_tmo {fast_io_fail_tmo} s < {down_s:g} s down: "
            "core.c:nvme_failfast_work marks every controller FAILFAST_EXPIRED, "
            "multipath.c:nvme_available_path is false, IO fails",
        )
    if loss is not None and loss < down_s:
        return Expectation(
            FAIL_CTRL_LOSS,
            True,
            loss,
            f"ctrl_loss_tmo {ctrl_loss_tmo} s (reconnect_delay {reconnect_delay} s) < "
            f"{down_s:g} s down: tcp.c:nvme_tcp_reconnect_or_remove deletes every "
            "controller, the head goes with its last path, IO fails",
        )
    return Expectation(
        QUEUE,
        False,
        None,
        f"no timer expires within {down_s:g} s down: controllers stay CONNECTING, "
        "multipath.c:nvme_ns_head_submit_bio requeues IO until a path is live again",
    )


def observed(kernel_classes: Mapping[str, int]) -> str:
    """What an iteration's kernel log says the head did (SEEN_*), from its record's
    ``kernel_classes`` (harness/kmsg.py:kernel_class counts). Both messages are
    dev_warn_ratelimited: their counts are not IO counts, only their presence tells."""
    queued = kernel_classes.get(REQUEUE_CLASS, 0) > 0
    failed = kernel_classes.get(FAIL_CLASS, 0) > 0
    if queued and failed:
        return SEEN_QUEUED_THEN_FAILED
    if failed:
        return SEEN_FAILED
    if queued:
        return SEEN_QUEUED
    return SEEN_NEITHER


def mismatches(expectation: Expectation, record: Mapping[str, Any]) -> list[str]:
    """How an iteration's record (a results.jsonl dict) departs from ``expectation``: one
    line per difference, [] when it did what the kernel should. Checks the application
    EIO count and the kernel log classes (``kernel_classes``)."""
    classes: Mapping[str, int] = record.get("kernel_classes") or {}
    seen = observed(classes)
    eio = int(record.get("app_eio", 0))
    problems: list[str] = []
    if expectation.outcome == QUEUE:
        if eio:
            problems.append(f"{eio} application EIO where IO should queue")
        if seen in (SEEN_FAILED, SEEN_QUEUED_THEN_FAILED):
            problems.append("the kernel failed IO ('no available path') where it should queue")
        if classes.get(FAILFAST_CLASS, 0):
            problems.append("failfast expired where no fast_io_fail_tmo should")
        return problems
    if not eio:
        problems.append("no application EIO where the kernel should fail IO")
    if expectation.outcome == FAIL_FAST and not classes.get(FAILFAST_CLASS, 0):
        problems.append("no 'failfast expired' line (core.c:nvme_failfast_work)")
    if expectation.outcome == FAIL_CTRL_LOSS and not classes.get(DELETE_CLASS, 0):
        problems.append("no controller removal line (tcp.c:nvme_tcp_reconnect_or_remove)")
    return problems


def eio_verdict(app_eio: int, race_signs: int, another_path_live: bool) -> str | None:
    """The verdict of an iteration with application EIO, or None without EIO: with no other
    path live (all paths down) an EIO is ``expected_eio`` even when a per-path disk also
    showed the EOD signature (a path going away while IO still reached it: nothing to fail
    over to either way); the race (``eio_race``) needs another live path and a witness of
    its bios (``race_signs``: EOD-race kernel lines plus the block-layer witness's bios), as
    results.py:is_race_iteration says; else ``eio``."""
    from harness.core.results import Verdict

    if not app_eio:
        return None
    if not another_path_live:
        return Verdict.EXPECTED_EIO
    if race_signs:
        return Verdict.EIO_RACE
    return Verdict.EIO


def tally(records: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Iterations per SEEN_* outcome over results.jsonl records (iterations only: records
    without ``kernel_classes`` are skipped), every outcome a key: what a run's summary would
    say about queue-or-fail."""
    counts = dict.fromkeys((SEEN_QUEUED, SEEN_FAILED, SEEN_QUEUED_THEN_FAILED, SEEN_NEITHER), 0)
    for record in records:
        classes = record.get("kernel_classes")
        if isinstance(classes, Mapping):
            counts[observed(classes)] += 1
    return counts

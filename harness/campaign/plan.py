"""A campaign's plan: which fault on which path in every iteration, and the seeded jitters.

Reproducible from ``campaign.seed``. The path choices "current" and "other" are decided at
fault time from the IO the per-path disks carried just before it (:func:`resolve_path`).
"""

from __future__ import annotations

import random

from harness.campaign.steps import sequence_name
from harness.config.campaign import DYNAMIC_PATH_CHOICES, CampaignConfig
from harness.core.errors import HarnessError
from harness.faults import FaultAction


def plan(config: CampaignConfig) -> list[FaultAction]:
    """The faults and paths of every iteration, reproducible from the seed. For the path
    choices "current" and "other" the path is decided at fault time (``resolve_path``); the
    plan holds path 0 for them."""
    rng = random.Random(config.campaign.seed)
    # a [[steps]] campaign is one "fault" (its sequence) per iteration
    faults = (sequence_name(config.steps),) if config.steps else config.campaign.faults
    paths = config.target.paths
    actions = []
    for index in range(config.campaign.iterations):
        if config.campaign.order == "random":
            kind = rng.choice(faults)
        else:
            kind = faults[index % len(faults)]
        choice = config.campaign.path
        if choice == "first":
            path = 0
        elif choice == "last":
            path = paths - 1
        elif choice == "random":
            path = rng.randrange(paths)
        elif choice in DYNAMIC_PATH_CHOICES:
            path = 0
        else:  # alternate: each fault kind walks over the paths in turn
            path = (index // len(faults)) % paths
        actions.append(FaultAction(str(kind), path))
    return actions


def resolve_path(choice: str, before: list[int], after: list[int]) -> tuple[int, int]:
    """(path to fault, current path) from each path's completed IOs at two instants.

    The current path is the one whose per-path disks completed the most IOs in between (with
    iopolicy numa: all of them, multipath.c:nvme_find_path's cached current_path; ties go
    to the lower index). ``choice`` "current" faults it, "other" the path with the fewest.
    """
    if not before or len(before) != len(after):
        raise HarnessError("no per-path IO counts to find the current path from")
    carried = [max(0, a - b) for a, b in zip(after, before, strict=True)]
    current = max(range(len(carried)), key=lambda p: (carried[p], -p))
    if choice == "current":
        return current, current
    others = [p for p in range(len(carried)) if p != current]
    return min(others, key=lambda p: (carried[p], p)), current


def jitters(config: CampaignConfig) -> list[float]:
    rng = random.Random(config.campaign.seed * 7919 + 1)
    return [rng.uniform(0, config.campaign.jitter_s) for _ in range(config.campaign.iterations)]

"""Our blktests case (contrib/blktests/tests/nvme/NNN), run for real by blktests' ./check in
this kernel: it must fail on the unfixed nvme modules (the race: fio sees EIO while the
other path is live) and pass on fixed and distro (Debian 6.1.192 has the fix).

Needs a blktests checkout (git clone https://github.com/osandov/blktests): the environment
variable NVMF_HARNESS_BLKTESTS or ``--blktests DIR`` (after ``--`` of vm-pytest); skipped
otherwise. Extended: about a minute under TCG, left out of scripts/test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.bed import blktests, modprobe_variant, variants
from harness.campaign import blktests_run

ENV = "NVMF_HARNESS_BLKTESTS"
pytestmark = pytest.mark.extended


def checkout(request: pytest.FixtureRequest) -> Path:
    given = str(request.config.getoption("--blktests") or os.environ.get(ENV, ""))
    if not given:
        pytest.skip(f"no blktests checkout: set {ENV} or --blktests ({blktests.GET_HINT})")
    return blktests.check_checkout(Path(given))


def test_our_blktests_case(
    request: pytest.FixtureRequest, loaded_variant: str, results_dir: Path
) -> None:
    plan = blktests_run.GuestPlan(
        checkout=checkout(request),
        cases=(blktests.OURS,),
        variant=loaded_variant,
        outdir=results_dir / "blktests",
        witness=False,
    )
    try:
        records = blktests_run.run_plan(plan, print, modprobe_variant.install)
    finally:
        modprobe_variant.CONF.unlink(missing_ok=True)
        variants.load_variant(loaded_variant)  # as the session had it
    [record] = records
    assert record.modules_seen == [loaded_variant], record
    expected = "fail" if loaded_variant == "unfixed" else "pass"
    assert record.status == expected, f"{record.status} ({record.reason}); see {plan.outdir}"

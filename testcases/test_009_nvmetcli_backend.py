"""target.backend = "nvmetcli", for real: refused while nvmet holds a target the run did not
create (nvmetcli restore would clear it), and, where nvmetcli is there (installed, or
fetched into build/tools/ by scripts/setup on Debian 12 and 13), a test bed built
by `nvmetcli restore` with both paths live and nothing left after teardown."""

from __future__ import annotations

import pytest

from harness.bed.target import NVMET, NvmetTarget, SubsystemSpec, TargetSpec, load_modules
from harness.bed.testbed import Testbed, new_run_id
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.errors import SafetyError
from harness.core.procs import find_tool

FOREIGN_NQN = "nqn.2026-11.io.decoy:someone-elses-target"


def nvmetcli_config(smoke_config: CampaignConfig) -> CampaignConfig:
    return config_mod.override(smoke_config, "target", backend="nvmetcli")


def test_nvmetcli_backend_refuses_to_clear_a_foreign_target(
    smoke_config: CampaignConfig,
) -> None:
    bed = Testbed(nvmetcli_config(smoke_config), new_run_id())
    load_modules()  # nvmet, for the foreign target
    foreign = NvmetTarget(bed.kfs)
    try:
        foreign.apply(TargetSpec(subsystems=(SubsystemSpec(FOREIGN_NQN, allow_any_host=True),)))
        with pytest.raises(SafetyError, match="nvmetcli restore would remove"):
            bed.up()
        assert bed.kfs.exists(f"{NVMET}/subsystems/{FOREIGN_NQN}")  # untouched
    finally:
        assert not bed.down()
        assert not foreign.teardown()


@pytest.mark.skipif(
    find_tool("nvmetcli") is None,
    reason="no nvmetcli (Debian 12 and 13 lack the package: sudo scripts/setup fetches sid's)",
)
def test_nvmetcli_backend_builds_the_test_bed(smoke_config: CampaignConfig) -> None:
    bed = Testbed(nvmetcli_config(smoke_config), new_run_id())
    try:
        device = bed.up()
        assert len(device.live_controllers()) == 2
        assert bed.kfs.read(f"{NVMET}/subsystems/{bed.nqn}/namespaces/1/enable") == "1"
    finally:
        assert not bed.down()

"""What a host command tells the VM runner (harness/vm/campaigns.py): how to boot the kernel
under test (:class:`VmOptions`) and what the guest's ``nvmf-harness run`` is told beside its
config (:class:`RunOptions`). The command line makes them of its options; this module is
kept light (it imports the config layer only), so that the parser can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config import campaign as config_mod


@dataclass(frozen=True)
class VmOptions:
    """How a host command boots the kernel under test.

    ``kernel``: kernel image file (None: the one scripts/setup prepared, checked when the
    VM spec is made); ``memory``: guest memory as qemu takes it (``2G``); ``cpus``: virtual
    CPUs; ``accel``: ``auto``, ``kvm`` or ``tcg``; ``timeout_s``: seconds the VM may run
    before it is killed (None: the command's own budget); ``boot_timeout_s``: seconds to
    the guest's first line (None: 60 with KVM, 180 with TCG); ``vm_per_run``: one boot per
    campaign instead of all back to back in one boot.
    """

    kernel: str | None = None
    memory: str = "2G"
    cpus: int = 2
    accel: str = "auto"
    timeout_s: float | None = None
    boot_timeout_s: float | None = None
    vm_per_run: bool = False


@dataclass(frozen=True)
class RunOptions:
    """What the guest's ``nvmf-harness run`` is told beside its config and module variant.

    ``iterations`` (None or 0: the config's) and ``seed`` (None: the config's) override the
    campaign's; ``widen`` turns the BPF widener on; ``modules``: the module build cache of
    scripts/build-variants (None: build/modules); ``backend``: target.backend override
    (None: the config's); ``stop_on_failure``: end at the first failing verdict.
    """

    iterations: int | None = None
    seed: int | None = None
    widen: bool = False
    modules: Path | None = None
    backend: str | None = None
    stop_on_failure: bool = False

    def load(self, config_path: Path) -> config_mod.CampaignConfig:
        """The config file as the guest's run will see it; ConfigError when it is broken."""
        return self.apply(config_mod.load(config_path))

    def apply(self, config: config_mod.CampaignConfig) -> config_mod.CampaignConfig:
        """``config`` with these options' overrides (ConfigError for a refused value)."""
        return config_mod.with_run_options(
            config,
            iterations=self.iterations,
            seed=self.seed,
            widen=self.widen,
            backend=self.backend,
        )

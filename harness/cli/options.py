"""Options several commands share, and the typed records the front ends make of them
(harness/vm/campaigns.py VmOptions and RunOptions)."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.config import campaign as config_mod
from harness.core.paths import CONFIGS_DIR
from harness.vm.options import RunOptions, VmOptions

DEFAULT_CONFIG = CONFIGS_DIR / "smoke.toml"


def add_campaign_options(parser: argparse.ArgumentParser) -> None:
    """The options of a campaign: ``run`` and the commands that run it in the VM."""
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="campaign TOML file")
    parser.add_argument("--out", required=True, help="results directory")
    parser.add_argument("--iterations", type=int, help="override campaign.iterations")
    parser.add_argument("--seed", type=int, help="override campaign.seed")
    parser.add_argument(
        "--stop-on-failure", action="store_true", help="end at the first failing verdict"
    )
    parser.add_argument("--widen", action="store_true", help="enable the BPF race widener")
    parser.add_argument("--variant", choices=config_mod.VARIANTS, help="nvme module variant")
    parser.add_argument(
        "--modules", help="module build cache of scripts/build-variants (default: build/modules)"
    )
    parser.add_argument(
        "--backend",
        choices=config_mod.TARGET_BACKENDS,
        help="override target.backend (nvmetcli: `nvmetcli restore`, where nvmet is empty)",
    )


def add_vm_options(parser: argparse.ArgumentParser) -> None:
    """The options of a command that boots the kernel under test."""
    parser.add_argument(
        "--kernel",
        help="kernel image (default: the one scripts/setup prepared, build/prepared-kernel.json)",
    )
    parser.add_argument("--memory", default="2G")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument(
        "--accel",
        choices=config_mod.ACCELS,
        default="auto",
        help="auto: KVM when it works here (a KVM boot that stays silent is remembered and "
        "booted again under TCG), else TCG",
    )
    parser.add_argument("--timeout", type=float, help="seconds before the VM is killed")
    parser.add_argument(
        "--boot-timeout",
        type=float,
        help="seconds to the guest's first line before the VM is ended (default: 60 with "
        "KVM, 180 with TCG)",
    )


def vm_options(args: argparse.Namespace) -> VmOptions:
    """The VM options of ``add_vm_options`` (and ``--vm-per-run`` where a command has it)."""
    return VmOptions(
        kernel=args.kernel,
        memory=args.memory,
        cpus=args.cpus,
        accel=args.accel,
        timeout_s=args.timeout,
        boot_timeout_s=args.boot_timeout,
        vm_per_run=getattr(args, "vm_per_run", False),
    )


def run_options(args: argparse.Namespace) -> RunOptions:
    """What a VM command tells the guest's ``run``: the campaign options it has of
    ``add_campaign_options`` (the others as ``run`` leaves them)."""
    return RunOptions(
        iterations=args.iterations,
        seed=args.seed,
        widen=getattr(args, "widen", False),
        modules=Path(args.modules) if args.modules else None,
        backend=getattr(args, "backend", None),
        stop_on_failure=getattr(args, "stop_on_failure", False),
    )

"""``blktests`` (on the host: blktests cases in the VM, their verdict beside the harness's
witnesses) and ``blktests-guest`` (what the VM runs for it, as root).

Each front end imports the layers it drives when it runs (harness/cli/guest.py says why).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from harness.cli.options import add_vm_options, vm_options
from harness.config import campaign as config_mod
from harness.core.console import say
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode

CASES_HELP = (
    "cases to run: 'ours' (contrib/blktests, installed as the next free nvme number) and/or "
    "blktests names such as nvme/040 (default: ours)"
)
BLKTESTS_HELP = "a blktests checkout (git clone https://github.com/osandov/blktests)"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``blktests`` and ``blktests-guest``."""
    host = sub.add_parser(
        "blktests", help="blktests cases in the VM on a module variant, beside the witnesses"
    )
    _add_common(host)
    add_vm_options(host)
    host.set_defaults(func=cmd_blktests)
    guest = sub.add_parser("blktests-guest", help="(in the VM, root) what blktests runs there")
    _add_common(guest)
    guest.set_defaults(func=cmd_blktests_guest)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cases", nargs="*", default=["ours"], help=CASES_HELP)
    parser.add_argument("--blktests", required=True, help=BLKTESTS_HELP)
    parser.add_argument("--out", required=True, help="results directory")
    parser.add_argument(
        "--variant", choices=config_mod.VARIANTS, default="unfixed", help="nvme module variant"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each case")
    parser.add_argument("--modules", help="module build cache (default: build/modules)")
    parser.add_argument(
        "--no-witness", action="store_true", help="count the kernel line only, no bpftrace"
    )
    parser.add_argument(
        "--case-timeout", type=float, default=600.0, help="seconds one ./check run may take"
    )


def cmd_blktests(args: argparse.Namespace) -> int:
    """``blktests``: boot, run the cases, print the table (harness/vm/blktests.py)."""
    from harness.vm import blktests as vm_blktests  # lazy: import cost (module docstring)

    options = vm_blktests.BlktestsOptions(
        checkout=Path(args.blktests),
        cases=tuple(args.cases),
        variant=args.variant,
        repeat=args.repeat,
        modules=Path(args.modules) if args.modules else None,
        witness=not args.no_witness,
        case_timeout_s=args.case_timeout,
    )
    return vm_blktests.run_blktests(vm_options(args), options, Path(args.out), say)


def cmd_blktests_guest(args: argparse.Namespace) -> int:
    """``blktests-guest``: in the VM, the cases with the witnesses; exit 1 when one failed."""
    from harness.bed import blktests, modprobe_variant  # lazy: import cost (module docstring)
    from harness.campaign import blktests_run

    if os.geteuid() != 0:
        raise HarnessError("blktests-guest needs root", hint="nvmf-harness blktests boots the VM")
    modprobe_variant.require_guest()
    modules = Path(args.modules).resolve() if args.modules else None
    plan = blktests_run.GuestPlan(
        checkout=blktests.check_checkout(Path(args.blktests)),
        cases=tuple(args.cases),
        variant=args.variant,
        outdir=Path(args.out).resolve(),
        repeat=args.repeat,
        modules=modules,
        witness=not args.no_witness,
        case_timeout_s=args.case_timeout,
    )
    records = blktests_run.run_plan(
        plan, say, lambda variant: modprobe_variant.install(variant, modules)
    )
    failing = {"fail", "error", "timeout"}
    return ExitCode.FAILED if any(r.status in failing for r in records) else ExitCode.OK

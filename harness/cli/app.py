"""nvmf-harness: the command line.

In the VM, as root (guest.py):
    nvmf-harness run      --config F --out DIR     campaign in this kernel
    nvmf-harness floor    --out DIR [--repeat N]   bare path operations timed
    nvmf-harness run-plan PLAN                     campaigns of a plan back to back (compare...)
Booting the kernel under test from the host (campaigns.py):
    nvmf-harness vm       --config F --out DIR     boot a kernel with virtme-ng, run it inside
    nvmf-harness compare  --config F --out DIR     unfixed vs fixed modules, one boot for both
    nvmf-harness scenarios CONFIG... --out DIR     hit rate per config, one boot for all
    nvmf-harness matrix   --release REL... --out DIR  per Debian release: affected? fixed?
                          [--source SRC] [--image debian:REL]  kernels built here, Debian's images
    nvmf-harness prove-fixed --out DIR             a variant until N clean iterations (resumes)
    nvmf-harness vm-pytest --out DIR [--workers N] [-- ARGS]  pytest testcases/ in N VMs
blktests (blktests.py):
    nvmf-harness blktests --blktests DIR --out DIR [CASE...]  blktests cases in the VM on a
                                                   variant, beside the harness's witnesses
Kernels and faults (kernels.py):
    nvmf-harness history  [--release R]            which Debian kernels were ever affected
    nvmf-harness faults   [--release R]            every fault, whether a kernel has its needs
    nvmf-harness check-source DIR|TARBALL          the fix, bio_check_eod()'s shape, a prediction
    nvmf-harness build-kernel SOURCE [--both]      a kernel from a tree, stock and fix toggled
    nvmf-harness build-variants / build-nvmet      the out-of-tree nvme modules of a release
    nvmf-harness releases [REL...] [--facts]       Debian releases and their own sources
    nvmf-harness kernel choose|record|current|show the kernel under test (scripts/setup)
Results (results.py):
    nvmf-harness report   DIR                      per-fault table of a results directory
    nvmf-harness report   --merge DIR... --out OUT  one report of CI matrix jobs (0/1/3)
    nvmf-harness baseline accept DIR... [--out B]  failure rates the nightly accepts
The machine and the harness (ops.py):
    nvmf-harness clean    [--dry-run]              remove what earlier runs left
    nvmf-harness doctor                            check tools, modules, permissions
    nvmf-harness remote   --host H [--fetch R:L] -- ARGS   nvmf-harness ARGS on H over SSH
    nvmf-harness selftest-crash --out DIR          the VM runner's crash handling (and
    nvmf-harness selftest-kvm-fallback --out DIR   its fallback from KVM to TCG)
Measuring the harness (bench.py):
    nvmf-harness bench    --out DIR                figures of merit (benchmarks/README.md)
    nvmf-harness bench-kernel-log --out DIR        main config: cycle and kernel-log cost,
                          [--revision REV]...      quiet and busy host, per harness revision
Starting points (new.py):
    nvmf-harness new-fault NAME / new-testcase NAME  files whose comments state the contract

Errors a person can fix are printed as one line with what to do; no tracebacks
(errors.py). Exit statuses: harness/core/exits.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType

from harness.cli import bench, blktests, campaigns, guest, kernels, new, nightly, ops, results
from harness.cli.errors import run_command
from harness.core.console import PROG

COMMAND_GROUPS = (
    guest,
    campaigns,
    blktests,
    kernels,
    results,
    nightly,
    ops,
    bench,
    new,
)  # in the order --help lists them


def install_sigterm_handler() -> None:
    """SIGTERM stops a campaign like Ctrl-C does (restore faults, tear down, summary).

    Only in this process: pyroute2 forks helpers (NetNS) and stops them with SIGTERM; a
    forked child must die as usual, not run the campaign's teardown a second time.
    """
    main_pid = os.getpid()

    def handler(signum: int, _frame: FrameType | None) -> None:
        if os.getpid() != main_pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each sets ``func``, its front end."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: sys.argv); its exit status (harness/core/
    exits.py). argparse exits 2 itself on arguments it refuses."""
    args = build_parser().parse_args(argv)
    install_sigterm_handler()
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())

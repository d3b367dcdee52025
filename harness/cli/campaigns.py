"""The commands that boot the kernel under test from the host: ``vm`` (one campaign),
``compare`` (stock vs patched), ``scenarios`` (hit rate per config), ``matrix`` (per Debian
release), ``prove-fixed`` (clean iterations until proven) and ``vm-pytest`` (testcases/).

The experiments live in harness/analysis/experiments.py, the VM runs in harness/vm/; each
front end imports them when it runs, not at the top: the analysis loads scipy (~0.4 s) and
``nvmf-harness --help`` must stay fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.cli.options import (
    DEFAULT_CONFIG,
    add_campaign_options,
    add_vm_options,
    run_options,
    vm_options,
)
from harness.config import campaign as config_mod
from harness.core.console import say
from harness.core.exits import ExitCode
from harness.vm.campaigns import kernel_image

PROVE_CONFIG = DEFAULT_CONFIG.parent / "prove-ns-remove-path.toml"


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``vm``, ``compare``, ``scenarios``, ``matrix``, ``prove-fixed`` and
    ``vm-pytest``."""
    vm = sub.add_parser("vm", help="boot a kernel in a VM and run the campaign inside")
    add_campaign_options(vm)
    add_vm_options(vm)
    vm.set_defaults(func=cmd_vm)
    _add_compare(sub)
    _add_scenarios(sub)
    _add_matrix(sub)
    _add_prove_fixed(sub)
    _add_vm_pytest(sub)


def _add_compare(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmp_ = sub.add_parser("compare", help="stock vs patched: one campaign per module variant")
    add_campaign_options(cmp_)
    add_vm_options(cmp_)
    cmp_.add_argument("--stock", default="unfixed", choices=config_mod.VARIANTS)
    cmp_.add_argument("--patched", default="fixed", choices=config_mod.VARIANTS)
    cmp_.add_argument(
        "--stock-kernel",
        help="compare two kernels instead of two module variants: the stock one (a kdir of "
        "build-kernel or an image), each with its own modules in its own boot",
    )
    cmp_.add_argument("--patched-kernel", help="the patched kernel (with --stock-kernel)")
    cmp_.add_argument(
        "--vm-per-run",
        action="store_true",
        help="boot one VM per variant (default: both back to back in one boot)",
    )
    cmp_.add_argument(
        "--alpha",
        type=float,
        default=0.01,
        help="level of the one-sided Fisher test: REPRODUCED only when p < alpha "
        "(with --sequential: over all looks together)",
    )
    cmp_.add_argument(
        "--sequential",
        "--until-decided",
        action="store_true",
        help="run batches until the verdict is decided or a cap is hit (group-sequential, "
        "each look at alpha / looks); results in OUT/batch-NN/",
    )
    cmp_.add_argument(
        "--batch", type=int, default=10, help="iterations per variant per batch (--sequential)"
    )
    cmp_.add_argument(
        "--max-iterations",
        type=int,
        default=60,
        help="cap of iterations per variant (--sequential; looks = max-iterations / batch)",
    )
    cmp_.add_argument(
        "--max-minutes", type=float, help="no batch starts that would end later (--sequential)"
    )
    cmp_.set_defaults(func=cmd_compare)


def _add_scenarios(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    scn = sub.add_parser("scenarios", help="hit rate of each named config on one variant")
    scn.add_argument("configs", nargs="+", help="campaign TOML files")
    scn.add_argument("--out", required=True)
    scn.add_argument("--iterations", type=int)
    scn.add_argument("--seed", type=int)
    scn.add_argument("--widen", action="store_true")
    scn.add_argument("--variant", choices=config_mod.VARIANTS, default="unfixed")
    scn.add_argument("--modules")
    scn.add_argument(
        "--vm-per-run",
        action="store_true",
        help="boot one VM per config (default: all back to back in one boot)",
    )
    add_vm_options(scn)
    scn.set_defaults(func=cmd_scenarios)


def _add_matrix(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mtx = sub.add_parser(
        "matrix", help="per Debian kernel release: both variants from its source, a verdict"
    )
    add_campaign_options(mtx)
    # config: harness.analysis.matrix.default_config(); modules: build/matrix-modules
    mtx.set_defaults(config=None)
    add_vm_options(mtx)
    mtx.add_argument(
        "--release", action="append", help="kernel release, e.g. 6.1.0-47-amd64 (repeatable)"
    )
    mtx.add_argument(
        "--all-installed", action="store_true", help="every installed linux-image-* release"
    )
    mtx.add_argument(
        "--source",
        action="append",
        help="a kernel source built here as shipped and with the fix toggled (repeatable): "
        "a git tree, a directory, a tarball or debian:linux-source-X.Y[=V] (e.g. 7.3, or "
        "linux-source-6.12=6.12.117-1 from trixie)",
    )
    mtx.add_argument(
        "--image",
        action="append",
        help="a Debian kernel image booted as shipped with its own modules (repeatable): "
        "debian:RELEASE[=V], e.g. debian:7.3.4+deb13-amd64; downloaded under build/, never "
        "installed; compared with the unfixed build of a --source of the same version",
    )
    mtx.add_argument("--vm-per-run", action="store_true", help="boot one VM per variant")
    mtx.add_argument(
        "--report-only",
        action="store_true",
        help="boot nothing: rebuild the table from the results already in --out (every "
        "release there unless --release; still checks and builds each release's variants)",
    )
    mtx.set_defaults(func=cmd_matrix)


def _add_prove_fixed(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prv = sub.add_parser(
        "prove-fixed",
        help="run a variant until N clean iterations or the first failure (resumable)",
    )
    prv.add_argument(
        "--config",
        default=str(PROVE_CONFIG),
        help="campaign TOML file (default: configs/prove-ns-remove-path.toml)",
    )
    prv.add_argument("--out", required=True, help="results directory (the same one resumes)")
    prv.add_argument("--iterations", type=int, help="clean iterations to reach (default 1000)")
    prv.add_argument("--seed", type=int, help="override campaign.seed")
    prv.add_argument(
        "--variant", choices=config_mod.VARIANTS, default="fixed", help="default: fixed"
    )
    prv.add_argument("--modules", help="module build cache (default: build/modules)")
    add_vm_options(prv)
    prv.set_defaults(func=cmd_prove_fixed, widen=False, backend=None)


def _add_vm_pytest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    vmp = sub.add_parser("vm-pytest", help="run pytest testcases/ inside the VM")
    vmp.add_argument("--out", required=True)
    add_vm_options(vmp)
    vmp.add_argument(
        "--workers",
        type=int,
        default=1,
        help="boot N VMs at once, each running one group of the testcases (pytest-split); "
        "worth it only with the cores for N VMs: on 2 cores under TCG 2 took as long as 1",
    )
    vmp.add_argument("pytest_args", nargs=argparse.REMAINDER)
    vmp.set_defaults(func=cmd_vm_pytest)


def cmd_vm(args: argparse.Namespace) -> int:
    """``vm``: one campaign in one boot; the guest's exit status (3 when the VM failed)."""
    from harness.vm import campaigns  # lazy: import cost (module docstring)

    run = run_options(args)
    config_path = Path(args.config)
    config = run.load(config_path)  # fail here, not in the guest, on a broken config
    outdir = campaigns.fresh_outdir(Path(args.out))
    planned = campaigns.PlannedCampaign(config_path, config, outdir, args.variant)
    return campaigns.campaign_in_vm(vm_options(args), run, planned, say)


def cmd_compare(args: argparse.Namespace) -> int:
    """``compare``: stock vs patched (experiments.compare_variants). Exit 0 only for
    REPRODUCED AND FIXED, 1 for every other verdict, 3 when neither variant ran an
    iteration (the VM failed)."""
    from harness.analysis import experiments  # lazy: import cost (module docstring)

    options = experiments.CompareOptions(
        stock=args.stock,
        patched=args.patched,
        alpha=args.alpha,
        sequential=args.sequential,
        batch=args.batch,
        max_iterations=args.max_iterations,
        max_minutes=args.max_minutes,
        stock_kernel=args.stock_kernel and kernel_image(args.stock_kernel),
        patched_kernel=args.patched_kernel and kernel_image(args.patched_kernel),
    )
    return experiments.compare_variants(
        Path(args.config), Path(args.out), options, vm_options(args), run_options(args), say
    )


def cmd_scenarios(args: argparse.Namespace) -> int:
    """``scenarios``: each named config in a VM on one variant; the hit-rate table."""
    from harness.analysis import experiments  # lazy: import cost (module docstring)

    return experiments.run_scenarios(
        [Path(config) for config in args.configs],
        Path(args.out),
        args.variant or "unfixed",
        vm_options(args),
        run_options(args),
        say,
    )


def cmd_matrix(args: argparse.Namespace) -> int:
    """``matrix``: per Debian kernel release, both variants from its own source, a verdict.
    Exit 0 when every release got a verdict, 1 when one is inconclusive."""
    from harness.analysis import experiments, matrix  # lazy: import cost (module docstring)
    from harness.report import matrix_page

    options = experiments.MatrixOptions(
        releases=tuple(args.release or ()),
        all_installed=args.all_installed,
        report_only=args.report_only,
        config=Path(args.config) if args.config else None,
        sources=tuple(args.source or ()),
        images=tuple(args.image or ()),
    )
    outdir = Path(args.out).resolve()
    results = experiments.run_matrix(outdir, options, vm_options(args), run_options(args), say)
    page = matrix_page.write(results, outdir)
    say(f"matrix: {page} (also .md, .json, .txt)")
    undecided = [r for r in results if r.verdict == matrix.ReleaseVerdict.INCONCLUSIVE]
    return ExitCode.FAILED if undecided else ExitCode.OK


def cmd_prove_fixed(args: argparse.Namespace) -> int:
    """``prove-fixed``: a variant until --iterations clean iterations or the first failure,
    in parts that resume. Exit 0 proven, 1 a failure found, 3 infrastructure."""
    from harness.analysis import experiments  # lazy: import cost (module docstring)

    return experiments.prove_fixed(
        Path(args.config), Path(args.out), args.variant, vm_options(args), run_options(args), say
    )


def cmd_vm_pytest(args: argparse.Namespace) -> int:
    """``vm-pytest``: pytest testcases/ in one VM or in --workers VMs; pytest's exit status
    (3 when the VM died)."""
    from harness.vm import testcases  # lazy: import cost (module docstring)

    return testcases.run_testcases(
        vm_options(args), Path(args.out), args.pytest_args, args.workers, say
    )

"""nvmf-harness: the command line.

    nvmf-harness run      --config F --out DIR     campaign in this kernel (root, in the VM)
    nvmf-harness floor    --out DIR [--repeat N]   bare path operations timed (root, in the VM)
    nvmf-harness vm       --config F --out DIR     boot a kernel with virtme-ng, run it inside
    nvmf-harness compare  --config F --out DIR     unfixed vs fixed modules, one boot for both
    nvmf-harness scenarios CONFIG... --out DIR     hit rate per config, one boot for all
    nvmf-harness matrix   --release REL... --out DIR  per Debian release: affected? fixed?
    nvmf-harness vm-pytest --out DIR [--workers N] [-- ARGS]  pytest testcases/ in N VMs
    nvmf-harness report   DIR                      per-fault table of a results directory
    nvmf-harness report   --merge DIR... --out OUT  one report of CI matrix jobs (0/1/3)
    nvmf-harness clean    [--dry-run]              remove what earlier runs left
    nvmf-harness history  [--release R]            which Debian kernels were ever affected
    nvmf-harness doctor                            check tools, modules, permissions
    nvmf-harness remote   --host H [--fetch R:L] -- ARGS   nvmf-harness ARGS on H over SSH

Errors a person can fix are printed as one line with what to do; no tracebacks.

The experiments live in harness/analysis/experiments.py, the VM runs in harness/vm/; the
front ends here import the layers they drive when they run, not at the top (noted "lazy:
import cost"): every command, --help too, loads this module, and the analysis alone loads
scipy (~0.4 s), the HTML report matplotlib, remote paramiko.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from harness.bed import cleanup
from harness.bed.testbed import Testbed, new_run_id
from harness.config import campaign as config_mod
from harness.core.console import PROG, say
from harness.core.errors import ConfigError, HarnessError
from harness.core.exits import ExitCode
from harness.core.kernelfs import KernelFs
from harness.core.paths import CONFIGS_DIR
from harness.core.results import (
    RESULTS_FILE,
    IterationRecord,
    exit_status,
    is_iteration,
    read_records,
    render_table,
    summarize,
)
from harness.vm.options import RunOptions, VmOptions

# --- options -----------------------------------------------------------------------------------

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


# --- errors ------------------------------------------------------------------------------------

Command = Callable[[argparse.Namespace], int]
"""A command's front end: its parsed arguments in, its exit status out."""


def run_command(command: Command, args: argparse.Namespace) -> int:
    """``command(args)``'s exit status, or the status of the error it raised, said in one
    line on stderr (``nvmf-harness: error: ...``)."""
    started = time.monotonic()
    try:
        return command(args)
    except ConfigError as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except HarnessError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return ExitCode.INFRA
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return ExitCode.INTERRUPTED


def usage_error(message: str) -> int:
    """Say ``message`` as a usage error on stderr; returns ExitCode.USAGE."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return ExitCode.USAGE


# --- guest -------------------------------------------------------------------------------------


def _add_guest_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``run``, ``floor`` and ``run-plan``."""
    run = sub.add_parser("run", help="run a campaign in this kernel (root)")
    add_run_arguments(run)
    run.set_defaults(func=cmd_run)
    flr = sub.add_parser("floor", help="time bare path operations, idle or under IO (root)")
    flr.add_argument("--config", default=str(DEFAULT_CONFIG), help="campaign TOML file")
    flr.add_argument("--out", required=True, help="directory for floor.json")
    flr.add_argument("--repeat", type=int, default=5, help="repetitions of each operation")
    flr.add_argument("--path", type=int, default=0, help="which path to operate on")
    flr.add_argument("--ops", help="comma-separated subset of the operations (default: all)")
    flr.add_argument(
        "--under-io",
        action="store_true",
        help="time them while the config's fio and passthrough readers run, each on the path "
        "carrying the IO (default ops: those of the config's faults)",
    )
    flr.add_argument("--variant", choices=config_mod.VARIANTS, help="nvme module variant")
    flr.add_argument("--modules", help="module build cache (default: build/modules)")
    flr.set_defaults(func=cmd_floor)
    plan = sub.add_parser(
        "run-plan", help="campaigns of a plan file back to back (root, in the VM; used by compare)"
    )
    plan.add_argument("plan", help="plan JSON written by compare/scenarios")
    plan.set_defaults(func=cmd_run_plan)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``run``."""
    add_campaign_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no per-iteration lines, no table")
    parser.add_argument("--json", action="store_true", help="print each record as a JSON line")


def load_config(args: argparse.Namespace) -> config_mod.CampaignConfig:
    """``--config`` with the overrides of the options ``args`` has (``--iterations``,
    ``--seed``, ``--widen``, ``--backend``); ConfigError when it is broken."""
    return config_mod.with_run_options(
        config_mod.load(Path(args.config)),
        iterations=getattr(args, "iterations", None),
        seed=getattr(args, "seed", None),
        widen=getattr(args, "widen", False),
        backend=getattr(args, "backend", None),
    )


def cmd_run(args: argparse.Namespace) -> int:
    """``run``: a campaign in this kernel (root); the exit status of its verdicts."""
    from harness.campaign.runner import Campaign  # lazy: import cost (see the top)
    from harness.vm.campaigns import fresh_outdir

    config = load_config(args)
    if os.geteuid() != 0:
        raise HarnessError("run needs root", hint="run it inside the VM: nvmf-harness vm ...")
    outdir = fresh_outdir(Path(args.out))
    variant = _load_variant(args, config)
    campaign = Campaign(
        config,
        outdir,
        variant=variant,
        on_iteration=_progress_printer(args),
        widener_factory=_widener_factory(config, outdir),
        stop_on_failure=getattr(args, "stop_on_failure", False),
    )
    say(
        f"campaign {config.campaign.name}: {config.campaign.iterations} iterations of "
        f"{faults_said(config)} on {campaign.kernel.release} "
        f"({variant}, nvme_core {campaign.kernel.srcversion or '?'}) -> {outdir}"
    )
    try:
        campaign.run()
    except KeyboardInterrupt:
        say(f"interrupted: faults restored, test bed removed, partial results in {outdir}")
        return ExitCode.INTERRUPTED
    records = list(read_records(outdir / RESULTS_FILE))
    if not args.quiet:
        print(render_table(summarize(records)), flush=True)
    if campaign.stop_reason:
        say(f"stopped early: {campaign.stop_reason}")
    return exit_status(records)


def faults_said(config: config_mod.CampaignConfig) -> str:
    """``ctrl_delete, ctrl_reset``, or for a [[steps]] campaign ``the sequence
    port_remove inject [0] -> ctrl_delete inject [0]``."""
    if not config.steps:
        return ", ".join(config.campaign.faults)
    said = [f"{step.fault} {step.action} {list(step.paths)}" for step in config.steps]
    return "the sequence " + " -> ".join(said)


def _load_variant(args: argparse.Namespace, config: config_mod.CampaignConfig) -> str:
    """Load ``--variant`` (default: the config's kernel.variant) into the running kernel."""
    from harness.bed import variants  # lazy: import cost (see the top)

    variant: str = args.variant or config.kernel.variant
    cache = Path(args.modules) if args.modules else None
    loaded = variants.load_variant(variant, cache_dir=cache)
    say(f"loaded {variant} nvme modules, nvme_core srcversion {loaded.srcversion}")
    return variant


def _widener_factory(
    config: config_mod.CampaignConfig, outdir: Path
) -> Callable[[], object] | None:
    """What makes the campaign's BPF widener, or None when the config has it off."""
    if not config.widener.enabled:
        return None
    from harness.campaign import widener  # lazy: import cost (see the top)

    def make() -> object:
        settings = widener.WidenerConfig(
            delay_us=config.widener.delay_us, sample_every=config.widener.sample_every
        )
        return widener.Widener(settings, output_dir=outdir)

    return make


def _progress_printer(args: argparse.Namespace) -> Callable[[IterationRecord, int], None]:
    """The per-iteration line (``--json``: the record), none with ``--quiet``."""
    counts = {"eio": 0, "race": 0}

    def show(record: IterationRecord, total: int) -> None:
        counts["eio"] += record.app_eio
        counts["race"] += record.eod_race_lines
        if args.json:
            print(record.to_json(), flush=True)
        elif not args.quiet:
            say(
                f"[{record.iteration}/{total}] {record.fault} path {record.path}: "
                f"{record.verdict} (app EIO {record.app_eio}, EOD-race lines "
                f"{record.eod_race_lines}, recover {record.time_to_recover_s} s, "
                f"cycle {record.cycle_s:.1f} s, {record.fio_iops:.0f} IOPS) "
                f"| total EIO {counts['eio']}"
            )

    return show


def cmd_floor(args: argparse.Namespace) -> int:
    """The kernel's floor: bare path operations timed in this kernel, idle or under the
    config's IO (root, in the VM). Exit 1 when an operation or the IO under it failed."""
    from harness.campaign import floor  # lazy: import cost (see the top)

    config = load_config(args)
    if os.geteuid() != 0:
        raise HarnessError("floor needs root", hint="run it inside the VM")
    if args.repeat < 1:
        raise HarnessError(f"--repeat {args.repeat}: give at least 1")
    outdir = Path(args.out).resolve()
    if (outdir / floor.FLOOR_FILE).exists():
        raise HarnessError(f"{outdir} already holds {floor.FLOOR_FILE}", hint="choose a new --out")
    variant = _load_variant(args, config)
    faults = config.faults_used()
    if args.under_io and args.path != 0:
        raise HarnessError(
            "floor --under-io chooses the path from the IO (campaign.path of the config)",
            hint="leave out --path",
        )
    if args.ops:
        names = args.ops.split(",")
    elif args.under_io:
        names = list(floor.ops_of_fault_kinds(faults))
        if not names:
            raise HarnessError(
                f"floor --under-io: no floor op is part of the config's faults "
                f"({', '.join(faults)})",
                hint=f"name them with --ops (known: {', '.join(floor.KNOWN_OPS)})",
            )
    else:
        names = list(floor.ops_for_faults(faults))
    where = "on the path carrying the config's IO" if args.under_io else f"on path {args.path}"
    io = "under the config's IO" if args.under_io else "no fio"
    say(f"floor: {', '.join(names)} x {args.repeat} {where}, {io} -> {outdir}")

    def show(stats: floor.OpStats) -> None:
        say(
            f"floor {stats.name}: median action {stats.median_action_s} s, "
            f"total {stats.median_total_s} s ({len(stats.total_s)}/{stats.repeat} ok)"
        )

    result = floor.run_floor(
        Testbed(config, new_run_id()),
        args.repeat,
        variant=variant,
        path=args.path,
        names=names,
        on_op=show,
        under_io=(lambda bed: floor.start_workload(bed, outdir)) if args.under_io else None,
    )
    floor.write_floor(result, outdir)
    print(floor.render(result), flush=True)
    failed = any(not op.total_s for op in result.ops) or bool(result.restore_errors)
    done = result.io
    if done.get("app_errors") or done.get("verify_failures"):
        failed = True
        say(
            f"floor: fio saw {done.get('app_errors', 0)} IO errors and "
            f"{done.get('verify_failures', 0)} verify failures under the ops (floor.json io)"
        )
    elif result.under_io and not done.get("fio_ran_to_the_end", True):
        failed = True
        say("floor: fio exited before the end of the floor under IO (floor.json io)")
    return ExitCode.FAILED if failed else ExitCode.OK


def cmd_run_plan(args: argparse.Namespace) -> int:
    """In the VM: the campaigns of a plan file back to back (compare, scenarios), each
    ``run`` as on the command line; each run's directory is marked when it starts and ends.
    Stops at an interrupted run (its status); else ExitCode.OK."""
    from harness.vm import batch as vm_batch  # lazy: import cost (see the top)

    run_parser = argparse.ArgumentParser(prog=f"{PROG} run")
    add_run_arguments(run_parser)
    for run in vm_batch.read_plan(Path(args.plan)):
        vm_batch.mark_started(run.outdir)
        status = run_command(cmd_run, run_parser.parse_args(run.args))
        vm_batch.mark_done(run.outdir, status)
        if status == ExitCode.INTERRUPTED:
            return status
    return ExitCode.OK


# --- campaigns ---------------------------------------------------------------------------------

PROVE_CONFIG = DEFAULT_CONFIG.parent / "prove-ns-remove-path.toml"


def _add_campaigns_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    from harness.vm import campaigns  # lazy: import cost (see the top)

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
    from harness.analysis import experiments  # lazy: import cost (see the top)

    options = experiments.CompareOptions(
        stock=args.stock,
        patched=args.patched,
        alpha=args.alpha,
        sequential=args.sequential,
        batch=args.batch,
        max_iterations=args.max_iterations,
        max_minutes=args.max_minutes,
    )
    return experiments.compare_variants(
        Path(args.config), Path(args.out), options, vm_options(args), run_options(args), say
    )


def cmd_scenarios(args: argparse.Namespace) -> int:
    """``scenarios``: each named config in a VM on one variant; the hit-rate table."""
    from harness.analysis import experiments  # lazy: import cost (see the top)

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
    from harness.analysis import experiments  # lazy: import cost (see the top)

    options = experiments.MatrixOptions(
        releases=tuple(args.release or ()),
        all_installed=args.all_installed,
        report_only=args.report_only,
        config=Path(args.config) if args.config else None,
    )
    return experiments.run_matrix(Path(args.out), options, vm_options(args), run_options(args), say)


def cmd_prove_fixed(args: argparse.Namespace) -> int:
    """``prove-fixed``: a variant until --iterations clean iterations or the first failure,
    in parts that resume. Exit 0 proven, 1 a failure found, 3 infrastructure."""
    from harness.analysis import experiments  # lazy: import cost (see the top)

    return experiments.prove_fixed(
        Path(args.config), Path(args.out), args.variant, vm_options(args), run_options(args), say
    )


def cmd_vm_pytest(args: argparse.Namespace) -> int:
    """``vm-pytest``: pytest testcases/ in one VM or in --workers VMs; pytest's exit status
    (3 when the VM died)."""
    from harness.vm import testcases  # lazy: import cost (see the top)

    return testcases.run_testcases(
        vm_options(args), Path(args.out), args.pytest_args, args.workers, say
    )


# --- kernels -----------------------------------------------------------------------------------


def _add_kernels_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``history`` and ``faults``."""
    hist = sub.add_parser(
        "history", help="which Debian kernel versions were ever affected (their changelogs)"
    )
    hist.add_argument(
        "--release", action="append", help="installed kernel release (default: every one)"
    )
    hist.set_defaults(func=cmd_history)
    flt = sub.add_parser("faults", help="every fault, what it needs, whether this kernel has it")
    flt.add_argument(
        "--release", help="kernel release whose modules to check (default: the prepared one)"
    )
    flt.add_argument("--running", action="store_true", help="check the running kernel instead")
    flt.add_argument("--json", action="store_true", help="as JSON")
    flt.set_defaults(func=cmd_faults)


def cmd_history(args: argparse.Namespace) -> int:
    """Per Debian kernel line (6.1, 6.12, ...) among the installed images, from the newest
    one's changelog: where the fix and the zero-size bio_check_eod commit first appear, and
    so which Debian versions were ever affected as shipped (harness/kernels/changelog.py)."""
    from harness.kernels import changelog, releases  # lazy: import cost (see the top)

    names = args.release or releases.installed_releases()
    if not names:
        raise HarnessError("no kernel image installed", hint="sudo scripts/setup")
    newest: dict[tuple[int, ...], str] = {}
    for name in names:
        line = tuple(releases.version_key(name)[:2])
        if line not in newest or releases.version_key(name) > releases.version_key(newest[line]):
            newest[line] = name
    for line in sorted(newest):
        history = changelog.release_history(newest[line])
        print(f"{'.'.join(map(str, line))}: {history.summary()}", flush=True)
    return ExitCode.OK


def cmd_faults(args: argparse.Namespace) -> int:
    """Every fault with what it needs, checked against the kernel under test's modules
    (``--release``, else the prepared one; ``--running``: the running kernel)."""
    from harness.kernels import prepared  # lazy: import cost (see the top)
    from harness.report import fault_table

    release = args.release or prepared.prepared_release()
    checker = fault_table.modinfo_checker(release) if release or args.running else None
    infos = fault_table.fault_infos(checker)
    if args.json:
        print(fault_table.to_json(infos))
        return ExitCode.OK
    which = release or ("the running kernel" if args.running else "no kernel (not checked)")
    print(f"faults (modules checked in {which}):")
    print(fault_table.render(infos))
    return ExitCode.OK


# --- results -----------------------------------------------------------------------------------


def _add_results_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``report`` and ``baseline``."""
    report = sub.add_parser("report", help="print the table of a results directory")
    report.add_argument("results", nargs="?")
    report.add_argument(
        "--merge",
        nargs="+",
        metavar="DIR",
        help="merge the nightly directories of CI matrix jobs (one per kernel and scenario) "
        "into one kcidb.json, status.json and summary in --out; exit 0/1/3 (pass, "
        "regression, infrastructure) of the worst job",
    )
    report.add_argument("--out", help="where --merge writes the merged report")
    report.add_argument("--json", action="store_true")
    report.add_argument(
        "--html",
        metavar="FILE",
        help="also write a self-contained HTML page (plots, failing iterations) to FILE; "
        "RESULTS may then be a compare directory",
    )
    report.add_argument(
        "--require-iterations",
        type=int,
        default=0,
        help="exit 1 unless this many iterations passed or were expected",
    )
    report.add_argument(
        "--require-faults", type=int, default=0, help="exit 1 unless this many fault kinds were run"
    )
    report.set_defaults(func=cmd_report)
    base = sub.add_parser("baseline", help="accepted failure rates the nightly compares with")
    base_sub = base.add_subparsers(dest="baseline_command", required=True)
    accept = base_sub.add_parser(
        "accept",
        help="write <out>/<release>/<scenario>.json from results directories (pooled per "
        "release and scenario, replacing an older file)",
    )
    accept.add_argument("results", nargs="+", metavar="RESULT_DIR")
    accept.add_argument("--out", default="baselines", help="baselines directory (baselines/)")
    accept.set_defaults(func=cmd_baseline)


def cmd_report(args: argparse.Namespace) -> int:
    """``report``: the per-fault table of a results directory (``--html``: also the page;
    ``--merge``: report_merge). Exit 1 when a ``--require-*`` is not met or a crashed VM
    left records, else 0."""
    if args.merge:
        return report_merge(args)
    if not args.results:
        raise HarnessError("report: no results directory given", hint="report DIR")
    path = Path(args.results)
    if args.html:
        from harness.report.html import write_html  # lazy: import cost (see the top)

        say(f"HTML report: {write_html(path, Path(args.html))}")
        if path.is_dir() and not (path / RESULTS_FILE).exists():
            return ExitCode.OK  # a compare directory: the page covers its variants
    results = path / RESULTS_FILE if path.is_dir() else path
    if not results.exists():
        raise HarnessError(f"{results} not found", hint="give a results directory of a run")
    all_records = list(read_records(results))
    records = [r for r in all_records if is_iteration(r)]
    if args.json:
        print(json.dumps([s.to_dict() for s in summarize(records)], indent=2))
    else:
        print(render_table(summarize(records)))
    problems = _unmet_requirements(all_records, args.require_iterations, args.require_faults)
    for problem in problems:
        say(problem)
    return ExitCode.FAILED if problems else ExitCode.OK


def _unmet_requirements(
    all_records: list[dict[str, Any]], iterations: int, faults: int
) -> list[str]:
    """What ``report`` finds wrong: records of a crashed VM, fewer than ``iterations``
    iterations or ``faults`` fault kinds (0: no requirement), and with a requirement,
    failing or infra-error verdicts."""
    records = [r for r in all_records if is_iteration(r)]
    problems = []
    crashed = [r for r in all_records if not is_iteration(r)]
    if crashed:
        problems.append(f"{len(crashed)} record(s) of a crashed or timed-out VM")
    if iterations and len(records) < iterations:
        problems.append(f"{len(records)} iterations recorded, {iterations} required")
    kinds = {r.get("fault") for r in records}
    if faults and len(kinds) < faults:
        problems.append(f"{len(kinds)} fault kinds recorded, {faults} required")
    if (iterations or faults) and exit_status(records) != ExitCode.OK:
        problems.append(
            "failing or infra-error verdicts: "
            + ", ".join(
                sorted({str(r.get("verdict")) for r in records if r.get("verdict") != "pass"})
            )
        )
    return problems


def report_merge(args: argparse.Namespace) -> int:
    """``report --merge DIR... --out OUT``: the matrix jobs' outputs as one report; exits
    with the worst job's status (0 pass, 1 regression, 3 infrastructure)."""
    from harness.ci import merge  # lazy: import cost (see the top)

    if not args.out:
        raise HarnessError("report --merge needs --out", hint="--out DIR for the merged report")
    if args.results:
        raise HarnessError(
            f"report --merge takes job directories after --merge, not {args.results}",
            hint="report --merge DIR... --out OUT",
        )
    result = merge.merge([Path(d) for d in args.merge], Path(args.out))
    print(merge.render_text(result), flush=True)
    say(f"merged report: {result.outdir}/{merge.SUMMARY_HTML} (also kcidb.json, status.json)")
    return result.exit


def cmd_baseline(args: argparse.Namespace) -> int:
    """``baseline accept``: one baseline file per (release, scenario) of accepted results."""
    from harness.ci import baseline  # lazy: import cost (see the top)

    for path in baseline.accept([Path(d) for d in args.results], Path(args.out)):
        base = baseline.load(path.parent.parent, path.parent.name, path.stem)
        assert base is not None
        print(
            f"{path}: {base.scenario} on {base.release}: {base.failing}/{base.iterations} "
            f"failing ({base.rate:.1%}), {base.date}, harness {base.harness_version}"
        )
    return ExitCode.OK


# --- ops ---------------------------------------------------------------------------------------


def _add_ops_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``clean``, ``doctor``, ``remote``, ``selftest-crash`` and
    ``selftest-kvm-fallback``."""
    clean = sub.add_parser("clean", help="remove leftovers of earlier runs")
    clean.add_argument("--dry-run", action="store_true", help="only list them")
    clean.set_defaults(func=cmd_clean)
    doctor = sub.add_parser("doctor", help="check that everything needed is installed")
    doctor.add_argument(
        "--test-kvm",
        action="store_true",
        help="boot the prepared kernel under KVM with a trivial command (about a minute at "
        "most) and remember whether KVM works here",
    )
    doctor.set_defaults(func=cmd_doctor)
    _add_remote(sub)
    selftest = sub.add_parser("selftest-crash", help="check the VM runner's crash handling")
    selftest.add_argument("--out", required=True)
    add_vm_options(selftest)
    selftest.set_defaults(func=cmd_selftest_crash)
    fallback = sub.add_parser(
        "selftest-kvm-fallback",
        help="check that a KVM that cannot run the guest is followed by a TCG boot",
    )
    fallback.add_argument("--out", required=True)
    add_vm_options(fallback)
    fallback.set_defaults(func=cmd_selftest_kvm_fallback)


def _add_remote(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rem = sub.add_parser(
        "remote", help="run nvmf-harness ARGS on another machine over SSH, fetch results"
    )
    rem.add_argument("--host", required=True, help="SSH server name or address")
    rem.add_argument("--port", type=int, default=22)
    rem.add_argument("--user", help="remote user (default: the local user name)")
    rem.add_argument("--key", help="private key file (default: ssh-agent, ~/.ssh/id_*)")
    rem.add_argument("--known-hosts", help="known_hosts file (default: ~/.ssh/known_hosts)")
    rem.add_argument(
        "--trust-new-host-key",
        action="store_true",
        help="accept an unknown host key and save it to known_hosts (a changed key is "
        "still refused)",
    )
    rem.add_argument(
        "--repo",
        default="nvmf-mpath-harness",
        help="the harness checkout on the remote, with its .venv; the command runs there and "
        "relative paths in ARGS and --fetch are relative to it (default: ~/nvmf-mpath-harness)",
    )
    rem.add_argument(
        "--fetch", metavar="REMOTE_DIR:LOCAL_DIR", help="copy this directory back afterwards"
    )
    rem.add_argument(
        "--timeout", type=float, help="seconds before the remote command is cut (default: 4 h)"
    )
    rem.add_argument("--connect-timeout", type=float, default=15.0)
    rem.add_argument("harness_args", nargs=argparse.REMAINDER, help="-- nvmf-harness arguments")
    rem.set_defaults(func=cmd_remote)


def cmd_clean(args: argparse.Namespace) -> int:
    """``clean``: remove (``--dry-run``: list) what earlier runs left; exit 1 when some of
    it is still there."""
    kfs = KernelFs()
    if args.dry_run:
        found = cleanup.find_all(kfs)
        for item in found:
            print(item)
        say(f"{len(found)} leftover(s)")
        return ExitCode.FAILED if found else ExitCode.OK
    if os.geteuid() != 0:
        raise HarnessError("clean needs root")
    report = cleanup.clean_all(kfs)
    for item in report.found:
        print(f"removed: {item}")
    for error in report.errors:
        print(f"error: {error}")
    left = cleanup.find_all(kfs)
    for item in left:
        print(f"still there: {item}")
    say(f"{len(report.found)} leftover(s) found, {len(left)} remain")
    return ExitCode.FAILED if left else ExitCode.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """``doctor``: every check, one line each; exit 2 when a required one failed."""
    from harness.vm.doctor import retest_kvm, run_checks  # lazy: import cost (see the top)

    if args.test_kvm:
        retest_kvm(say)
    checks = run_checks()
    for check in checks:
        mark = "ok  " if check.ok else ("warn" if check.optional else "FAIL")
        line = f"{mark} {check.name}: {check.detail}"
        if not check.ok and check.fix:
            line += f" -> {check.fix}"
        print(line)
    failed = [c for c in checks if not c.ok and not c.optional]
    say("all required checks passed" if not failed else f"{len(failed)} required check(s) failed")
    return ExitCode.USAGE if failed else ExitCode.OK


def cmd_remote(args: argparse.Namespace) -> int:
    """Run nvmf-harness ARGS in a checkout on another machine over SSH; fetch its results.

    The command runs in the checkout (--repo), so relative paths in ARGS and --fetch's
    REMOTE_DIR mean the same directory. Returns the remote exit status (3 when it has none
    or the fetch failed), 2 for missing arguments.
    """
    # lazy: import cost (see the top)
    from harness.vm.remote import DEFAULT_COMMAND_TIMEOUT_S, DEFAULT_KNOWN_HOSTS, RemoteHost

    harness_args = list(args.harness_args)
    if harness_args[:1] == ["--"]:
        harness_args = harness_args[1:]
    if not harness_args:
        return usage_error(
            "nothing to run: give the nvmf-harness arguments after --, "
            "e.g. -- vm --config configs/smoke.toml --out out/smoke"
        )
    fetch: tuple[str, str] | None = None
    if args.fetch:
        remote_dir, _, local_dir = args.fetch.partition(":")
        if not remote_dir or not local_dir:
            return usage_error(f"--fetch {args.fetch!r}: give REMOTE_DIR:LOCAL_DIR")
        fetch = (posixpath.join(args.repo, remote_dir), local_dir)
    remote = RemoteHost(
        host=args.host,
        port=args.port,
        user=args.user,
        key_filename=args.key,
        known_hosts=Path(args.known_hosts) if args.known_hosts else DEFAULT_KNOWN_HOSTS,
        trust_new_host_key=args.trust_new_host_key,
        connect_timeout_s=args.connect_timeout,
        command_timeout_s=args.timeout or DEFAULT_COMMAND_TIMEOUT_S,
    )
    argv = [posixpath.join(".venv", "bin", PROG), *harness_args]
    with remote:
        if remote.trusted_new_key:
            say(f"trusted a new host key and saved it: {remote.trusted_new_key}")
        say(f"on {remote.target} in {args.repo}: {shlex.join(argv)}")
        result = remote.run(
            argv,
            cwd=args.repo,
            on_line=lambda line: print(line, flush=True),
            on_stderr_line=lambda line: print(line, file=sys.stderr, flush=True),
        )
        status = result.returncode if result.returncode >= 0 else ExitCode.INFRA
        say(f"remote exit status {result.returncode}")
        if fetch is not None:
            try:
                fetched = remote.fetch_dir(*fetch)
            except HarnessError as exc:
                print(f"{PROG}: error: fetch failed: {exc}", file=sys.stderr)
                return status or ExitCode.INFRA
            for skipped in fetched.skipped:
                say(f"skipped {skipped}")
            say(f"fetched {len(fetched.files)} file(s) from {args.host}:{fetch[0]} to {fetch[1]}")
    return status


def cmd_selftest_crash(args: argparse.Namespace) -> int:
    """``selftest-crash``: the guest panics, the runner must record it; exit 1 on a
    problem."""
    from harness.vm import campaigns  # lazy: import cost (see the top)
    from harness.vm.selftest import crash_selftest

    outdir = campaigns.fresh_outdir(Path(args.out))
    problems = crash_selftest(campaigns.vm_spec(vm_options(args), 300), outdir)
    for problem in problems:
        say(f"crash self-test: {problem}")
    if not problems:
        say(
            "crash self-test passed: the guest panicked, the runner recorded kernel_crash, "
            "earlier records are intact"
        )
    return ExitCode.FAILED if problems else ExitCode.OK


def cmd_selftest_kvm_fallback(args: argparse.Namespace) -> int:
    """``selftest-kvm-fallback``: a KVM boot that fails must be followed by a TCG boot;
    exit 1 on a problem."""
    from harness.vm import campaigns  # lazy: import cost (see the top)
    from harness.vm.selftest import kvm_fallback_selftest

    outdir = campaigns.fresh_outdir(Path(args.out))
    problems, happened = kvm_fallback_selftest(campaigns.vm_spec(vm_options(args), 600), outdir)
    for problem in problems:
        say(f"KVM fallback self-test: {problem}")
    if not problems:
        say(f"KVM fallback self-test {happened}")
    return ExitCode.FAILED if problems else ExitCode.OK


# --- app ---------------------------------------------------------------------------------------


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
    _add_guest_commands(sub)
    _add_campaigns_commands(sub)
    _add_kernels_commands(sub)
    _add_results_commands(sub)
    _add_ops_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (default: sys.argv); its exit status (harness/core/
    exits.py). argparse exits 2 itself on arguments it refuses."""
    args = build_parser().parse_args(argv)
    install_sigterm_handler()
    return run_command(args.func, args)


if __name__ == "__main__":
    sys.exit(main())

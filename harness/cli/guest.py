"""The commands the VM guest runs, as root in the kernel under test: ``run`` (a campaign),
``floor`` (bare path operations timed) and ``run-plan`` (campaigns back to back).

Each front end imports the layers it drives when it runs, not at the top: every command
(``--help`` too) loads every cli module, and they would cost it tens of milliseconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from harness.bed.testbed import Testbed, new_run_id
from harness.cli.errors import run_command
from harness.cli.options import DEFAULT_CONFIG, add_campaign_options
from harness.config import campaign as config_mod
from harness.core.console import PROG, say
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.priority import run_above_workload
from harness.core.results import (
    RESULTS_FILE,
    IterationRecord,
    exit_status,
    read_records,
    render_table,
    summarize,
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
    from harness.campaign.runner import Campaign  # lazy: import cost (module docstring)
    from harness.vm.campaigns import fresh_outdir

    config = load_config(args)
    if os.geteuid() != 0:
        raise HarnessError("run needs root", hint="run it inside the VM: nvmf-harness vm ...")
    run_above_workload()  # harness.core.priority: its steps ahead of fio and the readers
    outdir = fresh_outdir(Path(args.out))
    variant = _load_variant(args, config)
    campaign = Campaign(
        config,
        outdir,
        variant=variant,
        on_iteration=_progress_printer(args),
        widener_factory=_widener_factory(config, outdir),
        stop_on_failure=getattr(args, "stop_on_failure", False),
        on_witness=say,
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
    from harness.bed import variants  # lazy: import cost (module docstring)

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
    from harness.campaign import widener  # lazy: import cost (module docstring)

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
            bpf = "" if record.witness_events is None else f", BPF bios {record.witness_events}"
            if record.witness_lost or not record.witness_caught_up:
                bpf += f" (incomplete: {record.witness_lost} events dropped"
                bpf += ")" if record.witness_caught_up else ", behind)"
            say(
                f"[{record.iteration}/{total}] {record.fault} path {record.path}: "
                f"{record.verdict} (app EIO {record.app_eio}, EOD-race lines "
                f"{record.eod_race_lines}{bpf}, recover {record.time_to_recover_s} s, "
                f"cycle {record.cycle_s:.1f} s, {record.fio_iops:.0f} IOPS) "
                f"| total EIO {counts['eio']}"
            )

    return show


def cmd_floor(args: argparse.Namespace) -> int:
    """The kernel's floor: bare path operations timed in this kernel, idle or under the
    config's IO (root, in the VM). Exit 1 when an operation or the IO under it failed."""
    from harness.campaign import floor  # lazy: import cost (module docstring)

    config = load_config(args)
    if os.geteuid() != 0:
        raise HarnessError("floor needs root", hint="run it inside the VM")
    run_above_workload()  # as in a campaign (harness.core.priority)
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
    names = floor.choose_ops(faults, args.ops.split(",") if args.ops else [], args.under_io)
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
    problem = result.io_problem()
    if problem is not None:
        say(f"floor: {problem}")
    return ExitCode.FAILED if result.failed else ExitCode.OK


def cmd_run_plan(args: argparse.Namespace) -> int:
    """In the VM: the campaigns of a plan file back to back (compare, scenarios), each
    ``run`` as on the command line; each run's directory is marked when it starts and ends.
    Stops at an interrupted run (its status); else ExitCode.OK."""
    from harness.vm import batch as vm_batch  # lazy: import cost (module docstring)

    run_parser = argparse.ArgumentParser(prog=f"{PROG} run")
    add_run_arguments(run_parser)
    for run in vm_batch.read_plan(Path(args.plan)):
        vm_batch.mark_started(run.outdir)
        status = run_command(cmd_run, run_parser.parse_args(run.args))
        vm_batch.mark_done(run.outdir, status)
        if status == ExitCode.INTERRUPTED:
            return status
    return ExitCode.OK

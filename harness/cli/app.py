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
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from harness.config import campaign as config_mod
from harness.core.errors import ConfigError, HarnessError
from harness.core.exits import ExitCode
from harness.core.kernelfs import KernelFs
from harness.core.paths import CONFIGS_DIR
from harness.core.results import (
    RESULTS_FILE,
    IterationRecord,
    is_iteration,
    read_records,
    render_table,
    summarize,
)

if TYPE_CHECKING:
    from harness.analysis.compare import Comparison

PROG = "nvmf-harness"
DEFAULT_CONFIG = CONFIGS_DIR / "smoke.toml"
FROZEN_CONFIG = "campaign.toml"  # the config a VM campaign runs, beside its results


def say(message: str) -> None:
    print(f"{PROG}: {message}", flush=True)


def _install_sigterm_handler() -> None:
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


# --- run -----------------------------------------------------------------------------------------


def load_config(args: argparse.Namespace) -> config_mod.CampaignConfig:
    config = config_mod.load(Path(args.config))
    changes: dict[str, Any] = {}
    if getattr(args, "iterations", None):
        changes["iterations"] = args.iterations
    if getattr(args, "seed", None) is not None:
        changes["seed"] = args.seed
    if changes:
        config = config_mod.override(config, "campaign", **changes)
    if getattr(args, "widen", False):
        config = config_mod.override(config, "widener", enabled=True)
    if getattr(args, "backend", None):
        config = config_mod.override(config, "target", backend=args.backend)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from harness.campaign.runner import Campaign

    config = load_config(args)
    if os.geteuid() != 0:
        raise HarnessError("run needs root", hint="run it inside the VM: nvmf-harness vm ...")
    outdir = _fresh_outdir(Path(args.out))
    variant = _load_variant(args, config)
    widener_factory = _widener_factory(config, outdir)
    campaign = Campaign(
        config,
        outdir,
        variant=variant,
        on_iteration=_progress_printer(args),
        widener_factory=widener_factory,
        stop_on_failure=getattr(args, "stop_on_failure", False),
    )
    say(
        f"campaign {config.campaign.name}: {config.campaign.iterations} iterations of "
        f"{_faults_said(config)} on {campaign.kernel.release} "
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


def cmd_floor(args: argparse.Namespace) -> int:
    """The kernel's floor: bare path operations timed in this kernel, idle or under the
    config's IO (root, in the VM)."""
    from harness.bed.testbed import Testbed, new_run_id
    from harness.campaign import floor

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


def exit_status(records: list[dict[str, Any]]) -> int:
    from harness.core.results import FAILING_VERDICTS, Verdict

    if not records or any(r.get("verdict") == Verdict.INFRA_ERROR for r in records):
        return ExitCode.INFRA
    if any(r.get("verdict") in FAILING_VERDICTS for r in records):
        return ExitCode.FAILED
    return ExitCode.OK


def _load_variant(args: argparse.Namespace, config: config_mod.CampaignConfig) -> str:
    variant = args.variant or config.kernel.variant
    from harness.bed import variants

    cache = Path(args.modules) if args.modules else None
    loaded = variants.load_variant(variant, cache_dir=cache)
    say(f"loaded {variant} nvme modules, nvme_core srcversion {loaded.srcversion}")
    return variant


def _widener_factory(config: config_mod.CampaignConfig, outdir: Path) -> Any:
    if not config.widener.enabled:
        return None
    from harness.campaign import widener

    def make() -> Any:
        settings = widener.WidenerConfig(
            delay_us=config.widener.delay_us, sample_every=config.widener.sample_every
        )
        return widener.Widener(settings, output_dir=outdir)

    return make


def _progress_printer(args: argparse.Namespace) -> Any:
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


# --- vm ------------------------------------------------------------------------------------------


def _vm_spec(args: argparse.Namespace, timeout_s: float) -> Any:
    """The VmSpec of a VM command: the kernel scripts/setup prepared unless --kernel."""
    from harness.kernels.prepared import default_kernel
    from harness.vm.boot import VmSpec

    if args.boot_timeout is not None and args.boot_timeout <= 0:
        raise HarnessError(f"--boot-timeout {args.boot_timeout:g}: give seconds above 0")
    return VmSpec(
        kernel=_kernel_image(args.kernel) if args.kernel else default_kernel(),
        memory=args.memory,
        cpus=args.cpus,
        accel=args.accel,
        timeout_s=args.timeout or timeout_s,
        boot_timeout_s=args.boot_timeout,
    )


def _kernel_image(path: str) -> str:
    """``--kernel``: an existing kernel image file, or a one-line error before any boot."""
    if not Path(path).is_file():
        raise HarnessError(
            f"--kernel {path}: no such kernel image file",
            hint="give /boot/vmlinuz-<release> (ls /boot) or a bzImage",
        )
    return path


def cmd_vm(args: argparse.Namespace) -> int:
    config = load_config(args)  # fail here, not in the guest, on a broken config
    outdir = _fresh_outdir(Path(args.out))
    return _campaign_in_vm(args, PlannedCampaign(Path(args.config), config, outdir, args.variant))


def _fresh_outdir(outdir: Path) -> Path:
    """A results directory that holds no earlier results (records are appended)."""
    outdir = outdir.resolve()
    if (outdir / RESULTS_FILE).exists():
        raise HarnessError(f"{outdir} already holds results", hint="choose a new --out")
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir


@dataclass(frozen=True)
class PlannedCampaign:
    """A campaign a host command runs in the VM."""

    config_path: Path
    config: config_mod.CampaignConfig
    outdir: Path
    variant: str | None


def _guest_run_args(args: argparse.Namespace, run: PlannedCampaign) -> list[str]:
    """The ``nvmf-harness run`` arguments that run ``run`` in the guest.

    The guest reads a copy of the config frozen now (``<outdir>/campaign.toml``), not the
    file it came from: an edit of that file while campaigns wait their turn in the VM must
    not change them (it did: a matrix's last release ran another mechanism)."""
    run.outdir.mkdir(parents=True, exist_ok=True)
    frozen = run.outdir / FROZEN_CONFIG
    frozen.write_text(
        f"# {run.config_path.resolve()} as it was when the campaign was planned\n"
        + config_mod.to_toml(run.config)
    )
    guest = ["--config", str(frozen), "--out", str(run.outdir)]
    if args.iterations:
        guest += ["--iterations", str(args.iterations)]
    if args.seed is not None:
        guest += ["--seed", str(args.seed)]
    if args.widen:
        guest.append("--widen")
    if run.variant:
        guest += ["--variant", run.variant]
    if args.modules:
        guest += ["--modules", str(Path(args.modules).resolve())]
    if getattr(args, "backend", None):
        guest += ["--backend", args.backend]
    if getattr(args, "stop_on_failure", False):
        guest.append("--stop-on-failure")
    return guest


def _run_budget_s(config: config_mod.CampaignConfig) -> float:
    """VM seconds a campaign may take before the runner kills the VM (boot included)."""
    ccfg = config.campaign
    per_iteration = ccfg.warmup_s + ccfg.jitter_s + ccfg.hold_s + ccfg.settle_s + 15
    return 300 + ccfg.iterations * min(per_iteration + ccfg.recover_timeout_s, 300)


def _print_run_table(outdir: Path) -> None:
    records = list(read_records(outdir / RESULTS_FILE))
    if records:
        print(render_table(summarize(r for r in records if is_iteration(r))), flush=True)


def _faults_said(config: config_mod.CampaignConfig) -> str:
    """``ctrl_delete, ctrl_reset``, or for a [[steps]] campaign ``the sequence
    port_remove inject [0] -> ctrl_delete inject [0]``."""
    if not config.steps:
        return ", ".join(config.campaign.faults)
    said = [f"{step.fault} {step.action} {list(step.paths)}" for step in config.steps]
    return "the sequence " + " -> ".join(said)


def _build_target_modules(kernel: str, runs: list[PlannedCampaign]) -> None:
    """Before a boot: the patched nvmet for ``kernel`` when a campaign needs it."""
    from harness.kernels import nvmet_variant

    build = nvmet_variant.build_for_configs(kernel, [run.config for run in runs])
    if build is not None:
        say(
            f"patched nvmet (ns visibility) for {build.release} from {build.source_tarball}: "
            f"srcversion {build.srcversion}"
        )


def _campaign_in_vm(args: argparse.Namespace, run: PlannedCampaign) -> int:
    """One campaign in one VM boot."""
    from harness.vm.boot import guest_python, record_crash, run_in_vm

    outdir = run.outdir
    spec = _vm_spec(args, _run_budget_s(run.config))
    _build_target_modules(spec.kernel, [run])
    guest = [guest_python(), "-m", "harness.cli", "run", *_guest_run_args(args, run)]
    say(f"booting {spec.kernel} ({spec.cpus} CPUs, {spec.memory}); console: {outdir}/console.log")
    from harness.vm.progress import VmProgress

    with VmProgress(f"{PROG}:") as progress:
        result = run_in_vm(spec, outdir, guest, on_line=progress.line)
    boot = f"{result.boot_s:.1f} s" if result.boot_s is not None else "?"
    say(f"VM finished in {result.wall_s:.1f} s (first harness output after {boot})")
    if result.crashed or result.timed_out:
        record_crash(outdir, result)
        what = "timed out" if result.timed_out else "died (kernel crash or panic?)"
        say(f"the VM {what}; console tail in {outdir}/console.log")
    _print_run_table(outdir)
    if result.crashed or result.timed_out:
        return ExitCode.INFRA
    return result.exit_status if result.exit_status is not None else ExitCode.INFRA


def _campaigns_in_vm(
    args: argparse.Namespace, runs: list[PlannedCampaign], vm_dir: Path
) -> dict[Path, int]:
    """Several campaigns back to back in one boot (more boots only where a run needs one:
    see harness/vm_batch.py); ``--vm-per-run`` boots one VM per campaign instead."""
    if args.vm_per_run:
        statuses = {}
        for run in runs:
            say(f"=== {run.outdir.name} ({run.variant or run.config.kernel.variant})")
            statuses[run.outdir] = _campaign_in_vm(args, run)
        return statuses
    from harness.kernels.prepared import default_kernel
    from harness.vm import batch as vm_batch
    from harness.vm.boot import VmResult, guest_python, record_crash, run_in_vm
    from harness.vm.progress import VmProgress

    _build_target_modules(args.kernel or default_kernel(), runs)

    planned = [
        vm_batch.GuestRun(run.outdir, tuple(_guest_run_args(args, run)), _run_budget_s(run.config))
        for run in runs
    ]

    def boot(plan: Path, budget_s: float) -> VmResult:
        spec = _vm_spec(args, budget_s)
        say(
            f"booting {spec.kernel} ({spec.cpus} CPUs, {spec.memory}) for "
            f"{len(vm_batch.read_plan(plan))} campaign(s) back to back; "
            f"console: {vm_dir}/console.log"
        )
        guest = [guest_python(), "-m", "harness.cli", "run-plan", str(plan)]
        with VmProgress(f"{PROG}:") as progress:
            result = run_in_vm(spec, vm_dir, guest, on_line=progress.line)
        first = f"{result.boot_s:.1f} s" if result.boot_s is not None else "?"
        say(f"VM finished in {result.wall_s:.1f} s (first harness output after {first})")
        return result

    def on_crash(outdir: Path, result: object) -> None:
        assert isinstance(result, VmResult)
        record_crash(outdir, result)
        what = "timed out" if result.timed_out else "died (kernel crash or panic?)"
        say(f"the VM {what} during {outdir.name}; console tail in {vm_dir}/console.log")

    outcome = vm_batch.run_batch(planned, vm_dir, boot, on_crash)
    if outcome.not_started is not None:
        say(
            f"boot {outcome.boots} of the VM ended before its first campaign "
            f"({outcome.not_started.name}) started ({_last_words(vm_dir)}): the campaigns not "
            f"run are infrastructure failures; console: {vm_dir}/console.log"
        )
    for run in runs:
        status = outcome.statuses.get(run.outdir)
        say(f"=== {run.outdir.name} ({run.variant}): exit status {status}")
        _print_run_table(run.outdir)
    return outcome.statuses


def _last_words(vm_dir: Path) -> str:
    """The console's last non-empty line (``console.log`` in ``vm_dir``), or "no output"."""
    try:
        lines = (vm_dir / "console.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no console.log"
    last = next((line for line in reversed(lines.splitlines()) if line.strip()), "")
    return last.strip() or "no output"


def cmd_run_plan(args: argparse.Namespace) -> int:
    """In the VM: the campaigns of a plan file back to back (compare, scenarios)."""
    from harness.vm import batch as vm_batch

    runs = vm_batch.read_plan(Path(args.plan))
    for run in runs:
        vm_batch.mark_started(run.outdir)
        status = main(["run", *run.args])
        vm_batch.mark_done(run.outdir, status)
        if status == ExitCode.INTERRUPTED:
            return status
    return ExitCode.OK


def cmd_compare(args: argparse.Namespace) -> int:
    """The same campaign on the unfixed and the fixed module variant, back to back in one
    boot (a run the guest died in costs the other nothing: it gets its own boot).

    With ``--sequential``, batches of ``--batch`` iterations per variant run (one boot each,
    a new seed each) until the verdict is decided or a cap is hit (harness/stopping.py);
    each batch goes to OUT/batch-NN/{stock,patched} and the comparison pools them all.
    Exit 0 only for REPRODUCED AND FIXED, 1 for every other verdict, 3 when neither variant
    ran an iteration (the VM failed).
    """
    from harness.analysis import compare, stopping
    from harness.kernels import kbuild
    from harness.kernels.prepared import default_kernel, kernel_release

    if args.sequential and args.iterations:
        raise HarnessError(
            "--iterations and --sequential do not go together",
            hint="give --batch and --max-iterations (per variant) instead",
        )
    if not 0.0 < args.alpha < 1.0:
        raise HarnessError(f"--alpha {args.alpha:g}: give a level in (0, 1), e.g. 0.01")
    plan = (
        stopping.make_plan(args.alpha, args.batch, args.max_iterations, args.max_minutes)
        if args.sequential
        else None
    )
    config = load_config(args)
    outdir = Path(args.out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    kernel = args.kernel or default_kernel()
    release = kernel_release(kernel) or None
    cache = Path(args.modules) if args.modules else None
    variants = [args.stock, args.patched]
    for variant in variants:
        if variant != "distro":
            build = kbuild.build_variant(variant, release=release, cache_dir=cache)
            say(
                f"{variant} modules for {build.release}: nvme_core srcversion "
                f"{build.srcversion.get('nvme-core', '?')}"
                f" ({'cached' if build.cached else f'built in {build.build_seconds:.0f} s'})"
            )
    args.kernel = kernel
    config_path = Path(args.config)
    if plan is None:
        runs = [
            PlannedCampaign(config_path, config, _fresh_outdir(outdir / variant), variant)
            for variant in variants
        ]
        _campaigns_in_vm(args, runs, outdir)
        result = compare.compare(
            compare.outcome(args.stock, outdir / args.stock),
            compare.outcome(args.patched, outdir / args.patched),
            alpha=args.alpha,
        )
        print(compare.write(result, outdir), flush=True)  # its "Rule:" line says which rule
        return _compare_status(result)

    looks = plan.looks
    say(f"rule: {plan.describe()}")
    batch_dirs: list[Path] = []
    first_seed = config.campaign.seed

    def run_batch(number: int, size: int) -> tuple[compare.VariantOutcome, compare.VariantOutcome]:
        batch_dir = outdir / f"batch-{number:02d}"
        seed = first_seed + number - 1
        batch_args = argparse.Namespace(**vars(args))
        batch_args.iterations, batch_args.seed = size, seed
        batch_config = config_mod.override(config, "campaign", iterations=size, seed=seed)
        runs = [
            PlannedCampaign(config_path, batch_config, _fresh_outdir(batch_dir / v), v)
            for v in variants
        ]
        say(f"=== batch {number}/{looks}: {size} iterations per variant, seed {seed}")
        _campaigns_in_vm(batch_args, runs, batch_dir)
        batch_dirs.append(batch_dir)
        return (
            compare.outcome(args.stock, *(d / args.stock for d in batch_dirs)),
            compare.outcome(args.patched, *(d / args.patched for d in batch_dirs)),
        )

    def show(look: stopping.Look, decision: stopping.Decision) -> None:
        say(
            f"look {look.number}/{looks}: {args.stock} {look.stock_race_iterations}/"
            f"{look.stock_trials} vs {args.patched} {look.patched_race_iterations}/"
            f"{look.patched_trials} race iterations, one-sided p={look.p_one_sided:.3g} "
            f"(alpha per look {look.alpha:.3g}): {look.verdict}; {decision.detail}"
        )

    sequence = stopping.run_sequence(plan, run_batch, on_look=show)
    say(f"stopped: {sequence.detail}")
    text = compare.write(sequence.comparison, outdir, extra={"sequential": sequence.to_dict()})
    print(text, flush=True)
    return _compare_status(sequence.comparison)


def _compare_status(result: Comparison) -> int:
    """compare's exit status: 0 REPRODUCED AND FIXED, 3 when neither variant ran an
    iteration (the VM failed: no verdict to exit with), else 1."""
    if result.stock.iterations == 0 and result.patched.iterations == 0:
        return ExitCode.INFRA
    return ExitCode.OK if result.fixed else ExitCode.FAILED


def cmd_prove_fixed(args: argparse.Namespace) -> int:
    """Run the fixed variant until --iterations clean iterations or the first failure, in
    parts that resume (harness/prove.py)."""
    import copy

    from harness.analysis import prove
    from harness.kernels import kbuild
    from harness.kernels.prepared import default_kernel, kernel_release

    config = load_config(args)  # a broken config fails here, before any boot
    outdir = Path(args.out).resolve()
    target = args.iterations or prove.DEFAULT_TARGET
    if args.variant != "distro":  # built (or found cached) before the first boot
        release = kernel_release(args.kernel or default_kernel()) or None
        cache = Path(args.modules) if args.modules else None
        build = kbuild.build_variant(args.variant, release=release, cache_dir=cache)
        core = build.srcversion.get("nvme-core", "?")
        say(f"{args.variant} modules for {build.release}: nvme_core srcversion {core}")

    def run_part(part: Path, iterations: int) -> int:
        part_args = copy.copy(args)
        part_args.iterations = iterations
        part_args.stop_on_failure = True
        part_config = load_config(part_args)
        return _campaign_in_vm(
            part_args, PlannedCampaign(Path(args.config), part_config, part, args.variant)
        )

    return prove.prove(outdir, config.campaign.name, args.variant, target, run_part, say)


def cmd_history(args: argparse.Namespace) -> int:
    """Per Debian kernel line (6.1, 6.12, ...) among the installed images, from the newest
    one's changelog: where the fix and the zero-size bio_check_eod commit first appear, and
    so which Debian versions were ever affected as shipped (harness/changelog.py)."""
    from harness.kernels import changelog, releases

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


def cmd_matrix(args: argparse.Namespace) -> int:
    """Per Debian kernel release: both variants from its own source, one boot, a verdict.

    Every release is checked (installed, source fetched, variants built) before anything
    boots. Writes OUT/<release>/{unfixed,fixed}/ and OUT/matrix.{txt,md,json,html}. Exit 0
    when every release got a verdict, 1 when one is inconclusive.
    """
    from harness.analysis import matrix
    from harness.kernels import releases

    names = list(dict.fromkeys(args.release or []))
    if args.all_installed:
        names += [name for name in releases.installed_releases() if name not in names]
    if args.report_only and not names:  # every release already in --out: none is dropped
        names = sorted(
            d.name
            for d in Path(args.out).glob("*")
            if all((d / v / RESULTS_FILE).is_file() for v in matrix.MATRIX_VARIANTS)
        )
    if not names:
        raise HarnessError(
            "no kernel release given",
            hint="--release 6.1.0-47-amd64 (repeatable) or --all-installed",
        )
    args.config = args.config or str(matrix.default_config())
    config = load_config(args)
    outdir = Path(args.out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    args.modules = str(Path(args.modules or matrix.MODULES_CACHE).resolve())  # the guest's too
    cache = Path(args.modules)
    prepared = []
    for name in names:
        ready = matrix.prepare_release(name, modules_cache=cache)
        built = ", ".join(
            f"{variant} {build.srcversion.get('nvme-core', '?')}"
            f"{' (as shipped)' if build.as_shipped else ''}"
            for variant, build in ready.builds.items()
        )
        say(
            f"{name}: {ready.release.source_spec}, fix in source {ready.facts.has_fix}, "
            f"bio_check_eod() {ready.facts.eod_shape}, predicted {ready.facts.prediction}; "
            f"nvme_core {built}"
        )
        prepared.append(ready)
    config_path = Path(args.config)
    results = []
    for ready in prepared:
        release_dir = outdir / ready.release.name
        if not args.report_only:
            args.kernel = str(ready.release.kernel_image)
            runs = [
                PlannedCampaign(config_path, config, _fresh_outdir(release_dir / v), v)
                for v in matrix.MATRIX_VARIANTS
            ]
            _campaigns_in_vm(args, runs, release_dir)
        results.append(matrix.release_result(ready, release_dir))
    print(matrix.write(results, outdir), flush=True)
    say(f"matrix: {outdir}/{matrix.MATRIX_HTML} (also .md, .json, .txt)")
    undecided = [r for r in results if r.verdict == matrix.ReleaseVerdict.INCONCLUSIVE]
    return ExitCode.FAILED if undecided else ExitCode.OK


def cmd_scenarios(args: argparse.Namespace) -> int:
    """Each named config in a VM on one variant; the hit-rate table (Markdown + JSON)."""
    from harness.analysis import scenarios
    from harness.kernels import kbuild
    from harness.kernels.prepared import default_kernel, kernel_release

    outdir = Path(args.out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    args.kernel = args.kernel or default_kernel()
    variant = args.variant or "unfixed"
    if variant != "distro":
        release = kernel_release(args.kernel) or None
        kbuild.build_variant(
            variant, release=release, cache_dir=args.modules and Path(args.modules)
        )
    runs = []
    for config_path in args.configs:
        args.config = config_path
        config = load_config(args)  # every config is checked before anything boots
        rundir = _fresh_outdir(outdir / Path(config_path).stem)
        runs.append(PlannedCampaign(Path(config_path), config, rundir, variant))
    _campaigns_in_vm(args, runs, outdir)
    results = [scenarios.scenario_result(run.outdir.name, run.outdir) for run in runs]
    print(scenarios.write(results, outdir), flush=True)
    return ExitCode.OK


def cmd_vm_pytest(args: argparse.Namespace) -> int:
    from harness.vm import workers as vm_workers
    from harness.vm.boot import guest_python, run_in_vm

    vm_workers.check_workers(args.workers)
    outdir = Path(args.out).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    spec = _vm_spec(args, 1500)
    extra = [a for a in args.pytest_args if a != "--"]
    if args.workers > 1:
        return _vm_pytest_workers(args, spec, outdir, extra)
    # files or node ids of testcases/ in ARGS run alone; else the whole directory
    chosen = any(arg.startswith("testcases/") for arg in extra)
    guest = [guest_python(), "-m", "pytest", *([] if chosen else ["testcases/"])]
    guest += [
        "-p",
        "no:cacheprovider",
        f"--junitxml={outdir / 'testcases-junit.xml'}",
        f"--results-dir={outdir}",
        *extra,
    ]
    say(f"booting {spec.kernel} to run pytest testcases/; console: {outdir}/console.log")
    result = run_in_vm(spec, outdir, guest, on_line=print, boot_marker="test session starts")
    if result.crashed or result.timed_out:
        say("the VM died or timed out before pytest finished; see console.log")
        return ExitCode.INFRA
    return result.exit_status if result.exit_status is not None else ExitCode.INFRA


def _vm_pytest_workers(args: argparse.Namespace, spec: Any, outdir: Path, extra: list[str]) -> int:
    """``vm-pytest --workers N``: N child vm-pytest runs at once, one VM and one group of
    testcases each (harness/vm_workers.py); one JUnit file and exit status for all."""
    from harness.vm import workers as vm_workers

    note = vm_workers.cores_note(args.workers, spec.cpus, os.cpu_count())
    if note:
        say(note)
    vm_options = ["--kernel", spec.kernel, "--memory", spec.memory, "--cpus", str(spec.cpus)]
    vm_options += ["--accel", spec.accel, "--timeout", str(spec.timeout_s)]
    if args.boot_timeout is not None:
        vm_options += ["--boot-timeout", str(args.boot_timeout)]
    dirs = [vm_workers.worker_dir(outdir, k) for k in range(1, args.workers + 1)]
    child = [sys.executable, "-m", "harness.cli", "vm-pytest", *vm_options]
    argvs = [
        [*child, "--out", str(d), "--", *extra, *vm_workers.split_args(args.workers, k)]
        for k, d in enumerate(dirs, start=1)
    ]
    say(f"{args.workers} workers, one VM each ({spec.cpus} CPUs, {spec.memory}): {outdir}/worker-*")
    started = time.monotonic()
    # A worker's own VM timeout ends it first; this only catches a wedged child.
    statuses = vm_workers.run_workers(
        argvs, lambda line: print(line, flush=True), timeout_s=spec.timeout_s + 600
    )
    tests = vm_workers.merge_junit(
        [d / vm_workers.JUNIT_FILE for d in dirs], outdir / vm_workers.JUNIT_FILE
    )
    vm_workers.join_consoles([d / vm_workers.CONSOLE_LOG for d in dirs], outdir / "console.log")
    status = vm_workers.combined_status(statuses, ExitCode.INFRA)
    say(
        f"{args.workers} workers in {time.monotonic() - started:.0f} s: exit statuses "
        f"{', '.join('killed' if s is None else str(s) for s in statuses)}; {tests} testcases "
        f"in {outdir / vm_workers.JUNIT_FILE}; exit {status}"
    )
    return status


def cmd_selftest_crash(args: argparse.Namespace) -> int:
    from harness.vm.selftest import crash_selftest

    outdir = _fresh_outdir(Path(args.out))
    problems = crash_selftest(_vm_spec(args, 300), outdir)
    for problem in problems:
        say(f"crash self-test: {problem}")
    if not problems:
        say(
            "crash self-test passed: the guest panicked, the runner recorded kernel_crash, "
            "earlier records are intact"
        )
    return ExitCode.FAILED if problems else ExitCode.OK


def cmd_selftest_kvm_fallback(args: argparse.Namespace) -> int:
    from harness.vm.selftest import kvm_fallback_selftest

    outdir = _fresh_outdir(Path(args.out))
    problems, happened = kvm_fallback_selftest(_vm_spec(args, 600), outdir)
    for problem in problems:
        say(f"KVM fallback self-test: {problem}")
    if not problems:
        say(f"KVM fallback self-test {happened}")
    return ExitCode.FAILED if problems else ExitCode.OK


# --- report, clean, doctor ---------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    if args.merge:
        return _report_merge(args)
    if not args.results:
        raise HarnessError("report: no results directory given", hint="report DIR")
    path = Path(args.results)
    if args.html:
        from harness.report.html import write_html

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
    problems = []
    crashed = [r for r in all_records if not is_iteration(r)]
    if crashed:
        problems.append(f"{len(crashed)} record(s) of a crashed or timed-out VM")
    if args.require_iterations and len(records) < args.require_iterations:
        problems.append(f"{len(records)} iterations recorded, {args.require_iterations} required")
    faults = {r.get("fault") for r in records}
    if args.require_faults and len(faults) < args.require_faults:
        problems.append(f"{len(faults)} fault kinds recorded, {args.require_faults} required")
    if args.require_iterations or args.require_faults:
        status = exit_status(records)
        if status != ExitCode.OK:
            problems.append(
                "failing or infra-error verdicts: "
                + ", ".join(
                    sorted({str(r.get("verdict")) for r in records if r.get("verdict") != "pass"})
                )
            )
    for problem in problems:
        say(problem)
    return ExitCode.FAILED if problems else ExitCode.OK


def _report_merge(args: argparse.Namespace) -> int:
    """``report --merge DIR... --out OUT``: the matrix jobs' outputs as one report; exits
    with the worst job's status (0 pass, 1 regression, 2 infrastructure)."""
    from harness.ci import merge

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


def cmd_clean(args: argparse.Namespace) -> int:
    from harness.bed import cleanup

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


def cmd_baseline(args: argparse.Namespace) -> int:
    """``baseline accept``: one baseline file per (release, scenario) of accepted results."""
    from harness.ci import baseline

    for path in baseline.accept([Path(d) for d in args.results], Path(args.out)):
        base = baseline.load(path.parent.parent, path.parent.name, path.stem)
        assert base is not None
        print(
            f"{path}: {base.scenario} on {base.release}: {base.failing}/{base.iterations} "
            f"failing ({base.rate:.1%}), {base.date}, harness {base.harness_version}"
        )
    return ExitCode.OK


def cmd_faults(args: argparse.Namespace) -> int:
    """Every fault with what it needs, checked against the kernel under test's modules."""
    from harness.kernels import prepared
    from harness.report import fault_table as fault_list

    release = args.release or prepared.prepared_release()
    checker = fault_list.modinfo_checker(release) if release or args.running else None
    infos = fault_list.fault_infos(checker)
    if args.json:
        print(fault_list.to_json(infos))
        return 0
    which = release or ("the running kernel" if args.running else "no kernel (not checked)")
    print(f"faults (modules checked in {which}):")
    print(fault_list.render(infos))
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from harness.vm.doctor import retest_kvm, run_checks

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


# --- remote ------------------------------------------------------------------------------------


def _usage_error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return ExitCode.USAGE


def cmd_remote(args: argparse.Namespace) -> int:
    """Run nvmf-harness ARGS in a checkout on another machine over SSH; fetch its results.

    The command runs in the checkout (--repo), so relative paths in ARGS and --fetch's
    REMOTE_DIR mean the same directory.
    """
    import posixpath
    import shlex

    from harness.vm.remote import DEFAULT_COMMAND_TIMEOUT_S, DEFAULT_KNOWN_HOSTS, RemoteHost

    harness_args = list(args.harness_args)
    if harness_args[:1] == ["--"]:
        harness_args = harness_args[1:]
    if not harness_args:
        return _usage_error(
            "nothing to run: give the nvmf-harness arguments after --, "
            "e.g. -- vm --config configs/smoke.toml --out out/smoke"
        )
    fetch: tuple[str, str] | None = None
    if args.fetch:
        remote_dir, _, local_dir = args.fetch.partition(":")
        if not remote_dir or not local_dir:
            return _usage_error(f"--fetch {args.fetch!r}: give REMOTE_DIR:LOCAL_DIR")
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


# --- parser --------------------------------------------------------------------------------------


def _campaign_options(parser: argparse.ArgumentParser) -> None:
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


def _vm_options(parser: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a campaign in this kernel (root)")
    _campaign_options(run)
    run.add_argument("--quiet", action="store_true", help="no per-iteration lines, no table")
    run.add_argument("--json", action="store_true", help="print each record as a JSON line")
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
    vm = sub.add_parser("vm", help="boot a kernel in a VM and run the campaign inside")
    _campaign_options(vm)
    _vm_options(vm)
    vm.set_defaults(func=cmd_vm)
    cmp_ = sub.add_parser("compare", help="stock vs patched: one campaign per module variant")
    _campaign_options(cmp_)
    _vm_options(cmp_)
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
    _vm_options(scn)
    scn.set_defaults(func=cmd_scenarios)
    mtx = sub.add_parser(
        "matrix", help="per Debian kernel release: both variants from its source, a verdict"
    )
    _campaign_options(mtx)
    # config: harness.analysis.matrix.default_config(); modules: build/matrix-modules
    mtx.set_defaults(config=None)
    _vm_options(mtx)
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
    prv = sub.add_parser(
        "prove-fixed",
        help="run a variant until N clean iterations or the first failure (resumable)",
    )
    prv.add_argument(
        "--config",
        default=str(DEFAULT_CONFIG.parent / "prove-ns-remove-path.toml"),
        help="campaign TOML file (default: configs/prove-ns-remove-path.toml)",
    )
    prv.add_argument("--out", required=True, help="results directory (the same one resumes)")
    prv.add_argument("--iterations", type=int, help="clean iterations to reach (default 1000)")
    prv.add_argument("--seed", type=int, help="override campaign.seed")
    prv.add_argument(
        "--variant", choices=config_mod.VARIANTS, default="fixed", help="default: fixed"
    )
    prv.add_argument("--modules", help="module build cache (default: build/modules)")
    _vm_options(prv)
    prv.set_defaults(func=cmd_prove_fixed, widen=False, backend=None)
    vmp = sub.add_parser("vm-pytest", help="run pytest testcases/ inside the VM")
    vmp.add_argument("--out", required=True)
    _vm_options(vmp)
    vmp.add_argument(
        "--workers",
        type=int,
        default=1,
        help="boot N VMs at once, each running one group of the testcases (pytest-split); "
        "worth it only with the cores for N VMs: on 2 cores under TCG 2 took as long as 1",
    )
    vmp.add_argument("pytest_args", nargs=argparse.REMAINDER)
    vmp.set_defaults(func=cmd_vm_pytest)
    selftest = sub.add_parser("selftest-crash", help="check the VM runner's crash handling")
    selftest.add_argument("--out", required=True)
    _vm_options(selftest)
    selftest.set_defaults(func=cmd_selftest_crash)
    fallback = sub.add_parser(
        "selftest-kvm-fallback",
        help="check that a KVM that cannot run the guest is followed by a TCG boot",
    )
    fallback.add_argument("--out", required=True)
    _vm_options(fallback)
    fallback.set_defaults(func=cmd_selftest_kvm_fallback)
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
    clean = sub.add_parser("clean", help="remove leftovers of earlier runs")
    clean.add_argument("--dry-run", action="store_true", help="only list them")
    clean.set_defaults(func=cmd_clean)
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
    doctor = sub.add_parser("doctor", help="check that everything needed is installed")
    doctor.add_argument(
        "--test-kvm",
        action="store_true",
        help="boot the prepared kernel under KVM with a trivial command (about a minute at "
        "most) and remember whether KVM works here",
    )
    doctor.set_defaults(func=cmd_doctor)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _install_sigterm_handler()
    started = time.monotonic()
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except HarnessError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return ExitCode.INFRA
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return ExitCode.INTERRUPTED
    return status


if __name__ == "__main__":
    sys.exit(main())

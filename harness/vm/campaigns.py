"""Campaigns in VMs, from the host: what ``nvmf-harness vm``, ``compare``, ``scenarios``,
``matrix`` and ``prove-fixed`` have in common.

A host command plans campaigns (:class:`PlannedCampaign`: a config, a results directory, a
module variant) and runs them in the kernel under test: one campaign in one boot
(:func:`campaign_in_vm`), or several back to back in as few boots as they allow
(:func:`campaigns_in_vm`, harness/vm/batch.py). The guest runs ``nvmf-harness run`` with
the arguments :func:`guest_run_args` writes, on a frozen copy of the config.

How to boot is a VmOptions, what the guest's ``run`` is told a RunOptions
(harness/vm/options.py); the command line makes both of its options. Messages go through
a ``say`` callback (one line each); result tables are printed on stdout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.config import campaign as config_mod
from harness.core.console import SAY_PREFIX, Say
from harness.core.errors import HarnessError, UsageError
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE, is_iteration, read_records, render_table, summarize
from harness.kernels import nvmet_variant
from harness.kernels.prepared import default_kernel
from harness.vm import batch as vm_batch
from harness.vm.boot import VmResult, VmSpec, guest_python, record_crash, run_in_vm
from harness.vm.options import RunOptions, VmOptions
from harness.vm.progress import VmProgress

FROZEN_CONFIG = "campaign.toml"  # the config a VM campaign runs, beside its results
GUEST_CLI = ("-m", "harness.cli")  # how the guest runs nvmf-harness (it has no console script)


@dataclass(frozen=True)
class PlannedCampaign:
    """A campaign a host command runs in the VM: the config file it came from, the config
    as it will run (overrides applied), its results directory and module variant (None:
    the config's kernel.variant)."""

    config_path: Path
    config: config_mod.CampaignConfig
    outdir: Path
    variant: str | None


def fresh_outdir(outdir: Path) -> Path:
    """``outdir`` made absolute and created; HarnessError when it already holds results
    (records are appended, so an old run's would mix with the new one's)."""
    outdir = outdir.resolve()
    if (outdir / RESULTS_FILE).exists():
        raise HarnessError(f"{outdir} already holds results", hint="choose a new --out")
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir


def kernel_image(path: str) -> str:
    """``--kernel``: an existing kernel image file, or a kernel build directory (the kdir
    ``nvmf-harness build-kernel`` printed: vng boots it with its own modules); else a
    one-line UsageError before any boot."""
    given = Path(path)
    if given.is_file() or (given.is_dir() and (given / "arch/x86/boot/bzImage").is_file()):
        return path
    raise UsageError(
        f"--kernel {path}: no such kernel image file or kernel build directory",
        hint="give /boot/vmlinuz-<release> (ls /boot), a bzImage, or a kdir of build-kernel",
    )


def vm_spec(options: VmOptions, budget_s: float, writable: tuple[Path, ...] = ()) -> VmSpec:
    """The VmSpec of a boot: ``options``, with ``budget_s`` seconds as the VM timeout unless
    ``options.timeout_s`` is given, and ``writable`` the results directories the guest writes
    besides the boot's own. Raises HarnessError for a missing kernel image (or none
    prepared) and a boot timeout not above 0."""
    if options.boot_timeout_s is not None and options.boot_timeout_s <= 0:
        raise HarnessError(f"--boot-timeout {options.boot_timeout_s:g}: give seconds above 0")
    return VmSpec(
        kernel=kernel_image(options.kernel) if options.kernel else default_kernel(),
        memory=options.memory,
        cpus=options.cpus,
        accel=options.accel,
        timeout_s=options.timeout_s or budget_s,
        boot_timeout_s=options.boot_timeout_s,
        writable=writable,
    )


def run_budget_s(config: config_mod.CampaignConfig) -> float:
    """VM seconds a campaign may take before the runner kills the VM (boot included)."""
    ccfg = config.campaign
    per_iteration = ccfg.warmup_s + ccfg.jitter_s + ccfg.hold_s + ccfg.settle_s + 15
    return 300 + ccfg.iterations * min(per_iteration + ccfg.recover_timeout_s, 300)


def guest_run_args(options: RunOptions, run: PlannedCampaign) -> list[str]:
    """The ``nvmf-harness run`` arguments that run ``run`` in the guest.

    The guest reads a copy of the config frozen now (``<outdir>/campaign.toml``, written
    here), not the file it came from: an edit of that file while campaigns wait their turn
    in the VM must not change them (it did: a matrix's last release ran another mechanism).
    """
    run.outdir.mkdir(parents=True, exist_ok=True)
    frozen = run.outdir / FROZEN_CONFIG
    frozen.write_text(
        f"# {run.config_path.resolve()} as it was when the campaign was planned\n"
        + config_mod.to_toml(run.config)
    )
    guest = ["--config", str(frozen), "--out", str(run.outdir)]
    if options.iterations:
        guest += ["--iterations", str(options.iterations)]
    if options.seed is not None:
        guest += ["--seed", str(options.seed)]
    if options.widen:
        guest.append("--widen")
    if run.variant:
        guest += ["--variant", run.variant]
    if options.modules:
        guest += ["--modules", str(options.modules.resolve())]
    if options.backend:
        guest += ["--backend", options.backend]
    if options.stop_on_failure:
        guest.append("--stop-on-failure")
    return guest


def print_run_table(outdir: Path) -> None:
    """Print the per-fault table of the results in ``outdir`` (nothing when there are none)."""
    records = list(read_records(outdir / RESULTS_FILE))
    if records:
        print(render_table(summarize(r for r in records if is_iteration(r))), flush=True)


def last_words(vm_dir: Path) -> str:
    """The console's last non-empty line (``console.log`` in ``vm_dir``), or "no output"
    ("no console.log" when there is none)."""
    try:
        lines = (vm_dir / "console.log").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no console.log"
    last = next((line for line in reversed(lines.splitlines()) if line.strip()), "")
    return last.strip() or "no output"


def build_target_modules(kernel: str, runs: list[PlannedCampaign], say: Say) -> None:
    """Before a boot of ``kernel`` (an image path): the patched nvmet for it when one of
    ``runs`` needs it (built, or found built)."""
    build = nvmet_variant.build_for_configs(kernel, [run.config for run in runs])
    if build is not None:
        say(
            f"patched nvmet (ns visibility) for {build.release} from {build.source_tarball}: "
            f"srcversion {build.srcversion}"
        )


def _vm_said(result: VmResult, say: Say) -> None:
    first = f"{result.boot_s:.1f} s" if result.boot_s is not None else "?"
    say(f"VM finished in {result.wall_s:.1f} s (first harness output after {first})")


def _death(result: VmResult) -> str:
    return "timed out" if result.timed_out else "died (kernel crash or panic?)"


def campaign_in_vm(vm: VmOptions, options: RunOptions, run: PlannedCampaign, say: Say) -> int:
    """One campaign in one VM boot; prints its table. Returns the guest's exit status, or
    ExitCode.INFRA when the VM crashed, timed out or gave none."""
    outdir = run.outdir
    spec = vm_spec(vm, run_budget_s(run.config))
    build_target_modules(spec.kernel, [run], say)
    guest = [guest_python(), *GUEST_CLI, "run", *guest_run_args(options, run)]
    say(f"booting {spec.kernel} ({spec.cpus} CPUs, {spec.memory}); console: {outdir}/console.log")
    with VmProgress(SAY_PREFIX) as progress:
        result = run_in_vm(spec, outdir, guest, on_line=progress.line)
    _vm_said(result, say)
    if result.crashed or result.timed_out:
        record_crash(outdir, result)
        say(f"the VM {_death(result)}; console tail in {outdir}/console.log")
    print_run_table(outdir)
    if result.crashed or result.timed_out:
        return ExitCode.INFRA
    return result.exit_status if result.exit_status is not None else ExitCode.INFRA


def campaigns_in_vm(
    vm: VmOptions, options: RunOptions, runs: list[PlannedCampaign], vm_dir: Path, say: Say
) -> dict[Path, int]:
    """Several campaigns back to back in one boot (more boots only where a run needs one:
    see harness/vm/batch.py); ``vm.vm_per_run`` boots one VM per campaign instead. The
    plans and the console go to ``vm_dir``. Prints each run's table; returns each run's
    exit status by its results directory (ExitCode.INFRA for one the VM failed)."""
    if vm.vm_per_run:
        statuses = {}
        for run in runs:
            say(f"=== {run.outdir.name} ({run.variant or run.config.kernel.variant})")
            statuses[run.outdir] = campaign_in_vm(vm, options, run, say)
        return statuses
    build_target_modules(vm.kernel or default_kernel(), runs, say)
    planned = [
        vm_batch.GuestRun(run.outdir, tuple(guest_run_args(options, run)), run_budget_s(run.config))
        for run in runs
    ]

    def boot(plan: Path, budget_s: float) -> VmResult:
        # Each run's directory must be writable in the guest, wherever it is.
        spec = vm_spec(vm, budget_s, writable=tuple(run.outdir for run in runs))
        say(
            f"booting {spec.kernel} ({spec.cpus} CPUs, {spec.memory}) for "
            f"{len(vm_batch.read_plan(plan))} campaign(s) back to back; "
            f"console: {vm_dir}/console.log"
        )
        guest = [guest_python(), *GUEST_CLI, "run-plan", str(plan)]
        with VmProgress(SAY_PREFIX) as progress:
            result = run_in_vm(spec, vm_dir, guest, on_line=progress.line)
        _vm_said(result, say)
        return result

    def on_crash(outdir: Path, result: object) -> None:
        assert isinstance(result, VmResult)
        record_crash(outdir, result)
        say(f"the VM {_death(result)} during {outdir.name}; console tail in {vm_dir}/console.log")

    outcome = vm_batch.run_batch(planned, vm_dir, boot, on_crash)
    if outcome.not_started is not None:
        say(
            f"boot {outcome.boots} of the VM ended before its first campaign "
            f"({outcome.not_started.name}) started ({last_words(vm_dir)}): the campaigns not "
            f"run are infrastructure failures; console: {vm_dir}/console.log"
        )
    for run in runs:
        status = outcome.statuses.get(run.outdir)
        say(f"=== {run.outdir.name} ({run.variant}): exit status {status}")
        print_run_table(run.outdir)
    return outcome.statuses

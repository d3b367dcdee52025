"""``nvmf-harness blktests``, the host side: blktests cases in the VM on one module variant,
blktests' verdict beside the harness's witness counts.

The guest runs ``nvmf-harness blktests-guest`` (harness/campaign/blktests_run.py), which
writes one JSON line per case run to ``<out>/blktests.jsonl`` and blktests' own files to
``<out>/results/``; this side checks the checkout before it boots, boots, and prints the
table of those lines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bed import blktests
from harness.campaign.blktests_run import RECORDS_FILE
from harness.core.console import SAY_PREFIX, Say
from harness.core.errors import UsageError
from harness.core.exits import ExitCode
from harness.core.results import format_cell, read_records
from harness.vm.boot import guest_python, run_in_vm
from harness.vm.campaigns import GUEST_CLI, vm_spec
from harness.vm.options import VmOptions
from harness.vm.progress import VmProgress

BOOT_BUDGET_S = 600.0  # boot, copy, module check and the witness's attach under TCG
FAILING = frozenset({"fail", "error", "timeout"})


@dataclass(frozen=True)
class BlktestsOptions:
    """What to run: ``checkout`` (the user's blktests), ``cases`` (``ours`` or
    ``group/NNN``), each ``repeat`` times, on ``variant``; ``modules`` the module build
    cache (None: build/modules); ``witness``: run the BPF witness where it can;
    ``case_timeout_s``: seconds one ./check may take."""

    checkout: Path
    cases: tuple[str, ...]
    variant: str
    repeat: int = 1
    modules: Path | None = None
    witness: bool = True
    case_timeout_s: float = 600.0


def check_options(options: BlktestsOptions) -> BlktestsOptions:
    """The options with the checkout resolved; UsageError (one line) for a missing or
    foreign checkout, a bad case name or repeat count, before anything boots."""
    checkout = blktests.check_checkout(options.checkout)
    blktests.resolve_cases(list(options.cases), "nvme/000")
    blktests.our_case()
    if options.repeat < 1:
        raise UsageError(f"--repeat {options.repeat}: give at least 1")
    return BlktestsOptions(
        checkout,
        options.cases,
        options.variant,
        options.repeat,
        options.modules.resolve() if options.modules else None,
        options.witness,
        options.case_timeout_s,
    )


def guest_argv(options: BlktestsOptions, outdir: Path) -> list[str]:
    """The guest's ``blktests-guest`` command line."""
    argv = [guest_python(), *GUEST_CLI, "blktests-guest", "--blktests", str(options.checkout)]
    argv += ["--out", str(outdir), "--variant", options.variant, "--repeat", str(options.repeat)]
    argv += ["--case-timeout", f"{options.case_timeout_s:g}"]
    if options.modules:
        argv += ["--modules", str(options.modules)]
    if not options.witness:
        argv.append("--no-witness")
    return [*argv, *options.cases]


def run_blktests(vm: VmOptions, options: BlktestsOptions, outdir: Path, say: Say) -> int:
    """Boot, run the cases, print the table. Returns ExitCode.OK when every run passed or
    was not run, FAILED when one failed, INFRA when the VM failed or nothing was recorded.
    Raises UsageError before the boot (check_options, an ``outdir`` with results)."""
    options = check_options(options)
    outdir = outdir.resolve()
    if (outdir / RECORDS_FILE).exists():
        raise UsageError(f"{outdir} already holds {RECORDS_FILE}", hint="choose a new --out")
    outdir.mkdir(parents=True, exist_ok=True)
    runs = len(options.cases) * options.repeat
    spec = vm_spec(vm, BOOT_BUDGET_S + runs * options.case_timeout_s)
    say(
        f"booting {spec.kernel} for blktests {' '.join(options.cases)} x{options.repeat} on "
        f"{options.variant}; console: {outdir}/console.log"
    )
    with VmProgress(SAY_PREFIX) as progress:
        result = run_in_vm(spec, outdir, guest_argv(options, outdir), on_line=progress.line)
    records = list(read_records(outdir / RECORDS_FILE))
    if records:
        print(render_table(records), flush=True)
    if result.crashed or result.timed_out:
        say(f"the VM {'timed out' if result.timed_out else 'died'}; see {outdir}/console.log")
        return ExitCode.INFRA
    if not records or result.exit_status not in (ExitCode.OK, ExitCode.FAILED):
        say(f"the guest recorded no case (exit {result.exit_status}); see {outdir}/console.log")
        return ExitCode.INFRA
    return exit_status(records)


def exit_status(records: list[dict[str, Any]]) -> int:
    """FAILED when a run failed, errored or timed out; else OK."""
    return ExitCode.FAILED if any(r.get("status") in FAILING for r in records) else ExitCode.OK


def render_table(records: list[dict[str, Any]]) -> str:
    """One row per case run: case, run, blktests' status and reason, its run time, and what
    the harness saw meanwhile (EOD-race lines, BPF witness bios, loaded module variants)."""
    header = ("case", "run", "blktests", "time s", "EOD lines", "BPF bios", "modules")
    rows = [header]
    for record in records:
        name = str(record.get("case", "?")) + (" (ours)" if record.get("ours") else "")
        status = str(record.get("status", "?"))
        if record.get("reason"):
            status += f" ({record['reason']})"
        runtime = record.get("runtime_s")
        rows.append(
            (
                name,
                str(record.get("run", "")),
                status,
                "-" if runtime is None else f"{float(runtime):.1f}",
                str(record.get("eod_race_lines", 0)),
                format_cell(record.get("witness_events")),
                ",".join(record.get("modules_seen") or []) or "-",
            )
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(header))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(widths[col]) if col in (1, 3, 4, 5) else cell.ljust(widths[col])
            for col, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)

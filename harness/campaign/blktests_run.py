"""blktests cases in the kernel under test (inside the VM, as root), with the harness's
witnesses beside blktests' own verdict.

For each case and run: ``./check -o <dir> <case>`` in a writable copy of the user's
checkout (our case installed as the next free nvme number, harness.bed.blktests), with
modprobe loading the chosen nvme module variant (harness.bed.modprobe_variant). Meanwhile
the harness counts what it counts in a campaign: the EOD-race kernel line
(block/blk-core.c:bio_check_eod, harness.campaign.kmsg) and, where bpftrace runs, the
block-layer witness's failed bios (harness.campaign.witness); and it samples which
nvme_core is loaded (every SAMPLE_S seconds), so a case that loaded another variant shows.

Each run gives one :class:`CaseRecord` (a JSON line of ``blktests.jsonl``); blktests' own
files (``<case>.full``, ``.out.bad``, ``.dmesg``, the result file) are copied to
``results/run-<k>/`` of the output directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.bed import blktests
from harness.bed.module_records import HOST_VARIANTS, default_cache_dir, load_variant_record
from harness.bed.target import mount_configfs
from harness.bed.variants import DISTRO, SYS_MODULE
from harness.campaign.kmsg import KmsgWindows
from harness.campaign.witness import Witness, start_or_say_why
from harness.core.errors import HarnessError, ToolError
from harness.core.results import JsonlWriter

RECORDS_FILE = "blktests.jsonl"
RESULTS_DIR = "results"
KMSG_DIR = "kmsg"
SAMPLE_S = 0.5
KILL_WAIT_S = 10.0


@dataclass
class CaseRecord:
    """One run of one blktests case.

    ``status``: blktests' pass, fail or ``not run`` (``error`` when ./check gave no result
    file, ``timeout`` when it was killed); ``reason``: blktests' reason (output, exit,
    dmesg) or skip reasons; ``runtime_s``: the test function's time as blktests measured
    it; ``wall_s``: ./check's whole run (setup and cleanup included); ``eod_race_lines``:
    kernel lines of the race; ``witness_events``: failed bios the BPF witness saw on a
    per-path disk (None when it did not run: ``witness``); ``modules_seen``: the nvme_core
    variants loaded at any sample during the run."""

    case: str
    run: int
    ours: bool
    condition: str = ""
    status: str = "error"
    reason: str = ""
    runtime_s: float | None = None
    wall_s: float = 0.0
    eod_race_lines: int = 0
    io_error_lines: int = 0
    kernel_bug_lines: int = 0
    witness_events: int | None = None
    witness: str = ""
    variant: str = ""
    modules_seen: list[str] = field(default_factory=list)
    kernel_release: str = ""
    description: str = ""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass(frozen=True)
class GuestPlan:
    """What the guest runs: the user's ``checkout``, the ``cases`` (``ours`` or
    ``group/NNN``), each ``repeat`` times, on ``variant``; ``case_timeout_s`` per ./check."""

    checkout: Path
    cases: tuple[str, ...]
    variant: str
    outdir: Path
    repeat: int = 1
    modules: Path | None = None
    witness: bool = True
    case_timeout_s: float = 600.0


class ModuleSampler:
    """Samples /sys/module/nvme_core (srcversion, out-of-tree taint) in a thread."""

    def __init__(self, every_s: float = SAMPLE_S, sys_module: str = SYS_MODULE) -> None:
        self.every_s = every_s
        self.sys_module = sys_module
        self.seen: set[tuple[str, bool]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        base = Path(self.sys_module) / "nvme_core"
        with contextlib.suppress(OSError):
            srcversion = (base / "srcversion").read_text().strip()
            taint = (base / "taint").read_text()
            self.seen.add((srcversion, "O" in taint))

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> ModuleSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def variant_names(seen: set[tuple[str, bool]], builds: dict[str, str]) -> list[str]:
    """The variants of sampled (srcversion, out_of_tree) pairs, sorted: ``distro`` for an
    in-tree module, the build whose srcversion matches (``builds``: variant -> srcversion)
    for an out-of-tree one, ``?`` for none."""
    names = set()
    for srcversion, out_of_tree in seen:
        if not out_of_tree:
            names.add(DISTRO)
            continue
        match = [name for name, version in builds.items() if version == srcversion]
        names.add(match[0] if match else "?")
    return sorted(names)


def built_srcversions(cache_dir: Path | None, release: str) -> dict[str, str]:
    """variant -> nvme-core srcversion of the builds in the module cache."""
    found = {}
    for variant in HOST_VARIANTS:
        with contextlib.suppress(ToolError):
            record = load_variant_record(cache_dir or default_cache_dir(), release, variant)
            if record is not None:
                found[variant] = record.srcversion.get("nvme-core", "")
    return found


@dataclass(frozen=True)
class CheckRun:
    """What one ./check run left: its stdout, whether it timed out, its wall time."""

    output: str
    timed_out: bool
    wall_s: float


def run_check(checkout: Path, output: Path, case: str, timeout_s: float) -> CheckRun:
    """``./check -o output case`` in ``checkout``; the whole process group is killed after
    ``timeout_s`` seconds."""
    started = time.monotonic()
    proc = subprocess.Popen(
        ["./check", "-o", str(output), case],
        cwd=checkout,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            out, _ = proc.communicate(timeout=KILL_WAIT_S)
        timed_out = True
    return CheckRun(out or "", timed_out, time.monotonic() - started)


def record_of_run(
    case: str, run: int, ours: bool, check: CheckRun, results: list[blktests.BlktestsResult]
) -> CaseRecord:
    """The record of one ./check run from its result files (the first condition's; the
    harness configures one transport) and its output."""
    record = CaseRecord(case=case, run=run, ours=ours, wall_s=round(check.wall_s, 2))
    if check.timed_out:
        record.status = "timeout"
        record.reason = "./check killed after its time limit"
    elif not results:
        record.status = "error"
        last = [line for line in check.output.splitlines() if line.strip()]
        record.reason = last[-1].strip() if last else "no result file"
    else:
        result = results[0]
        record.condition = result.condition
        record.status = result.status
        record.reason = result.reason
        if result.status == "not run":
            record.reason = blktests.skip_reasons(check.output) or result.reason
        record.runtime_s = result.runtime_s
        record.description = result.description
    return record


def run_plan(
    plan: GuestPlan,
    say: Callable[[str], None],
    prepare_modules: Callable[[str], str],
) -> list[CaseRecord]:
    """Run every case of ``plan`` ``plan.repeat`` times; records go to
    ``<outdir>/blktests.jsonl`` as they come. ``prepare_modules(variant)`` makes modprobe
    load the variant and returns its srcversion (harness.bed.modprobe_variant.install)."""
    release = platform.release()
    outdir = plan.outdir
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / KMSG_DIR).mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="nvmf-harness-blktests-"))
    checkout = blktests.copy_checkout(plan.checkout, work / "blktests")
    installed = blktests.install_case(checkout, blktests.our_case())
    cases = blktests.resolve_cases(list(plan.cases), installed)
    blktests.write_config(checkout)
    say(f"blktests copy in {checkout}; our case is {installed}; cases: {', '.join(cases)}")
    mount_configfs()
    srcversion = prepare_modules(plan.variant)
    say(f"modprobe loads the {plan.variant} nvme modules (nvme_core {srcversion})")
    builds = built_srcversions(plan.modules, release)
    witness, why = (None, "off") if not plan.witness else _start_witness(outdir)
    say("witness: bpftrace attached" if witness else f"witness: not running ({why})")
    records: list[CaseRecord] = []
    try:
        with KmsgWindows() as kmsg, JsonlWriter(outdir / RECORDS_FILE) as writer:
            watch = _Watch(kmsg, witness, why, builds, outdir)
            runs: dict[str, int] = {}
            for case in cases:
                for _ in range(plan.repeat):
                    run = runs[case] = runs.get(case, 0) + 1  # a case named twice runs twice
                    record = watch.run(checkout, work / "out" / f"run-{run}", case, run, plan)
                    record.ours = case == installed
                    record.kernel_release = release
                    writer.append(dataclasses.asdict(record))
                    records.append(record)
                    say(describe(record))
    finally:
        if witness is not None:
            witness.stop()
        shutil.rmtree(work, ignore_errors=True)
    return records


@dataclass
class _Watch:
    """One ./check run watched: the kernel log window, the witness window, the modules."""

    kmsg: KmsgWindows
    witness: Witness | None
    why: str
    builds: dict[str, str]
    outdir: Path

    def run(
        self, checkout: Path, check_out: Path, case: str, run: int, plan: GuestPlan
    ) -> CaseRecord:
        self.kmsg.skip()
        if self.witness is not None:
            self.witness.take(time.monotonic())
        with ModuleSampler() as sampler:
            check = run_check(checkout, check_out, case, plan.case_timeout_s)
        record = record_of_run(case, run, False, check, blktests.find_results(check_out, case))
        name = case.replace("/", "-")
        window = self.kmsg.take(self.outdir / KMSG_DIR / f"{name}-run{run}.txt")
        record.eod_race_lines = window.summary.eod_race_lines
        record.io_error_lines = window.summary.io_error_lines
        record.kernel_bug_lines = window.summary.kernel_bug_lines
        if self.witness is not None:
            record.witness_events = self.witness.take(time.monotonic()).events
            record.witness = "bpf"
        else:
            record.witness = self.why
        record.variant = plan.variant
        record.modules_seen = variant_names(sampler.seen, self.builds)
        _keep_results(check_out, self.outdir / RESULTS_DIR / f"run-{run}", check.output, name)
        return record


def _start_witness(outdir: Path) -> tuple[Witness | None, str]:
    witness, why = start_or_say_why(outdir / "witness.txt")
    if witness is None:
        return None, why
    try:
        witness.wait_attached()
    except HarnessError as exc:
        return None, str(exc)
    return witness, ""


def _keep_results(check_out: Path, dest: Path, output: str, name: str) -> None:
    """blktests' files of a run (and ./check's output) into ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    if check_out.is_dir():
        shutil.copytree(check_out, dest, dirs_exist_ok=True, ignore=_no_tmpdirs)
    (dest / f"{name}.check-output.txt").write_text(output)


def _no_tmpdirs(directory: str, names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("tmpdir.")]


def describe(record: CaseRecord) -> str:
    """One line per run: ``nvme/064 run 1: fail (output) in 21.3 s; EOD lines 4, BPF 12``."""
    reason = f" ({record.reason})" if record.reason else ""
    took = f"{record.runtime_s:.1f} s" if record.runtime_s is not None else "-"
    bpf = "-" if record.witness_events is None else str(record.witness_events)
    return (
        f"{record.case} run {record.run}: {record.status}{reason} in {took}; EOD lines "
        f"{record.eod_race_lines}, BPF bios {bpf}; modules {','.join(record.modules_seen) or '-'}"
    )

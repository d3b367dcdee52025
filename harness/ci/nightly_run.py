"""The nightly run itself: per kernel, the campaign and the testcases in a VM, then the
kernel's KCIDB document and status (harness.ci.nightly), then the summary.

A kernel is an installed release (``6.1.0-56-amd64``), a ``/boot/vmlinuz-<release>`` path,
a kernel build directory (a kdir of ``nvmf-harness build-kernel``), or a source to build
first: ``tree:PATH[@REF]`` (a git tree at REF, a directory, a tarball) or
``debian:linux-source-X.Y[=V]``, built as shipped with the harness's config. The campaign
and the testcases run as ``nvmf-harness vm`` and ``vm-pytest`` child processes with a time
limit each, as a CI job would run them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.ci import known_failures, nightly
from harness.ci.baseline import DEFAULT_ALPHA
from harness.core.console import Say
from harness.core.errors import HarnessError, UsageError
from harness.core.paths import REPO_ROOT
from harness.core.procs import run
from harness.kernels import debian_archive, tree_build
from harness.kernels.prepared import kernel_release

KILL_GRACE_S = 60.0
TIMED_OUT = 124  # the exit status `timeout` gives a command it ended


@dataclass(frozen=True)
class NightlyOptions:
    """What a nightly run does: ``config`` the campaign file; ``out`` the nightly directory
    (its name is the run's stamp in KCIDB ids); ``timeout_s`` per VM run (seconds);
    ``pytest_args`` for the testcases; the baselines, known failures and test level that
    judge a campaign; ``log_base_url`` where ``out`` is published (None: file:// URLs)."""

    config: Path
    out: Path
    timeout_s: float = 3600.0
    pytest_args: tuple[str, ...] = ("-v",)
    baselines: Path | None = None
    known_failures: Path | None = None
    alpha: float = DEFAULT_ALPHA
    log_base_url: str | None = None


def resolve(kernel: str, say: Say) -> nightly.KernelSpec:
    """The kernel to test: an installed release or image (nightly.resolve_kernel), a kdir,
    or a source built here first (see the module docstring). Raises HarnessError."""
    if kernel.startswith(("tree:", "debian:")):
        if kernel.startswith("debian:"):
            fetched = debian_archive.fetch_source(kernel.removeprefix("debian:"))
            source = tree_build.tarball_source(
                fetched.tarball, f"{fetched.package}_{fetched.version}"
            )
        else:
            tree, _, ref = kernel.removeprefix("tree:").partition("@")
            source = tree_build.resolve_source(tree, ref)
        built = tree_build.build_tree(source, tree_build.TreeVariant("as-shipped"), say=say)
        return nightly.KernelSpec(built.release, Path(built.kdir))
    path = Path(kernel)
    if path.is_dir():
        release = kernel_release(kernel)
        if not release:
            raise UsageError(f"{kernel}: not a kernel build directory (no kernel.release)")
        return nightly.KernelSpec(release, path)
    return nightly.resolve_kernel(kernel)


def harness_command(argv: Sequence[str], timeout_s: float) -> int:
    """``nvmf-harness ARGV`` as a child process, its output passed through; its exit status,
    or TIMED_OUT when it ran over ``timeout_s`` seconds (then it is ended: SIGTERM, then
    SIGKILL after KILL_GRACE_S)."""
    with subprocess.Popen([sys.executable, "-m", "harness.cli", *argv], cwd=REPO_ROOT) as proc:
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return TIMED_OUT


def run_nightly(kernels: Sequence[str], options: NightlyOptions, say: Say) -> int:
    """Every kernel of ``kernels`` (see the module docstring); writes each kernel's
    directory and ``summary.txt`` into ``options.out``; the exit status of
    nightly.summarize_nightly (0 pass, 1 regression, 3 infrastructure). Raises UsageError
    for a missing config or known-failure file before anything runs."""
    if not options.config.is_file():
        raise UsageError(f"config {options.config} not found")
    known = known_failures.load(options.known_failures) if options.known_failures else []
    options.out.mkdir(parents=True, exist_ok=True)
    commit = run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], timeout_s=30)
    config_name = options.config.stem
    failed: list[str] = []
    say(f"{len(kernels)} kernel(s), config {config_name}, outputs in {options.out}")
    for kernel in kernels:
        try:
            spec = resolve(kernel, say)
        except HarnessError as exc:
            say(f"{kernel}: {exc}")
            failed.append(kernel)
            continue
        directory = options.out / spec.release
        directory.mkdir(parents=True, exist_ok=True)
        say(f"=== {spec.release}: campaign {config_name}")
        campaign_rc = harness_command(
            [
                "vm",
                "--config",
                str(options.config),
                "--kernel",
                str(spec.image),
                "--out",
                str(directory / nightly.CAMPAIGN_DIR),
            ],
            options.timeout_s,
        )
        harness_command(
            [
                "report",
                str(directory / nightly.CAMPAIGN_DIR),
                "--html",
                str(directory / "report.html"),
            ],
            options.timeout_s,
        )
        say(f"=== {spec.release}: testcases")
        testcases_rc = harness_command(
            [
                "vm-pytest",
                "--kernel",
                str(spec.image),
                "--out",
                str(directory / nightly.TESTCASES_DIR),
                "--",
                *options.pytest_args,
            ],
            options.timeout_s,
        )
        base_url = options.log_base_url
        outcome = nightly.write_kernel(
            directory,
            spec.release,
            stamp=options.out.name,
            campaign_rc=campaign_rc,
            testcases_rc=testcases_rc,
            image=str(spec.image),
            config_name=config_name,
            harness_commit=commit.stdout.strip() if commit.ok else "",
            baselines_dir=options.baselines,
            known=known,
            alpha=options.alpha,
            log_base_url=f"{base_url.rstrip('/')}/{spec.release}" if base_url else None,
        )
        say(f"{spec.release}: {outcome.status}")
        for reason in outcome.reasons[:10]:
            say(f"    {reason}")
        for note in outcome.notes[:10]:
            say(f"    note: {note}")
    code, text = nightly.summarize_nightly(options.out, failed)
    (options.out / "summary.txt").write_text(text + "\n")
    print(text, flush=True)
    return code

"""``nightly``: the nightly kernel CI job (harness/ci/nightly_run.py) and its plumbing.

    nvmf-harness nightly run [--scenario NAME|FILE] [KERNEL...]
    nvmf-harness nightly kcidb DIR --release R --campaign-rc N --testcases-rc N [...]
    nvmf-harness nightly summary NIGHTLY_DIR [--failed-kernel K ...]
    nvmf-harness nightly resolve KERNEL

``run``'s defaults come from the environment a CI job sets: NVMF_NIGHTLY_OUT (default
out/nightly-<date>), NVMF_NIGHTLY_CONFIG (configs/smoke.toml), NVMF_NIGHTLY_TIMEOUT (seconds
per VM run, 3600), NVMF_NIGHTLY_PYTEST_ARGS (-v), NVMF_NIGHTLY_BASELINES (baselines/),
NVMF_NIGHTLY_KNOWN_FAILURES (configs/nightly/known-failures.toml), NVMF_NIGHTLY_LOG_BASE_URL.
Exit: 0 pass, 1 regression, 2 bad input, 3 infrastructure (harness/core/exits.py).
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import time
from pathlib import Path

from harness.core.console import say
from harness.core.errors import UsageError
from harness.core.exits import ExitCode
from harness.core.paths import CONFIGS_DIR, REPO_ROOT


def _rc(value: str) -> int | None:
    return None if value in ("", "none") else int(value)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``nightly`` and its subcommands."""
    nightly = sub.add_parser("nightly", help="the nightly kernel CI job (KCIDB, JUnit, verdicts)")
    steps = nightly.add_subparsers(dest="nightly_command", required=True)
    run = steps.add_parser(
        "run", help="per kernel: the campaign and the testcases in a VM, KCIDB, a verdict"
    )
    run.add_argument(
        "kernels",
        nargs="*",
        help="installed releases, /boot/vmlinuz-* images, kdirs of build-kernel, "
        "tree:PATH[@REF] or debian:linux-source-X.Y[=V] (built first); default: /boot/vmlinuz-*",
    )
    run.add_argument(
        "--scenario",
        help="the campaign config: configs/NAME.toml or a TOML file (default smoke, or "
        "$NVMF_NIGHTLY_CONFIG)",
    )
    run.add_argument("--out", help="the nightly directory (default $NVMF_NIGHTLY_OUT)")
    run.set_defaults(func=cmd_run)
    kc = steps.add_parser("kcidb", help="write DIR/kcidb.json and DIR/status.json")
    kc.add_argument("dir", help="the kernel's nightly directory (campaign/, testcases/)")
    kc.add_argument("--release", required=True)
    kc.add_argument("--image", default="")
    kc.add_argument("--stamp", required=True, help="the nightly run's name (unique ids)")
    kc.add_argument("--campaign-rc", type=_rc, required=True)
    kc.add_argument("--testcases-rc", type=_rc, required=True)
    kc.add_argument("--config-name", default="smoke")
    kc.add_argument("--commit", default="", help="harness git commit")
    kc.add_argument(
        "--baselines", type=Path, default=None, help="baselines directory (baseline accept)"
    )
    kc.add_argument("--known-failures", type=Path, default=None, help="known-failure list (TOML)")
    kc.add_argument("--alpha", type=float, default=0.01, help="regression test level")
    kc.add_argument(
        "--log-base-url", default=None, help="where DIR is published (default: file:// URLs)"
    )
    kc.set_defaults(func=cmd_kcidb)
    sm = steps.add_parser("summary", help="print the table, exit 0/1/3")
    sm.add_argument("dir")
    sm.add_argument("--failed-kernel", action="append", default=[])
    sm.set_defaults(func=cmd_summary)
    res = steps.add_parser("resolve", help="check a kernel argument, print RELEASE<TAB>IMAGE")
    res.add_argument("kernel")
    res.set_defaults(func=cmd_resolve)


def _scenario_config(scenario: str | None) -> Path:
    if not scenario:
        return Path(os.environ.get("NVMF_NIGHTLY_CONFIG", CONFIGS_DIR / "smoke.toml"))
    if "/" in scenario or scenario.endswith(".toml"):
        return Path(scenario)
    return CONFIGS_DIR / f"{scenario}.toml"


def cmd_run(args: argparse.Namespace) -> int:
    """``nightly run``: harness/ci/nightly_run.py run_nightly."""
    from harness.ci import nightly_run  # lazy: import cost (module docstring of app.py)

    env = os.environ
    given = args.out or env.get("NVMF_NIGHTLY_OUT")
    out = Path(given) if given else REPO_ROOT / "out" / time.strftime("nightly-%Y%m%d-%H%M%S")
    kernels = args.kernels or sorted(glob.glob("/boot/vmlinuz-*"))
    if not kernels:
        raise UsageError("no kernel given and none in /boot", hint="name one: a release or image")
    baselines = Path(env.get("NVMF_NIGHTLY_BASELINES", REPO_ROOT / "baselines"))
    known = Path(
        env.get("NVMF_NIGHTLY_KNOWN_FAILURES", CONFIGS_DIR / "nightly" / "known-failures.toml")
    )
    options = nightly_run.NightlyOptions(
        config=_scenario_config(args.scenario),
        out=out.resolve(),
        timeout_s=float(env.get("NVMF_NIGHTLY_TIMEOUT", "3600")),
        pytest_args=tuple(shlex.split(env.get("NVMF_NIGHTLY_PYTEST_ARGS", "-v"))),
        baselines=baselines,
        known_failures=known if known.is_file() else None,
        log_base_url=env.get("NVMF_NIGHTLY_LOG_BASE_URL") or None,
    )
    return nightly_run.run_nightly(kernels, options, say)


def cmd_kcidb(args: argparse.Namespace) -> int:
    """``nightly kcidb``: one kernel's kcidb.json, status.json, nightly-junit.xml; its
    status (0 pass, 1 regression, 3 infrastructure)."""
    from harness.ci import known_failures, nightly  # lazy: import cost

    outcome = nightly.write_kernel(
        Path(args.dir),
        args.release,
        stamp=args.stamp,
        campaign_rc=args.campaign_rc,
        testcases_rc=args.testcases_rc,
        image=args.image,
        config_name=args.config_name,
        harness_commit=args.commit,
        baselines_dir=args.baselines,
        known=known_failures.load(args.known_failures) if args.known_failures else [],
        alpha=args.alpha,
        log_base_url=args.log_base_url,
    )
    say(f"{args.release}: {outcome.status}")
    for reason in outcome.reasons[:10]:
        say(f"    {reason}")
    for note in outcome.notes[:10]:
        say(f"    note: {note}")
    return outcome.exit


def cmd_summary(args: argparse.Namespace) -> int:
    """``nightly summary``: the table of a nightly directory; the worst kernel's status."""
    from harness.ci import nightly  # lazy: import cost

    code, text = nightly.summarize_nightly(Path(args.dir), args.failed_kernel)
    print(text, flush=True)
    return code


def cmd_resolve(args: argparse.Namespace) -> int:
    """``nightly resolve``: RELEASE<TAB>IMAGE of a kernel argument (3 when not usable)."""
    from harness.ci import nightly_run  # lazy: import cost

    spec = nightly_run.resolve(args.kernel, say)
    print(f"{spec.release}\t{spec.image}")
    return ExitCode.OK

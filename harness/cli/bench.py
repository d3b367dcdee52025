"""``bench``: the harness's figures of merit measured in one run (harness/bench/benchmark.py,
benchmarks/README.md). The parser and the front end; the work is the bench layer's."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.config import campaign as config_mod
from harness.core.errors import UsageError
from harness.core.exits import ExitCode
from harness.core.results import read_json_object, write_json_atomic

if TYPE_CHECKING:
    from harness.bench.benchmark import BenchOptions


def _scenario(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=CONFIG")
    return name, Path(path)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``bench``."""
    parser = sub.add_parser(
        "bench", help="measure the harness's figures of merit (benchmarks/README.md)"
    )
    parser.add_argument("--out", required=True, help="output directory (bench.md, bench.json)")
    parser.add_argument("--runs", type=int, default=5, help="time-to-EIO runs per scenario")
    parser.add_argument(
        "--max-iterations", type=int, default=60, help="cap of each time-to-EIO run"
    )
    parser.add_argument("--max-seconds", type=float, help="VM time cap of each time-to-EIO run")
    parser.add_argument(
        "--scenario",
        action="append",
        type=_scenario,
        metavar="NAME=CONFIG",
        help="time-to-EIO scenario (repeatable; default: widened and natural ctrl_delete race)",
    )
    parser.add_argument("--variant", default="unfixed", choices=config_mod.VARIANTS)
    parser.add_argument("--throughput-config", type=Path, help="default: configs/pace.toml")
    parser.add_argument("--throughput-variant", default="fixed", choices=config_mod.VARIANTS)
    parser.add_argument("--throughput-iterations", type=int, default=8)
    parser.add_argument("--baseline-s", type=float, default=20.0, help="bare fio seconds")
    parser.add_argument("--floor-repeat", type=int, default=5)
    parser.add_argument("--kernel", help="kernel image (default: the one scripts/setup prepared)")
    parser.add_argument("--memory", default="2G")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--accel", choices=config_mod.ACCELS, default="auto")
    parser.add_argument("--modules", type=Path, help="module build cache (default build/modules)")
    parser.add_argument(
        "--previous", type=Path, help="an earlier bench.json: its per-minute figures beside"
    )
    parser.add_argument("--skip-eio", action="store_true", help="no time-to-EIO runs")
    parser.add_argument("--skip-throughput", action="store_true", help="no floor/throughput VM")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild bench.md/json from --out, no VM"
    )
    parser.set_defaults(func=cmd_bench)
    _add_kernel_log(sub)


def _add_kernel_log(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench-kernel-log",
        help="the main config's cycle and kernel-log cost, quiet and busy host, per revision",
    )
    parser.add_argument("--out", required=True, help="output directory (kernel-log.md/json)")
    parser.add_argument(
        "--revision",
        action="append",
        help="harness revision to run (repeatable, in order; default HEAD: this checkout); "
        "another one runs from a git worktree under build/bench-checkouts",
    )
    parser.add_argument(
        "--condition",
        action="append",
        choices=("quiet", "busy"),
        help="host condition (repeatable; default both: busy = one spinning process per core)",
    )
    parser.add_argument("--iterations", type=int, default=12, help="iterations per run")
    parser.add_argument("--variant", default="unfixed", choices=config_mod.VARIANTS)
    parser.add_argument(
        "--config",
        type=Path,
        help="default: each revision's own configs/race-ns-remove-path.toml",
    )
    parser.add_argument("--accel", choices=config_mod.ACCELS, default="auto")
    parser.add_argument("--kernel", help="kernel image (default: the one scripts/setup prepared)")
    parser.add_argument("--modules", type=Path, help="module build cache (default build/modules)")
    parser.add_argument(
        "--report-only", action="store_true", help="rebuild kernel-log.md/json from --out"
    )
    parser.set_defaults(func=cmd_kernel_log)


def cmd_kernel_log(args: argparse.Namespace) -> int:
    """``bench-kernel-log``: run (or re-read) and print the table; exit 0, 2 for bad input,
    3 when a run recorded nothing."""
    from harness.bench import kernel_log  # lazy: import cost (module docstring of cli.app)

    out = Path(args.out).resolve()
    if args.report_only:
        if not (out / kernel_log.REPORT_JSON).is_file():
            raise UsageError(f"{out} holds no {kernel_log.REPORT_JSON}")
        runs = kernel_log.read(out)
    else:
        options = kernel_log.KernelLogOptions(
            out=out,
            revisions=tuple(args.revision or ("HEAD",)),
            conditions=tuple(args.condition or kernel_log.CONDITIONS),
            iterations=args.iterations,
            variant=args.variant,
            config=args.config,
            accel=args.accel,
            kernel=args.kernel,
            modules=args.modules,
        )
        runs = kernel_log.run_bench(options)
    print(kernel_log.write(runs, out), end="", flush=True)
    return ExitCode.OK


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """The typed options of ``bench``'s arguments."""
    from harness.bench.benchmark import (  # lazy: import cost (the bench layer is heavy)
        DEFAULT_SCENARIOS,
        DEFAULT_THROUGHPUT_CONFIG,
        BenchOptions,
    )

    return BenchOptions(
        out=Path(args.out),
        runs=args.runs,
        max_iterations=args.max_iterations,
        max_seconds=args.max_seconds,
        scenarios=tuple(args.scenario) if args.scenario else DEFAULT_SCENARIOS,
        variant=args.variant,
        throughput_config=args.throughput_config or DEFAULT_THROUGHPUT_CONFIG,
        throughput_variant=args.throughput_variant,
        throughput_iterations=args.throughput_iterations,
        baseline_s=args.baseline_s,
        floor_repeat=args.floor_repeat,
        kernel=args.kernel,
        memory=args.memory,
        cpus=args.cpus,
        accel=args.accel,
        modules=args.modules,
        skip_eio=args.skip_eio,
        skip_throughput=args.skip_throughput,
        previous=args.previous,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    """``bench``: run the benchmarks (or rebuild the report) and print bench.md; exit 0, 2
    for a bad option or config, 3 when a VM or a step failed."""
    from harness.bench import benchmark  # lazy: import cost (the bench layer is heavy)

    options = options_from_args(args)
    if args.report_only:
        if not options.out.is_dir():
            raise UsageError(f"{options.out} is not a bench directory")
        if options.previous is not None:  # remembered for later --report-only runs
            meta_path = options.out / "bench-meta.json"
            meta = read_json_object(meta_path)
            meta["previous"] = str(options.previous.resolve())
            write_json_atomic(meta_path, meta)
        report = benchmark.collect(options.out.resolve())
    else:
        report = benchmark.run_bench(options, command=shlex.join(["nvmf-harness", *sys.argv[1:]]))
    print(benchmark.write(report, options.out.resolve()), end="", flush=True)
    return ExitCode.OK

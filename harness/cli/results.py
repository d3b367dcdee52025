"""The commands on results already written: ``report`` (the table of a results directory,
its HTML page, the merge of CI matrix jobs) and ``baseline accept`` (the failure rates the
nightly accepts).

``report --merge`` and ``--html`` import their modules when they run, not at the top: the
HTML page loads matplotlib (~0.7 s) and ``nvmf-harness --help`` must stay fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from harness.core.console import say
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.results import (
    RESULTS_FILE,
    exit_status,
    is_iteration,
    read_records,
    render_table,
    summarize,
)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        from harness.report.html import write_html  # lazy: import cost (module docstring)

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
    from harness.ci import merge  # lazy: import cost (module docstring)

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
    from harness.ci import baseline  # lazy: import cost (module docstring)

    for path in baseline.accept([Path(d) for d in args.results], Path(args.out)):
        base = baseline.load(path.parent.parent, path.parent.name, path.stem)
        assert base is not None
        print(
            f"{path}: {base.scenario} on {base.release}: {base.failing}/{base.iterations} "
            f"failing ({base.rate:.1%}), {base.date}, harness {base.harness_version}"
        )
    return ExitCode.OK

"""One self-contained HTML page for a results directory or a compare directory.

The page has no scripts, no style sheets or fonts from elsewhere, and no network access:
plots are inline SVG that matplotlib draws (harness.report.plots). Every piece of text that comes
from a run (kernel lines, error messages, fault names, even numbers) is escaped: with
``html.escape`` in the page, by the XML writer in the plots.

What it shows, per variant (one for a results directory, two or more for a compare
directory or a scenarios directory whose subdirectories are results directories):

- the run (kernel, variant, nvme_core srcversion, config) and the per-fault table;
- the race hit rate per variant (race iterations / iterations, exact 95 % interval), labelled
  with its campaign and ns_remove_path mechanism;
- application EIO per iteration (bars, with each iteration's verdict as a colored strip);
- IOPS per iteration (fio's and the pre-fault rate on the paths), with the fault of each
  iteration marked on the axis and failing iterations shaded;
- time to recover all paths per fault kind (dots, median tick);
- the iterations that did not pass, quoting their kernel lines.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.analysis.matrix import campaign_label
from harness.core.errors import HarnessError
from harness.core.results import (
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    FaultSummary,
    Verdict,
    format_cell,
    is_iteration,
    is_race_iteration,
    read_json_object,
    read_records,
    summarize,
)
from harness.report import plots
from harness.report.plots import verdict_color

COMPARE_JSON = "compare.json"  # harness.analysis.compare writes it; named here to avoid the import
MAX_EXAMPLE_LINES = 12
MAX_FAILING_SHOWN = 50


def esc(value: object) -> str:
    """Text or attribute value, escaped (quotes included)."""
    return html.escape(str(value), quote=True)


# --- loading -------------------------------------------------------------------------------------


@dataclass
class VariantRun:
    """The records and metadata of one results directory."""

    name: str
    directory: Path
    records: list[dict[str, Any]]  # iterations (records with cycle_s)
    crashes: list[dict[str, Any]] = field(default_factory=list)  # kernel_crash / vm_timeout
    run_info: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def summaries(self) -> list[FaultSummary]:
        return summarize(self.records)


@dataclass
class Report:
    """What one page shows: one or more variants, and the comparison when there is one."""

    title: str
    source: Path
    runs: list[VariantRun]
    comparison: dict[str, Any] | None = None


def load_run(directory: Path, name: str | None = None, results: Path | None = None) -> VariantRun:
    """One results directory (or one results.jsonl file in it)."""
    all_records = list(read_records(results or directory / RESULTS_FILE))
    run_info = read_json_object(directory / RUN_FILE)
    summary = read_json_object(directory / SUMMARY_FILE)
    label = name or str(run_info.get("variant") or summary.get("variant") or directory.name)
    return VariantRun(
        name=label,
        directory=directory,
        records=[r for r in all_records if is_iteration(r)],
        crashes=[r for r in all_records if not is_iteration(r)],
        run_info=run_info,
        summary=summary,
    )


def load_report(path: Path) -> Report:
    """A results directory, a results.jsonl file, or a compare directory of variants."""
    if path.is_file():
        run = load_run(path.parent, results=path)
        return Report(f"nvmf-harness report: {path.parent.name}", path, [run])
    if (path / RESULTS_FILE).exists():
        run = load_run(path)
        return Report(f"nvmf-harness report: {path.name}", path, [run])
    if not path.is_dir():
        raise HarnessError(f"{path} not found", hint="give a results or compare directory")
    subdirs = sorted(p for p in path.iterdir() if (p / RESULTS_FILE).exists())
    if not subdirs:
        raise HarnessError(
            f"{path} holds no {RESULTS_FILE}, nor subdirectories with one",
            hint="give a results directory of a run or the --out of compare",
        )
    comparison = read_json_object(path / COMPARE_JSON) or None
    order: list[str] = []
    if comparison:
        for side in ("stock", "patched"):
            variant = comparison.get(side, {}).get("variant")
            if isinstance(variant, str):
                order.append(variant)
    subdirs.sort(key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name))
    runs = [load_run(p, name=p.name) for p in subdirs]
    return Report(f"nvmf-harness comparison: {path.name}", path, runs, comparison)


# --- charts --------------------------------------------------------------------------------------


def hit_rates(runs: Sequence[VariantRun]) -> list[plots.HitRate]:
    """Race iterations / iterations per run, labelled with the run's campaign and mechanism."""
    rows = []
    for index, run in enumerate(runs):
        campaign = campaign_label(run.directory)
        if campaign.startswith(run.name):  # a scenario: its directory is its campaign
            label = campaign
        else:
            label = f"{run.name}: {campaign}" if campaign else run.name
        rows.append(
            plots.HitRate(
                label=label,
                hits=sum(1 for rec in run.records if is_race_iteration(rec)),
                trials=len(run.records),
                color=plots.variant_color(index),
            )
        )
    return rows


# --- tables and text -----------------------------------------------------------------------------

TABLE_COLUMNS = (
    ("fault", "fault"),
    ("iterations", "iters"),
    ("iterations_with_eio", "iters w/ EIO"),
    ("eio_count", "EIO"),
    ("race_iterations", "race iters"),
    ("eod_race_lines", "EOD lines"),
    ("verify_failures", "verify"),
    ("hangs", "hangs"),
    ("kernel_bugs", "bugs"),
    ("not_recovered", "unrecov"),
    ("infra_errors", "infra"),
    ("mean_cycle_s", "cycle s"),
    ("median_recover_s", "recover s"),
    ("median_iops", "IOPS"),
    ("median_pre_fault_iops", "pre-fault IOPS"),
)
_BAD_IF_NONZERO = {
    "iterations_with_eio",
    "eio_count",
    "race_iterations",
    "eod_race_lines",
    "verify_failures",
    "hangs",
    "kernel_bugs",
    "not_recovered",
    "infra_errors",
}


def fault_table(run: VariantRun) -> str:
    head = "".join(f"<th>{esc(label)}</th>" for _, label in TABLE_COLUMNS)
    rows = []
    for summary in run.summaries:
        data = summary.to_dict()
        cells = []
        for key, _ in TABLE_COLUMNS:
            value = data.get(key)
            if key == "fault":
                cells.append(f'<th scope="row">{esc(value)}</th>')
                continue
            css = ' class="bad"' if key in _BAD_IF_NONZERO and value else ""
            cells.append(f"<td{css}>{esc(_cell(key, value))}</td>")
        total = ' class="total"' if summary.fault == "all" else ""
        rows.append(f"<tr{total}>{''.join(cells)}</tr>")
    return (
        f'<table class="faults"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "mean_cycle_s":
        return f"{float(value):.1f}"
    if key == "median_recover_s":
        return f"{float(value):.2f}"
    if key in ("median_iops", "median_pre_fault_iops"):
        return f"{float(value):.0f}"
    return str(value)


FACT_COLUMNS = (
    "variant",
    "kernel",
    "nvme_core srcversion",
    "config",
    "seed",
    "iopolicy",
    "widener",
    "iterations",
    "complete",
    "elapsed s",
    "baseline IOPS",
    "VM",
)


def run_facts(run: VariantRun) -> dict[str, str]:
    """What the run was: kernel, variant, config, completeness (from run.json, summary.json)."""
    info, summary = run.run_info, run.summary
    config = info.get("config", {}) if isinstance(info.get("config"), dict) else {}
    campaign = config.get("campaign", {}) if isinstance(config.get("campaign"), dict) else {}
    first = run.records[0] if run.records else {}
    baseline = summary.get("baseline")
    values: dict[str, Any] = {
        "variant": run.name,
        "kernel": info.get("kernel_release") or first.get("kernel_release"),
        "nvme_core srcversion": info.get("srcversion") or first.get("srcversion"),
        "config": campaign.get("name"),
        "seed": campaign.get("seed"),
        "iopolicy": info.get("iopolicy") or first.get("iopolicy"),
        "widener": first.get("widener"),
        "iterations": f"{len(run.records)} of {campaign.get('iterations', '?')}",
        "complete": summary.get("complete"),
        "elapsed s": summary.get("elapsed_s"),
        "baseline IOPS": baseline.get("iops") if isinstance(baseline, dict) else None,
        "VM": ", ".join(sorted({str(c.get("verdict")) for c in run.crashes})) or "ok",
    }
    return {key: format_cell(value) for key, value in values.items()}


def facts_table(runs: Sequence[VariantRun]) -> str:
    """One row per variant: what ran, on which kernel, and whether it completed."""
    head = "".join(f"<th>{esc(name)}</th>" for name in FACT_COLUMNS)
    rows = []
    for run in runs:
        facts = run_facts(run)
        cells = "".join(f"<td>{esc(facts[name])}</td>" for name in FACT_COLUMNS[1:])
        rows.append(f'<tr><th scope="row">{esc(facts["variant"])}</th>{cells}</tr>')
    return (
        f'<table class="facts"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def failing_iterations(run: VariantRun) -> str:
    """Iterations that did not pass (and crash records), with their kernel lines."""
    bad = [r for r in run.records if r.get("verdict") != Verdict.PASS] + run.crashes
    if not bad:
        return f"<p>Every iteration of {esc(run.name)} passed.</p>"
    blocks = []
    for rec in bad[:MAX_FAILING_SHOWN]:
        verdict = str(rec.get("verdict", ""))
        heading = (
            f"iteration {rec.get('iteration', '?')}: {rec.get('fault', '?')} "
            f"on path {rec.get('path', '?')}: {verdict}"
        )
        facts = (
            f"app EIO {rec.get('app_eio', 0)}, EOD-race lines {rec.get('eod_race_lines', 0)}, "
            f"verify failures {rec.get('verify_failures', 0)}, "
            f"another path live: {'yes' if rec.get('another_path_live') else 'no'}, "
            f"recovered: {'yes' if rec.get('recovered', False) else 'no'}"
        )
        lines: list[str] = [str(x) for x in rec.get("kernel_examples", []) or []]
        lines += [f"stuck: {x}" for x in rec.get("stuck_tasks", []) or []]
        lines += [str(x) for x in rec.get("console_tail", []) or []]
        shown = lines[:MAX_EXAMPLE_LINES]
        more = len(lines) - len(shown)
        quote = "\n".join(line.replace(" | ", "\n    ") for line in shown)
        if more > 0:
            quote += f"\n... {more} more"
        error = rec.get("error")
        color = verdict_color(verdict)
        kmsg = f"iterations/{int(rec.get('iteration', 0) or 0):04d}/kmsg.txt"
        blocks.append(
            f'<div class="failing" style="border-left-color:{color}"><h4>'
            f'<span class="verdict" style="background:{color}">{esc(verdict)}</span> '
            f"{esc(heading)}</h4><p>{esc(facts)}"
            + (f"<br>error: {esc(error)}" if error else "")
            + f' <span class="path">({esc(kmsg)})</span></p>'
            + (f"<pre>{esc(quote)}</pre>" if quote else "<p><i>no kernel lines</i></p>")
            + "</div>"
        )
    if len(bad) > MAX_FAILING_SHOWN:
        blocks.append(f"<p>... and {len(bad) - MAX_FAILING_SHOWN} more (see results.jsonl)</p>")
    return "".join(blocks)


def comparison_block(comparison: dict[str, Any]) -> str:
    stock = comparison.get("stock", {})
    patched = comparison.get("patched", {})
    if not isinstance(stock, dict) or not isinstance(patched, dict):
        return ""
    rows = [
        ("iterations", "iterations"),
        ("iterations with app EIO", "iterations_with_app_eio"),
        ("of them EOD race, other path live", "race_iterations"),
        ("app EIO count", "eio_count"),
        ("EOD-race kernel lines", "eod_race_lines"),
        ("verify failures", "verify_failures"),
        ("hangs", "hangs"),
        ("infra errors", "infra_errors"),
        ("VM crashed", "crashed"),
        ("failure rate, 95% upper bound", "failure_rate_upper95"),
        ("nvme_core srcversion", "srcversion"),
    ]
    body = "".join(
        f'<tr><th scope="row">{esc(label)}</th><td>{esc(format_cell(stock.get(key)))}</td>'
        f"<td>{esc(format_cell(patched.get(key)))}</td></tr>"
        for label, key in rows
    )
    ok = bool(comparison.get("reproduced")) and bool(comparison.get("fixed"))
    return (
        f'<p class="headline {"good" if ok else "warn"}">{esc(comparison.get("headline", ""))}</p>'
        f'<table class="compare"><thead><tr><th></th><th>{esc(stock.get("variant", "stock"))}'
        f"</th><th>{esc(patched.get('variant', 'patched'))}</th></tr></thead>"
        f"<tbody>{body}</tbody></table>"
        f"<p>Fisher's exact test (race iterations), two-sided p = "
        f"{esc(comparison.get('fisher_p', '-'))}</p>"
    )


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "DejaVu Sans", Arial, sans-serif;
       color: #1b1b1b; margin: 24px 40px; max-width: 1200px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 28px 0 8px;
     border-bottom: 2px solid #ddd; padding-bottom: 3px; }
h3 { font-size: 16px; margin: 18px 0 6px; } h4 { font-size: 14px; margin: 10px 0 4px; }
.sub { color: #555; margin: 0 0 12px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 12px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
thead th { background: #f0f0f0; } tbody th { text-align: left; font-weight: 600; }
tr.total td, tr.total th { border-top: 2px solid #888; font-weight: 600; }
td.bad { background: #fde2e1; color: #a00; font-weight: 600; }
table.facts { display: block; max-width: 100%; overflow-x: auto; }
table.facts td { font-family: monospace; text-align: left; white-space: nowrap; }
.headline { font-size: 16px; font-weight: 600; padding: 8px 12px; border-radius: 4px; }
.headline.good { background: #e3f4e1; } .headline.warn { background: #fff1d6; }
svg.chart { display: block; margin: 4px 0 8px; max-width: 100%; height: auto; }
.failing { border-left: 4px solid #d62728; padding: 2px 10px; margin: 8px 0;
           background: #fafafa; }
.failing p { margin: 2px 0; font-size: 13px; }
.verdict { color: #fff; padding: 1px 6px; border-radius: 3px; font-size: 12px; }
.path { color: #777; font-family: monospace; font-size: 12px; }
pre { background: #f4f4f4; padding: 6px 8px; font-size: 12px; white-space: pre-wrap;
      word-break: break-all; margin: 4px 0; }
footer { color: #777; font-size: 12px; margin-top: 30px; }
"""


def render(report: Report) -> str:
    """The whole page, as a string."""
    runs = report.runs
    names = ", ".join(run.name for run in runs)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(report.title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{esc(report.title)}</h1>",
        f'<p class="sub">{esc(str(report.source))}: {len(runs)} variant(s): {esc(names)}</p>',
    ]
    if report.comparison:
        parts += ["<h2>Comparison</h2>", comparison_block(report.comparison)]
    parts += ["<h2>Runs</h2>", facts_table(runs), "<h2>Per fault</h2>"]
    for run in runs:
        parts += [f"<h3>{esc(run.name)}</h3>", fault_table(run)]
    parts += [
        "<h2>Race hit rate</h2>",
        '<p class="sub">Race iterations (application EIO with the race\'s failed bios seen by '
        "the EOD-race kernel line or the block-layer witness while another path was live) out "
        "of all iterations; the whisker is the exact (Clopper-Pearson) "
        "95 % interval of the rate.</p>",
        plots.hit_rate_chart(hit_rates(runs)),
        "<h2>Application EIO per iteration</h2>",
        '<p class="sub">Bars: EIO seen by fio in the iteration (a lower bound); the strip under '
        "each panel is the iteration's verdict.</p>",
        plots.eio_chart(runs),
        "<h2>IOPS per iteration</h2>",
        '<p class="sub">Triangles on the axis mark the fault of each iteration; shaded '
        "iterations did not pass.</p>",
        plots.iops_chart(runs),
        "<h2>Time to recover per fault kind</h2>",
        plots.recover_chart(runs),
        "<h2>Iterations that did not pass</h2>",
    ]
    for run in runs:
        parts += [f"<h3>{esc(run.name)}</h3>", failing_iterations(run)]
    parts.append(
        f"<footer>nvmf-harness, written {esc(time.strftime('%Y-%m-%d %H:%M:%S %Z'))}</footer>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(source: Path, out: Path) -> Path:
    """Render ``source`` (results or compare directory) into the file ``out``."""
    page = render(load_report(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out

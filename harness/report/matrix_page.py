"""The matrix as a page: a self-contained HTML file (inline style and SVG, no scripts, no
URLs) with the chart of race iterations per release and variant, the table and the reasons.

harness.analysis.matrix makes the results and the text, Markdown and JSON tables; this module
draws them (matplotlib, through harness.report.plots).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

from harness.analysis.matrix import (
    COLUMNS,
    FIXED,
    IMAGE_METHOD,
    MATRIX_HTML,
    UNFIXED,
    ReleaseResult,
    ReleaseVerdict,
    table_rows,
)
from harness.core.results import format_cell
from harness.report import plots

VERDICT_COLOURS = {
    ReleaseVerdict.AFFECTED: "#f4c7c3",
    ReleaseVerdict.FIXED: "#c8e6c9",
    ReleaseVerdict.NOT_AFFECTED: "#e3ecf7",
    ReleaseVerdict.INCONCLUSIVE: "#fff3c4",
}


MATRIX_VARIANT_COLOURS = {UNFIXED: "#d62728", FIXED: "#1f77b4"}


def matrix_chart(results: Sequence[ReleaseResult]) -> str:
    """The matrix as a chart (inline SVG, harness.report.plots): per release, the race iterations of
    each variant out of its iterations with the exact 95 % interval, the release's rows shaded
    in its verdict's colour, the verdict and Fisher's p after the unfixed row's numbers."""
    rows: list[plots.HitRate] = []
    for result in results:
        for row in result.rows:
            rows.append(
                plots.HitRate(
                    label=f"{result.release} {row.variant}"
                    + (" (as shipped)" if row.as_shipped else ""),
                    hits=row.race_iterations,
                    trials=row.iterations,
                    color=MATRIX_VARIANT_COLOURS.get(row.variant, plots.VARIANT_COLORS[0]),
                    shade=VERDICT_COLOURS[result.verdict],
                    note=(
                        f"{result.verdict}, p={format_cell(result.fisher_p)}"
                        if row.variant == UNFIXED
                        else (f"{result.verdict}" if row.patch_method == IMAGE_METHOD else "")
                    ),
                )
            )
    shown = [v for v in ReleaseVerdict if any(r.verdict == v for r in results)]
    return plots.hit_rate_chart(
        rows,
        label="Race iterations per release and variant",
        legend=[(VERDICT_COLOURS[v], str(v)) for v in shown],
        key="matrix",
    )


def render_html(results: Sequence[ReleaseResult], title: str = "Kernel release matrix") -> str:
    """A self-contained HTML page (inline style and SVG, no scripts, no URLs): the chart of
    race iterations per release and variant, the table, the reasons."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body: list[str] = []
    cells = table_rows(results)
    index = 0
    for result in results:
        colour = VERDICT_COLOURS[result.verdict]
        for _row in result.rows:
            tds = "".join(f"<td>{html.escape(cell)}</td>" for cell in cells[index])
            body.append(f'<tr style="background:{colour}">{tds}</tr>')
            index += 1
    reasons = "".join(
        f"<li><b>{html.escape(r.release)}</b> ({html.escape(r.debian_version)}, source "
        f"{html.escape(r.source)}): {html.escape(str(r.verdict))}: {html.escape(r.reason)}</li>"
        for r in results
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:system-ui,'DejaVu Sans',sans-serif;margin:1.5em}"
        "table{border-collapse:collapse;font-size:14px}"
        "th,td{border:1px solid #999;padding:.25em .5em;text-align:left}th{background:#eee}"
        "svg.chart{display:block;margin:4px 0 8px;max-width:100%;height:auto}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{matrix_chart(results)}"
        f"<table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table><ul>{reasons}</ul>"
        "<p>race iterations: application EIO with the race's failed bios seen (the EOD-race "
        "kernel line or the block-layer witness; since v6.17 the kernel prints no line) while "
        "another path was live; bars are their share of the iterations, whiskers the exact "
        "(Clopper-Pearson) 95 % interval. p: one-sided Fisher exact test, unfixed race rate "
        "above fixed (harness.analysis.compare); a Debian image's row is compared with the "
        "unfixed build of its own source when the matrix has one.</p></body></html>\n"
    )


def write(results: Sequence[ReleaseResult], outdir: Path) -> Path:
    """Write matrix.html to ``outdir``; returns its path."""
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / MATRIX_HTML
    path.write_text(render_html(results))
    return path

"""One self-contained HTML page for a results directory or a compare directory.

The page has no scripts, no style sheets or fonts from elsewhere, and no network access:
plots are inline SVG drawn here. Every piece of text that comes from a run (kernel lines,
error messages, fault names, even numbers) is escaped with ``html.escape``.

What it shows, per variant (one for a results directory, two or more for a compare
directory whose subdirectories are results directories):

- the run (kernel, variant, nvme_core srcversion, config) and the per-fault table;
- application EIO per iteration (bars, with each iteration's verdict as a colored strip);
- IOPS per iteration (fio's and the pre-fault rate on the paths), with the fault of each
  iteration marked on the axis and failing iterations shaded;
- time to recover all paths per fault kind (dots, median tick);
- the iterations that did not pass, quoting their kernel lines.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results import (
    FAILING_VERDICTS,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    FaultSummary,
    Verdict,
    format_cell,
    is_iteration,
    median,
    read_json_object,
    read_records,
    summarize,
)

COMPARE_JSON = "compare.json"  # harness.compare writes it; named here to avoid the import
VARIANT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
VERDICT_COLORS = {
    Verdict.PASS: "#2ca02c",
    Verdict.EXPECTED_EIO: "#e6a700",
    Verdict.INFRA_ERROR: "#7f7f7f",
    "kernel_crash": "#000000",
    "vm_timeout": "#000000",
}
FAIL_COLOR = "#d62728"
CHART_WIDTH = 1180
MAX_EXAMPLE_LINES = 12
MAX_FAILING_SHOWN = 50


def esc(value: object) -> str:
    """Text or attribute value, escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def verdict_color(verdict: str) -> str:
    if verdict in FAILING_VERDICTS:
        return FAIL_COLOR
    return VERDICT_COLORS.get(verdict, "#7f7f7f")


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


# --- SVG pieces ----------------------------------------------------------------------------------


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _text(x: float, y: float, content: object, **attrs: object) -> str:
    # class_ -> class, text_anchor -> text-anchor
    extra = "".join(f' {esc(k.rstrip("_").replace("_", "-"))}="{esc(v)}"' for k, v in attrs.items())
    return f'<text x="{_num(x)}" y="{_num(y)}"{extra}>{esc(content)}</text>'


def _title(content: object) -> str:
    return f"<title>{esc(content)}</title>"


@dataclass(frozen=True)
class Scale:
    """Maps data values to pixels, linear or log10 (values must be > 0 for log)."""

    low: float
    high: float
    pixel_low: float
    pixel_high: float
    log: bool = False
    integer: bool = False  # ticks only at whole numbers (counts)

    def __call__(self, value: float) -> float:
        low, high, v = self.low, self.high, value
        if self.log:
            low, high, v = math.log10(low), math.log10(high), math.log10(max(value, self.low))
        span = (high - low) or 1.0
        return self.pixel_low + (v - low) / span * (self.pixel_high - self.pixel_low)

    def ticks(self) -> list[float]:
        if self.log:
            first = math.floor(math.log10(self.low))
            last = math.ceil(math.log10(self.high))
            return [10.0**e for e in range(first, last + 1) if self.low <= 10.0**e <= self.high]
        ticks = _nice_ticks(self.low, self.high)
        return [t for t in ticks if t == int(t)] if self.integer else ticks


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    ticks = _nice_ticks(0, value)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else value
    return ticks[-1] if ticks[-1] >= value else ticks[-1] + step


def _tick_label(value: float) -> str:
    if value >= 1000 and value == int(value):
        return f"{int(value):,}"
    if value == int(value):
        return str(int(value))
    return f"{value:g}"


def _svg(width: int, height: int, label: str, body: Iterable[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}" '
        f'class="chart">{_title(label)}{"".join(body)}</svg>'
    )


def _y_axis(scale: Scale, left: float, right: float, unit: str) -> list[str]:
    parts = []
    for tick in scale.ticks():
        y = scale(tick)
        parts.append(
            f'<line x1="{_num(left)}" y1="{_num(y)}" x2="{_num(right)}" y2="{_num(y)}" '
            'class="grid"/>'
        )
        parts.append(_text(left - 6, y + 4, _tick_label(tick), text_anchor="end", class_="tick"))
    mid = (scale.pixel_low + scale.pixel_high) / 2
    parts.append(
        _text(
            14,
            mid,
            unit,
            text_anchor="middle",
            transform=f"rotate(-90 14 {_num(mid)})",
            class_="axis-label",
        )
    )
    return parts


def _x_labels(count: int, x_of: Callable[[int], float], y: float) -> list[str]:
    """Iteration numbers under the axis, thinned so they don't overlap."""
    every = max(1, math.ceil(count / 40))
    return [
        _text(x_of(i), y, i, text_anchor="middle", class_="tick")
        for i in range(1, count + 1)
        if i == 1 or i % every == 0
    ]


# --- the charts ----------------------------------------------------------------------------------

PANEL_LEFT = 70
PANEL_RIGHT = 20


def eio_chart(runs: Sequence[VariantRun]) -> str:
    """App EIO per iteration, one panel per variant, with a verdict strip under each."""
    panel_h, strip_h, gap = 120, 10, 58
    count = max((len(r.records) for r in runs), default=0)
    peak = max((int(rec.get("app_eio", 0)) for r in runs for rec in r.records), default=0)
    log = peak > 20
    height = 30 + len(runs) * (panel_h + strip_h + gap)
    plot_w = CHART_WIDTH - PANEL_LEFT - PANEL_RIGHT
    slot = plot_w / max(count, 1)
    parts: list[str] = []
    for index, run in enumerate(runs):
        top = 24 + index * (panel_h + strip_h + gap)
        bottom = top + panel_h
        if log:
            scale = Scale(0.5, _nice_log_max(peak), bottom, top, log=True)
        else:
            scale = Scale(0, max(_nice_max(peak), 2.0), bottom, top, integer=True)
        color = VARIANT_COLORS[index % len(VARIANT_COLORS)]
        total = sum(int(rec.get("app_eio", 0)) for rec in run.records)
        with_eio = sum(1 for rec in run.records if int(rec.get("app_eio", 0)) > 0)
        parts.append(
            _text(
                PANEL_LEFT,
                top - 8,
                f"{run.name}: {total} EIO in {with_eio} of {len(run.records)} iterations",
                class_="panel-title",
            )
        )
        parts += _y_axis(
            scale, PANEL_LEFT, CHART_WIDTH - PANEL_RIGHT, "EIO" + (" (log)" if log else "")
        )

        def x_of(i: int, slot: float = slot) -> float:
            return PANEL_LEFT + (i - 0.5) * slot

        for position, rec in enumerate(run.records, start=1):
            eio = int(rec.get("app_eio", 0))
            verdict = str(rec.get("verdict", ""))
            tip = (
                f"{run.name} iteration {rec.get('iteration', position)} "
                f"({rec.get('fault', '?')}, path {rec.get('path', '?')}): "
                f"{eio} EIO, verdict {verdict}"
            )
            bar_w = max(1.0, slot * 0.7)
            if eio > 0:
                y = scale(eio)
                parts.append(
                    f'<rect x="{_num(x_of(position) - bar_w / 2)}" y="{_num(y)}" '
                    f'width="{_num(bar_w)}" height="{_num(max(bottom - y, 1.5))}" '
                    f'fill="{color}" class="eio-bar">{_title(tip)}</rect>'
                )
                if slot >= 14:
                    parts.append(
                        _text(x_of(position), y - 3, eio, text_anchor="middle", class_="value")
                    )
            parts.append(
                f'<rect x="{_num(x_of(position) - slot / 2 + 0.5)}" y="{_num(bottom + 3)}" '
                f'width="{_num(max(slot - 1, 1))}" height="{strip_h}" '
                f'fill="{verdict_color(verdict)}" class="verdict-mark">{_title(tip)}</rect>'
            )
        parts.append(
            f'<line x1="{PANEL_LEFT}" y1="{_num(bottom)}" x2="{CHART_WIDTH - PANEL_RIGHT}" '
            f'y2="{_num(bottom)}" class="axis"/>'
        )
        parts += _x_labels(len(run.records), x_of, bottom + strip_h + 16)
    return _svg(CHART_WIDTH, height, "Application EIO per iteration", parts)


def _nice_log_max(value: float) -> float:
    return float(10 ** math.ceil(math.log10(max(value, 10))))


def iops_chart(runs: Sequence[VariantRun]) -> str:
    """fio IOPS and pre-fault IOPS per iteration; fault kinds marked; failures shaded."""
    panel_h, gap = 150, 64
    values = [
        float(rec.get(key) or 0)
        for r in runs
        for rec in r.records
        for key in ("fio_iops", "pre_fault_iops")
    ]
    peak = max(values, default=0.0)
    faults = _fault_order(runs)
    height = 40 + len(runs) * (panel_h + gap)
    plot_w = CHART_WIDTH - PANEL_LEFT - PANEL_RIGHT
    parts: list[str] = [_legend_iops(CHART_WIDTH - PANEL_RIGHT - 380, 14)]
    for index, run in enumerate(runs):
        top = 44 + index * (panel_h + gap)
        bottom = top + panel_h
        scale = Scale(0, _nice_max(peak), bottom, top)
        color = VARIANT_COLORS[index % len(VARIANT_COLORS)]
        count = len(run.records)
        slot = plot_w / max(count, 1)
        iops = [float(rec.get("fio_iops") or 0) for rec in run.records]
        parts.append(
            _text(
                PANEL_LEFT,
                top - 8,
                f"{run.name}: median {_fmt(median([v for v in iops if v]), 0)} IOPS",
                class_="panel-title",
            )
        )

        def x_of(i: int, slot: float = slot) -> float:
            return PANEL_LEFT + (i - 0.5) * slot

        for position, rec in enumerate(run.records, start=1):
            verdict = str(rec.get("verdict", ""))
            if verdict != Verdict.PASS:
                parts.append(
                    f'<rect x="{_num(x_of(position) - slot / 2)}" y="{top}" '
                    f'width="{_num(slot)}" height="{panel_h}" '
                    f'fill="{verdict_color(verdict)}" opacity="0.13" class="fault-band">'
                    f"{_title(f'iteration {position}: {verdict}')}</rect>"
                )
        parts += _y_axis(scale, PANEL_LEFT, CHART_WIDTH - PANEL_RIGHT, "IOPS")
        for key, filled in (("fio_iops", True), ("pre_fault_iops", False)):
            points = [
                (x_of(position), scale(float(rec[key])), rec)
                for position, rec in enumerate(run.records, start=1)
                if rec.get(key)
            ]
            if len(points) > 1:
                path = " ".join(f"{_num(x)},{_num(y)}" for x, y, _ in points)
                dash = "" if filled else ' stroke-dasharray="4 3"'
                parts.append(
                    f'<polyline points="{path}" fill="none" stroke="{color}" '
                    f'stroke-width="1.5"{dash} opacity="0.7"/>'
                )
            for x, y, rec in points:
                fill = color if filled else "#ffffff"
                label = "fio" if filled else "pre-fault"
                tip = (
                    f"{run.name} iteration {rec.get('iteration')} ({rec.get('fault')}): "
                    f"{label} {float(rec[key]):.0f} IOPS"
                )
                parts.append(
                    f'<circle cx="{_num(x)}" cy="{_num(y)}" r="4" fill="{fill}" '
                    f'stroke="{color}" stroke-width="1.5" class="iops-{label}">'
                    f"{_title(tip)}</circle>"
                )
        parts.append(
            f'<line x1="{PANEL_LEFT}" y1="{_num(bottom)}" x2="{CHART_WIDTH - PANEL_RIGHT}" '
            f'y2="{_num(bottom)}" class="axis"/>'
        )
        for position, rec in enumerate(run.records, start=1):
            fault = str(rec.get("fault", "?"))
            mark = faults.index(fault) if fault in faults else 0
            tip = f"iteration {position}: {fault} on path {rec.get('path', '?')}"
            parts.append(
                f'<path d="M {_num(x_of(position))} {_num(bottom)} l -5 9 l 10 0 z" '
                f'fill="{_fault_color(mark)}" class="fault-mark">{_title(tip)}</path>'
            )
        parts += _x_labels(count, x_of, bottom + 24)
    return _svg(CHART_WIDTH, height, "IOPS per iteration", parts)


FAULT_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")


def _fault_color(index: int) -> str:
    return FAULT_COLORS[index % len(FAULT_COLORS)]


def _fault_order(runs: Sequence[VariantRun]) -> list[str]:
    seen: dict[str, None] = {}
    for run in runs:
        for rec in run.records:
            seen.setdefault(str(rec.get("fault", "?")), None)
    return list(seen)


def _legend_iops(x: float, y: float) -> str:
    return (
        f'<circle cx="{_num(x)}" cy="{_num(y)}" r="4" fill="#555" stroke="#555"/>'
        + _text(x + 9, y + 4, "fio IOPS (whole iteration)", class_="tick")
        + f'<circle cx="{_num(x + 190)}" cy="{_num(y)}" r="4" fill="#fff" stroke="#555" '
        'stroke-width="1.5"/>' + _text(x + 199, y + 4, "pre-fault IOPS on the paths", class_="tick")
    )


def fault_legend(runs: Sequence[VariantRun]) -> str:
    """HTML legend of the fault marks (triangles) and the verdict colors."""
    items = [
        f'<span class="key"><span class="swatch tri" style="color:{_fault_color(i)}">'
        f"&#9650;</span>{esc(fault)}</span>"
        for i, fault in enumerate(_fault_order(runs))
    ]
    verdicts = sorted({str(rec.get("verdict", "")) for r in runs for rec in r.records})
    items += [
        f'<span class="key"><span class="swatch" style="background:{verdict_color(v)}">'
        f"</span>{esc(v)}</span>"
        for v in verdicts
    ]
    return f'<p class="legend">{" ".join(items)}</p>'


def recover_chart(runs: Sequence[VariantRun]) -> str:
    """Time to recover all paths, one row per fault kind, one dot per iteration."""
    faults = _fault_order(runs)
    row_h = 26 + 12 * len(runs)
    left, right = 150, 40
    height = 50 + len(faults) * row_h + 30
    times = [
        float(rec["time_to_recover_s"])
        for r in runs
        for rec in r.records
        if rec.get("time_to_recover_s") is not None
    ]
    positive = [t for t in times if t > 0]
    low = min(positive, default=0.01)
    high = max(positive, default=1.0)
    log = high / max(low, 1e-3) > 50
    if log:
        scale = Scale(
            10 ** math.floor(math.log10(max(low, 1e-3))),
            _nice_log_max(high) if high > 10 else 10 ** math.ceil(math.log10(high)),
            left,
            CHART_WIDTH - right - 90,
            log=True,
        )
    else:
        scale = Scale(0, _nice_max(high), left, CHART_WIDTH - right - 90)
    not_recovered_x = CHART_WIDTH - right - 40
    parts: list[str] = []
    plot_top, plot_bottom = 30, 30 + len(faults) * row_h
    for tick in scale.ticks():
        x = scale(tick)
        parts.append(
            f'<line x1="{_num(x)}" y1="{plot_top}" x2="{_num(x)}" y2="{plot_bottom}" class="grid"/>'
        )
        parts.append(
            _text(x, plot_bottom + 16, _tick_label(tick), text_anchor="middle", class_="tick")
        )
    parts.append(
        _text(
            (left + CHART_WIDTH - right - 90) / 2,
            plot_bottom + 34,
            "seconds until every path is live again" + (" (log scale)" if log else ""),
            text_anchor="middle",
            class_="axis-label",
        )
    )
    if any(rec.get("time_to_recover_s") is None for r in runs for rec in r.records):
        parts.append(
            _text(
                not_recovered_x, plot_top - 8, "not recovered", text_anchor="middle", class_="tick"
            )
        )
    for row, fault in enumerate(faults):
        top = plot_top + row * row_h
        parts.append(
            _text(left - 10, top + row_h / 2 + 4, fault, text_anchor="end", class_="row-label")
        )
        if row:
            parts.append(
                f'<line x1="{left}" y1="{top}" x2="{CHART_WIDTH - right}" y2="{top}" class="grid"/>'
            )
        for index, run in enumerate(runs):
            color = VARIANT_COLORS[index % len(VARIANT_COLORS)]
            y = top + 13 + index * 12
            mine = [rec for rec in run.records if rec.get("fault") == fault]
            done = [
                float(rec["time_to_recover_s"])
                for rec in mine
                if rec.get("time_to_recover_s") is not None
            ]
            for rec in mine:
                value = rec.get("time_to_recover_s")
                tip = f"{run.name} iteration {rec.get('iteration')} ({fault}): "
                if value is None:
                    parts.append(
                        _text(
                            not_recovered_x,
                            y + 4,
                            "\u2715",
                            text_anchor="middle",
                            fill=FAIL_COLOR,
                            class_="not-recovered",
                        ).replace("</text>", f"{_title(tip + 'not recovered')}</text>")
                    )
                    continue
                parts.append(
                    f'<circle cx="{_num(scale(float(value)))}" cy="{_num(y)}" r="4" '
                    f'fill="{color}" fill-opacity="0.6" stroke="{color}" class="recover-dot">'
                    f"{_title(tip + f'recovered in {float(value):.3f} s')}</circle>"
                )
            middle = median(done)
            if middle is not None:
                x = scale(middle)
                parts.append(
                    f'<line x1="{_num(x)}" y1="{_num(y - 7)}" x2="{_num(x)}" y2="{_num(y + 7)}" '
                    f'stroke="#222" stroke-width="2" class="median">'
                    f"{_title(f'{run.name} {fault}: median {middle:.3f} s')}</line>"
                )
    legend_x = left
    for index, run in enumerate(runs):
        color = VARIANT_COLORS[index % len(VARIANT_COLORS)]
        parts.append(f'<circle cx="{legend_x}" cy="12" r="5" fill="{color}"/>')
        parts.append(_text(legend_x + 9, 16, run.name, class_="tick"))
        legend_x += 30 + 8 * len(run.name)
    parts.append(
        f'<line x1="{legend_x}" y1="5" x2="{legend_x}" y2="19" stroke="#222" stroke-width="2"/>'
    )
    parts.append(_text(legend_x + 7, 16, "median", class_="tick"))
    return _svg(CHART_WIDTH, height, "Time to recover per fault kind", parts)


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
table.facts td { font-family: monospace; text-align: left; white-space: nowrap; }
.headline { font-size: 16px; font-weight: 600; padding: 8px 12px; border-radius: 4px; }
.headline.good { background: #e3f4e1; } .headline.warn { background: #fff1d6; }
svg.chart { display: block; margin: 4px 0 8px; max-width: 100%; height: auto; }
svg text { font: 12px system-ui, "DejaVu Sans", Arial, sans-serif; fill: #333; }
svg text.panel-title { font-size: 13px; font-weight: 600; fill: #111; }
svg text.row-label { font-size: 13px; fill: #111; } svg text.value { font-size: 11px; }
svg text.axis-label { font-size: 12px; fill: #555; }
svg .grid { stroke: #e6e6e6; stroke-width: 1; } svg .axis { stroke: #888; stroke-width: 1; }
.legend { font-size: 13px; } .key { margin-right: 14px; white-space: nowrap; }
.swatch { display: inline-block; width: 11px; height: 11px; margin-right: 4px;
          vertical-align: -1px; }
.swatch.tri { width: auto; height: auto; font-size: 12px; }
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
        "<h2>Application EIO per iteration</h2>",
        '<p class="sub">Bars: EIO seen by fio in the iteration (a lower bound); the strip under '
        "each panel is the iteration's verdict.</p>",
        eio_chart(runs),
        fault_legend(runs),
        "<h2>IOPS per iteration</h2>",
        '<p class="sub">Triangles on the axis mark the fault of each iteration; shaded '
        "iterations did not pass.</p>",
        iops_chart(runs),
        "<h2>Time to recover per fault kind</h2>",
        recover_chart(runs),
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

"""The charts of the HTML pages (harness.report.html, harness.analysis.matrix), drawn by matplotlib.

Each chart is one ``<svg>`` element (a string) to put inline in a page: matplotlib's SVG
backend (no display, no pyplot, no font download: it measures text with the DejaVu Sans it
ships; the page's text stays text, drawn by the browser's DejaVu Sans from fonts-dejavu-core),
then trimmed here: no XML prolog, no metadata, no unreferenced ids, coordinates to 0.1 pt.
Every mark that stands for a record gets a ``<title>`` (the browser shows it as a tooltip) and
a CSS class (tests count them); both are attached after drawing, by the artist's gid.

Charts:

- :func:`eio_chart`: application EIO per iteration, one panel per run, the verdict as a strip
  under the bars (classes ``eio-bar``, ``verdict-mark``);
- :func:`iops_chart`: fio IOPS and pre-fault IOPS per iteration, failing iterations shaded,
  the fault of each iteration as a triangle on the axis (``iops-fio``, ``iops-pre-fault``,
  ``fault-band``, ``fault-mark``);
- :func:`recover_chart`: time to recover all paths per fault kind (``recover-dot``,
  ``median``, ``not-recovered``);
- :func:`hit_rate_chart`: race iterations / iterations per row with the exact 95 % binomial
  interval (harness.analysis.stats), for runs, scenarios and the release matrix (``hit-rate``).

Matplotlib keeps its font cache under MPLCONFIGDIR; where the home directory is not
writable, this module points MPLCONFIGDIR at a directory under the system temp dir before
matplotlib is imported (matplotlib would otherwise warn and make a new one each time).
"""

from __future__ import annotations

import io
import math
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


def _matplotlib_config_dir() -> None:
    """Point MPLCONFIGDIR at a per-user temp directory when HOME cannot hold its cache."""
    if os.environ.get("MPLCONFIGDIR"):
        return
    home = Path.home()
    if os.access(home, os.W_OK):
        return
    cache = Path(tempfile.gettempdir()) / f"nvmf-harness-matplotlib-{os.getuid()}"
    cache.mkdir(mode=0o700, exist_ok=True)
    os.environ["MPLCONFIGDIR"] = str(cache)


_matplotlib_config_dir()

import matplotlib as mpl  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_svg import FigureCanvasSVG  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.layout_engine import ConstrainedLayoutEngine  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, PercentFormatter  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from harness.analysis.stats import clopper_pearson_interval  # noqa: E402
from harness.core.results import FAILING_VERDICTS, Verdict, median  # noqa: E402

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
WIDTH_PX = 1180
PX_PER_INCH = 96  # CSS pixels; matplotlib writes SVG in points (72 per inch)
VARIANT_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
FAULT_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")
FAIL_COLOR = "#d62728"
VERDICT_COLORS = {
    Verdict.PASS: "#2ca02c",
    Verdict.EXPECTED_EIO: "#e6a700",
    Verdict.INFRA_ERROR: "#7f7f7f",
    "kernel_crash": "#000000",
    "vm_timeout": "#000000",
}
MAX_VALUE_LABELS = 40  # iterations per panel up to which each EIO bar carries its number

# matplotlib's settings for every chart (rc_context: nothing leaks into other users).
STYLE: dict[str, Any] = {
    "svg.fonttype": "none",  # text stays text: small, selectable, drawn by the browser
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9,  # points: 12 CSS px
    "axes.titlesize": 9.75,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.titlepad": 5,
    "axes.labelsize": 9,
    "axes.labelcolor": "#555555",
    "axes.edgecolor": "#888888",
    "axes.linewidth": 0.75,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.spines.left": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.75,
    "xtick.color": "#333333",
    "ytick.color": "#333333",
    "ytick.major.size": 0,
    "ytick.minor.size": 0,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "legend.handletextpad": 0.4,
    "legend.columnspacing": 1.4,
    "figure.facecolor": "white",
    "path.simplify": False,  # every point is a record
}


class RunLike(Protocol):
    """What a chart needs of a run: a name and its iteration records (results.jsonl rows)."""

    @property
    def name(self) -> str: ...

    @property
    def records(self) -> list[dict[str, Any]]: ...


def _styled() -> AbstractContextManager[None]:
    """matplotlib's settings for one chart, undone afterwards."""
    return mpl.rc_context(STYLE)  # type: ignore[arg-type]  # its stubs want literal keys


def verdict_color(verdict: str) -> str:
    """The color of a verdict: red for the failing ones, grey for unknown."""
    if verdict in FAILING_VERDICTS:
        return FAIL_COLOR
    return VERDICT_COLORS.get(verdict, "#7f7f7f")


def variant_color(index: int) -> str:
    return VARIANT_COLORS[index % len(VARIANT_COLORS)]


def fault_color(index: int) -> str:
    return FAULT_COLORS[index % len(FAULT_COLORS)]


def fault_order(runs: Sequence[RunLike]) -> list[str]:
    """Fault kinds in the order they first appear."""
    seen: dict[str, None] = {}
    for run in runs:
        for rec in run.records:
            seen.setdefault(str(rec.get("fault", "?")), None)
    return list(seen)


def plain(text: object) -> str:
    """Text from a run, shown as it is (a ``$`` would start matplotlib's math mode)."""
    return str(text).replace("$", r"\$")


# --- SVG out ---------------------------------------------------------------------------------


@dataclass
class Tips:
    """Tooltips and classes for artists, attached to their SVG groups after drawing."""

    prefix: str
    items: dict[str, tuple[str, str]] = field(default_factory=dict)  # gid -> (class, text)

    def mark(self, artist: Any, css_class: str, text: str) -> None:
        gid = f"{self.prefix}-{len(self.items)}"
        artist.set_gid(gid)
        self.items[gid] = (css_class, text)


def _figure(height_px: float) -> Figure:
    fig = Figure(
        figsize=(WIDTH_PX / PX_PER_INCH, height_px / PX_PER_INCH),
        layout=ConstrainedLayoutEngine(h_pad=0.06, hspace=0.04),
    )
    FigureCanvasSVG(fig)
    return fig


_DECIMALS = re.compile(r"(\d\.\d)\d+")
_REFERENCE = re.compile(r"url\(#([^)]+)\)")
_FONT_FAMILY = re.compile(r"font-family: [^;]*;? ?")
_NO_ROTATION = re.compile(r"^rotate\(-?0 [^)]*\)$")
_TEXT_TAGS = {f"{{{SVG_NS}}}text", f"{{{SVG_NS}}}tspan"}
_GROUP = f"{{{SVG_NS}}}g"
FONT_FAMILY = "'DejaVu Sans', sans-serif"


def _referenced_ids(root: ET.Element) -> set[str]:
    found: set[str] = set()
    for element in root.iter():
        for key, value in element.attrib.items():
            found.update(_REFERENCE.findall(value))
            if key == f"{{{XLINK_NS}}}href" and value.startswith("#"):
                found.add(value[1:])
    return found


def _compact(element: ET.Element, tips: Tips, referenced: set[str]) -> list[ET.Element]:
    """``element`` trimmed, as the elements that replace it in its parent.

    Tooltips and classes attached by gid; unreferenced ids dropped; a group without
    attributes replaced by its children (an empty one by nothing); coordinates to one
    decimal; the font family left to the root; formatting whitespace dropped.
    """
    gid = element.get("id")
    if gid is not None and gid in tips.items:
        css_class, text = tips.items[gid]
        element.set("class", css_class)
        title = ET.Element(f"{{{SVG_NS}}}title")
        title.text = text
        element.insert(0, title)
    if gid is not None and gid not in referenced:
        del element.attrib["id"]
    for key in ("d", "transform", "x", "y"):
        value = element.get(key)
        if value is not None:
            element.set(key, " ".join(_DECIMALS.sub(r"\1", value).split()))
    if _NO_ROTATION.match(element.get("transform", "")):
        del element.attrib["transform"]
    link = element.attrib.pop(f"{{{XLINK_NS}}}href", None)
    if link is not None:
        element.set("href", link)  # SVG 2: no xlink namespace needed
    style = element.get("style")
    if style is not None and "font-family" in style:
        element.set("style", _FONT_FAMILY.sub("", style).strip().rstrip(";"))
    if element.tag in _TEXT_TAGS:
        return [element]
    if element.text is not None and not element.text.strip():
        element.text = None
    children: list[ET.Element] = []
    for child in list(element):
        if child.tail is not None and not child.tail.strip():
            child.tail = None
        children += _compact(child, tips, referenced)
    element[:] = children
    if element.tag == _GROUP and not element.attrib:
        return children
    return [element]


def _styles_to_classes(root: ET.Element, prefix: str) -> None:
    """A style attribute that several elements share becomes one CSS rule and a class
    (``<prefix>-s<n>``; the prefix keeps the rules of several charts in one page apart)."""
    counts = Counter(style for e in root.iter() if (style := e.get("style")) is not None)
    names = {
        style: f"{prefix}-s{index}"
        for index, (style, used) in enumerate(counts.most_common())
        if used > 1
    }
    if not names:
        return
    for element in root.iter():
        style = element.get("style")
        if style in names:
            del element.attrib["style"]
            element.set("class", f"{element.get('class', '')} {names[style]}".strip())
    defs = root.find(f"{{{SVG_NS}}}defs")
    if defs is None:
        defs = ET.Element(f"{{{SVG_NS}}}defs")
        root.insert(0, defs)
    sheet = defs.find(f"{{{SVG_NS}}}style")
    if sheet is None:
        sheet = ET.SubElement(defs, f"{{{SVG_NS}}}style")
    sheet.text = (sheet.text or "") + "".join(f".{n}{{{style}}}" for style, n in names.items())


def to_svg(fig: Figure, label: str, tips: Tips) -> str:
    """The figure as one inline ``<svg class="chart">`` element with its tooltips.

    ``label`` becomes the chart's accessible name and title. Text is escaped by the XML
    writer. The element has no xmlns (the HTML parser puts ``<svg>`` in the SVG namespace),
    so the page names no URL. Sizes are CSS pixels (the viewBox keeps matplotlib's points),
    so the page's ``max-width: 100%`` scales it down on narrow screens.
    """
    buffer = io.BytesIO()
    with mpl.rc_context({"svg.hashsalt": tips.prefix}):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(buffer.getvalue())
    for metadata in root.findall(f"{{{SVG_NS}}}metadata"):
        root.remove(metadata)
    referenced = _referenced_ids(root)
    _compact(root, tips, referenced)
    _styles_to_classes(root, tips.prefix)
    width_pt, height_pt = (float(v) for v in root.get("viewBox", "0 0 0 0").split()[2:])
    root.set("width", f"{width_pt * PX_PER_INCH / 72:.0f}")
    root.set("height", f"{height_pt * PX_PER_INCH / 72:.0f}")
    root.set("class", "chart")
    root.set("role", "img")
    root.set("aria-label", label)
    root.set("font-family", FONT_FAMILY)
    root.attrib.pop("version", None)
    heading = ET.Element(f"{{{SVG_NS}}}title")
    heading.text = label
    root.insert(0, heading)
    # Inline SVG in HTML needs no namespace declaration: the page then names no URL at all.
    return ET.tostring(root, encoding="unicode").replace(f' xmlns="{SVG_NS}"', "", 1)


def _thousands(value: float, _position: int | None = None) -> str:
    return f"{value:,.0f}"


def _iteration_axis(ax: Axes, count: int) -> None:
    ax.set_xlim(0.5, count + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(max(count, 1), 40)))
    ax.grid(False, axis="x")


def _nice_log_top(peak: float) -> float:
    return float(10 ** math.ceil(math.log10(max(peak, 10) * 3)))


# --- per iteration ---------------------------------------------------------------------------


def eio_chart(runs: Sequence[RunLike]) -> str:
    """Application EIO per iteration: a panel per run, bars and a verdict strip under them.

    Linear counts up to 20 EIO in an iteration, log10 above (the axis label says so).
    """
    with _styled():
        return _eio_chart(runs)


def _eio_chart(runs: Sequence[RunLike]) -> str:
    tips = Tips("eio")
    count = max((len(r.records) for r in runs), default=0)
    peak = max((int(rec.get("app_eio", 0)) for r in runs for rec in r.records), default=0)
    log = peak > 20
    fig = _figure(70 + 190 * max(len(runs), 1))
    axes = fig.subplots(max(len(runs), 1), 1, squeeze=False, sharey=True)[:, 0]
    for index, (ax, run) in enumerate(zip(axes, runs, strict=False)):
        strip = blended_transform_factory(ax.transData, ax.transAxes)
        color = variant_color(index)
        total = sum(int(rec.get("app_eio", 0)) for rec in run.records)
        with_eio = sum(1 for rec in run.records if int(rec.get("app_eio", 0)) > 0)
        ax.set_title(
            plain(f"{run.name}: {total} EIO in {with_eio} of {len(run.records)} iterations")
        )
        for position, rec in enumerate(run.records, start=1):
            eio = int(rec.get("app_eio", 0))
            verdict = str(rec.get("verdict", ""))
            tip = (
                f"{run.name} iteration {rec.get('iteration', position)} "
                f"({rec.get('fault', '?')}, path {rec.get('path', '?')}): "
                f"{eio} EIO, verdict {verdict}"
            )
            if eio > 0:
                (bar,) = ax.bar([position], [eio], width=0.7, color=color)
                tips.mark(bar, "eio-bar", tip)
                if len(run.records) <= MAX_VALUE_LABELS:
                    ax.annotate(
                        str(eio),
                        (position, eio),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=8,
                    )
            mark = Rectangle(
                (position - 0.49, -0.1),
                0.98,
                0.065,
                transform=strip,
                color=verdict_color(verdict),
                clip_on=False,
                linewidth=0,
            )
            ax.add_patch(mark)
            tips.mark(mark, "verdict-mark", tip)
        _iteration_axis(ax, count)
        ax.tick_params(axis="x", pad=14, length=0)
        ax.set_ylabel("EIO (log)" if log else "EIO")
    if log:
        axes[0].set_yscale("log")
        axes[0].set_ylim(0.5, _nice_log_top(peak))
        axes[0].yaxis.set_major_formatter(FuncFormatter(_thousands))
    else:
        axes[0].set_ylim(0, max(2, math.ceil(peak * 1.15)))
        axes[0].yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    by_color: dict[str, list[str]] = {}
    for verdict in sorted({str(rec.get("verdict", "")) for r in runs for rec in r.records}):
        by_color.setdefault(verdict_color(verdict), []).append(verdict)
    handles = [
        Patch(color=color, label=plain(", ".join(verdicts))) for color, verdicts in by_color.items()
    ]
    if handles:
        fig.legend(handles=handles, loc="outside upper right", ncols=len(handles))
    return to_svg(fig, "Application EIO per iteration", tips)


def iops_chart(runs: Sequence[RunLike]) -> str:
    """fio IOPS and pre-fault IOPS per iteration, a panel per run; failing iterations shaded,
    each iteration's fault kind a triangle on the axis."""
    with _styled():
        return _iops_chart(runs)


def _iops_chart(runs: Sequence[RunLike]) -> str:
    tips = Tips("iops")
    faults = fault_order(runs)
    count = max((len(r.records) for r in runs), default=0)
    peak = max(
        (
            float(rec.get(key) or 0)
            for r in runs
            for rec in r.records
            for key in ("fio_iops", "pre_fault_iops")
        ),
        default=0.0,
    )
    fig = _figure(50 + 214 * max(len(runs), 1))
    axes = fig.subplots(max(len(runs), 1), 1, squeeze=False, sharey=True)[:, 0]
    for index, (ax, run) in enumerate(zip(axes, runs, strict=False)):
        color = variant_color(index)
        iops = [float(rec.get("fio_iops") or 0) for rec in run.records]
        middle = median([v for v in iops if v])
        ax.set_title(plain(f"{run.name}: median {'-' if middle is None else f'{middle:.0f}'} IOPS"))
        for position, rec in enumerate(run.records, start=1):
            verdict = str(rec.get("verdict", ""))
            if verdict != Verdict.PASS:
                band = ax.axvspan(
                    position - 0.5, position + 0.5, color=verdict_color(verdict), alpha=0.13, lw=0
                )
                tips.mark(band, "fault-band", f"iteration {position}: {verdict}")
        for key, label, filled in (
            ("fio_iops", "fio", True),
            ("pre_fault_iops", "pre-fault", False),
        ):
            points = [
                (position, float(rec[key]), rec)
                for position, rec in enumerate(run.records, start=1)
                if rec.get(key)
            ]
            if len(points) > 1:
                ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    color=color,
                    lw=1.3,
                    ls="-" if filled else (0, (4, 3)),
                    alpha=0.7,
                )
            for x, y, rec in points:
                (dot,) = ax.plot(
                    [x], [y], "o", ms=6, mew=1.3, mec=color, mfc=color if filled else "white"
                )
                tips.mark(
                    dot,
                    f"iops-{label}",
                    f"{run.name} iteration {rec.get('iteration')} ({rec.get('fault')}): "
                    f"{label} {y:.0f} IOPS",
                )
        on_axis = blended_transform_factory(ax.transData, ax.transAxes)
        for position, rec in enumerate(run.records, start=1):
            fault = str(rec.get("fault", "?"))
            (mark,) = ax.plot(
                [position],
                [-0.045],
                "^",
                ms=7,
                color=fault_color(faults.index(fault)),
                transform=on_axis,
                clip_on=False,
            )
            tips.mark(
                mark, "fault-mark", f"iteration {position}: {fault} on path {rec.get('path', '?')}"
            )
        _iteration_axis(ax, count)
        ax.tick_params(axis="x", pad=14, length=0)
        ax.set_ylabel("IOPS")
    axes[0].set_ylim(0, peak * 1.08 if peak > 0 else 1)
    axes[0].yaxis.set_major_formatter(FuncFormatter(_thousands))
    axes[0].yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    handles: list[Any] = [
        Line2D([], [], marker="o", color="#555555", lw=1.3, label="fio IOPS (whole iteration)"),
        Line2D(
            [],
            [],
            marker="o",
            color="#555555",
            mfc="white",
            ls=(0, (4, 3)),
            lw=1.3,
            label="pre-fault IOPS on the paths",
        ),
    ]
    handles += [
        Line2D([], [], marker="^", ls="", ms=7, color=fault_color(i), label=plain(fault))
        for i, fault in enumerate(faults)
    ]
    failing = [
        str(rec.get("verdict"))
        for r in runs
        for rec in r.records
        if rec.get("verdict") != Verdict.PASS
    ]
    if failing:
        handles.append(Patch(color=verdict_color(failing[0]), alpha=0.13, label="did not pass"))
    fig.legend(handles=handles, loc="outside upper right", ncols=len(handles))
    return to_svg(fig, "IOPS per iteration", tips)


# --- per fault kind --------------------------------------------------------------------------


def recover_chart(runs: Sequence[RunLike]) -> str:
    """Seconds until every path is live again: a row per fault kind, a dot per iteration,
    a tick at each run's median, a cross in the right column for an iteration that never
    recovered. Log10 seconds when the times span more than 50x."""
    with _styled():
        return _recover_chart(runs)


def _recover_chart(runs: Sequence[RunLike]) -> str:
    tips = Tips("recover")
    faults = fault_order(runs)
    row_px = 26 + 12 * len(runs)
    unrecovered = any(rec.get("time_to_recover_s") is None for r in runs for rec in r.records)
    fig = _figure(110 + len(faults) * row_px)
    if unrecovered:
        ax, side = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [14, 1]})
    else:
        ax, side = fig.subplots(), None
    times = [
        float(rec["time_to_recover_s"])
        for r in runs
        for rec in r.records
        if rec.get("time_to_recover_s") is not None
    ]
    positive = [t for t in times if t > 0]
    low, high = min(positive, default=0.01), max(positive, default=1.0)
    log = high / max(low, 1e-3) > 50
    spread = 0.6 / max(len(runs), 1)
    for row, fault in enumerate(faults):
        for index, run in enumerate(runs):
            color = variant_color(index)
            y = row - 0.3 + spread * (index + 0.5)
            mine = [rec for rec in run.records if rec.get("fault") == fault]
            for rec in mine:
                value = rec.get("time_to_recover_s")
                tip = f"{run.name} iteration {rec.get('iteration')} ({fault}): "
                if value is None:
                    if side is not None:
                        (cross,) = side.plot([0], [y], "x", ms=8, mew=2, color=FAIL_COLOR)
                        tips.mark(cross, "not-recovered", tip + "not recovered")
                    continue
                (dot,) = ax.plot([float(value)], [y], "o", ms=7, color=color, alpha=0.6, mec=color)
                tips.mark(dot, "recover-dot", tip + f"recovered in {float(value):.3f} s")
            middle = median(
                [
                    float(r["time_to_recover_s"])
                    for r in mine
                    if r.get("time_to_recover_s") is not None
                ]
            )
            if middle is not None:
                (tick,) = ax.plot([middle], [y], "|", ms=14, mew=2, color="#222222")
                tips.mark(tick, "median", f"{run.name} {fault}: median {middle:.3f} s")
    ax.set_yticks(range(len(faults)), [plain(f) for f in faults], fontsize=9.75)
    ax.set_ylim(len(faults) - 0.5, -0.5)
    ax.grid(True, axis="x")
    ax.grid(False, axis="y")
    for row in range(1, len(faults)):
        ax.axhline(row - 0.5, color="#e6e6e6", lw=0.75)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
    else:
        ax.set_xlim(0, high * 1.08)
    ax.set_xlabel("seconds until every path is live again" + (" (log scale)" if log else ""))
    if side is not None:
        side.set_xlim(-1, 1)
        side.set_xticks([])
        side.set_title("not recovered", loc="center", fontweight="normal", fontsize=9)
        side.grid(False)
    handles: list[Any] = [
        Line2D(
            [], [], marker="o", ls="", ms=7, color=variant_color(i), alpha=0.6, label=plain(r.name)
        )
        for i, r in enumerate(runs)
    ]
    handles.append(Line2D([], [], marker="|", ls="", ms=14, mew=2, color="#222222", label="median"))
    fig.legend(handles=handles, loc="outside upper left", ncols=len(handles))
    return to_svg(fig, "Time to recover per fault kind", tips)


# --- hit rates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HitRate:
    """One row of a hit-rate chart: ``hits`` race iterations of ``trials`` iterations."""

    label: str
    hits: int
    trials: int
    color: str = VARIANT_COLORS[0]
    shade: str = ""  # a background color for the row ("" none), e.g. the release's verdict
    note: str = ""  # after the numbers at the right, e.g. the verdict


def hit_rate_chart(
    rows: Sequence[HitRate],
    label: str = "Race hit rate",
    legend: Sequence[tuple[str, str]] = (),
    key: str = "rate",
) -> str:
    """Race iterations / iterations per row as a bar, with the exact (Clopper-Pearson) 95 %
    interval as a whisker and ``k/n = rate (low-high %)`` at the right.

    ``legend`` is (color, text) pairs for the shades; ``key`` names the chart's ids and
    style classes (two charts in one page need two keys). A row with 0 trials shows no bar.
    """
    with _styled():
        return _hit_rate_chart(rows, label, legend, key)


def _percent(value: float) -> str:
    return f"{value * 100:.0f} %"


def _hit_rate_chart(
    rows: Sequence[HitRate], label: str, legend: Sequence[tuple[str, str]], key: str
) -> str:
    tips = Tips(key)
    fig = _figure(95 + 26 * max(len(rows), 1))
    ax = fig.subplots()
    text_at = blended_transform_factory(ax.transAxes, ax.transData)
    for row, item in enumerate(rows):
        if item.shade:
            ax.axhspan(row - 0.5, row + 0.5, color=item.shade, lw=0, zorder=0)
        if item.trials <= 0:
            ax.text(1.01, row, "no iterations", transform=text_at, va="center", color="#777777")
            continue
        rate = item.hits / item.trials
        low, high = clopper_pearson_interval(item.hits, item.trials)
        (bar,) = ax.barh([row], [rate], height=0.62, color=item.color, alpha=0.85)
        tips.mark(
            bar,
            "hit-rate",
            f"{item.label}: {item.hits} race iterations of {item.trials}: {_percent(rate)} "
            f"(95 % interval {_percent(low)} to {_percent(high)})",
        )
        ax.errorbar(
            [rate],
            [row],
            xerr=[[rate - low], [high - rate]],
            fmt="none",
            ecolor="#222222",
            elinewidth=1.2,
            capsize=4,
        )
        numbers = (
            f"{item.hits}/{item.trials} = {_percent(rate)}  ({_percent(low)} to {_percent(high)})"
        )
        ax.text(
            1.01,
            row,
            plain(numbers + (f"  {item.note}" if item.note else "")),
            transform=text_at,
            va="center",
        )
    ax.set_yticks(range(len(rows)), [plain(r.label) for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.grid(True, axis="x")
    ax.grid(False, axis="y")
    ax.set_xlabel("race iterations / iterations (bar), exact 95 % interval (whisker)")
    handles = [Patch(color=color, label=plain(text)) for color, text in legend]
    if handles:
        fig.legend(handles=handles, loc="outside upper right", ncols=len(handles))
    return to_svg(fig, label, tips)

"""The HTML report: valid HTML, inline SVG plots, the numbers of the records, escaping."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness import cli, report_html
from harness.errors import HarnessError
from harness.results import RESULTS_FILE

DATA = Path(__file__).parent / "data" / "report"
COMPARE = DATA / "compare"  # a real compare run (race-ctrl-delete-widened, 10 iterations each)
ALL_FAULTS = DATA / "all-faults"  # a real run of every fault kind (6 iterations)
VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "wbr", "source"}
SVG_LEAVES = {"line", "circle", "rect", "path", "polyline"}


@dataclass
class Page(HTMLParser):
    """Parses a page, checks that every element is closed in order, collects what tests need."""

    stack: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    tags: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)
    titles: list[str] = field(default_factory=list)  # SVG <title> texts (tooltips)
    pres: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    scripts: int = 0
    external: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        values = dict(attrs)
        for name in (values.get("class") or "").split():
            self.classes[name] = self.classes.get(name, 0) + 1
        for key in ("src", "href"):
            if values.get(key):
                self.external.append(str(values[key]))
        if tag == "script":
            self.scripts += 1
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self.stack and self.stack[-1] == "title" and "svg" in self.stack:
            self.titles.append(data)
        if self.stack and self.stack[-1] == "pre":
            self.pres.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.texts)


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.problems == []
    assert parser.stack == [], f"unclosed: {parser.stack}"
    return parser


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_results(directory: Path, rows: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = records(ALL_FAULTS / RESULTS_FILE)[0]
    with (directory / RESULTS_FILE).open("w") as handle:
        for index, row in enumerate(rows, start=1):
            handle.write(json.dumps({**base, "iteration": index, **row}) + "\n")
    return directory


def test_compare_page_is_valid_html_with_three_plots() -> None:
    page = parse(report_html.render(report_html.load_report(COMPARE)))
    assert page.tags["svg"] == 3
    assert page.scripts == 0
    assert page.external == []  # no links, nothing loaded from anywhere
    assert page.tags["table"] >= 3  # comparison, runs, one per-fault table per variant
    assert page.classes["eio-bar"] == 2  # unfixed iterations 4 and 8, nothing for fixed
    assert page.classes["verdict-mark"] == 20
    assert page.classes["iops-fio"] == 20
    assert page.classes["recover-dot"] == 20
    assert page.classes["fault-band"] == 2


def test_compare_page_has_the_numbers_of_the_records() -> None:
    page = parse(report_html.render(report_html.load_report(COMPARE)))
    comparison = json.loads((COMPARE / "compare.json").read_text())
    assert comparison["headline"] in page.text
    for variant in ("unfixed", "fixed"):
        for rec in records(COMPARE / variant / RESULTS_FILE):
            n = rec["iteration"]
            fault = rec["fault"]
            eio_tip = (
                f"{variant} iteration {n} ({fault}, path {rec['path']}): "
                f"{rec['app_eio']} EIO, verdict {rec['verdict']}"
            )
            assert eio_tip in page.titles
            iops_tip = f"{variant} iteration {n} ({fault}): fio {rec['fio_iops']:.0f} IOPS"
            assert iops_tip in page.titles
            recover = f"recovered in {rec['time_to_recover_s']:.3f} s"
            assert f"{variant} iteration {n} ({fault}): {recover}" in page.titles
    # unfixed stock comes first (compare.json order), its failing iterations are quoted
    assert page.text.index("unfixed") < page.text.index("fixed:")
    quoted = "\n".join(page.pres)
    assert "sector=492864" in quoted and "sector=456880" in quoted
    assert "Every iteration of fixed passed." in page.text


def test_all_fault_kinds_one_row_each_and_log_scale_for_many_eio() -> None:
    report = report_html.load_report(ALL_FAULTS)
    page = parse(report_html.render(report))
    faults = [r["fault"] for r in records(ALL_FAULTS / RESULTS_FILE)]
    for fault in faults:
        assert fault in page.text
    assert "EIO (log)" in page.text  # 628 EIO in one iteration, 0 elsewhere
    assert "628" in page.text
    assert page.classes["fault-mark"] == len(faults)
    assert "expected_eio" in page.text
    assert "No space left on device" in "\n".join(page.pres)


def test_pre_fault_iops_points_and_not_recovered_marks(tmp_path: Path) -> None:
    rows = [
        {"fault": "ctrl_delete", "fio_iops": 1200.0, "pre_fault_iops": 3400.0},
        {
            "fault": "port_remove",
            "fio_iops": 800.0,
            "pre_fault_iops": 3100.0,
            "recovered": False,
            "time_to_recover_s": None,
            "verdict": "not_recovered",
        },
    ]
    directory = make_results(tmp_path / "run", rows)
    page = parse(report_html.render(report_html.load_report(directory)))
    assert page.classes["iops-pre-fault"] == 2
    assert any("pre-fault 3400 IOPS" in t for t in page.titles)
    assert page.classes["not-recovered"] == 1
    assert "not recovered" in page.text
    assert page.classes["fault-band"] == 1  # the not_recovered iteration


def test_hostile_kernel_line_is_escaped(tmp_path: Path) -> None:
    hostile = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    rows = [
        {
            "fault": "ctrl_delete",
            "app_eio": 1,
            "eod_race_lines": 1,
            "verdict": "eio_race",
            "kernel_examples": [hostile],
            "error": "<b>bold</b>",
        }
    ]
    directory = make_results(tmp_path / "run", rows)
    (directory / "run.json").write_text(json.dumps({"variant": "<i>v</i>"}))
    html = report_html.render(report_html.load_report(directory))
    page = parse(html)
    assert page.scripts == 0
    assert page.tags.get("img") is None and page.tags.get("b") is None
    assert "<script>" not in html and "<i>v</i>" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;img" in html
    assert hostile in "\n".join(page.pres)  # shown as text, exactly
    assert "<i>v</i>" in page.text


def test_crash_record_shows_console_tail(tmp_path: Path) -> None:
    directory = make_results(tmp_path / "run", [{"fault": "ctrl_reset"}])
    with (directory / RESULTS_FILE).open("a") as handle:
        crash = {"iteration": 2, "fault": "unknown", "verdict": "kernel_crash"}
        handle.write(json.dumps({**crash, "console_tail": ["Kernel panic - not syncing"]}) + "\n")
    page = parse(report_html.render(report_html.load_report(directory)))
    assert "kernel_crash" in page.text
    assert "Kernel panic - not syncing" in "\n".join(page.pres)
    assert page.classes["verdict-mark"] == 1  # the crash record is not an iteration


def test_load_report_errors(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="not found"):
        report_html.load_report(tmp_path / "missing")
    with pytest.raises(HarnessError, match="holds no"):
        report_html.load_report(tmp_path)


def test_results_file_path_works(tmp_path: Path) -> None:
    report = report_html.load_report(ALL_FAULTS / RESULTS_FILE)
    assert len(report.runs) == 1 and len(report.runs[0].records) == 6


def test_cli_report_html_for_compare_and_results_dirs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    compare_dir = tmp_path / "cmp"
    shutil.copytree(COMPARE, compare_dir)
    out = tmp_path / "pages" / "cmp.html"
    assert cli.main(["report", str(compare_dir), "--html", str(out)]) == cli.EXIT_OK
    assert parse(out.read_text()).tags["svg"] == 3
    assert str(out) in capsys.readouterr().out
    single = tmp_path / "one.html"
    assert cli.main(["report", str(ALL_FAULTS), "--html", str(single)]) == cli.EXIT_OK
    printed = capsys.readouterr().out
    assert "ns_disable" in printed and "628" in printed  # the table is printed as before
    assert "628" in single.read_text()


def test_scale_and_ticks() -> None:
    linear = report_html.Scale(0, 10, 100, 0)
    assert linear(0) == 100 and linear(10) == 0 and linear(5) == 50
    log = report_html.Scale(1, 1000, 0, 300, log=True)
    assert log(10) == pytest.approx(100)
    assert log.ticks() == [1, 10, 100, 1000]
    counts = report_html.Scale(0, 2, 100, 0, integer=True)
    assert counts.ticks() == [0, 1, 2]

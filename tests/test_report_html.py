"""The HTML report: valid HTML, inline SVG plots (matplotlib, harness.report.plots), the numbers of
the records, escaping."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness.cli import app as cli
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE
from harness.report import html as report_html

DATA = Path(__file__).parent / "data" / "report"
COMPARE = DATA / "compare"  # a real compare run (race-ctrl-delete-widened, 10 iterations each)
ALL_FAULTS = DATA / "all-faults"  # a real run of every fault kind (6 iterations)
# two real scenarios of one `scenarios` run (10 iterations each, unfixed 6.1.0-57): the
# identity flip (9 race iterations) and the other-path variant (none)
SCENARIOS = DATA / "scenarios"
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
    ids: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] = self.tags.get(tag, 0) + 1
        values = dict(attrs)
        for name in (values.get("class") or "").split():
            self.classes[name] = self.classes.get(name, 0) + 1
        for key, value in values.items():
            if key in ("src", "href", "xlink:href") and value and not value.startswith("#"):
                self.external.append(value)  # anything but a reference inside the page
        if values.get("id"):
            self.ids.append(str(values["id"]))
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


@functools.cache
def compare_page() -> str:
    """The page of COMPARE, drawn once for the tests that only read it (a page takes ~1 s)."""
    return report_html.render(report_html.load_report(COMPARE))


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_results(directory: Path, rows: list[dict[str, Any]]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    base = records(ALL_FAULTS / RESULTS_FILE)[0]
    with (directory / RESULTS_FILE).open("w") as handle:
        for index, row in enumerate(rows, start=1):
            handle.write(json.dumps({**base, "iteration": index, **row}) + "\n")
    return directory


def test_compare_page_is_valid_html_with_four_plots() -> None:
    html = compare_page()
    page = parse(html)
    assert page.tags["svg"] == 4  # hit rate, EIO, IOPS, time to recover
    assert page.scripts == 0
    assert page.external == []  # no links, nothing loaded from anywhere
    assert "http" not in html  # not even a namespace URL
    assert len(page.ids) == len(set(page.ids))  # four charts, no id twice
    assert page.tags["table"] >= 3  # comparison, runs, one per-fault table per variant
    assert page.classes["hit-rate"] == 2
    assert page.classes["eio-bar"] == 2  # unfixed iterations 4 and 8, nothing for fixed
    assert page.classes["verdict-mark"] == 20
    assert page.classes["iops-fio"] == 20
    assert page.classes["recover-dot"] == 20
    assert page.classes["median"] == 2
    assert page.classes["fault-band"] == 2
    assert "unfixed: race-ctrl-delete-widened: 2 race iterations of 10: 20 %" in " ".join(
        page.titles
    )


def test_the_same_data_draws_the_same_page_body() -> None:
    first = compare_page()
    second = report_html.render(report_html.load_report(COMPARE))
    assert first.split("<footer>")[0] == second.split("<footer>")[0]


def test_compare_page_has_the_numbers_of_the_records() -> None:
    page = parse(compare_page())
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
    assert cli.main(["report", str(compare_dir), "--html", str(out)]) == ExitCode.OK
    assert parse(out.read_text()).tags["svg"] == 4
    assert str(out) in capsys.readouterr().out
    single = tmp_path / "one.html"
    assert cli.main(["report", str(ALL_FAULTS), "--html", str(single)]) == ExitCode.OK
    printed = capsys.readouterr().out
    assert "ns_disable" in printed and "628" in printed  # the table is printed as before
    assert "628" in single.read_text()


def test_scenarios_directory_hit_rates_name_the_mechanism() -> None:
    report = report_html.load_report(SCENARIOS)
    rates = report_html.hit_rates(report.runs)
    assert [(r.label, r.hits, r.trials) for r in rates] == [
        ("race-ns-remove-path-identity-flip (identity_flip)", 9, 10),
        ("race-ns-remove-path-other (hidden)", 0, 10),
    ]
    page = parse(report_html.render(report))
    tips = " ".join(page.titles)
    assert "9 race iterations of 10: 90 % (95 % interval 55 % to 100 %)" in tips
    assert "0 race iterations of 10: 0 % (95 % interval 0 % to 31 %)" in tips
    assert "9/10 = 90 %" in page.text
    assert page.classes["eio-bar"] == 9


def test_text_from_a_run_is_not_math(tmp_path: Path) -> None:
    directory = make_results(tmp_path / "run", [{"fault": "ctrl_delete"}])
    (directory / "run.json").write_text(json.dumps({"variant": "a $x^2$ b"}))
    page = parse(report_html.render(report_html.load_report(directory)))
    assert "a $x^2$ b: 0 EIO in 0 of 1 iterations" in page.text


def test_plots_import_under_an_unwritable_home_keeps_its_cache_in_tmp(tmp_path: Path) -> None:
    """No HOME to write to (a nonexistent one here; root could write anywhere): MPLCONFIGDIR
    goes under the temp dir, and matplotlib prints no warning."""
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env.update(HOME=str(tmp_path / "no-such-home"), TMPDIR=str(tmp_path))
    code = "import os, harness.report.plots; print(os.environ['MPLCONFIGDIR'])"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith(str(tmp_path / "nvmf-harness-matplotlib-"))
    assert done.stderr == ""

"""Baselines, known failures and the nightly's scenario verdicts, end to end on real result
directories (tests/data/nightly/README.md says where they come from)."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness.ci import baseline, known_failures, nightly
from harness.ci.baseline import Judgement, RunCounts
from harness.cli import app as cli
from harness.cli import main
from harness.core.errors import ConfigError, HarnessError
from harness.core.exits import ExitCode

DATA = Path(__file__).parent / "data" / "nightly"
REPO = Path(__file__).resolve().parent.parent
RELEASE = "6.1.0-57-amd64"
STAMP = "nightly-20261201-020000"
ACCEPTED = DATA / "accepted" / "race-ns-remove-path-fixed"


def night(tmp_path: Path, which: str = "night") -> Path:
    directory = tmp_path / STAMP / which / RELEASE
    shutil.copytree(DATA / which / RELEASE, directory)
    return directory


def accept(tmp_path: Path, *dirs: Path) -> Path:
    out = tmp_path / "baselines"
    baseline.accept(dirs, out, date="2026-12-01", version="0.1.0+gtest")
    return out


def known_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "known-failures.toml"
    path.write_text(body)
    return path


KNOWN = """
[[failure]]
kernel = "6.1.0-*-amd64"
scenario = "race-ns-remove-path"
expected_rate = 0.5
reason = "EOD race with the fix reverted"
link = "https://lore.kernel.org/linux-nvme/"
"""


# --- baseline files ------------------------------------------------------------------------------


def test_accept_writes_one_file_per_release_and_scenario(tmp_path: Path) -> None:
    out = accept(tmp_path, ACCEPTED, DATA / "accepted" / "race-ns-remove-path-fio-only-fixed")
    path = out / RELEASE / "race-ns-remove-path.json"
    data = json.loads(path.read_text())
    assert (data["failing"], data["iterations"], data["rate"]) == (0, 20, 0.0)
    assert (data["date"], data["harness_version"], data["variant"]) == (
        "2026-12-01",
        "0.1.0+gtest",
        "fixed",
    )
    assert (out / RELEASE / "race-ns-remove-path-fio-only.json").exists()
    loaded = baseline.load(out, RELEASE, "race-ns-remove-path")
    assert loaded is not None and loaded.iterations == 20
    assert baseline.load(out, RELEASE, "no-such-scenario") is None


def test_accept_pools_directories_of_the_same_pair(tmp_path: Path) -> None:
    out = accept(tmp_path, ACCEPTED, ACCEPTED)
    loaded = baseline.load(out, RELEASE, "race-ns-remove-path")
    assert loaded is not None and (loaded.failing, loaded.iterations) == (0, 40)


def test_accept_refuses_a_crashed_run_and_an_empty_dir(tmp_path: Path) -> None:
    crashed = tmp_path / "crashed"
    shutil.copytree(ACCEPTED, crashed)
    with (crashed / "results.jsonl").open("a") as handle:
        handle.write(json.dumps({"iteration": 21, "verdict": "kernel_crash"}) + "\n")
    with pytest.raises(HarnessError, match="crashed"):
        accept(tmp_path, crashed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HarnessError, match="no results"):
        accept(tmp_path, tmp_path / "empty")
    assert not (tmp_path / "baselines").exists()


def test_a_malformed_baseline_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "b" / RELEASE / "race-ns-remove-path.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"release": "x"}')
    with pytest.raises(HarnessError, match=r"not a baseline \(KeyError") as caught:
        baseline.load(tmp_path / "b", RELEASE, "race-ns-remove-path")
    assert "\n" not in str(caught.value)


def test_cli_baseline_accept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bl"
    assert cli.main(["baseline", "accept", str(ACCEPTED), "--out", str(out)]) == 0
    assert "race-ns-remove-path on 6.1.0-57-amd64: 0/20 failing" in capsys.readouterr().out
    assert (out / RELEASE / "race-ns-remove-path.json").exists()


# --- known-failure file --------------------------------------------------------------------------


def test_shipped_known_failures_load() -> None:
    entries = known_failures.load(REPO / "configs" / "nightly" / "known-failures.toml")
    assert entries and all(0 < e.expected_rate <= 1 for e in entries)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (KNOWN.replace("0.5", '"half"'), r"failure #1 \(race-ns-remove-path\): expected_rate:"),
        (KNOWN.replace("reason = ", "# "), r"failure #1 \(race-ns-remove-path\): reason: missing"),
        (KNOWN.replace("https://", "ftp://"), r"link: must be an http"),
        (KNOWN + 'colour = "red"\n', r"colour: unknown field"),
        (
            KNOWN + KNOWN.replace('kernel = "6.1.0-*-amd64"', "kernel = 1"),
            r"failure #2 \(race-ns-remove-path\): kernel: must be a non-empty string",
        ),
        ("[[failure]]\nkernel = 1\n", r"failure #1: scenario: missing"),
        ("[[failure]\n", r"not TOML"),
    ],
)
def test_bad_known_failures_name_entry_and_field(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        known_failures.load(known_file(tmp_path, body))
    assert "\n" not in str(caught.value)


# --- judge ---------------------------------------------------------------------------------------


def counts(failing: int, iterations: int) -> RunCounts:
    return RunCounts(RELEASE, "s", "distro", iterations, failing, False, ("x",))


def base(failing: int, iterations: int) -> baseline.Baseline:
    return baseline.Baseline(
        RELEASE, "s", "distro", iterations, failing, failing / iterations, "d", "v", ()
    )


def test_judge_against_a_baseline() -> None:
    assert baseline.judge(counts(6, 10), base(0, 20)).judgement == Judgement.REGRESSION
    assert baseline.judge(counts(1, 20), base(2, 20)).judgement == Judgement.PASS
    verdict = baseline.judge(counts(3, 10), base(0, 10))
    assert verdict.judgement == Judgement.INCONCLUSIVE
    assert verdict.needed_iterations is not None and verdict.needed_iterations > 10
    assert f"{verdict.needed_iterations} iterations per side would decide it" in verdict.reason


def test_judge_without_baseline_is_strict() -> None:
    assert baseline.judge(counts(1, 20)).judgement == Judgement.REGRESSION
    assert baseline.judge(counts(0, 20)).judgement == Judgement.PASS


def test_judge_a_known_failure() -> None:
    entry = known_failures.KnownFailure(RELEASE, "s", 0.3, "r", "https://x.org/")
    assert baseline.judge(counts(4, 10), known=entry).judgement == Judgement.KNOWN_FAILURE
    assert baseline.judge(counts(0, 10), known=entry).judgement == Judgement.PASS
    above = baseline.judge(counts(10, 10), known=entry)  # P(X >= 10 | 10, 0.3) = 5.9e-6
    assert above.judgement == Judgement.REGRESSION
    assert "above the known rate" in above.reason


# --- end to end: the nightly on real result directories ------------------------------------------


def kcidb_run(directory: Path, tmp_path: Path, known: str = "") -> nightly.KernelOutcome:
    argv = ["kcidb", str(directory), "--release", RELEASE, "--stamp", STAMP]
    argv += ["--campaign-rc", "1", "--testcases-rc", "0"]
    argv += ["--baselines", str(tmp_path / "baselines")]
    if known:
        argv += ["--known-failures", str(known_file(tmp_path, known))]
    code = main(["nightly", *argv])
    status = json.loads((directory / nightly.STATUS_FILE).read_text())
    assert status["exit"] == code
    return nightly.KernelOutcome(
        status["release"], code, status["reasons"], status["counts"], status["notes"]
    )


def junit_suite(directory: Path) -> ET.Element:
    suite = ET.parse(directory / nightly.NIGHTLY_JUNIT_FILE).getroot().find("testsuite")
    assert suite is not None
    return suite


def test_end_to_end_regression_against_the_baseline(tmp_path: Path) -> None:
    """Baseline: the fixed modules, 0/20. Tonight: the unfixed ones (the fix lost), 6/10."""
    accept(tmp_path, ACCEPTED)
    directory = night(tmp_path)
    outcome = kcidb_run(directory, tmp_path)
    assert outcome.exit == ExitCode.FAILED
    (reason,) = outcome.reasons
    assert reason.startswith("race-ns-remove-path: regression: 6/10 failing vs baseline 0/20")
    assert "one-sided Fisher p=0.000354 < alpha=0.01" in reason
    suite = junit_suite(directory)
    assert (suite.get("failures"), suite.get("skipped")) == ("6", "0")
    doc = json.loads((directory / nightly.KCIDB_FILE).read_text())
    assert "issues" not in doc
    assert doc["builds"][0]["misc"]["scenario"]["judgement"] == "regression"
    code, text = nightly.summarize_nightly(tmp_path / STAMP / "night")
    assert code == ExitCode.FAILED and "regression" in text


def test_end_to_end_inconclusive_says_how_many_would_decide(tmp_path: Path) -> None:
    """Baseline 0/10 on the fio-only scenario; tonight 3/10: above, not significantly."""
    accept(tmp_path, DATA / "accepted" / "race-ns-remove-path-fio-only-fixed")
    directory = night(tmp_path, "night-fio-only")
    outcome = kcidb_run(directory, tmp_path)
    assert outcome.exit == ExitCode.INFRA  # no testcases ran in this directory ...
    assert not any("regression" in r for r in outcome.reasons)  # ... and no regression
    (note,) = outcome.notes
    assert note.startswith("race-ns-remove-path-fio-only: inconclusive: 3/10 failing")
    assert "iterations per side would decide it" in note
    assert junit_suite(directory).get("failures") == "3"  # not waived: someone should look


def test_end_to_end_known_failure(tmp_path: Path) -> None:
    """The same unfixed night, listed as a known failure at 50%: passes, JUnit skips."""
    accept(tmp_path, ACCEPTED)
    directory = night(tmp_path)
    outcome = kcidb_run(directory, tmp_path, known=KNOWN)
    assert outcome.exit == ExitCode.OK, outcome.reasons
    (note,) = outcome.notes
    assert note.startswith("race-ns-remove-path: known_failure: 6/10 failing (expected 50%")
    suite = junit_suite(directory)
    assert (suite.get("failures"), suite.get("skipped"), suite.get("tests")) == ("0", "6", "10")
    skipped = suite.findall("testcase/skipped")
    message = skipped[0].get("message") or ""
    assert message.startswith("known failure: EOD race with the fix reverted (https://lore.")
    assert "eio_race" in (skipped[0].text or "")
    doc = json.loads((directory / nightly.KCIDB_FILE).read_text())
    (issue,) = doc["issues"]
    assert issue["report_url"] == "https://lore.kernel.org/linux-nvme/"
    assert len(doc["incidents"]) == 6
    failing = {t["id"] for t in doc["tests"] if t["status"] == "FAIL"}
    assert {i["test_id"] for i in doc["incidents"]} == failing


def test_end_to_end_known_failure_far_above_its_rate_is_a_regression(tmp_path: Path) -> None:
    directory = night(tmp_path)
    outcome = kcidb_run(directory, tmp_path, known=KNOWN.replace("0.5", "0.05"))
    assert outcome.exit == ExitCode.FAILED
    assert "above the known rate" in outcome.reasons[0]
    assert junit_suite(directory).get("failures") == "6"

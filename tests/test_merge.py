"""report --merge: the per-job outputs of a CI matrix as one KCIDB document and one status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import kcidb_io
import pytest

from harness.ci import merge, nightly
from harness.cli import main
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode

DATA = Path(__file__).parent / "data" / "report" / "compare"
RELEASE = "6.1.0-57-amd64"
STAMP = "nightly-12345"  # the same for every job of one workflow run: one checkout per kernel


def job(tmp_path: Path, name: str, campaign: str, scenario: str, release: str = RELEASE) -> Path:
    """A matrix job's nightly directory as scripts/nightly --scenario leaves it, from a real
    campaign results directory (``fixed``: all pass; ``unfixed``: failing iterations)."""
    directory = tmp_path / name
    kernel = directory / release
    shutil.copytree(DATA / campaign, kernel / nightly.CAMPAIGN_DIR)
    testcases = kernel / nightly.TESTCASES_DIR
    testcases.mkdir(parents=True)
    (testcases / nightly.JUNIT_FILE).write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" '
        'tests="1" failures="0" errors="0" skipped="0" time="10.5" '
        'timestamp="2026-11-28T02:10:00+00:00"><testcase '
        'classname="testcases.test_001_target_setup" name="test_both_paths_live" time="10.5"/>'
        "</testsuite></testsuites>"
    )
    (kernel / "report.html").write_text("<html></html>")
    nightly.write_kernel(
        kernel,
        release,
        stamp=STAMP,
        campaign_rc=0 if campaign == "fixed" else 1,
        testcases_rc=0,
        config_name=scenario,
    )
    return directory


def test_two_scenarios_of_one_kernel_merge_into_one_checkout(tmp_path: Path) -> None:
    a = job(tmp_path, "nightly-6.1-smoke", "fixed", "smoke")
    b = job(tmp_path, "nightly-6.1-race", "fixed", "race_ns_remove_path")
    per_job = [json.loads((d / RELEASE / "kcidb.json").read_text()) for d in (a, b)]
    result = merge.merge([a, b], tmp_path / "merged")
    doc = json.loads((tmp_path / "merged" / "kcidb.json").read_text())
    kcidb_io.schema.LATEST.validate(doc)
    assert doc["version"] == per_job[0]["version"]
    assert len(doc["checkouts"]) == 1  # the same kernel and stamp: one checkout
    assert len(doc["builds"]) == 2  # one per scenario
    assert len(doc["tests"]) == sum(len(d["tests"]) for d in per_job)
    assert len({t["id"] for t in doc["tests"]}) == len(doc["tests"])
    assert result.exit == ExitCode.OK
    status = json.loads((tmp_path / "merged" / "status.json").read_text())
    assert status["status"] == "pass"
    assert [j["name"] for j in status["jobs"]] == [a.name, b.name]
    assert status["kcidb_objects"]["builds"] == 2


def test_the_same_job_twice_adds_no_duplicates(tmp_path: Path) -> None:
    a = job(tmp_path, "a", "fixed", "smoke")
    copy = tmp_path / "a-again"
    shutil.copytree(a, copy)
    merge.merge([a, copy], tmp_path / "merged")
    doc = json.loads((tmp_path / "merged" / "kcidb.json").read_text())
    single = json.loads((a / RELEASE / "kcidb.json").read_text())
    for name in ("checkouts", "builds", "tests"):
        assert len(doc[name]) == len(single[name])


def test_the_worst_job_decides_the_exit(tmp_path: Path) -> None:
    good = job(tmp_path, "good", "fixed", "smoke")
    bad = job(tmp_path, "bad", "unfixed", "race")
    assert merge.read_job(bad).exit == ExitCode.FAILED
    result = merge.merge([good, bad], tmp_path / "merged")
    assert result.exit == ExitCode.FAILED
    text = (tmp_path / "merged" / "summary.txt").read_text()
    assert "regression" in text.splitlines()[-1]
    page = (tmp_path / "merged" / "summary.html").read_text()
    assert "../good/6.1.0-57-amd64/report.html" in page
    assert ">regression<" in page


def test_a_job_without_status_is_infrastructure(tmp_path: Path) -> None:
    good = job(tmp_path, "good", "fixed", "smoke")
    died = tmp_path / "died"
    died.mkdir()
    result = merge.merge([good, died], tmp_path / "merged")
    assert result.exit == ExitCode.INFRA
    assert "no <release>/status.json" in result.jobs[1].problem
    # a regression elsewhere outranks it, as in one nightly run
    bad = job(tmp_path, "bad", "unfixed", "race")
    assert merge.merge([died, bad], tmp_path / "merged2").exit == ExitCode.FAILED


def test_a_broken_document_is_refused_with_one_line(tmp_path: Path) -> None:
    a = job(tmp_path, "a", "fixed", "smoke")
    path = a / RELEASE / "kcidb.json"
    doc = json.loads(path.read_text())
    doc["tests"][0]["path"] = "nvme.multipath.bad[path]"
    path.write_text(json.dumps(doc))
    with pytest.raises(HarnessError) as err:
        merge.merge([a], tmp_path / "merged")
    assert str(path) in str(err.value)
    assert "tests[0].path" in str(err.value)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "merged" / "kcidb.json").exists()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    a = job(tmp_path, "a", "fixed", "smoke")
    path = a / RELEASE / "kcidb.json"
    doc = json.loads(path.read_text())
    doc["version"] = {"major": 99, "minor": 0}
    path.write_text(json.dumps(doc))
    with pytest.raises(HarnessError, match="not a KCIDB document of schema"):
        merge.merge([a], tmp_path / "merged")


def test_missing_directory_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="no such job directory"):
        merge.merge([tmp_path / "nope"], tmp_path / "merged")


def test_cli_report_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = job(tmp_path, "good", "fixed", "smoke")
    bad = job(tmp_path, "bad", "unfixed", "race")
    out = tmp_path / "merged"
    assert main(["report", "--merge", str(good), str(bad), "--out", str(out)]) == 1
    assert "merged: regression (exit 1), 2 job(s)" in capsys.readouterr().out
    assert (out / "summary.html").exists()
    assert main(["report", "--merge", str(good), "--out", str(out)]) == 0
    assert main(["report", "--merge", str(good)]) == 3  # no --out: one line, ExitCode.INFRA
    assert "needs --out" in capsys.readouterr().err


def test_job_names_tell_the_jobs_apart(tmp_path: Path) -> None:
    a = tmp_path / "jobs" / "6.1.0-57-amd64-smoke" / "nightly-7"
    b = tmp_path / "jobs" / "6.1.0-57-amd64-race" / "nightly-7"
    assert merge.job_names([a, b]) == [
        "6.1.0-57-amd64-smoke/nightly-7",
        "6.1.0-57-amd64-race/nightly-7",
    ]
    assert merge.job_names([a]) == ["nightly-7"]
    assert merge.job_names([a, a]) == ["nightly-7", "nightly-7"]

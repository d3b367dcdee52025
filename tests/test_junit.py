"""JUnit XML (junitparser): one testcase per iteration, failing verdicts as failures, waived
failures as skipped, and every document valid against the Ant JUnit schema Jenkins/GitLab read."""

from __future__ import annotations

import functools
import os
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import xmlschema

from harness.core.junit import junit_xml, write_junit
from harness.core.results import FAILING_VERDICTS, Verdict, read_records
from tests.test_results import record_dict

DATA = Path(__file__).parent / "data"
XSD = DATA / "junit" / "ant-junit.xsd"
REAL_RUN = DATA / "report" / "all-faults"


@functools.cache
def schemas() -> list[xmlschema.XMLSchema]:
    """Our schema, and the windyroad JUnit.xsd too when NVMF_JUNIT_XSD names a copy."""
    found = [xmlschema.XMLSchema(XSD)]
    extra = os.environ.get("NVMF_JUNIT_XSD")
    if extra:
        found.append(xmlschema.XMLSchema(extra))
    return found


def assert_valid(path: Path) -> None:
    for schema in schemas():
        schema.validate(path)


def records() -> list[dict[str, Any]]:
    return [
        record_dict(iteration=1, fault="ctrl_delete", path=0, cycle_s=6.5),
        record_dict(
            iteration=2,
            fault="ctrl_reset",
            path=1,
            cycle_s=7.25,
            app_eio=2,
            eod_race_lines=1,
            verdict=Verdict.EIO_RACE,
            kernel_examples=[
                "fio: attempt to access beyond end of device | nvme0c1n1: rw=1, sector=8, "
                "nr_sectors = 8 limit=0",
                "fio: io_u error on file /dev/nvme0n1: Input/output error: write offset=8192",
            ],
        ),
        record_dict(
            iteration=3,
            fault="ctrl_delete",
            path=1,
            cycle_s=1.0,
            error="no IO on the head 15 s after fio started",
            verdict=Verdict.INFRA_ERROR,
        ),
        record_dict(iteration=4, fault="port_remove", path=0, hang=True, verdict=Verdict.HANG),
        record_dict(iteration=5, fault="ns_disable", app_eio=9, verdict=Verdict.EXPECTED_EIO),
    ]


def parse(
    tmp_path: Path,
    data: list[dict[str, Any]],
    suite: str = "campaign-unfixed",
    waive_reason: str | None = None,
) -> Any:
    path = tmp_path / "junit.xml"
    write_junit(path, data, suite=suite, waive_reason=waive_reason)
    assert_valid(path)
    return ET.parse(path).getroot()


def test_written_file_is_valid_xml_with_declaration(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    write_junit(path, records(), suite="campaign-unfixed")
    text = path.read_text(encoding="utf-8")
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?>')
    ET.fromstring(text.encode())  # parses
    assert not (tmp_path / "junit.xml.tmp").exists()


def test_suite_counts(tmp_path: Path) -> None:
    root = parse(tmp_path, records())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "campaign-unfixed"
    assert suite.get("tests") == "5"
    assert suite.get("failures") == "2"  # eio_race, hang
    assert suite.get("errors") == "1"  # infra_error
    assert float(suite.get("time")) == pytest.approx(6.5 + 7.25 + 1.0 + 6.0 + 6.0)
    assert len(suite.findall("testcase")) == 5


def test_testcases_name_fault_iteration_and_path(tmp_path: Path) -> None:
    cases = parse(tmp_path, records()).findall("testsuite/testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [
        ("campaign-unfixed.ctrl_delete", "iteration-0001-path0"),
        ("campaign-unfixed.ctrl_reset", "iteration-0002-path1"),
        ("campaign-unfixed.ctrl_delete", "iteration-0003-path1"),
        ("campaign-unfixed.port_remove", "iteration-0004-path0"),
        ("campaign-unfixed.ns_disable", "iteration-0005-path0"),
    ]
    assert float(cases[1].get("time")) == 7.25


def test_failing_verdict_is_a_failure_with_the_kernel_lines(tmp_path: Path) -> None:
    cases = parse(tmp_path, records()).findall("testsuite/testcase")
    failure = cases[1].find("failure")
    assert failure is not None
    assert failure.get("type") == Verdict.EIO_RACE
    assert failure.get("message", "").startswith("eio_race: app_eio=2 eod_race_lines=1")
    assert "limit=0" in (failure.text or "")
    assert "Input/output error" in (failure.text or "")
    assert cases[3].find("failure") is not None  # hang


def test_infra_error_is_an_error_not_a_failure(tmp_path: Path) -> None:
    case = parse(tmp_path, records()).findall("testsuite/testcase")[2]
    assert case.find("failure") is None
    error = case.find("error")
    assert error is not None
    assert error.get("message") == "no IO on the head 15 s after fio started"


@pytest.mark.parametrize("index", [0, 4])
def test_passing_and_expected_verdicts_are_plain_testcases(tmp_path: Path, index: int) -> None:
    root = parse(tmp_path, records())
    case = root.findall("testsuite/testcase")[index]
    assert list(case) == []  # the schema allows no output per testcase
    out = root.find("testsuite/system-out")
    assert out is not None
    line = (out.text or "").splitlines()[index]
    assert line.startswith(f"{case.get('name')}: verdict={records()[index]['verdict']} ")


@pytest.mark.parametrize("verdict", sorted(FAILING_VERDICTS))
def test_every_failing_verdict_fails(verdict: str) -> None:
    root = ET.fromstring(junit_xml([record_dict(verdict=verdict)], suite="s").tostring())
    suite = root.find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "1"
    assert suite.find("testcase/failure") is not None


def test_markup_in_records_is_escaped(tmp_path: Path) -> None:
    nasty = 'a <b> & "c" ]]> \u00e9'
    data = [record_dict(verdict=Verdict.EIO, kernel_examples=[nasty], fault="x<y")]
    root = parse(tmp_path, data, suite='suite&"1"')
    failure = root.find("testsuite/testcase/failure")
    assert failure is not None
    assert failure.text == nasty
    assert root.find("testsuite").get("name") == 'suite&"1"'


def test_no_records_is_an_empty_suite(tmp_path: Path) -> None:
    suite = parse(tmp_path, []).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("0", "0", "0")
    assert float(suite.get("time")) == 0.0


def test_a_crash_record_without_iteration_fields(tmp_path: Path) -> None:
    """What vm.record_crash appends: no cycle_s, verdict kernel_crash."""
    crash = {"run_id": "r", "iteration": 3, "fault": "unknown", "verdict": "kernel_crash"}
    root = parse(tmp_path, [*records()[:1], crash])
    assert root.find("testsuite").get("tests") == "2"


def test_suite_has_what_the_ant_schema_requires(tmp_path: Path) -> None:
    stamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    path = tmp_path / "junit.xml"
    write_junit(path, records(), suite="campaign-unfixed", timestamp=stamp)
    assert_valid(path)
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("timestamp") == "2026-01-02T03:04:05"  # no time zone, as Ant writes it
    assert (suite.get("package"), suite.get("id")) == ("campaign-unfixed", "0")
    assert suite.get("hostname")
    props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert props["variant"] == records()[0]["variant"]


def test_waived_failures_are_skipped_with_the_reason(tmp_path: Path) -> None:
    reason = "known failure: the EOD race on 6.1 (https://example.org/bug)"
    root = parse(tmp_path, records(), waive_reason=reason)
    suite = root.find("testsuite")
    assert (suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("0", "2", "1")
    skipped = suite.findall("testcase")[1].find("skipped")
    assert skipped is not None
    assert skipped.get("message") == reason
    assert (skipped.text or "").startswith("eio_race: app_eio=2")
    assert "limit=0" in (skipped.text or "")
    assert suite.findall("testcase")[2].find("error") is not None  # infra stays an error


def test_a_real_campaign_is_valid(tmp_path: Path) -> None:
    data = list(read_records(REAL_RUN / "results.jsonl"))
    root = parse(tmp_path, data, suite="campaign-fixed")
    suite = root.find("testsuite")
    assert suite is not None
    assert int(suite.get("tests")) == len(data)


def test_the_old_hand_made_layout_is_refused_by_the_schema(tmp_path: Path) -> None:
    """What harness/junit.py wrote before junitparser: no timestamp, hostname, properties."""
    path = tmp_path / "old.xml"
    path.write_text(
        '<testsuites><testsuite name="s" tests="1" failures="0" errors="0" time="1.0">'
        '<testcase classname="s.x" name="iteration-0001-path0" time="1.0">'
        "<system-out>verdict=pass</system-out></testcase></testsuite></testsuites>",
        encoding="utf-8",
    )
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        xmlschema.XMLSchema(XSD).validate(path)

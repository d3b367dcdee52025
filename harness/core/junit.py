"""JUnit XML for CI: one testcase per fault iteration, failing verdicts as failures.

Built with ``junitparser`` in the Apache Ant layout that Jenkins and GitLab read (the
``JUnit.xsd`` of the windyroad/JUnit-Schema project): ``<testsuites>`` holding one
``<testsuite>`` with ``name``, ``package``, ``id``, ``timestamp`` (no time zone),
``hostname``, counts and ``time``; its ``<properties>``, then one ``<testcase>`` per
iteration (at most one ``<failure>``, ``<error>`` or ``<skipped>`` child, no output of its
own), then ``<system-out>`` (one line per iteration: verdict and counters) and
``<system-err>``.

- failing verdicts (harness.core.results.FAILING_VERDICTS): ``<failure type=VERDICT
  message="VERDICT: counters">`` with the iteration's kernel lines as text;
- infra_error: ``<error>`` with the harness's error;
- a failing iteration the caller waives (a known failure, or a rate within its baseline):
  ``<skipped message="REASON">`` with the verdict and kernel lines as text.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from junitparser import (
    Attr,
    Error,
    Failure,
    JUnitXml,
    Properties,
    Property,
    Skipped,
    SystemErr,
    SystemOut,
    TestCase,
    TestSuite,
)

from harness.core.results import FAILING_VERDICTS, Verdict

PROPERTY_FIELDS = ("kernel_release", "variant", "srcversion", "run_id")


class AntTestSuite(TestSuite):
    """A testsuite with the aggregated form's two attributes (Ant's JUnitReport: the
    package, and an id counted from 0)."""

    package = Attr()
    id = Attr()


def junit_xml(
    records: Iterable[dict[str, Any]],
    suite: str,
    *,
    waive_reason: str | None = None,
    timestamp: datetime | None = None,
    hostname: str | None = None,
) -> JUnitXml:
    """The JUnit document of one campaign's iteration records (results.jsonl dicts).

    ``waive_reason``: when given, failing iterations become ``<skipped>`` with this message
    (known failures, rates within the baseline) instead of ``<failure>``. ``timestamp`` is
    the suite's start (default: now, UTC); ``hostname`` defaults to this machine's name.
    """
    cases = list(records)
    testsuite = AntTestSuite(suite)
    first = cases[0] if cases else {}
    properties = Properties()
    for name in PROPERTY_FIELDS:
        if first.get(name):
            properties.add_property(Property(name, str(first[name])))
    testsuite.append(properties)
    lines = []
    for record in cases:
        case = _testcase(record, suite, waive_reason)
        testsuite.add_testcase(case)
        lines.append(f"{case.name}: verdict={record.get('verdict', '')} {_detail(record)}")
    testsuite.update_statistics()
    testsuite.time = round(sum(float(r.get("cycle_s", 0) or 0) for r in cases), 3)
    moment = (timestamp or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    testsuite.timestamp = moment.isoformat(timespec="seconds")
    testsuite.hostname = hostname or platform.node() or "localhost"
    testsuite.package = suite
    testsuite.id = "0"
    testsuite.append(SystemOut("\n".join(lines)))
    testsuite.append(SystemErr(""))
    xml = JUnitXml()
    xml.add_testsuite(testsuite)
    return xml


def _testcase(record: dict[str, Any], suite: str, waive_reason: str | None) -> TestCase:
    case = TestCase(
        name=f"iteration-{int(record.get('iteration', 0)):04d}-path{record.get('path', 0)}",
        classname=f"{suite}.{record.get('fault', '?')}",
        time=round(float(record.get("cycle_s", 0) or 0), 3),
    )
    verdict = str(record.get("verdict", ""))
    kernel_lines = "\n".join(str(line) for line in record.get("kernel_examples", []))
    if verdict in FAILING_VERDICTS:
        message = f"{verdict}: {_detail(record)}"
        if waive_reason:
            skipped = Skipped(message=waive_reason)
            skipped.text = f"{message}\n{kernel_lines}".strip()
            case.result = [skipped]
        else:
            failure = Failure(message=message, type_=verdict)
            failure.text = kernel_lines
            case.result = [failure]
    elif verdict == Verdict.INFRA_ERROR:
        error = Error(message=str(record.get("error", "")), type_=verdict)
        error.text = str(record.get("error", ""))
        case.result = [error]
    return case


def _detail(record: dict[str, Any]) -> str:
    return (
        f"app_eio={record.get('app_eio', 0)} eod_race_lines={record.get('eod_race_lines', 0)} "
        f"verify_failures={record.get('verify_failures', 0)} hang={record.get('hang', False)} "
        f"recovered={record.get('recovered', False)}"
    )


def write_junit(
    path: Path,
    records: Iterable[dict[str, Any]],
    suite: str,
    *,
    waive_reason: str | None = None,
    timestamp: datetime | None = None,
) -> None:
    """Write the JUnit document to ``path`` atomically (UTF-8, with an XML declaration)."""
    xml = junit_xml(records, suite, waive_reason=waive_reason, timestamp=timestamp)
    tmp = path.with_suffix(".xml.tmp")
    xml.write(str(tmp), pretty=True)
    tmp.replace(path)

"""JUnit XML for CI: one testcase per fault iteration, failing verdicts as failures."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.results import FAILING_VERDICTS, Verdict


def junit_tree(records: Iterable[dict[str, Any]], suite: str) -> ET.ElementTree[ET.Element]:
    cases = list(records)
    failures = sum(1 for r in cases if r.get("verdict") in FAILING_VERDICTS)
    errors = sum(1 for r in cases if r.get("verdict") == Verdict.INFRA_ERROR)
    root = ET.Element("testsuites")
    element = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        time=f"{sum(float(r.get('cycle_s', 0)) for r in cases):.3f}",
    )
    for record in cases:
        case = ET.SubElement(
            element,
            "testcase",
            classname=f"{suite}.{record.get('fault', '?')}",
            name=f"iteration-{int(record.get('iteration', 0)):04d}-path{record.get('path', 0)}",
            time=f"{float(record.get('cycle_s', 0)):.3f}",
        )
        verdict = str(record.get("verdict", ""))
        detail = _detail(record)
        if verdict in FAILING_VERDICTS:
            failure = ET.SubElement(case, "failure", message=f"{verdict}: {detail}", type=verdict)
            failure.text = "\n".join(record.get("kernel_examples", []))
        elif verdict == Verdict.INFRA_ERROR:
            err = ET.SubElement(case, "error", message=str(record.get("error", "")), type=verdict)
            err.text = str(record.get("error", ""))
        ET.SubElement(case, "system-out").text = f"verdict={verdict} {detail}"
    ET.indent(root)
    return ET.ElementTree(root)


def _detail(record: dict[str, Any]) -> str:
    return (
        f"app_eio={record.get('app_eio', 0)} eod_race_lines={record.get('eod_race_lines', 0)} "
        f"verify_failures={record.get('verify_failures', 0)} hang={record.get('hang', False)} "
        f"recovered={record.get('recovered', False)}"
    )


def write_junit(path: Path, records: Iterable[dict[str, Any]], suite: str) -> None:
    tmp = path.with_suffix(".xml.tmp")
    junit_tree(records, suite).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(path)

"""KCIDB documents (the Linux kernel CI reporting schema) from the harness's records.

One job: records in, a KCIDB document out, validated with the ``kcidb-io`` package against
the latest schema version it knows (``kcidb_io.schema.LATEST``, v5.3 with kcidb-io 141).
What the schema asks, and how this module meets it:

- ``origin`` ``^[a-z0-9_]+$``: ``nvmf_harness``; every id ``<origin>:<anything>``
  (``nvmf_harness:<stamp>:<release>...``).
- test ``path``: dot-separated nodes of ``[a-zA-Z0-9_-]``. Campaign iterations are
  ``nvme.multipath.<fault>`` (``nvme.multipath.ctrl_delete``); pytest testcases are
  ``nvme.multipath.testcases.<module>.<test>[.<parameter>]``, a parameter becoming a child
  node (``test_clean_after_kill[0.3]`` -> ``test_clean_after_kill.0_3``); any other
  character becomes ``_``.
- ``status``: one of FAIL, ERROR, MISS, PASS, DONE, SKIP (build ``valid`` of v4 is build
  ``status`` in v5; tests have no ``waived``: a known failure is an ``issue`` with an
  ``incident`` per failing test instead).
- ``log_url``: a URI (the format checker refuses a bare relative name): a ``file://`` URL of
  the file, or ``<base URL>/<path relative to the kernel's directory>`` when the caller knows
  where the directory will be published (a CI artifact URL).

Errors: ``validate`` raises HarnessError with one line (the first violation, where it is,
and the schema version); nothing else here raises for odd records.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jsonschema
import kcidb_io
from junitparser import Error, Failure, JUnitXml, JUnitXmlError, Skipped, TestSuite

from harness.core.errors import HarnessError
from harness.core.results import (
    FAILING_VERDICTS,
    RESULTS_FILE,
    RUN_FILE,
    Verdict,
    is_iteration,
    read_json_object,
    read_records,
    write_json_atomic,
)

SCHEMA = kcidb_io.schema.LATEST
ORIGIN = "nvmf_harness"
PATH_ROOT = "nvme.multipath"
PASS, FAIL, ERROR, MISS, DONE, SKIP = "PASS", "FAIL", "ERROR", "MISS", "DONE", "SKIP"
STATUSES = (FAIL, ERROR, MISS, PASS, DONE, SKIP)  # the schema's priority order
PASSING_VERDICTS = frozenset({Verdict.PASS, Verdict.EXPECTED_EIO})
CONSOLE_LOG = "console.log"
COMMENT_MAX = 500

UrlOf = Callable[[Path], str]


def object_id(*parts: str) -> str:
    """A KCIDB id: ``nvmf_harness:`` and the parts joined by ``:``."""
    return ":".join((ORIGIN, *parts))


def path_node(text: str) -> str:
    """One node of a KCIDB test path: runs of characters outside [A-Za-z0-9_-] become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "_"


def test_path(*parts: str) -> str:
    """A dotted KCIDB path; each part may itself be dotted, ``name[param]`` nests param."""
    nodes: list[str] = []
    for part in parts:
        match = re.fullmatch(r"(.*?)\[(.*)\]", part)
        if match:
            nodes += [path_node(p) for p in match.group(1).split(".") if p]
            nodes.append(path_node(match.group(2)))
        else:
            nodes += [path_node(p) for p in part.split(".") if p]
    return ".".join(nodes)


test_path.__test__ = False  # type: ignore[attr-defined]  # not a pytest test when imported


def url_maker(root: Path, base_url: str | None = None) -> UrlOf:
    """How a file under ``root`` is named in ``log_url``: ``base_url/<relative path>`` when
    given, else the file's ``file://`` URL."""
    if base_url:
        base = base_url.rstrip("/")

        def published(path: Path) -> str:
            try:
                relative = path.relative_to(root).as_posix()
            except ValueError:
                return path.resolve().as_uri()
            return f"{base}/{quote(relative)}"

        return published
    return lambda path: path.resolve().as_uri()


def iso(unix: float | None) -> str | None:
    """An RFC 3339 time (UTC, seconds) of a Unix time, None for None."""
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def verdict_status(verdict: str) -> str:
    """KCIDB status of an iteration verdict: passing ones PASS, failing ones FAIL, the
    harness's or the VM's trouble (infra_error, kernel_crash, vm_timeout, unknown) ERROR."""
    if verdict in PASSING_VERDICTS:
        return PASS
    if verdict in FAILING_VERDICTS:
        return FAIL
    return ERROR


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def campaign_tests(campaign: Path, build_id: str, url: UrlOf) -> list[dict[str, Any]]:
    """One KCIDB test per record of ``campaign``/results.jsonl (iterations, VM crash records).

    Start times come from run.json (``started_unix`` less ``setup_s``, plus each record's
    ``started_at``); a record's log is its iteration's kmsg.txt, else the campaign's
    console.log. A missing directory gives no tests.
    """
    run = read_json_object(campaign / RUN_FILE)
    started_unix = run.get("started_unix")
    origin_unix = (
        float(started_unix) - float(run.get("setup_s", 0.0))
        if isinstance(started_unix, int | float)
        else None
    )
    tests = []
    for rec in read_records(campaign / RESULTS_FILE):
        iteration = int(rec.get("iteration", 0) or 0)
        verdict = str(rec.get("verdict", ""))
        crashed = not is_iteration(rec)
        kmsg = campaign / "iterations" / f"{iteration:04d}" / "kmsg.txt"
        log = kmsg if kmsg.exists() and not crashed else campaign / CONSOLE_LOG
        fault = "vm" if crashed else str(rec.get("fault", "unknown"))
        start = (
            origin_unix + float(rec["started_at"])
            if origin_unix is not None and rec.get("started_at") is not None
            else None
        )
        kernel_lines = "\n".join(str(line) for line in rec.get("kernel_examples", []))
        test = {
            "id": f"{build_id}:campaign:{iteration:04d}",
            "build_id": build_id,
            "origin": ORIGIN,
            "path": test_path(PATH_ROOT, fault),
            "status": verdict_status(verdict),
            "start_time": iso(start),
            "duration": float(rec.get("cycle_s", 0.0) or 0.0),
            "log_url": url(log),
            "log_excerpt": kernel_lines[:16384] or None,
            "comment": f"iteration {iteration} path {rec.get('path', '?')}: {verdict}",
            "misc": drop_none(
                {
                    "verdict": verdict,
                    "iteration": iteration,
                    "path": rec.get("path"),
                    "variant": rec.get("variant"),
                    "app_eio": rec.get("app_eio", 0),
                    "eod_race_lines": rec.get("eod_race_lines", 0),
                    "time_to_recover_s": rec.get("time_to_recover_s"),
                }
            ),
        }
        tests.append(drop_none(test))
    return tests


def junit_tests(
    junit: Path, build_id: str, url: UrlOf, log: Path, prefix: str = "testcases"
) -> list[dict[str, Any]]:
    """One KCIDB test per ``<testcase>`` of a pytest JUnit file (none if it is missing or
    unreadable). Paths: ``nvme.multipath.<prefix>.<module>.<test>[.<param>]``; the module is
    the classname less a leading ``testcases.``; start times follow the suite's timestamp."""
    if not junit.exists():
        return []
    try:
        xml = JUnitXml.fromfile(str(junit))
    except (JUnitXmlError, OSError, SyntaxError):  # ParseError is a SyntaxError
        return []
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    tests = []
    number = 0
    for suite in suites:
        clock = _junit_time(suite.timestamp)
        for case in suite:
            number += 1
            module = (case.classname or "").removeprefix(f"{prefix}.")
            status, message = PASS, ""
            for result in case.result:
                kind = _RESULT_STATUS.get(type(result))
                if kind:
                    status, message = kind, result.message or ""
                    break
            duration = float(case.time or 0.0)
            test = {
                "id": f"{build_id}:{prefix}:{number:03d}",
                "build_id": build_id,
                "origin": ORIGIN,
                "path": test_path(PATH_ROOT, prefix, module, case.name or f"case{number}"),
                "status": status,
                "start_time": iso(clock),
                "duration": duration,
                "log_url": url(log),
                "comment": message[:COMMENT_MAX] or None,
                "misc": {"classname": case.classname or "", "name": case.name or ""},
            }
            tests.append(drop_none(test))
            if clock is not None:
                clock += duration
    return tests


_RESULT_STATUS: dict[type, str] = {Failure: FAIL, Error: ERROR, Skipped: SKIP}


def _junit_time(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def issue(
    key: str, *, comment: str, report_url: str | None = None, version: int = 1
) -> dict[str, Any]:
    """A KCIDB issue (e.g. a known failure): ``nvmf_harness:<key>``, the code at fault."""
    return drop_none(
        {
            "id": object_id(key),
            "version": version,
            "origin": ORIGIN,
            "report_url": report_url or None,
            "comment": comment,
            "culprit": {"code": True, "tool": False, "harness": False},
        }
    )


def incident(issue_obj: dict[str, Any], test_id: str) -> dict[str, Any]:
    """A KCIDB incident: ``issue_obj`` occurred in the test ``test_id``."""
    return {
        "id": f"{test_id}:{issue_obj['id'].removeprefix(ORIGIN + ':')}",
        "origin": ORIGIN,
        "issue_id": issue_obj["id"],
        "issue_version": issue_obj["version"],
        "test_id": test_id,
        "present": True,
    }


def document(
    checkouts: Iterable[dict[str, Any]],
    builds: Iterable[dict[str, Any]],
    tests: Iterable[dict[str, Any]],
    issues: Iterable[dict[str, Any]] = (),
    incidents: Iterable[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A validated KCIDB document of the latest schema version (empty lists left out)."""
    doc: dict[str, Any] = SCHEMA.new()
    for name, items in (
        ("checkouts", checkouts),
        ("builds", builds),
        ("tests", tests),
        ("issues", issues),
        ("incidents", incidents),
    ):
        listed = list(items)
        if listed:
            doc[name] = listed
    return validate(doc)


def validate(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` unchanged if ``kcidb-io`` finds it valid; else HarnessError, one line naming
    the first violation and where it is (``tests[3].path: ...``)."""
    try:
        SCHEMA.validate(doc)
    except jsonschema.ValidationError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.absolute_path)
        message = exc.message.replace("\n", " ")
        if len(message) > 200:
            message = message[:197] + "..."
        raise HarnessError(
            f"not a valid KCIDB {SCHEMA} document: {where.lstrip('.') or 'top level'}: {message}",
            hint="a harness bug: report it with the results directory",
        ) from None
    return doc


def write(path: Path, doc: dict[str, Any]) -> None:
    """Validate ``doc`` and write it to ``path`` atomically (HarnessError if it is invalid:
    nothing is written then)."""
    write_json_atomic(path, validate(doc))

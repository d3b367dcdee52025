"""Nightly kernel CI: a KCIDB document per kernel, scenario verdicts, the exit status.

``nvmf-harness nightly run`` (harness/ci/nightly_run.py) runs, for each kernel, the smoke
campaign (``nvmf-harness vm``) and the testcases (``nvmf-harness vm-pytest``) into
``<nightly dir>/<release>/campaign`` and ``.../testcases``; this module turns what they left
(results.jsonl, testcases-junit.xml, their exit statuses) into, per kernel:

- ``kcidb.json``: a KCIDB document built and validated by harness/kcidb.py (kcidb-io, latest
  schema); a known failure is an issue with an incident per failing iteration;
- ``nightly-junit.xml``: the campaign's iterations as JUnit, known failures and failures
  within the baseline rate as skipped with the reason (harness/junit.py);
- ``status.json``: pass / regression / infra, the reasons, notes, and the scenario verdict;

and the summary of all kernels into the exit status:

    0  every kernel passed (a known failure, a rate within its baseline or an inconclusive
       one passes, with a note)
    1  regression: the campaign's failure rate significantly above its baseline or known
       failure's rate (harness/baseline.py; without either, any failing iteration), or a
       failing testcase, on some kernel
    2  bad input: a missing config, a bad baseline or known-failure file (nothing ran)
    3  infrastructure failure (VM crash or timeout, missing tool, kernel not found, no
       results) and no regression; a regression found outranks infrastructure trouble
       elsewhere, since its verdicts are definite

Kernels: see harness/ci/nightly_run.py (releases, images, kdirs, sources to build).

    nvmf-harness nightly run [--scenario NAME|FILE] [KERNEL...]   the whole night
    nvmf-harness nightly kcidb DIR --release R --campaign-rc N --testcases-rc N ...
    nvmf-harness nightly summary NIGHTLY_DIR [--failed-kernel K ...]
    nvmf-harness nightly resolve KERNEL                prints "RELEASE<TAB>IMAGE"
"""

from __future__ import annotations

import platform
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from harness.ci import baseline, known_failures
from harness.ci.baseline import DEFAULT_ALPHA, Judgement, ScenarioVerdict
from harness.ci.known_failures import KnownFailure
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.junit import write_junit
from harness.core.results import (
    RESULTS_FILE,
    RUN_FILE,
    read_json_object,
    read_records,
    write_json_atomic,
)
from harness.report import kcidb

ORIGIN = kcidb.ORIGIN
KCIDB_FILE = "kcidb.json"
NIGHTLY_JUNIT_FILE = "nightly-junit.xml"
STATUS_FILE = "status.json"
CAMPAIGN_DIR = "campaign"
TESTCASES_DIR = "testcases"
JUNIT_FILE = "testcases-junit.xml"
CONSOLE_LOG = kcidb.CONSOLE_LOG

STATUS_NAMES: dict[int, str] = {
    ExitCode.OK: "pass",
    ExitCode.FAILED: "regression",
    ExitCode.INFRA: "infra",
}

PASS, FAIL, ERROR, SKIP = kcidb.PASS, kcidb.FAIL, kcidb.ERROR, kcidb.SKIP
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")
ARCH_OF_SUFFIX = {"amd64": "x86_64", "arm64": "arm64", "i386": "i386", "armmp": "arm"}
# nvmf-harness vm: 0 pass, 1 failing verdicts; pytest: 0 passed, 1 some tests failed.
# Anything else (2 usage, 3 infra, 124/137 killed by timeout, pytest 2-5) is infrastructure.
RUN_OK_STATUSES = frozenset({0, 1})


@dataclass(frozen=True)
class KernelSpec:
    release: str
    image: Path


def resolve_kernel(
    arg: str, boot_dir: Path = Path("/boot"), modules_dir: Path = Path("/lib/modules")
) -> KernelSpec:
    """An installed release name or a /boot/vmlinuz-<release> path, checked."""
    if "/" in arg:
        image = Path(arg)
        if not image.name.startswith("vmlinuz-"):
            raise HarnessError(
                f"{arg}: not a vmlinuz-<release> image",
                hint="give an installed release or /boot/vmlinuz-<release>",
            )
        release = image.name.removeprefix("vmlinuz-")
    else:
        release = arg
        image = boot_dir / f"vmlinuz-{release}"
    if not RELEASE_RE.match(release):
        raise HarnessError(f"{arg}: not a kernel release name")
    if not image.is_file():
        raise HarnessError(
            f"kernel image {image} not found", hint=f"apt-get install linux-image-{release}"
        )
    if not (modules_dir / release).is_dir():
        raise HarnessError(
            f"no modules for {release} in {modules_dir}",
            hint=f"apt-get install linux-image-{release}",
        )
    return KernelSpec(release, image)


def architecture(release: str) -> str:
    """KCIDB architecture of a Debian kernel release (by its flavour suffix)."""
    for suffix, arch in ARCH_OF_SUFFIX.items():
        if release.endswith(f"-{suffix}") or f"-{suffix}-" in release:
            return arch
    return platform.machine()


def verdict_status(verdict: str) -> str:
    """KCIDB status of an iteration verdict (PASS, FAIL or ERROR)."""
    return kcidb.verdict_status(verdict)


def campaign_tests(
    kernel_dir: Path, build_id: str, log_base_url: str | None = None
) -> list[dict[str, Any]]:
    """One KCIDB test per campaign iteration (and per crash record of the VM runner)."""
    url = kcidb.url_maker(kernel_dir, log_base_url)
    return kcidb.campaign_tests(kernel_dir / CAMPAIGN_DIR, build_id, url)


def testcase_tests(
    kernel_dir: Path, build_id: str, log_base_url: str | None = None
) -> list[dict[str, Any]]:
    """One KCIDB test per pytest testcase of testcases-junit.xml (none if it is missing)."""
    testcases = kernel_dir / TESTCASES_DIR
    url = kcidb.url_maker(kernel_dir, log_base_url)
    return kcidb.junit_tests(testcases / JUNIT_FILE, build_id, url, testcases / CONSOLE_LOG)


@dataclass
class KernelOutcome:
    """The verdict of one kernel's nightly run; ``notes``: what passed with a remark (known
    failures, rates within or inconclusively above their baseline)."""

    release: str
    exit: int
    reasons: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return STATUS_NAMES[self.exit]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def judge_campaign(
    kernel_dir: Path,
    release: str,
    *,
    baselines_dir: Path | None = None,
    known: list[KnownFailure] | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> ScenarioVerdict | None:
    """The scenario verdict of the kernel's campaign against its baseline and the known
    failures; None when the campaign left no results (classify reports that as infra)."""
    try:
        counts = baseline.run_counts(kernel_dir / CAMPAIGN_DIR)
    except HarnessError:
        return None
    counts = replace(counts, release=release)
    base = baseline.load(baselines_dir, release, counts.scenario) if baselines_dir else None
    entry = known_failures.match(known or [], release, counts.scenario, counts.variant)
    return baseline.judge(counts, base, entry, alpha)


def build_kcidb(
    kernel_dir: Path,
    release: str,
    *,
    stamp: str,
    image: str = "",
    config_name: str = "smoke",
    harness_commit: str = "",
    verdict: ScenarioVerdict | None = None,
    log_base_url: str | None = None,
) -> dict[str, Any]:
    """The KCIDB document (latest schema, validated by kcidb-io) of one kernel from what the
    two VM runs left in kernel_dir. ``verdict``: the campaign's scenario verdict; a known
    failure becomes an issue with an incident per failing campaign test. ``log_base_url``:
    where kernel_dir will be published (log URLs are file:// URLs without it). Raises
    HarnessError (one line) if the document does not validate."""
    checkout_id = kcidb.object_id(stamp, release)
    build_id = f"{checkout_id}:{config_name}"
    tests = campaign_tests(kernel_dir, build_id, log_base_url) + testcase_tests(
        kernel_dir, build_id, log_base_url
    )
    run = read_json_object(kernel_dir / CAMPAIGN_DIR / RUN_FILE)
    started = run.get("started_unix")
    start_time = kcidb.iso(float(started)) if isinstance(started, int | float) else None
    misc = kcidb.drop_none(
        {
            "kernel_release": release,
            "kernel_image": image or None,
            "srcversion": run.get("srcversion"),
        }
    )
    checkout = kcidb.drop_none(
        {
            "id": checkout_id,
            "origin": kcidb.ORIGIN,
            "start_time": start_time,
            "comment": f"installed kernel {release}",
            "valid": True,
            "misc": {**misc, "harness_commit": harness_commit} if harness_commit else misc,
        }
    )
    build_misc = {**misc, "scenario": verdict.to_dict()} if verdict else misc
    build = kcidb.drop_none(
        {
            "id": build_id,
            "checkout_id": checkout_id,
            "origin": kcidb.ORIGIN,
            "start_time": start_time,
            "architecture": architecture(release),
            "config_name": config_name,
            # The kernel is installed, not built here: PASS means it booted and ran tests.
            "status": kcidb.PASS if tests else kcidb.MISS,
            "misc": build_misc,
        }
    )
    issues: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []
    if verdict and verdict.known and verdict.judgement == Judgement.KNOWN_FAILURE:
        known = verdict.known
        issue = kcidb.issue(known.key, comment=known.reason, report_url=known.link)
        issues.append(issue)
        incidents += [
            kcidb.incident(issue, t["id"])
            for t in tests
            if ":campaign:" in t["id"] and t.get("status") == kcidb.FAIL
        ]
    return kcidb.document([checkout], [build], tests, issues, incidents)


def classify(
    release: str,
    kcidb_doc: dict[str, Any],
    campaign_rc: int | None,
    testcases_rc: int | None,
    verdict: ScenarioVerdict | None = None,
) -> KernelOutcome:
    """pass / regression / infra for one kernel, with the reasons.

    Campaign iterations are judged as a scenario when ``verdict`` is given (a failing
    iteration is no regression by itself: the rate against the baseline or the known
    failure decides); without it every failing iteration is a regression. A failing
    testcase is always a regression."""
    tests: list[dict[str, Any]] = kcidb_doc.get("tests", [])
    counts = {s: sum(1 for t in tests if t.get("status") == s) for s in (PASS, FAIL, ERROR, SKIP)}
    campaign = [t for t in tests if ":campaign:" in str(t.get("id"))]
    testcases = [t for t in tests if ":testcases:" in str(t.get("id"))]
    regression: list[str] = []
    infra: list[str] = []
    notes: list[str] = []
    judged = verdict is not None and verdict.night.iterations > 0
    for test in tests:
        if test.get("status") == FAIL and not (judged and test in campaign):
            regression.append(f"{test['path']} failed ({test.get('comment', '')})".strip())
        elif test.get("status") == ERROR:
            infra.append(f"{test['path']}: error ({test.get('comment', '')})")
    if verdict is not None and judged:
        line = f"{verdict.night.scenario}: {verdict.judgement}: {verdict.reason}"
        if verdict.judgement == Judgement.REGRESSION:
            regression.append(line)
        elif verdict.judgement != Judgement.PASS or verdict.night.failing:
            notes.append(line)
    for name, rc, mine in (
        ("campaign", campaign_rc, campaign),
        ("testcases", testcases_rc, testcases),
    ):
        if rc is None:
            infra.append(f"{name} did not run")
        elif rc not in RUN_OK_STATUSES:
            infra.append(f"{name} exited {rc} (VM crash, timeout or harness error)")
        elif rc == 1 and not any(t.get("status") == FAIL for t in mine):
            regression.append(f"{name} exited 1")
        if rc is not None and not mine:
            infra.append(f"{name} left no results")
    if testcases and all(t.get("status") == SKIP for t in testcases):
        infra.append(f"all {len(testcases)} testcases were skipped")
    if regression:
        return KernelOutcome(release, ExitCode.FAILED, regression + infra, counts, notes)
    if infra:
        return KernelOutcome(release, ExitCode.INFRA, infra, counts, notes)
    return KernelOutcome(release, ExitCode.OK, [], counts, notes)


def write_kernel(
    kernel_dir: Path,
    release: str,
    *,
    stamp: str,
    campaign_rc: int | None,
    testcases_rc: int | None,
    image: str = "",
    config_name: str = "smoke",
    harness_commit: str = "",
    baselines_dir: Path | None = None,
    known: list[KnownFailure] | None = None,
    alpha: float = DEFAULT_ALPHA,
    log_base_url: str | None = None,
) -> KernelOutcome:
    """Write kernel_dir/kcidb.json (validated), status.json and nightly-junit.xml (the
    campaign's iterations with known failures and rates within the baseline as skipped);
    return the outcome. HarnessError (one line) for a bad baseline file or an invalid
    document."""
    kernel_dir.mkdir(parents=True, exist_ok=True)
    verdict = judge_campaign(
        kernel_dir, release, baselines_dir=baselines_dir, known=known, alpha=alpha
    )
    doc = build_kcidb(
        kernel_dir,
        release,
        stamp=stamp,
        image=image,
        config_name=config_name,
        harness_commit=harness_commit,
        verdict=verdict,
        log_base_url=log_base_url,
    )
    outcome = classify(release, doc, campaign_rc, testcases_rc, verdict)
    kcidb.write(kernel_dir / KCIDB_FILE, doc)
    if verdict is not None:
        records = list(read_records(kernel_dir / CAMPAIGN_DIR / RESULTS_FILE))
        suite = f"nightly.{release}.{verdict.night.scenario}"
        write_junit(
            kernel_dir / NIGHTLY_JUNIT_FILE, records, suite, waive_reason=verdict.waive_reason
        )
    status = {
        **outcome.to_dict(),
        "campaign_rc": campaign_rc,
        "testcases_rc": testcases_rc,
        "scenario": verdict.to_dict() if verdict else None,
    }
    write_json_atomic(kernel_dir / STATUS_FILE, status)
    return outcome


def overall_exit(exits: Iterable[int]) -> int:
    """Regression if any kernel regressed, else infra if any had trouble, else pass."""
    seen = set(exits)
    if not seen:
        return ExitCode.INFRA  # nothing ran
    if ExitCode.FAILED in seen:
        return ExitCode.FAILED
    if ExitCode.INFRA in seen:
        return ExitCode.INFRA
    return ExitCode.OK


def summarize_nightly(nightly_dir: Path, failed_kernels: Iterable[str] = ()) -> tuple[int, str]:
    """Overall exit status and a text table of every <release>/status.json."""
    outcomes: list[KernelOutcome] = []
    for path in sorted(nightly_dir.glob(f"*/{STATUS_FILE}")):
        data = read_json_object(path)
        exit_code = data.get("exit")
        if exit_code not in STATUS_NAMES:
            exit_code, reasons = ExitCode.INFRA, [f"{path} unreadable"]
        else:
            reasons = [str(r) for r in data.get("reasons", [])]
        counts = data.get("counts", {})
        notes = [str(n) for n in data.get("notes", [])]
        release = str(data.get("release", path.parent.name))
        outcomes.append(KernelOutcome(release, exit_code, reasons, counts, notes))
    for kernel in failed_kernels:
        outcomes.append(KernelOutcome(kernel, ExitCode.INFRA, ["kernel not found or not usable"]))
    lines = [f"{'kernel':<28} {'status':<11} PASS FAIL ERROR SKIP"]
    for o in outcomes:
        c = o.counts
        lines.append(
            f"{o.release:<28} {o.status:<11} {c.get(PASS, 0):>4} {c.get(FAIL, 0):>4} "
            f"{c.get(ERROR, 0):>5} {c.get(SKIP, 0):>4}"
        )
        lines += [f"    {reason}" for reason in o.reasons[:10]]
        lines += [f"    note: {note}" for note in o.notes[:10]]
    code = overall_exit(o.exit for o in outcomes)
    lines.append(f"nightly: {STATUS_NAMES[code]} (exit {code}), {len(outcomes)} kernel(s)")
    return code, "\n".join(lines)

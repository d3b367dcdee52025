"""Nightly kernel CI: KCIDB-like JSON per kernel, and the nightly exit status.

``scripts/nightly`` runs, for each kernel, the smoke campaign (``nvmf-harness vm``) and the
testcases (``nvmf-harness vm-pytest``) into ``<nightly dir>/<release>/campaign`` and
``.../testcases``; this module turns what they left (results.jsonl, testcases-junit.xml,
their exit statuses) into ``<release>/kcidb.json`` and ``<release>/status.json``, and the
summary of all kernels into the exit status:

    0  every kernel passed
    1  regression: a failing campaign verdict or a failing testcase on some kernel
    2  infrastructure failure (VM crash or timeout, missing tool, kernel not found, no
       results) and no regression; a regression found outranks infrastructure trouble
       elsewhere, since its failing verdicts are definite

Kernels are installed releases (``6.1.0-56-amd64``: ``/boot/vmlinuz-<release>`` with
modules in ``/lib/modules/<release>``) or ``/boot/vmlinuz-<release>`` paths.

    python -m harness.nightly resolve KERNEL          prints "RELEASE<TAB>IMAGE"
    python -m harness.nightly kcidb DIR --release R --campaign-rc N --testcases-rc N ...
    python -m harness.nightly summary NIGHTLY_DIR [--failed-kernel K ...]
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.results import (
    FAILING_VERDICTS,
    RESULTS_FILE,
    RUN_FILE,
    Verdict,
    is_iteration,
    read_json_object,
    read_records,
    write_json_atomic,
)

ORIGIN = "nvmf-harness"
KCIDB_FILE = "kcidb.json"
STATUS_FILE = "status.json"
CAMPAIGN_DIR = "campaign"
TESTCASES_DIR = "testcases"
JUNIT_FILE = "testcases-junit.xml"
CONSOLE_LOG = "console.log"
KCIDB_VERSION = {"major": 4, "minor": 3}

EXIT_PASS = 0
EXIT_REGRESSION = 1
EXIT_INFRA = 2
STATUS_NAMES = {EXIT_PASS: "pass", EXIT_REGRESSION: "regression", EXIT_INFRA: "infra"}

PASS, FAIL, ERROR, SKIP = "PASS", "FAIL", "ERROR", "SKIP"
PASSING_VERDICTS = frozenset({Verdict.PASS, Verdict.EXPECTED_EIO})
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


def _iso(unix: float | None) -> str | None:
    if unix is None:
        return None
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="seconds")


def verdict_status(verdict: str) -> str:
    if verdict in PASSING_VERDICTS:
        return PASS
    if verdict in FAILING_VERDICTS:
        return FAIL
    return ERROR  # infra_error, kernel_crash, vm_timeout, anything unknown


def campaign_tests(kernel_dir: Path, build_id: str) -> list[dict[str, Any]]:
    """One KCIDB test per campaign iteration (and per crash record of the VM runner)."""
    campaign = kernel_dir / CAMPAIGN_DIR
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
        test: dict[str, Any] = {
            "id": f"{build_id}:campaign:{iteration:04d}",
            "build_id": build_id,
            "origin": ORIGIN,
            "path": f"nvmf.multipath.{_path_part(fault)}",
            "status": verdict_status(verdict),
            "start_time": _iso(start),
            "duration": float(rec.get("cycle_s", 0.0) or 0.0),
            "log_url": log.relative_to(kernel_dir).as_posix(),
            "comment": f"iteration {iteration} path {rec.get('path', '?')}: {verdict}",
            "misc": {
                "verdict": verdict,
                "iteration": iteration,
                "path": rec.get("path"),
                "variant": rec.get("variant"),
                "app_eio": rec.get("app_eio", 0),
                "eod_race_lines": rec.get("eod_race_lines", 0),
                "time_to_recover_s": rec.get("time_to_recover_s"),
            },
        }
        tests.append(_drop_none(test))
    return tests


def _path_part(name: str) -> str:
    """A KCIDB path component: no dots, no spaces."""
    return re.sub(r"[^A-Za-z0-9_\-\[\]]", "_", name) or "_"


def testcase_tests(kernel_dir: Path, build_id: str) -> list[dict[str, Any]]:
    """One KCIDB test per pytest testcase of testcases-junit.xml (none if it is missing)."""
    testcases = kernel_dir / TESTCASES_DIR
    junit = testcases / JUNIT_FILE
    if not junit.exists():
        return []
    try:
        root = ET.parse(junit).getroot()
    except ET.ParseError:
        return []
    tests = []
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    number = 0
    for suite in suites:
        clock = _junit_time(suite.get("timestamp"))
        for case in suite.iter("testcase"):
            number += 1
            module = (case.get("classname") or "").removeprefix("testcases.")
            parts = [_path_part(p) for p in module.split(".") if p]
            parts.append(_path_part(case.get("name", f"case{number}")))
            duration = float(case.get("time", 0) or 0)
            status, message = PASS, ""
            for tag, kind in (("failure", FAIL), ("error", ERROR), ("skipped", SKIP)):
                element = case.find(tag)
                if element is not None:
                    status, message = kind, element.get("message") or ""
                    break
            test: dict[str, Any] = {
                "id": f"{build_id}:testcases:{number:03d}",
                "build_id": build_id,
                "origin": ORIGIN,
                "path": "nvmf.testcases." + ".".join(parts),
                "status": status,
                "start_time": _iso(clock),
                "duration": duration,
                "log_url": (testcases / CONSOLE_LOG).relative_to(kernel_dir).as_posix(),
                "comment": message[:500] or None,
            }
            tests.append(_drop_none(test))
            if clock is not None:
                clock += duration
    return tests


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


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


@dataclass
class KernelOutcome:
    """The verdict of one kernel's nightly run."""

    release: str
    exit: int
    reasons: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return STATUS_NAMES[self.exit]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


def build_kcidb(
    kernel_dir: Path,
    release: str,
    *,
    stamp: str,
    image: str = "",
    config_name: str = "smoke",
    harness_commit: str = "",
) -> dict[str, Any]:
    """The KCIDB-like document of one kernel from what the two VM runs left in kernel_dir."""
    checkout_id = f"{ORIGIN}:{stamp}:{release}"
    build_id = f"{checkout_id}:{config_name}"
    tests = campaign_tests(kernel_dir, build_id) + testcase_tests(kernel_dir, build_id)
    run = read_json_object(kernel_dir / CAMPAIGN_DIR / RUN_FILE)
    started = run.get("started_unix")
    start_time = _iso(float(started)) if isinstance(started, int | float) else None
    misc = _drop_none(
        {
            "kernel_release": release,
            "kernel_image": image or None,
            "srcversion": run.get("srcversion"),
        }
    )
    checkout = _drop_none(
        {
            "id": checkout_id,
            "origin": ORIGIN,
            "start_time": start_time,
            "valid": True,
            "misc": {**misc, "harness_commit": harness_commit} if harness_commit else misc,
        }
    )
    build = _drop_none(
        {
            "id": build_id,
            "checkout_id": checkout_id,
            "origin": ORIGIN,
            "start_time": start_time,
            "architecture": architecture(release),
            "config_name": config_name,
            # The kernel is installed, not built here: valid means it booted and ran tests.
            "valid": bool(tests),
            "misc": misc,
        }
    )
    return {
        "version": dict(KCIDB_VERSION),
        "checkouts": [checkout],
        "builds": [build],
        "tests": tests,
    }


def classify(
    release: str, kcidb: dict[str, Any], campaign_rc: int | None, testcases_rc: int | None
) -> KernelOutcome:
    """pass / regression / infra for one kernel, with the reasons."""
    tests: list[dict[str, Any]] = kcidb.get("tests", [])
    counts = {s: sum(1 for t in tests if t.get("status") == s) for s in (PASS, FAIL, ERROR, SKIP)}
    campaign = [t for t in tests if ":campaign:" in str(t.get("id"))]
    testcases = [t for t in tests if ":testcases:" in str(t.get("id"))]
    regression: list[str] = []
    infra: list[str] = []
    for test in tests:
        if test.get("status") == FAIL:
            regression.append(f"{test['path']} failed ({test.get('comment', '')})".strip())
        elif test.get("status") == ERROR:
            infra.append(f"{test['path']}: error ({test.get('comment', '')})")
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
        return KernelOutcome(release, EXIT_REGRESSION, regression + infra, counts)
    if infra:
        return KernelOutcome(release, EXIT_INFRA, infra, counts)
    return KernelOutcome(release, EXIT_PASS, [], counts)


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
) -> KernelOutcome:
    """Write kernel_dir/kcidb.json and kernel_dir/status.json; return the outcome."""
    kernel_dir.mkdir(parents=True, exist_ok=True)
    kcidb = build_kcidb(
        kernel_dir,
        release,
        stamp=stamp,
        image=image,
        config_name=config_name,
        harness_commit=harness_commit,
    )
    outcome = classify(release, kcidb, campaign_rc, testcases_rc)
    write_json_atomic(kernel_dir / KCIDB_FILE, kcidb)
    status = {**outcome.to_dict(), "campaign_rc": campaign_rc, "testcases_rc": testcases_rc}
    write_json_atomic(kernel_dir / STATUS_FILE, status)
    return outcome


def overall_exit(exits: Iterable[int]) -> int:
    """Regression if any kernel regressed, else infra if any had trouble, else pass."""
    seen = set(exits)
    if not seen:
        return EXIT_INFRA  # nothing ran
    if EXIT_REGRESSION in seen:
        return EXIT_REGRESSION
    if EXIT_INFRA in seen:
        return EXIT_INFRA
    return EXIT_PASS


def summarize_nightly(nightly_dir: Path, failed_kernels: Iterable[str] = ()) -> tuple[int, str]:
    """Overall exit status and a text table of every <release>/status.json."""
    outcomes: list[KernelOutcome] = []
    for path in sorted(nightly_dir.glob(f"*/{STATUS_FILE}")):
        data = read_json_object(path)
        exit_code = data.get("exit")
        if exit_code not in STATUS_NAMES:
            exit_code, reasons = EXIT_INFRA, [f"{path} unreadable"]
        else:
            reasons = [str(r) for r in data.get("reasons", [])]
        counts = data.get("counts", {})
        outcomes.append(
            KernelOutcome(str(data.get("release", path.parent.name)), exit_code, reasons, counts)
        )
    for kernel in failed_kernels:
        outcomes.append(KernelOutcome(kernel, EXIT_INFRA, ["kernel not found or not usable"]))
    lines = [f"{'kernel':<28} {'status':<11} PASS FAIL ERROR SKIP"]
    for o in outcomes:
        c = o.counts
        lines.append(
            f"{o.release:<28} {o.status:<11} {c.get(PASS, 0):>4} {c.get(FAIL, 0):>4} "
            f"{c.get(ERROR, 0):>5} {c.get(SKIP, 0):>4}"
        )
        lines += [f"    {reason}" for reason in o.reasons[:10]]
    code = overall_exit(o.exit for o in outcomes)
    lines.append(f"nightly: {STATUS_NAMES[code]} (exit {code}), {len(outcomes)} kernel(s)")
    return code, "\n".join(lines)


# --- command line (used by scripts/nightly) --------------------------------------------------


def _rc(value: str) -> int | None:
    return None if value in ("", "none") else int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m harness.nightly", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    res = sub.add_parser("resolve", help="check a kernel argument, print RELEASE<TAB>IMAGE")
    res.add_argument("kernel")
    kc = sub.add_parser("kcidb", help="write DIR/kcidb.json and DIR/status.json")
    kc.add_argument("dir", help="the kernel's nightly directory (campaign/, testcases/)")
    kc.add_argument("--release", required=True)
    kc.add_argument("--image", default="")
    kc.add_argument("--stamp", required=True, help="the nightly run's name (unique ids)")
    kc.add_argument("--campaign-rc", type=_rc, required=True)
    kc.add_argument("--testcases-rc", type=_rc, required=True)
    kc.add_argument("--config-name", default="smoke")
    kc.add_argument("--commit", default="", help="harness git commit")
    sm = sub.add_parser("summary", help="print the table, exit 0/1/2")
    sm.add_argument("dir")
    sm.add_argument("--failed-kernel", action="append", default=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "resolve":
            spec = resolve_kernel(args.kernel)
            print(f"{spec.release}\t{spec.image}")
            return EXIT_PASS
        if args.command == "kcidb":
            outcome = write_kernel(
                Path(args.dir),
                args.release,
                stamp=args.stamp,
                campaign_rc=args.campaign_rc,
                testcases_rc=args.testcases_rc,
                image=args.image,
                config_name=args.config_name,
                harness_commit=args.commit,
            )
            print(f"nightly: {args.release}: {outcome.status}", flush=True)
            for reason in outcome.reasons[:10]:
                print(f"    {reason}", flush=True)
            return outcome.exit
        code, text = summarize_nightly(Path(args.dir), args.failed_kernel)
        print(text, flush=True)
        return code
    except HarnessError as exc:
        print(f"nightly: error: {exc}", file=sys.stderr)
        return EXIT_INFRA


if __name__ == "__main__":
    sys.exit(main())

"""Nightly kernel CI: kernel arguments, the KCIDB document, pass/regression/infra, the script."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import kcidb_io
import pytest

from harness.ci import nightly
from harness.cli import main
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "report"
RELEASE = "6.1.0-56-amd64"
STAMP = "nightly-20261128-020000"

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">
<testsuite name="pytest" errors="0" failures="{failures}" skipped="0" tests="3" time="40.5"
 timestamp="2026-11-28T02:10:00.000000+00:00" hostname="vm">
<testcase classname="testcases.test_001_target_setup" name="test_both_paths_live" time="10.5"/>
<testcase classname="testcases.test_003_fault_under_io" name="test_fault_is_recorded[port.remove]"
 time="20.0">{third}</testcase>
<testcase classname="testcases.test_004_clean_after_kill" name="test_clean" time="10.0">{fourth}
</testcase>
</testsuite></testsuites>
"""
FAILURE = '<failure message="assert 2 == 0: app EIO">AssertionError</failure>'
SKIPPED = '<skipped type="pytest.skip" message="kernel has no nvmet-tcp module">x</skipped>'


def kernel_dir(
    tmp_path: Path, campaign: str | None = "fixed", third: str = "", fourth: str = ""
) -> Path:
    """A kernel's nightly directory as scripts/nightly leaves it."""
    directory = tmp_path / STAMP / RELEASE
    if campaign is not None:
        shutil.copytree(DATA / "compare" / campaign, directory / nightly.CAMPAIGN_DIR)
        for n in range(1, 11):
            kmsg = directory / nightly.CAMPAIGN_DIR / "iterations" / f"{n:04d}" / "kmsg.txt"
            kmsg.parent.mkdir(parents=True, exist_ok=True)
            kmsg.write_text("[ 1.0] nvme nvme1: new ctrl\n")
    if third is not None:
        testcases = directory / nightly.TESTCASES_DIR
        testcases.mkdir(parents=True, exist_ok=True)
        failures = int(FAILURE in third) + int(FAILURE in fourth)
        xml = JUNIT.format(failures=failures, third=third, fourth=fourth)
        (testcases / nightly.JUNIT_FILE).write_text(xml)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def kcidb(directory: Path) -> dict[str, Any]:
    return nightly.build_kcidb(directory, RELEASE, stamp=STAMP, image=f"/boot/vmlinuz-{RELEASE}")


# --- kernel arguments ----------------------------------------------------------------------------


def fake_kernels(tmp_path: Path, *releases: str) -> tuple[Path, Path]:
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    modules.mkdir()
    for release in releases:
        (boot / f"vmlinuz-{release}").write_bytes(b"MZ")
        (modules / release).mkdir()
    return boot, modules


def test_resolve_release_name_and_image_path(tmp_path: Path) -> None:
    boot, modules = fake_kernels(tmp_path, RELEASE, "6.12.9+bpo-amd64")
    spec = nightly.resolve_kernel(RELEASE, boot, modules)
    assert spec == nightly.KernelSpec(RELEASE, boot / f"vmlinuz-{RELEASE}")
    image = boot / "vmlinuz-6.12.9+bpo-amd64"
    assert nightly.resolve_kernel(str(image), boot, modules).release == "6.12.9+bpo-amd64"


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("6.9.0-1-amd64", "not found"),  # no image
        ("/boot/bzImage", "not a vmlinuz"),
        ("6.1;reboot", "not a kernel release"),
        ("6.1.0-nomods-amd64", "no modules"),
    ],
)
def test_resolve_rejects(tmp_path: Path, arg: str, message: str) -> None:
    boot, modules = fake_kernels(tmp_path, RELEASE)
    (boot / "vmlinuz-6.1.0-nomods-amd64").write_bytes(b"MZ")
    with pytest.raises(HarnessError, match=message):
        nightly.resolve_kernel(arg, boot, modules)


def test_architecture_from_release_flavour() -> None:
    assert nightly.architecture("6.1.0-56-amd64") == "x86_64"
    assert nightly.architecture("6.1.0-56-arm64") == "arm64"
    assert nightly.architecture("6.1.0-56-cloud-amd64") == "x86_64"


# --- KCIDB document ------------------------------------------------------------------------------


def test_kcidb_document_shape_and_ids(tmp_path: Path) -> None:
    doc = kcidb(kernel_dir(tmp_path))
    assert doc["version"] == {"major": 5, "minor": 3}  # kcidb-io's latest
    assert kcidb_io.schema.LATEST.is_valid(doc)
    (checkout,) = doc["checkouts"]
    (build,) = doc["builds"]
    assert checkout["id"] == f"nvmf_harness:{STAMP}:{RELEASE}"
    assert build["checkout_id"] == checkout["id"]
    assert build["id"] == f"{checkout['id']}:smoke"
    assert build["origin"] == "nvmf_harness"
    assert build["architecture"] == "x86_64"
    assert build["config_name"] == "smoke"
    assert build["status"] == "PASS"
    assert build["misc"]["srcversion"] == "1F49BEBD82E17B252F08608"
    tests = doc["tests"]
    assert len(tests) == 10 + 3
    assert len({t["id"] for t in tests}) == len(tests)
    for test in tests:
        assert set(test) >= {"id", "build_id", "origin", "path", "status", "duration", "log_url"}
        assert test["build_id"] == build["id"]
        assert test["origin"] == "nvmf_harness"
        assert test["log_url"].startswith("file:///")
        log = Path(unquote(urlparse(test["log_url"]).path))
        assert log.exists() or log.name == "console.log"
    json.dumps(doc)  # serializable as is


def test_campaign_tests_follow_the_records(tmp_path: Path) -> None:
    doc = kcidb(kernel_dir(tmp_path, campaign="unfixed"))
    campaign = [t for t in doc["tests"] if ":campaign:" in t["id"]]
    records = [
        json.loads(line)
        for line in (DATA / "compare" / "unfixed" / RESULTS_FILE).read_text().splitlines()
    ]
    assert [t["misc"]["iteration"] for t in campaign] == [r["iteration"] for r in records]
    for test, rec in zip(campaign, records, strict=True):
        assert test["path"] == f"nvme.multipath.{rec['fault']}"
        assert test["status"] == ("FAIL" if rec["verdict"] == "eio_race" else "PASS")
        assert test["duration"] == rec["cycle_s"]
        kmsg = f"campaign/iterations/{rec['iteration']:04d}/kmsg.txt"
        assert test["log_url"] == (tmp_path / STAMP / RELEASE / kmsg).resolve().as_uri()
        assert test["misc"]["app_eio"] == rec["app_eio"]
    run = json.loads((DATA / "compare" / "unfixed" / "run.json").read_text())
    first = datetime.fromisoformat(campaign[0]["start_time"]).timestamp()
    expected = run["started_unix"] - run["setup_s"] + records[0]["started_at"]
    assert abs(first - expected) <= 1


def test_testcase_tests_from_junit(tmp_path: Path) -> None:
    doc = kcidb(kernel_dir(tmp_path, third=FAILURE, fourth=SKIPPED))
    cases = [t for t in doc["tests"] if ":testcases:" in t["id"]]
    assert [t["status"] for t in cases] == ["PASS", "FAIL", "SKIP"]
    assert cases[0]["path"] == "nvme.multipath.testcases.test_001_target_setup.test_both_paths_live"
    # a parameter is a child node; a dot in it would split the KCIDB path: it is replaced
    assert cases[1]["path"].endswith(".test_fault_is_recorded.port_remove")
    assert cases[1]["comment"] == "assert 2 == 0: app EIO"
    assert cases[1]["duration"] == 20.0
    assert cases[0]["start_time"] == "2026-11-28T02:10:00+00:00"
    assert cases[1]["start_time"] == "2026-11-28T02:10:10+00:00"  # after the first one's 10.5 s
    assert cases[0]["log_url"].endswith("/testcases/console.log")
    published = nightly.build_kcidb(
        tmp_path / STAMP / RELEASE,
        RELEASE,
        stamp=STAMP,
        log_base_url="https://ci.example.org/artifacts/night-1/",
    )
    urls = {t["log_url"] for t in published["tests"] if ":testcases:" in t["id"]}
    assert urls == {"https://ci.example.org/artifacts/night-1/testcases/console.log"}


def test_verdict_status_mapping() -> None:
    assert nightly.verdict_status("pass") == "PASS"
    assert nightly.verdict_status("expected_eio") == "PASS"
    for verdict in ("eio_race", "eio", "verify_fail", "hang", "kernel_bug", "not_recovered"):
        assert nightly.verdict_status(verdict) == "FAIL"
    for verdict in ("infra_error", "kernel_crash", "vm_timeout", "??"):
        assert nightly.verdict_status(verdict) == "ERROR"


# --- pass / regression / infra -------------------------------------------------------------------


def test_all_pass(tmp_path: Path) -> None:
    directory = kernel_dir(tmp_path)
    outcome = nightly.write_kernel(directory, RELEASE, stamp=STAMP, campaign_rc=0, testcases_rc=0)
    assert outcome.exit == ExitCode.OK, outcome.reasons
    assert outcome.counts == {"PASS": 13, "FAIL": 0, "ERROR": 0, "SKIP": 0}
    assert json.loads((directory / "kcidb.json").read_text())["builds"][0]["status"] == "PASS"
    status = json.loads((directory / "status.json").read_text())
    assert status["status"] == "pass" and status["exit"] == 0


def test_failing_verdicts_are_a_regression(tmp_path: Path) -> None:
    directory = kernel_dir(tmp_path, campaign="unfixed")
    outcome = nightly.write_kernel(directory, RELEASE, stamp=STAMP, campaign_rc=1, testcases_rc=0)
    assert outcome.exit == ExitCode.FAILED
    # no baseline and no known failure: any failing iteration of the scenario counts
    assert outcome.reasons == [
        "race-ctrl-delete-widened: regression: 2/10 failing, no baseline and no known "
        "failure: any failing iteration counts"
    ]
    junit = (directory / nightly.NIGHTLY_JUNIT_FILE).read_text()
    assert junit.count("<failure ") == 2 and "<skipped" not in junit


def test_failing_testcase_is_a_regression(tmp_path: Path) -> None:
    outcome = nightly.classify(
        RELEASE, kcidb(kernel_dir(tmp_path, third=FAILURE)), campaign_rc=0, testcases_rc=1
    )
    assert outcome.exit == ExitCode.FAILED


def test_vm_crash_is_infra(tmp_path: Path) -> None:
    directory = kernel_dir(tmp_path)
    with (directory / "campaign" / RESULTS_FILE).open("a") as handle:
        handle.write(json.dumps({"iteration": 11, "fault": "unknown", "verdict": "kernel_crash"}))
        handle.write("\n")
    doc = kcidb(directory)
    crash = doc["tests"][10]
    assert crash["status"] == "ERROR"
    assert crash["path"] == "nvme.multipath.vm"
    assert crash["log_url"].endswith("/campaign/console.log")
    outcome = nightly.classify(RELEASE, doc, campaign_rc=3, testcases_rc=0)
    assert outcome.exit == ExitCode.INFRA
    assert any("exited 3" in r for r in outcome.reasons)


@pytest.mark.parametrize(
    ("campaign", "third", "campaign_rc", "testcases_rc", "why"),
    [
        ("fixed", "", 124, 0, "campaign exited 124"),  # killed by timeout
        ("fixed", None, 0, 3, "testcases left no results"),  # VM died before the junit
        (None, "", 2, 0, "campaign left no results"),  # nvmf-harness vm refused to start
        ("fixed", "", 0, None, "testcases did not run"),
        ("fixed", SKIPPED, 0, 0, "testcases were skipped"),
    ],
)
def test_infra_cases(
    tmp_path: Path,
    campaign: str | None,
    third: str | None,
    campaign_rc: int,
    testcases_rc: int | None,
    why: str,
) -> None:
    directory = kernel_dir(tmp_path, campaign=campaign, third=third or "", fourth=third or "")
    if third is None:
        shutil.rmtree(directory / nightly.TESTCASES_DIR)
    if third == SKIPPED:  # every testcase skipped: nothing was tested on this kernel
        junit = directory / nightly.TESTCASES_DIR / nightly.JUNIT_FILE
        junit.write_text(
            junit.read_text().replace(
                'name="test_both_paths_live" time="10.5"/>',
                f'name="test_both_paths_live" time="10.5">{SKIPPED}</testcase>',
            )
        )
    outcome = nightly.classify(RELEASE, kcidb(directory), campaign_rc, testcases_rc)
    assert outcome.exit == ExitCode.INFRA, outcome.reasons
    assert any(why in r for r in outcome.reasons), outcome.reasons


def test_regression_outranks_infra_and_nothing_is_infra() -> None:
    assert nightly.overall_exit([0, 0]) == 0
    assert nightly.overall_exit([0, 3]) == 3
    assert nightly.overall_exit([3, 1, 0]) == 1
    assert nightly.overall_exit([]) == 3


def test_summary_over_kernels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = kernel_dir(tmp_path)
    nightly.write_kernel(good, RELEASE, stamp=STAMP, campaign_rc=0, testcases_rc=0)
    night = tmp_path / STAMP
    assert main(["nightly", "summary", str(night)]) == 0
    assert f"{RELEASE}" in capsys.readouterr().out
    code, text = nightly.summarize_nightly(night, ["6.99.0-1-amd64"])
    assert code == ExitCode.INFRA
    assert "6.99.0-1-amd64" in text and "infra" in text
    bad = night / "6.1.0-99-amd64"
    shutil.copytree(DATA / "compare" / "unfixed", bad / "campaign")
    argv = ["kcidb", str(bad), "--release", "6.1.0-99-amd64", "--stamp", STAMP]
    assert main(["nightly", *argv, "--campaign-rc", "1", "--testcases-rc", "none"]) == 1
    code, text = nightly.summarize_nightly(night)
    assert code == ExitCode.FAILED
    assert "regression" in text


def test_main_resolve_unknown_kernel_is_infra(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nightly", "resolve", "0.0.0-nonexistent-amd64"]) == ExitCode.INFRA
    assert "not found" in capsys.readouterr().err


# --- the script and the workflow -----------------------------------------------------------------


def test_nightly_script_missing_kernel_exits_3(tmp_path: Path) -> None:
    """No VM boots: the only kernel given does not exist, so the run is an infra failure."""
    if shutil.which("qemu-system-x86_64") is None or not (REPO / ".venv" / "bin" / "vng").exists():
        pytest.skip("scripts/nightly needs qemu-system-x86_64 and .venv/bin/vng to start")
    out = tmp_path / "nightly-x"
    done = subprocess.run(
        [str(REPO / "scripts" / "nightly"), "0.0.0-nonexistent-amd64"],
        env={"PATH": "/usr/bin:/bin", "NVMF_NIGHTLY_OUT": str(out)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "0.0.0-nonexistent-amd64" in (out / "summary.txt").read_text()


def test_nightly_script_missing_tool_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "nightly"), RELEASE],
        env={"PATH": "/usr/bin:/bin", "NVMF_HARNESS_VENV": str(tmp_path / "no-venv")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "missing tool" in done.stderr


# The example workflows (.github/workflows/nightly.yml, .gitlab-ci.yml) are checked by
# tests/test_ci_workflows.py.

"""blktests: the checkout check, installing our case as the next number, blktests' result
files, the table, the module sampler's names; and our case itself (shellcheck, its .out)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.bed import blktests
from harness.bed.modprobe_variant import install_lines, require_guest
from harness.campaign.blktests_run import CheckRun, record_of_run, variant_names
from harness.cli.app import main
from harness.core.errors import HarnessError, SafetyError, UsageError
from harness.core.exits import ExitCode
from harness.vm.blktests import exit_status, render_table

CASE = blktests.our_case()
CASE_OUT = CASE.with_name(CASE.name + ".out")
# blktests' own `make check` (its Makefile): SC2119 excluded; -x follows `. tests/nvme/rc`.
SHELLCHECK_EXCLUDE = "SC2119"


def fake_checkout(root: Path, numbers: tuple[int, ...] = (1, 40, 63)) -> Path:
    """A directory with what check_checkout looks for and nvme cases ``numbers``."""
    for marker in blktests.MARKERS:
        (root / marker).parent.mkdir(parents=True, exist_ok=True)
        (root / marker).write_text("#!/bin/bash\n")
    for number in numbers:
        (root / "tests/nvme" / f"{number:03d}").write_text("#!/bin/bash\n")
        (root / "tests/nvme" / f"{number:03d}.out").write_text(f"Running nvme/{number:03d}\n")
    return root


def test_check_checkout_accepts_a_checkout(tmp_path: Path) -> None:
    assert blktests.check_checkout(fake_checkout(tmp_path)) == tmp_path.resolve()


def test_a_missing_checkout_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        blktests.check_checkout(tmp_path / "nope")
    assert "no such directory" in str(info.value)
    assert "git clone https://github.com/osandov/blktests" in str(info.value)


def test_a_directory_that_is_not_blktests_is_refused(tmp_path: Path) -> None:
    (tmp_path / "check").write_text("")
    with pytest.raises(UsageError) as info:
        blktests.check_checkout(tmp_path)
    message = str(info.value)
    assert "is not a blktests checkout (no common/rc, common/nvme, tests/nvme/rc)" in message
    assert "git clone https://github.com/osandov/blktests" in message
    assert "\n" not in message


def test_the_command_refuses_a_missing_checkout_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["blktests", "--blktests", str(tmp_path / "nope"), "--out", str(tmp_path)])
    assert status == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("nvmf-harness: error: --blktests ")
    assert "git clone https://github.com/osandov/blktests" in err


def test_next_free_number_is_one_above_the_highest(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path, (1, 40, 63))
    (checkout / "tests/nvme/rc").write_text("")
    assert blktests.next_free_number(checkout) == 64


def test_install_case_renumbers_the_case_and_its_out(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path / "bt", (1, 70))
    name = blktests.install_case(checkout, CASE)
    assert name == "nvme/071"
    installed = checkout / "tests/nvme/071"
    assert installed.read_bytes() == CASE.read_bytes()
    assert os.access(installed, os.X_OK)
    out = (checkout / "tests/nvme/071.out").read_text()
    assert out.splitlines()[0] == "Running nvme/071"
    assert out.splitlines()[1:] == CASE_OUT.read_text().splitlines()[1:]


def test_install_case_needs_the_out_file(tmp_path: Path) -> None:
    case = tmp_path / "contrib/tests/nvme/064"
    case.parent.mkdir(parents=True)
    case.write_text("#!/bin/bash\n")
    with pytest.raises(HarnessError, match=r"has no 064\.out"):
        blktests.install_case(fake_checkout(tmp_path / "bt"), case)


def test_copy_checkout_leaves_history_and_results_out(tmp_path: Path) -> None:
    source = fake_checkout(tmp_path / "src")
    (source / ".git").mkdir()
    (source / "results/nodev").mkdir(parents=True)
    copy = blktests.copy_checkout(source, tmp_path / "copy")
    assert (copy / "check").is_file()
    assert not (copy / ".git").exists()
    assert not (copy / "results").exists()


def test_resolve_cases() -> None:
    assert blktests.resolve_cases(["ours", "nvme/040"], "nvme/064") == ["nvme/064", "nvme/040"]
    with pytest.raises(UsageError, match="give 'ours' or a blktests case"):
        blktests.resolve_cases(["040"], "nvme/064")


RESULT_PASS = (
    "description\ttest nvme fabrics controller reset/disconnect operation during I/O\n"
    "date\t2026-12-07 09:30:48\n"
    "exit_status\t0\n"
    "runtime\t12.345s\n"
    "status\tpass\n"
)
RESULT_FAIL = "status\tfail\nreason\toutput\nexit_status\t0\nruntime\t8.1s\n"
RESULT_NOT_RUN = "description\tx\ndate\t2026-12-07 09:30:48\nstatus\tnot run\n"


def test_parse_result_file() -> None:
    result = blktests.parse_result_file(RESULT_PASS, "nvme/040", "tr_tcp")
    assert result.status == "pass"
    assert result.runtime_s == pytest.approx(12.345)
    assert result.exit_status == 0
    assert result.condition == "tr_tcp"
    assert result.description.startswith("test nvme fabrics")
    failed = blktests.parse_result_file(RESULT_FAIL, "nvme/064")
    assert (failed.status, failed.reason, failed.runtime_s) == ("fail", "output", 8.1)
    skipped = blktests.parse_result_file(RESULT_NOT_RUN, "nvme/064")
    assert (skipped.status, skipped.runtime_s, skipped.exit_status) == ("not run", None, None)
    with pytest.raises(HarnessError, match="has no status"):
        blktests.parse_result_file("date\tx\n", "nvme/064")


def test_find_results_reads_each_condition(tmp_path: Path) -> None:
    (tmp_path / "nodev_tr_tcp/nvme").mkdir(parents=True)
    (tmp_path / "nodev_tr_tcp/nvme/064").write_text(RESULT_FAIL)
    (tmp_path / "nodev_tr_tcp/nvme/064.full").write_text("fio says\n")
    (tmp_path / "nodev/nvme").mkdir(parents=True)
    (tmp_path / "nodev/nvme/064").write_text(RESULT_PASS)
    found = blktests.find_results(tmp_path, "nvme/064")
    assert [(r.condition, r.status) for r in found] == [("", "pass"), ("tr_tcp", "fail")]


CHECK_NOT_RUN = (
    "nvme/064 (tr=tcp) (remove ...)                               [not run]\n"
    "    configfs is not mounted at /sys/kernel/config\n"
    "    driver nvme_tcp is not available\n"
)


def test_skip_reasons_come_from_checks_output() -> None:
    assert blktests.skip_reasons(CHECK_NOT_RUN) == (
        "configfs is not mounted at /sys/kernel/config; driver nvme_tcp is not available"
    )
    skipped = blktests.parse_result_file(RESULT_NOT_RUN, "nvme/064", "tr_tcp")
    record = record_of_run("nvme/064", 1, True, CheckRun(CHECK_NOT_RUN, False, 3.0), [skipped])
    assert record.status == "not run"
    assert record.reason.startswith("configfs is not mounted")


def test_a_run_without_result_file_or_killed_is_an_error() -> None:
    record = record_of_run("nvme/064", 1, True, CheckRun("boom\n", False, 1.0), [])
    assert (record.status, record.reason) == ("error", "boom")
    killed = record_of_run("nvme/064", 2, True, CheckRun("", True, 600.0), [])
    assert killed.status == "timeout"


def test_table_and_exit_status() -> None:
    records = [
        {
            "case": "nvme/064",
            "ours": True,
            "run": 1,
            "status": "fail",
            "reason": "output",
            "runtime_s": 14.24,
            "eod_race_lines": 3,
            "witness_events": 40,
            "modules_seen": ["unfixed"],
        },
        {
            "case": "nvme/040",
            "ours": False,
            "run": 1,
            "status": "not run",
            "reason": "driver nvme_tcp is not available",
            "runtime_s": None,
            "eod_race_lines": 0,
            "witness_events": None,
            "modules_seen": [],
        },
    ]
    lines = render_table(records).splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "case",
        "run",
        "blktests",
        "time s",
        "EOD lines",
        "BPF bios",
        "modules",
    ]
    assert re.split(r"\s{2,}", lines[2].strip()) == [
        "nvme/064 (ours)",
        "1",
        "fail (output)",
        "14.2",
        "3",
        "40",
        "unfixed",
    ]
    assert re.split(r"\s{2,}", lines[3].strip()) == [
        "nvme/040",
        "1",
        "not run (driver nvme_tcp is not available)",
        "-",
        "0",
        "-",
        "-",
    ]
    assert exit_status(records) == ExitCode.FAILED
    assert exit_status(records[1:]) == ExitCode.OK


def test_variant_names_of_sampled_modules() -> None:
    builds = {"fixed": "AAA", "unfixed": "BBB"}
    assert variant_names({("BBB", True)}, builds) == ["unfixed"]
    # Debian's 6.1.192 has the fix: fixed and distro share a srcversion, the taint tells.
    assert variant_names({("AAA", False), ("AAA", True)}, builds) == ["distro", "fixed"]
    assert variant_names({("CCC", True)}, builds) == ["?"]


def test_modprobe_install_lines_load_the_variants_files() -> None:
    kos = {
        "nvme-core": Path("/b/nvme-core.ko"),
        "nvme-fabrics": Path("/b/nvme-fabrics.ko"),
        "nvme-tcp": Path("/b/nvme-tcp.ko"),
    }
    deps = {"nvme-fabrics": ["nvme_core"], "nvme-tcp": ["nvme_core", "nvme_fabrics"]}
    assert install_lines(kos, deps) == [
        "install nvme_core /sbin/insmod /b/nvme-core.ko $CMDLINE_OPTS",
        "install nvme_fabrics /sbin/modprobe nvme_core && /sbin/insmod /b/nvme-fabrics.ko "
        "$CMDLINE_OPTS",
        "install nvme_tcp /sbin/modprobe nvme_core && /sbin/modprobe nvme_fabrics && "
        "/sbin/insmod /b/nvme-tcp.ko $CMDLINE_OPTS",
    ]


def test_modprobe_changes_are_refused_outside_the_vm(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("BOOT_IMAGE=/boot/vmlinuz-6.1.0-57-amd64 root=/dev/vda1 ro quiet\n")
    with pytest.raises(SafetyError, match="outside the VM"):
        require_guest(cmdline)
    cmdline.write_text("console=ttyS0 virtme_hostname=virtme-ng virtme_user=root\n")
    require_guest(cmdline)


# --- our case -------------------------------------------------------------------------------


# What blktests' tests/nvme/rc (with common/rc, common/nvme, common/shellcheck) gives a case,
# as far as shellcheck needs it: the variables the framework reads (its _silence_sc2034) and
# those it sets. With BLKTESTS_DIR set, the real checkout is used instead.
STUB_RC = """#!/bin/bash
# shellcheck shell=bash
_silence_sc2034() {
	echo "$CAN_BE_ZONED $CHECK_DMESG $COND_DESC $DESCRIPTION $DMESG_FILTER $QUICK $TIMED" >/dev/null
}
TEST_NAME=nvme/000
FULL=/dev/null
TMPDIR=/tmp
def_subsysnqn=blktests-subsystem-1
def_subsys_uuid=91fdba0d-f87b-4c25-b80f-db7be1418b9e
"""


def shellcheck_tree(tmp_path: Path) -> tuple[Path, str]:
    """A tree to run shellcheck -x in, and our case's path in it: a copy of $BLKTESTS_DIR
    when set, else a stub tests/nvme/rc."""
    checkout = os.environ.get("BLKTESTS_DIR")
    if checkout:
        tree = blktests.copy_checkout(blktests.check_checkout(Path(checkout)), tmp_path / "bt")
        return tree, blktests.install_case(tree, CASE)
    (tmp_path / "tests/nvme").mkdir(parents=True)
    (tmp_path / "tests/nvme/rc").write_text(STUB_RC)
    shutil.copy2(CASE, tmp_path / "tests/nvme" / CASE.name)
    return tmp_path, f"nvme/{CASE.name}"


def test_our_case_passes_shellcheck(tmp_path: Path, shellcheck: str) -> None:
    """blktests' `make check` on our case: shellcheck -x -e SC2119 (CI=true: shellcheck
    must be there)."""
    tree, name = shellcheck_tree(tmp_path)
    result = subprocess.run(
        [shellcheck, "-x", "-e", SHELLCHECK_EXCLUDE, "-f", "gcc", f"tests/{name}"],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_our_case_has_blktests_form() -> None:
    text = CASE.read_text()
    assert text.startswith("#!/bin/bash\n# SPDX-License-Identifier: GPL-3.0+\n")
    assert 'Regression test for commit 88bac2c1a72b ("nvme-multipath: set BIO_REMAPPED on' in text
    assert "\n. tests/nvme/rc\n" in text
    assert re.search(r"^DESCRIPTION=\".+\"$", text, re.M)
    assert re.search(r"^requires\(\) \{$", text, re.M)
    assert re.search(r"^test\(\) \{$", text, re.M)
    assert "TODO" not in text
    assert os.access(CASE, os.X_OK)
    assert not os.access(CASE_OUT, os.X_OK)  # blktests' make check: .out files not executable


def test_our_out_is_what_the_case_echoes_on_success() -> None:
    """The .out must be exactly what test() prints when nothing fails: its unconditional
    echo lines, in order, and _nvme_disconnect_subsys's line for the two controllers."""
    body = CASE.read_text().split("\ntest() {\n", 1)[1]
    expected = []
    for line in body.splitlines():
        stripped = line.strip()
        if line.startswith("\techo ") and ">>" not in stripped:
            expected.append(stripped.removeprefix("echo ").strip('"'))
        elif stripped == "_nvme_disconnect_subsys":
            expected.append("disconnected 2 controller(s)")
    expected = [e.replace("${TEST_NAME}", f"nvme/{CASE.name}") for e in expected]
    assert CASE_OUT.read_text().splitlines() == expected

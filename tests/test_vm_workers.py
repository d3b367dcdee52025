"""vm-pytest --workers N: the groups, the children, one JUnit file and one exit status."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from harness.cli.app import main
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode
from harness.vm import workers as vm_workers

CASE = '<testcase classname="testcases.test_{n:03d}" name="test_{n}" time="1.5"{body}'
SUITE = (
    '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="{tests}" '
    'failures="{failures}" errors="0" skipped="0" time="3.0">{cases}</testsuite></testsuites>'
)


def junit(path: Path, numbers: Sequence[int], failing: Sequence[int] = ()) -> Path:
    cases = "".join(
        CASE.format(
            n=n, body='><failure message="boom">x</failure></testcase>' if n in failing else "/>"
        )
        for n in numbers
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SUITE.format(tests=len(numbers), failures=len(failing), cases=cases))
    return path


def test_split_args_select_one_group() -> None:
    assert vm_workers.split_args(3, 2) == [
        "--splits=3",
        "--group=2",
        "--splitting-algorithm=least_duration",
    ]


def test_workers_below_one_is_one_line() -> None:
    with pytest.raises(HarnessError, match="give 1 or more"):
        vm_workers.check_workers(0)
    vm_workers.check_workers(2)  # pytest-split is a dev dependency


def test_cores_note_only_when_vms_want_more_cores_than_there_are() -> None:
    assert vm_workers.cores_note(1, 2, 2) == ""
    assert vm_workers.cores_note(2, 1, 2) == ""
    assert "2 VMs of 2 vCPUs on 2 cores" in vm_workers.cores_note(2, 2, 2)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([0, 0], 0),
        ([0, 1], 1),
        ([3, 1], 1),  # a failing testcase outranks a dead worker, as in the nightly
        ([0, 3], 3),
        ([0, None], ExitCode.INFRA),  # killed after its timeout
        ([0, 5], 0),  # a group without tests
        ([5, 5], 5),
        ([], ExitCode.INFRA),
    ],
)
def test_combined_status(statuses: list[int | None], expected: int) -> None:
    assert vm_workers.combined_status(statuses, ExitCode.INFRA) == expected


def test_merge_junit_keeps_every_workers_testcases(tmp_path: Path) -> None:
    a = junit(tmp_path / "worker-1" / "testcases-junit.xml", [1, 2])
    b = junit(tmp_path / "worker-2" / "testcases-junit.xml", [3], failing=[3])
    torn = tmp_path / "worker-3" / "testcases-junit.xml"
    torn.parent.mkdir()
    torn.write_text("<testsuites><testsu")
    missing = tmp_path / "worker-4" / "testcases-junit.xml"
    target = tmp_path / "testcases-junit.xml"
    assert vm_workers.merge_junit([a, b, torn, missing], target) == 3
    text = target.read_text()
    assert 'tests="3"' in text and 'failures="1"' in text
    assert text.count("<testcase ") == 3


def test_run_workers_prefixes_lines_and_returns_statuses() -> None:
    lines: list[str] = []
    argvs = [
        [sys.executable, "-c", "print('one'); raise SystemExit(0)"],
        [sys.executable, "-c", "import sys; print('two', file=sys.stderr); raise SystemExit(1)"],
    ]
    assert vm_workers.run_workers(argvs, lines.append, timeout_s=60) == [0, 1]
    assert sorted(lines) == ["[1/2] one", "[2/2] two"]


def test_join_consoles(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("boot a\n")
    vm_workers.join_consoles([tmp_path / "a.log", tmp_path / "b.log"], tmp_path / "all.log")
    assert (tmp_path / "all.log").read_text().splitlines() == [
        f"# worker 1: {tmp_path / 'a.log'}",
        "boot a",
        f"# worker 2: {tmp_path / 'b.log'}",
    ]


def test_cli_workers_boot_one_child_per_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kernel = tmp_path / "vmlinuz-6.1.0-57-amd64"
    kernel.write_bytes(b"MZ")
    out = tmp_path / "tc"
    seen: list[list[str]] = []

    def fake_run(
        argvs: Sequence[Sequence[str]], say: Callable[[str], None], timeout_s: float
    ) -> list[int | None]:
        for k, argv in enumerate(argvs, start=1):
            seen.append(list(argv))
            junit(out / f"worker-{k}" / "testcases-junit.xml", [k], failing=[2])
            (out / f"worker-{k}" / "console.log").write_text(f"console {k}\n")
        return [0, 1]

    monkeypatch.setattr(vm_workers, "run_workers", fake_run)
    argv = ["vm-pytest", "--out", str(out), "--kernel", str(kernel), "--accel", "tcg"]
    assert main([*argv, "--workers", "2", "--", "-v", "-k", "test_001"]) == 1
    assert len(seen) == 2
    for k, child in enumerate(seen, start=1):
        assert child[1:4] == ["-m", "harness.cli", "vm-pytest"]
        assert child[child.index("--out") + 1] == str(out / f"worker-{k}")
        assert child[child.index("--kernel") + 1] == str(kernel)
        assert child[child.index("--accel") + 1] == "tcg"
        tail = child[child.index("--") + 1 :]
        assert tail == ["-v", "-k", "test_001", *vm_workers.split_args(2, k)]
    assert 'tests="2"' in (out / "testcases-junit.xml").read_text()
    assert "console 2" in (out / "console.log").read_text()
    assert "exit statuses 0, 1" in capsys.readouterr().out


def test_cli_workers_zero_is_refused(tmp_path: Path) -> None:
    assert main(["vm-pytest", "--out", str(tmp_path), "--workers", "0"]) == ExitCode.INFRA


@pytest.mark.parametrize(
    ("args", "whole_directory"),
    [(["-v", "-k", "test_001"], True), (["-v", "testcases/test_022_fault_steps.py"], False)],
)
def test_vm_pytest_runs_the_named_files_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], whole_directory: bool
) -> None:
    from harness.vm import testcases
    from harness.vm.boot import VmResult

    kernel = tmp_path / "vmlinuz-6.1.0-57-amd64"
    kernel.write_bytes(b"MZ")
    guests: list[list[str]] = []

    def fake_run_in_vm(spec: object, outdir: Path, guest: list[str], **_: object) -> VmResult:
        guests.append(guest)
        return VmResult(0, 0.5, 1.0, crashed=False, timed_out=False, console_tail=[])

    monkeypatch.setattr(testcases, "run_in_vm", fake_run_in_vm)
    argv = ["vm-pytest", "--out", str(tmp_path / "tc"), "--kernel", str(kernel), "--accel", "tcg"]
    assert main([*argv, "--", *args]) == 0
    (guest,) = guests
    assert ("testcases/" in guest) == whole_directory
    assert guest[-len(args) :] == args

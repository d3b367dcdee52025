"""procs.run: argument lists, timeouts, and one-line errors naming the package to install."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.core.errors import ToolError
from harness.core.procs import ProcResult, require_tool, run


def test_run_returns_output() -> None:
    result = run(["echo", "hello", "world"], timeout_s=10)
    assert result.ok
    assert result.returncode == 0
    assert result.stdout == "hello world\n"
    assert result.stderr == ""
    assert result.argv == ("echo", "hello", "world")


def test_run_passes_input() -> None:
    assert run(["cat"], timeout_s=10, input_text="a\nb\n").stdout == "a\nb\n"


def test_run_does_not_use_a_shell() -> None:
    result = run(["echo", "$HOME; false"], timeout_s=10)
    assert result.stdout == "$HOME; false\n"


def test_failure_is_reported_not_raised() -> None:
    result = run(["sh", "-c", "echo out; echo first >&2; echo last >&2; exit 3"], timeout_s=10)
    assert not result.ok
    assert result.returncode == 3
    assert result.one_line_error() == "sh -c echo out; echo first >&2; echo last >&2; exit 3: last"


def test_one_line_error_without_output() -> None:
    assert ProcResult(("false",), 1, "", "").one_line_error() == "false: exit status 1"
    assert ProcResult(("x", "y"), 2, "only stdout\n", "").one_line_error() == "x y: only stdout"


def test_check_raises_one_line_tool_error() -> None:
    with pytest.raises(ToolError) as info:
        run(["sh", "-c", "echo one >&2; echo two >&2; exit 1"], timeout_s=10, check=True)
    assert "\n" not in str(info.value)
    assert str(info.value).endswith(": two")


def test_timeout_raises_tool_error() -> None:
    started = time.monotonic()
    with pytest.raises(ToolError) as info:
        run(["sleep", "30"], timeout_s=0.3)
    assert time.monotonic() - started < 5
    assert str(info.value) == "sleep 30 did not finish in 0.3 s"


def test_missing_tool_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no tools at all
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python3"))
    with pytest.raises(ToolError) as info:
        run(["nvme", "list"], timeout_s=10)
    assert str(info.value) == "'nvme' not found (install it: apt-get install nvme-cli)"
    assert info.value.hint == "install it: apt-get install nvme-cli"


def test_unknown_missing_tool_hint() -> None:
    with pytest.raises(ToolError) as info:
        require_tool("nvmfh-no-such-tool")
    assert "apt-get install nvmfh-no-such-tool" in str(info.value)
    assert "\n" not in str(info.value)


def test_require_tool_finds_a_tool() -> None:
    assert require_tool("sh").endswith("/sh")


def test_timeout_returns_even_if_the_child_cannot_be_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subprocess.Popen, "kill", lambda self: None)
    started = time.monotonic()
    with pytest.raises(ToolError, match="did not finish"):
        run(["sleep", "4"], timeout_s=0.3)  # exits by itself after 4 s, whatever happens
    assert time.monotonic() - started < 3.0

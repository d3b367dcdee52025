"""nvmf-harness new-fault / new-testcase: the files they write pass the project's linters,
and a new fault passes its own generated test (run in a copy of the checkout)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of what a fault and its test need: harness/, tests/, pyproject.toml."""
    copy = tmp_path / "repo"
    ignore = shutil.ignore_patterns("__pycache__", "data")
    shutil.copytree(REPO / "harness", copy / "harness", ignore=ignore)
    shutil.copytree(REPO / "tests", copy / "tests", ignore=ignore)
    (copy / "testcases").mkdir()
    for name in ("conftest.py", "test_002_io_on_both_paths.py"):
        shutil.copy2(REPO / "testcases" / name, copy / "testcases" / name)
    shutil.copy2(REPO / "pyproject.toml", copy / "pyproject.toml")
    return copy


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found is not None, f"{name} is not installed (pip install -e .[dev])"
    return found


def test_a_new_fault_passes_its_own_test_and_the_linters(checkout: Path) -> None:
    assert main(["new-fault", "port_flap", "--repo", str(checkout)]) == 0
    fault = checkout / "harness" / "faults" / "port_flap.py"
    test = checkout / "tests" / "test_fault_port_flap.py"
    assert fault.is_file() and test.is_file()
    files = [str(fault), str(test)]
    for argv in (
        [tool("ruff"), "check", *files],
        [tool("ruff"), "format", "--check", *files],
        [tool("mypy"), "--strict", "--follow-imports=silent", *files],
    ):
        done = subprocess.run(
            argv, check=False, cwd=checkout, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
        check=False,
        cwd=checkout,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 passed" in done.stdout
    assert main(["new-fault", "port_flap", "--repo", str(checkout)]) == 2  # never overwrites


def test_a_new_testcase_gets_the_next_number(checkout: Path) -> None:
    assert main(["new-testcase", "queue_depth_flip", "--repo", str(checkout)]) == 0
    written = checkout / "testcases" / "test_003_queue_depth_flip.py"
    text = written.read_text()
    assert text.startswith('"""Queue depth flip (one line') and "def test_queue_depth_flip(" in text
    done = subprocess.run(
        [tool("ruff"), "check", str(written)],
        check=False,
        cwd=checkout,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout
    assert main(["new-testcase", "Bad-Name", "--repo", str(checkout)]) == 2

"""``new-fault NAME`` and ``new-testcase NAME``: files to start from, like blktests' ./new.

Each writes from a template in harness/cli/templates/ whose comments state the contract (of
a fault: harness/faults/base.py; of a testcase: testcases/conftest.py), never over an
existing file. The new fault comes with its unit test and works from the start (it passes
that test); the new testcase gets the next free number.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from harness.core.console import say
from harness.core.errors import UsageError
from harness.core.exits import ExitCode
from harness.core.paths import REPO_ROOT

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,40}$")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``new-fault`` and ``new-testcase``."""
    fault = sub.add_parser("new-fault", help="write a new fault module and its unit test")
    fault.add_argument("name", help="the fault's name: lower case, digits, underscores")
    fault.add_argument("--summary", default="", help="one line: what inject does")
    fault.add_argument("--repo", type=Path, default=REPO_ROOT, help="the checkout to write to")
    fault.set_defaults(func=cmd_new_fault)
    case = sub.add_parser("new-testcase", help="write a new numbered testcase")
    case.add_argument("name", help="what it tests, lower case with underscores")
    case.add_argument("--summary", default="", help="its purpose, one line")
    case.add_argument("--repo", type=Path, default=REPO_ROOT, help="the checkout to write to")
    case.set_defaults(func=cmd_new_testcase)


def _checked_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(
            f"{name!r} is not a name for it", hint="lower case letters, digits and underscores"
        )
    return name


def _write(path: Path, text: str) -> None:
    if path.exists():
        raise UsageError(f"{path} exists already", hint="choose another name")
    path.write_text(text)
    say(f"wrote {path}")


def render(template: str, **values: str) -> str:
    """A template (harness/cli/templates/NAME) with ``values`` filled in."""
    return (TEMPLATES / template).read_text().format(**values)


def cmd_new_fault(args: argparse.Namespace) -> int:
    """``new-fault NAME``: harness/faults/NAME.py and tests/test_fault_NAME.py."""
    name = _checked_name(args.name)
    fault = args.repo / "harness" / "faults" / f"{name}.py"
    test = args.repo / "tests" / f"test_fault_{name}.py"
    if fault.exists() or test.exists():
        raise UsageError(f"a fault {name} exists already ({fault})", hint="choose another name")
    summary = args.summary or "the path's port goes to ANA state args.state (a starting point)"
    values = {"name": name, "cls": "".join(p.title() for p in name.split("_")), "summary": summary}
    _write(fault, render("fault.py.tmpl", **values))
    _write(test, render("test_fault.py.tmpl", **values))
    say(
        f"unit test: pytest tests/test_fault_{name}.py; in the VM testcase 003 runs it: "
        f"nvmf-harness vm-pytest --out DIR -- testcases/test_003_fault_under_io.py -k {name}"
    )
    return ExitCode.OK


def next_number(testcases: Path) -> str:
    """The next free testcase number (three digits) in ``testcases``."""
    numbers = [
        int(match.group(1))
        for path in testcases.glob("test_*.py")
        if (match := re.match(r"test_(\d{3})_", path.name))
    ]
    return f"{max(numbers, default=0) + 1:03d}"


def cmd_new_testcase(args: argparse.Namespace) -> int:
    """``new-testcase NAME``: testcases/test_NNN_NAME.py, NNN the next free number."""
    slug = _checked_name(args.name)
    testcases = args.repo / "testcases"
    number = next_number(testcases)
    summary = args.summary or f"{slug.replace('_', ' ').capitalize()} (one line: what it checks)."
    path = testcases / f"test_{number}_{slug}.py"
    _write(path, render("testcase.py.tmpl", slug=slug, number=number, summary=summary))
    say(f"run it in the VM: nvmf-harness vm-pytest --out DIR -- {path.relative_to(args.repo)}")
    return ExitCode.OK

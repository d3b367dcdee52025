"""A blktests checkout, our case installed in a copy of it, and blktests' own result files.

blktests (https://github.com/osandov/blktests) is in no package registry: the user has a
checkout. This module checks one, copies it (the copy is where ``./check`` runs and writes),
installs our regression case (contrib/blktests/tests/nvme/NNN) as the next free number of
its group, and reads the results ``./check`` writes: ``<output>/<dev>/<group>/<NNN>``, one
``key<TAB>value`` line per field of its TEST_RUN array (check:_write_test_run), where
``<dev>`` is ``nodev`` or ``nodev_<COND_DESC>`` (``nodev_tr=tcp`` for the nvme group's
transport condition, check:_check_and_call_test).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError, UsageError
from harness.core.paths import REPO_ROOT

BLKTESTS_URL = "https://github.com/osandov/blktests"
GET_HINT = f"get it with: git clone {BLKTESTS_URL}"
CONTRIB_DIR = REPO_ROOT / "contrib" / "blktests"
OURS = "ours"  # the name of our case on the command line, before it has a number
GROUP = "nvme"
# What makes a directory a blktests checkout, for the nvme group.
MARKERS: tuple[str, ...] = ("check", "common/rc", "common/nvme", "tests/nvme/rc")
CASE_RE = re.compile(r"^[a-z0-9_-]+/\d{3}$")
NUMBER_RE = re.compile(r"^\d{3}$")
# Left out of the copy: history and earlier results are not needed to run a case.
NOT_COPIED = (".git", "results")
STATUSES = ("pass", "fail", "not run")


def check_checkout(path: Path) -> Path:
    """``path`` resolved when it is a blktests checkout with the nvme group; UsageError
    (one line, how to get one) when it is missing or is not."""
    if not path.is_dir():
        raise UsageError(f"--blktests {path}: no such directory", hint=GET_HINT)
    missing = [marker for marker in MARKERS if not (path / marker).is_file()]
    if missing:
        raise UsageError(
            f"--blktests {path} is not a blktests checkout (no {', '.join(missing)})",
            hint=GET_HINT,
        )
    return path.resolve()


def our_case(contrib: Path = CONTRIB_DIR, group: str = GROUP) -> Path:
    """The script of our case in ``contrib/blktests/tests/<group>/`` (the only NNN there);
    HarnessError when there is none or more than one."""
    cases = sorted(p for p in (contrib / "tests" / group).glob("[0-9][0-9][0-9]") if p.is_file())
    if len(cases) != 1:
        raise HarnessError(
            f"expected one case in {contrib / 'tests' / group}, found {len(cases)}",
            hint="the checkout is damaged: git status",
        )
    return cases[0]


def next_free_number(checkout: Path, group: str = GROUP) -> int:
    """One above the highest NNN of ``tests/<group>/`` (blktests' ``new`` does the same);
    1 for an empty group."""
    numbers = [
        int(p.name)
        for p in (checkout / "tests" / group).iterdir()
        if NUMBER_RE.match(p.name) and p.is_file()
    ]
    return max(numbers, default=0) + 1


def copy_checkout(source: Path, dest: Path) -> Path:
    """A writable copy of the checkout at ``dest`` (which must not exist), without its
    history and old results. Returns ``dest``."""
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns(*NOT_COPIED))
    return dest


def install_case(checkout: Path, case: Path, group: str = GROUP) -> str:
    """Copy our ``case`` (and its ``.out``) into ``checkout`` as the next free number of
    ``group``; the ``Running <group>/NNN`` line of the ``.out`` is renumbered to match.
    Returns the installed name, e.g. ``nvme/064``. Raises HarnessError when the ``.out``
    is missing or does not start with the case's ``Running`` line."""
    expected = case.with_name(case.name + ".out")
    if not expected.is_file():
        raise HarnessError(f"{case} has no {expected.name}")
    number = f"{next_free_number(checkout, group):03d}"
    old_line = f"Running {group}/{case.name}"
    text = expected.read_text()
    if not text.startswith(old_line + "\n"):
        raise HarnessError(f"{expected} does not start with '{old_line}'")
    target = checkout / "tests" / group / number
    shutil.copy2(case, target)
    target.chmod(0o755)
    target.with_name(number + ".out").write_text(
        f"Running {group}/{number}\n" + text.removeprefix(old_line + "\n")
    )
    return f"{group}/{number}"


def write_config(checkout: Path, trtypes: str = "tcp") -> None:
    """blktests' ``config`` in the checkout: the nvme transports to run (NVMET_TRTYPES)."""
    (checkout / "config").write_text(f"NVMET_TRTYPES={trtypes}\n")


def resolve_cases(names: list[str], installed: str) -> list[str]:
    """The case names ``./check`` is given: ``ours`` becomes ``installed``; every other
    name must read ``group/NNN`` (UsageError otherwise)."""
    cases = []
    for name in names:
        if name == OURS:
            cases.append(installed)
        elif CASE_RE.match(name):
            cases.append(name)
        else:
            raise UsageError(f"case {name!r}: give '{OURS}' or a blktests case such as nvme/040")
    return cases


@dataclass(frozen=True)
class BlktestsResult:
    """One result file of ``./check``: ``status`` is pass, fail or ``not run``; ``reason``
    why it failed (output, exit, dmesg) or why it was not run (blktests' skip reasons);
    ``runtime_s`` the test function's wall time in seconds (None when not run); ``condition``
    the COND_DESC part of the results directory (``tr=tcp``), "" when none."""

    case: str
    condition: str
    status: str
    reason: str
    runtime_s: float | None
    exit_status: int | None
    description: str


def parse_result_file(text: str, case: str, condition: str = "") -> BlktestsResult:
    """A result file's ``key<TAB>value`` lines as a BlktestsResult. HarnessError when it
    has no status."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("\t")
        if sep:
            fields[key.strip()] = value.strip()
    status = fields.get("status", "")
    if status not in STATUSES:
        raise HarnessError(f"blktests result of {case} has no status ({status or 'none'})")
    runtime = fields.get("runtime", "").removesuffix("s")
    exit_status = fields.get("exit_status", "")
    return BlktestsResult(
        case=case,
        condition=condition,
        status=status,
        reason=fields.get("reason", ""),
        runtime_s=float(runtime) if _is_number(runtime) else None,
        exit_status=int(exit_status) if exit_status.lstrip("-").isdigit() else None,
        description=fields.get("description", ""),
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def find_results(output: Path, case: str) -> list[BlktestsResult]:
    """Every result of ``case`` (``group/NNN``) under ``./check``'s output directory, one
    per condition (``nodev``, ``nodev_tr=tcp``, ...), sorted by condition."""
    found = []
    for path in sorted(output.glob(f"nodev*/{case}")):
        if not path.is_file():
            continue
        condition = path.parent.parent.name.removeprefix("nodev").removeprefix("_")
        found.append(parse_result_file(path.read_text(errors="replace"), case, condition))
    return found


def skip_reasons(check_output: str) -> str:
    """The reasons ``./check`` printed for a case it did not run (its ``    reason`` lines
    after ``[not run]``, joined with "; "), "" when there are none."""
    reasons: list[str] = []
    taking = False
    for line in check_output.splitlines():
        if "[not run]" in line:
            taking = True
            continue
        if taking and line.startswith("    "):
            reasons.append(line.strip())
        else:
            taking = False
    return "; ".join(reasons)

"""The commands about kernels and faults, from the host: ``history`` (which Debian kernels
were ever affected) and ``faults`` (every fault, and whether a kernel has what it needs).

Each front end imports its modules when it runs, not at the top: every command (``--help``
too) loads every cli module.
"""

from __future__ import annotations

import argparse

from harness.core.errors import HarnessError
from harness.core.exits import ExitCode


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``history`` and ``faults``."""
    hist = sub.add_parser(
        "history", help="which Debian kernel versions were ever affected (their changelogs)"
    )
    hist.add_argument(
        "--release", action="append", help="installed kernel release (default: every one)"
    )
    hist.set_defaults(func=cmd_history)
    flt = sub.add_parser("faults", help="every fault, what it needs, whether this kernel has it")
    flt.add_argument(
        "--release", help="kernel release whose modules to check (default: the prepared one)"
    )
    flt.add_argument("--running", action="store_true", help="check the running kernel instead")
    flt.add_argument("--json", action="store_true", help="as JSON")
    flt.set_defaults(func=cmd_faults)


def cmd_history(args: argparse.Namespace) -> int:
    """Per Debian kernel line (6.1, 6.12, ...) among the installed images, from the newest
    one's changelog: where the fix and the zero-size bio_check_eod commit first appear, and
    so which Debian versions were ever affected as shipped (harness/kernels/changelog.py)."""
    from harness.kernels import changelog, releases  # lazy: import cost (module docstring)

    names = args.release or releases.installed_releases()
    if not names:
        raise HarnessError("no kernel image installed", hint="sudo scripts/setup")
    newest: dict[tuple[int, ...], str] = {}
    for name in names:
        line = tuple(releases.version_key(name)[:2])
        if line not in newest or releases.version_key(name) > releases.version_key(newest[line]):
            newest[line] = name
    for line in sorted(newest):
        history = changelog.release_history(newest[line])
        print(f"{'.'.join(map(str, line))}: {history.summary()}", flush=True)
    return ExitCode.OK


def cmd_faults(args: argparse.Namespace) -> int:
    """Every fault with what it needs, checked against the kernel under test's modules
    (``--release``, else the prepared one; ``--running``: the running kernel)."""
    from harness.kernels import prepared  # lazy: import cost (module docstring)
    from harness.report import fault_table

    release = args.release or prepared.prepared_release()
    checker = fault_table.modinfo_checker(release) if release or args.running else None
    infos = fault_table.fault_infos(checker)
    if args.json:
        print(fault_table.to_json(infos))
        return ExitCode.OK
    which = release or ("the running kernel" if args.running else "no kernel (not checked)")
    print(f"faults (modules checked in {which}):")
    print(fault_table.render(infos))
    return ExitCode.OK

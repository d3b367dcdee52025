"""How a command ends when it fails: one line on stderr and an exit status, no traceback.

A UsageError (a broken config, a wrong option value, a missing tool: nothing ran) exits 2,
any other HarnessError 3 (the infrastructure), Ctrl-C and SIGTERM 130
(harness/core/exits.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

from harness.core.console import PROG
from harness.core.errors import ConfigError, HarnessError, UsageError
from harness.core.exits import ExitCode

Command = Callable[[argparse.Namespace], int]
"""A command's front end: its parsed arguments in, its exit status out."""


def run_command(command: Command, args: argparse.Namespace) -> int:
    """``command(args)``'s exit status, or the status of the error it raised, said in one
    line on stderr (``nvmf-harness: error: ...``)."""
    started = time.monotonic()
    try:
        return command(args)
    except ConfigError as exc:
        print(f"{PROG}: config error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except HarnessError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return ExitCode.INFRA
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return ExitCode.INTERRUPTED


def usage_error(message: str) -> int:
    """Say ``message`` as a usage error on stderr; returns ExitCode.USAGE."""
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return ExitCode.USAGE

"""How every ``nvmf-harness`` command speaks: the program's name and its own message lines,
``nvmf-harness: ...``, on both sides of a VM boot (the host shows the guest's progress by
that prefix: harness/vm/progress.py).
"""

from __future__ import annotations

from collections.abc import Callable

PROG = "nvmf-harness"
SAY_PREFIX = f"{PROG}:"

Say = Callable[[str], None]
"""What a function that reports as it goes is given: one message, printed as one line."""


def say(message: str) -> None:
    """Print ``message`` on stdout as the harness's own line, ``nvmf-harness: <message>``."""
    print(f"{SAY_PREFIX} {message}", flush=True)

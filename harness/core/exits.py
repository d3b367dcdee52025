"""Exit statuses: one set for every ``nvmf-harness`` command and every script in scripts/.

The README's command table documents them; CI jobs and the nightly read them.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status means (the same for every command).

    - ``OK`` (0): it ran and the answer is the good one: every iteration passed, REPRODUCED
      AND FIXED, FIXED (prove-fixed), no regression (nightly).
    - ``FAILED`` (1): it ran and the answer is a failure or undecided: a failing verdict, a
      regression, any comparison verdict but REPRODUCED AND FIXED.
    - ``USAGE`` (2): bad input (a broken config, a wrong option), or a missing tool, package
      or kernel: nothing ran; the one-line error says what to do.
    - ``INFRA`` (3): the harness, the VM or the kernel under test could not complete the run
      (a VM that did not boot, a guest that died, an error while running).
    - ``INTERRUPTED`` (130): Ctrl-C or SIGTERM; faults restored, partial results kept.
    """

    OK = 0
    FAILED = 1
    USAGE = 2
    INFRA = 3
    INTERRUPTED = 130

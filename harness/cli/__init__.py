"""The command line, ``nvmf-harness``: argument parsing and the commands' front ends. May
import every layer; nothing imports it.

app.py is the entry (``main``: the parser, errors as exit statuses, SIGTERM); each command
group registers its own subcommands: guest.py (run, floor, run-plan: what the VM guest
runs), campaigns.py (vm, compare, scenarios, matrix, prove-fixed, vm-pytest), kernels.py
(history, faults), results.py (report, baseline), ops.py (clean, doctor, remote, the
self-tests); options.py holds the options they share, errors.py how a command ends on an
error. A front end turns its arguments into typed options and calls one function of the
layer below (the experiments: harness/analysis/experiments.py; VM runs: harness/vm/).

Every command, ``--help`` too, loads every module here: a front end imports the layers it
drives when it runs, where they cost start-up time (scipy, matplotlib, paramiko...).
"""

from harness.cli.app import main

__all__ = ["main"]

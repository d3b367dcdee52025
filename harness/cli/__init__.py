"""The command line, ``nvmf-harness``: argument parsing and the commands' front ends."""

from harness.cli.app import main

__all__ = ["main"]

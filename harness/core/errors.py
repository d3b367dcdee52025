"""Errors the harness reports to a person as one line, with what to do about them."""

from __future__ import annotations


class HarnessError(Exception):
    """An error with a one-line explanation and, where known, the fix.

    The CLI prints ``str(error)`` and exits non-zero; it never shows a traceback for these.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(HarnessError):
    """Bad input or a missing prerequisite, found before anything ran: the command exits
    ExitCode.USAGE (2) instead of INFRA (3)."""


class ConfigError(UsageError):
    """A campaign or target configuration is invalid; the message names the field."""


class KernelFsError(HarnessError):
    """A configfs/sysfs operation failed."""


class KernelFsTimeout(KernelFsError):
    """A configfs/sysfs operation did not finish in time: the kernel under test may be hung."""


class ToolError(HarnessError):
    """An external tool (nvme, fio, bpftrace, vng) is missing or failed."""


class MissingToolError(ToolError, UsageError):
    """An external tool is not installed (the hint names the package): a usage error."""


class SafetyError(HarnessError):
    """The harness refused to touch something it did not create."""

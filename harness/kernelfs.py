"""configfs and sysfs access that cannot hang the harness.

A kernel under test can block a write to configfs or sysfs forever (a stuck controller
teardown, a namespace whose backing device stopped answering). Every operation that
changes kernel state therefore runs in a child process with a timeout: if the child
hangs in the kernel, the harness gets a KernelFsTimeout and carries on.

``root`` lets unit tests point the same code at a fake tree in a temporary directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import KernelFsError, KernelFsTimeout, ToolError
from harness.procs import run

DEFAULT_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class KernelFs:
    """A view of the kernel's pseudo file systems below ``root``."""

    root: Path = field(default_factory=lambda: Path("/"))
    timeout_s: float = DEFAULT_TIMEOUT_S

    def path(self, rel: str | Path) -> Path:
        """Absolute path of ``rel`` (given as if from ``/``) under this view's root."""
        return self.root / str(rel).lstrip("/")

    def exists(self, rel: str | Path) -> bool:
        return os.path.lexists(self.path(rel))

    def read(self, rel: str | Path, default: str | None = None) -> str:
        """Read an attribute, stripped. Reads do not block on the paths we use."""
        try:
            return self.path(rel).read_text(errors="replace").strip()
        except OSError as exc:
            if default is not None:
                return default
            raise KernelFsError(f"cannot read {self.path(rel)}: {exc.strerror}") from exc

    def listdir(self, rel: str | Path) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except FileNotFoundError:
            return []

    def write(self, rel: str | Path, value: str, timeout_s: float | None = None) -> None:
        """Write ``value`` to an attribute from a child process, with a timeout."""
        self._child(["tee", str(self.path(rel))], f"write '{value}' to", rel, value, timeout_s)

    def mkdir(self, rel: str | Path, timeout_s: float | None = None) -> None:
        self._child(["mkdir", str(self.path(rel))], "mkdir", rel, None, timeout_s)

    def rmdir(self, rel: str | Path, timeout_s: float | None = None) -> None:
        self._child(["rmdir", str(self.path(rel))], "rmdir", rel, None, timeout_s)

    def symlink(
        self,
        target_rel: str | Path,
        link_rel: str | Path,
        timeout_s: float | None = None,
        netns: str | None = None,
    ) -> None:
        """Create ``link_rel`` pointing at ``target_rel``.

        With ``netns``, the link is made by a process inside that network namespace: nvmet
        opens a port's listening socket in the namespace of the process that enables it.
        """
        argv = ["ln", "-s", "-T", str(self.path(target_rel)), str(self.path(link_rel))]
        if netns is not None:
            argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
        self._child(argv, "symlink", link_rel, None, timeout_s)

    def unlink(self, rel: str | Path, timeout_s: float | None = None) -> None:
        self._child(["rm", "-f", str(self.path(rel))], "unlink", rel, None, timeout_s)

    def _child(
        self,
        argv: list[str],
        what: str,
        rel: str | Path,
        stdin: str | None,
        timeout_s: float | None,
    ) -> None:
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            result = run(argv, timeout_s=limit, input_text=None if stdin is None else stdin + "\n")
        except ToolError as exc:
            if "did not finish" in exc.message:
                raise KernelFsTimeout(
                    f"{what} {self.path(rel)} hung for {limit:g} s",
                    hint="the kernel under test may be stuck; see dmesg",
                ) from exc
            raise
        if not result.ok:
            detail = result.stderr.strip().splitlines()
            reason = detail[-1] if detail else f"exit status {result.returncode}"
            raise KernelFsError(f"{what} {self.path(rel)} failed: {reason}")

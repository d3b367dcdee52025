"""configfs and sysfs access that cannot hang the harness.

A kernel under test can block a write to configfs or sysfs forever (a stuck controller
teardown, a namespace whose backing device stopped answering). Every operation that
changes kernel state therefore runs in a child process with a timeout: if the child
hangs in the kernel, the harness gets a KernelFsTimeout and carries on.

The child is one long-lived process per KernelFs (harness/kfs_child.py, answering JSON
lines), not one ``tee`` per write: under qemu TCG a spawn costs ~0.1 s, which made a test
bed's ~40 configfs operations take seconds. A child that times out is killed and
abandoned (one stuck in D state cannot be reaped); the next operation starts a new one.

``root`` lets unit tests point the same code at a fake tree in a temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import KernelFsError, KernelFsTimeout, ToolError
from harness.core.procs import KILL_WAIT_S, run

DEFAULT_TIMEOUT_S = 15.0
READ_CHUNK_BYTES = 65536  # more than any sysfs or configfs attribute (one page)
CHILD_PROGRAM = Path(__file__).with_name("kfs_child.py")
FABRICS_DEVICE = "/dev/nvme-fabrics"


class ChildTimeout(Exception):
    """The child did not answer in time (it was killed)."""


class KernelFsChild:
    """The long-lived child process that performs KernelFs's changes (one at a time)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._buffer = b""

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Send one request and wait up to ``timeout_s`` for the answer."""
        payload = (json.dumps(request) + "\n").encode()
        with self._lock:
            try:
                proc = self._send(payload)
            except OSError:  # it died since the last request: one more try with a new one
                self._abandon()
                proc = self._send(payload)
            try:
                line = self._read_line(proc, timeout_s)
            except BaseException:
                # Ctrl-C or a timeout mid-request: the child may still answer it later, and
                # that answer must never be taken for the next request's. A new child then.
                self._abandon()
                raise
        try:
            answer = json.loads(line)
        except json.JSONDecodeError as exc:
            raise KernelFsError(f"kernelfs child answered {line[:80]!r}") from exc
        if not isinstance(answer, dict):
            raise KernelFsError(f"kernelfs child answered {line[:80]!r}")
        return answer

    def close(self) -> None:
        with self._lock:
            self._abandon()

    def _send(self, payload: bytes) -> subprocess.Popen[bytes]:
        proc = self._ensure()
        assert proc.stdin is not None
        proc.stdin.write(payload)
        proc.stdin.flush()
        return proc

    def __del__(self) -> None:
        # Unreferenced: end of input ends the child (it is idle: no request in flight).
        proc = self._proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.close()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            self._abandon()
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(CHILD_PROGRAM)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
                close_fds=True,
            )
            self._buffer = b""
        return self._proc

    def _read_line(self, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self._abandon()
                raise ChildTimeout
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self._abandon()
                raise KernelFsError("the kernelfs child exited unexpectedly")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode(errors="replace")

    def _abandon(self) -> None:
        """Kill the child and forget it; a child stuck in the kernel is not waited for."""
        proc, self._proc = self._proc, None
        self._buffer = b""
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=KILL_WAIT_S)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@dataclass(frozen=True)
class KernelFs:
    """A view of the kernel's pseudo file systems below ``root``."""

    root: Path = field(default_factory=lambda: Path("/"))
    timeout_s: float = DEFAULT_TIMEOUT_S
    child: KernelFsChild = field(default_factory=KernelFsChild, compare=False, repr=False)

    def path(self, rel: str | Path) -> Path:
        """Absolute path of ``rel`` (given as if from ``/``) under this view's root."""
        return self.root / str(rel).lstrip("/")

    def exists(self, rel: str | Path) -> bool:
        return os.path.lexists(self.path(rel))

    def read(self, rel: str | Path, default: str | None = None) -> str:
        """Read an attribute, stripped. Reads do not block on the paths we use.

        With os.open/os.read rather than a text file object: an attribute comes in one
        read(2) (sysfs hands out at most a page; one more read sees the end), and each system
        call lets another thread take the GIL; under TCG with the passthrough reader threads
        running, the text file's extra calls (fstat, isatty's ioctl, lseek) made each read
        cost several milliseconds."""
        path = self.path(rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                chunks = []
                while chunk := os.read(fd, READ_CHUNK_BYTES):
                    chunks.append(chunk)
            finally:
                os.close(fd)
        except OSError as exc:
            if default is not None:
                return default
            raise KernelFsError(f"cannot read {path}: {exc.strerror}") from exc
        return b"".join(chunks).decode(errors="replace").strip()

    def listdir(self, rel: str | Path) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except FileNotFoundError:
            return []

    def write(self, rel: str | Path, value: str, timeout_s: float | None = None) -> None:
        """Write ``value`` to an attribute from the child process, with a timeout."""
        request = {"op": "write", "path": str(self.path(rel)), "value": value}
        self._call(request, f"write '{value}' to", rel, timeout_s)

    def mkdir(self, rel: str | Path, timeout_s: float | None = None) -> None:
        self._call({"op": "mkdir", "path": str(self.path(rel))}, "mkdir", rel, timeout_s)

    def rmdir(self, rel: str | Path, timeout_s: float | None = None) -> None:
        self._call({"op": "rmdir", "path": str(self.path(rel))}, "rmdir", rel, timeout_s)

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
        if netns is None:
            request = {
                "op": "symlink",
                "target": str(self.path(target_rel)),
                "path": str(self.path(link_rel)),
            }
            self._call(request, "symlink", link_rel, timeout_s)
            return
        argv = ["ln", "-s", "-T", str(self.path(target_rel)), str(self.path(link_rel))]
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
        self._spawn(argv, "symlink", link_rel, timeout_s)

    def unlink(self, rel: str | Path, timeout_s: float | None = None) -> None:
        self._call({"op": "unlink", "path": str(self.path(rel))}, "unlink", rel, timeout_s)

    def fabrics_connect(self, options: str, timeout_s: float | None = None) -> str:
        """Write a connect string to /dev/nvme-fabrics; returns the kernel's reply
        (``instance=N,cntlid=M``), as nvme-cli does without the process per connect."""
        request = {"op": "fabrics", "path": str(self.path(FABRICS_DEVICE)), "value": options}
        answer = self._call(request, "connect through", FABRICS_DEVICE, timeout_s)
        return str(answer.get("reply", ""))

    def close(self) -> None:
        """Stop the child process (a new one starts on the next change)."""
        self.child.close()

    def _call(
        self, request: dict[str, Any], what: str, rel: str | Path, timeout_s: float | None
    ) -> dict[str, Any]:
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            answer = self.child.call(request, limit)
        except ChildTimeout:
            raise KernelFsTimeout(
                f"{what} {self.path(rel)} hung for {limit:g} s",
                hint="the kernel under test may be stuck; see dmesg",
            ) from None
        if not answer.get("ok"):
            raise KernelFsError(f"{what} {self.path(rel)} failed: {answer.get('error', '?')}")
        return answer

    def _spawn(
        self,
        argv: list[str],
        what: str,
        rel: str | Path,
        timeout_s: float | None,
    ) -> None:
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            result = run(argv, timeout_s=limit)
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

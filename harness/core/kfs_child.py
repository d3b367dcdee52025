"""The child process that performs KernelFs's changes to configfs and sysfs.

Run as ``python -I -S kfs_child.py``: standard library only, no harness imports, so it
starts in a fraction of the time a ``tee`` or ``mkdir`` per operation costs under qemu TCG.
It reads one JSON request per line on stdin and answers one JSON line on stdout:

    {"op": "write", "path": "/sys/...", "value": "1"}     ->  {"ok": true}
    {"op": "mkdir" | "rmdir" | "unlink", "path": ...}      ->  {"ok": true}
    {"op": "symlink", "target": ..., "path": ...}          ->  {"ok": true}
    {"op": "fabrics", "path": "/dev/nvme-fabrics", "value": "transport=tcp,..."}
        ->  {"ok": true, "reply": "instance=3,cntlid=1"}
    anything that fails  ->  {"ok": false, "error": "Invalid argument"}

The parent keeps the timeout: if the kernel blocks one of these calls, the parent stops
waiting, kills this process and starts a new one for the next request. The process exits
when its stdin closes, so it never outlives the harness (unless it is stuck in the kernel,
where nothing could end it).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import IO, Any

REPLY_MAX = 4096


def perform(request: dict[str, Any]) -> dict[str, Any]:
    """Carry out one request; errors come back as the OS's one-line message."""
    op = request.get("op")
    path = str(request.get("path", ""))
    try:
        if op == "write":
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                # One write(2) call: sysfs and configfs take an attribute in one piece.
                os.write(fd, (str(request["value"]) + "\n").encode())
            finally:
                os.close(fd)
        elif op == "mkdir":
            os.mkdir(path)
        elif op == "rmdir":
            os.rmdir(path)
        elif op == "symlink":
            os.symlink(str(request["target"]), path)
        elif op == "unlink":
            with contextlib.suppress(FileNotFoundError):  # already gone, as rm -f
                os.unlink(path)
        elif op == "fabrics":
            # /dev/nvme-fabrics: write the options, read the new controller back on the same fd.
            fd = os.open(path, os.O_RDWR)
            try:
                os.write(fd, str(request["value"]).encode())
                reply = os.read(fd, REPLY_MAX).decode(errors="replace").strip()
            finally:
                os.close(fd)
            return {"ok": True, "reply": reply}
        elif op == "ping":
            pass
        else:
            return {"ok": False, "error": f"unknown operation {op!r}"}
    except OSError as exc:
        return {"ok": False, "error": exc.strerror or str(exc)}
    except (KeyError, TypeError, ValueError) as exc:
        return {"ok": False, "error": f"bad request: {exc}"}
    return {"ok": True}


def serve(requests: IO[str], replies: IO[str]) -> None:
    """Answer requests until the input closes."""
    for line in requests:
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            answer = {"ok": False, "error": f"bad request: {exc}"}
        else:
            answer = (
                perform(request)
                if isinstance(request, dict)
                else {"ok": False, "error": "bad request: not an object"}
            )
        replies.write(json.dumps(answer) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(sys.stdin, sys.stdout)

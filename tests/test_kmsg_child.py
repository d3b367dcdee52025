"""harness.campaign.kmsg_child: the kernel log's own process, fed records through a
SOCK_SEQPACKET socket (one record per read, like /dev/kmsg), and its windows."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from harness.campaign import kmsg_child
from harness.campaign.kmsg import KernelLogSummary
from harness.campaign.kmsg_child import READY, KmsgChild
from harness.core.errors import HarnessError

FAILED_CMD = (
    "6,{seq},{ts},-;nvmet_tcp: failed cmd 0000000047ce6750 id {seq} opcode 2, data_len: 4096"
)
EOD = (
    "4,{seq},{ts},-;fio: attempt to access beyond end of device\\x0a"
    "nvme0c1n1: rw=34817, sector=8, nr_sectors = 8 limit=0"
)


def feeder() -> tuple[socket.socket, int]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.setblocking(False)
    return ours, theirs.detach()


def send(sock: socket.socket, template: str, seq: int) -> None:
    sock.send(template.format(seq=seq, ts=1_000_000 + seq).encode())


def test_windows_count_classes_write_lines_and_lost_records(tmp_path: Path) -> None:
    sock, fd = feeder()
    child = KmsgChild(fd)
    for seq in range(1, 4):
        send(sock, FAILED_CMD, seq)
    assert child.take(None) == {"records": 3, "caught_up": True}  # skip: setup noise
    send(sock, EOD, 4)
    for seq in (5, 6, 9):  # 7 and 8 were overwritten before they were read
        send(sock, FAILED_CMD, seq)
    reply = child.take(str(tmp_path / "kmsg.txt"))
    summary = KernelLogSummary(**reply["summary"])
    assert reply["records"] == 4 and summary.lost == 2
    assert summary.eod_race_lines == 1 and summary.eod_race_disks == ["nvme0c1n1"]
    assert summary.classes == {"eod_race": 1, "nvmet_failed_cmd": 3}
    lines = (tmp_path / "kmsg.txt").read_text().splitlines()
    assert len(lines) == 5 and "attempt to access beyond end of device" in lines[0]  # 2 lines
    empty = child.take(str(tmp_path / "empty.txt"))
    assert empty["records"] == 0 and empty["summary"]["lost"] == 0


def test_serve_answers_requests_until_stdin_closes(tmp_path: Path) -> None:
    sock, fd = feeder()
    child = KmsgChild(fd)
    send(sock, EOD, 1)
    read_end, write_end = os.pipe()
    requests = os.fdopen(read_end, "r")
    replies = io.StringIO()
    server = threading.Thread(target=child.serve, args=(requests, replies), daemon=True)
    with os.fdopen(write_end, "w") as pipe:
        server.start()
        pipe.write(json.dumps({"cmd": "take", "path": str(tmp_path / "k.txt")}) + "\n")
        pipe.flush()
        server.join(timeout=0.5)  # still serving
        assert server.is_alive()
    server.join(timeout=10)
    assert not server.is_alive(), "the child must end when its stdin closes"
    ready, answer = replies.getvalue().splitlines()
    assert ready == READY and json.loads(answer)["summary"]["eod_race_lines"] == 1


def test_a_windows_cpu_seconds_are_its_own_not_the_processs_so_far(tmp_path: Path) -> None:
    sock, fd = feeder()
    child = KmsgChild(fd)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    for seq in range(1, 2001):
        send(sock, FAILED_CMD, seq)
    busy = child.take(str(tmp_path / "busy.txt"))
    idle = child.take(str(tmp_path / "idle.txt"))
    assert busy["records"] == 2000 and idle["records"] == 0
    assert busy["cpu_s"] > 0 and 0 <= idle["cpu_s"] < busy["cpu_s"]


class EndlessFlood(KmsgChild):
    """A kernel that never stops printing: every read returns another record."""

    def __init__(self) -> None:
        super().__init__(-1)
        self.seq = 0

    def _read(self) -> bytes:
        self.seq += 1
        return FAILED_CMD.format(seq=self.seq, ts=1_000_000 + self.seq).encode()


def test_a_flood_faster_than_the_reader_does_not_starve_the_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A take answers within its budget although records keep coming, with nothing lost:
    the records not yet read go to the next window (the campaign's reader gave up after
    60 s in such a flood on an overloaded host)."""
    monkeypatch.setattr(kmsg_child, "TAKE_BUDGET_S", 0.2)
    child = EndlessFlood()
    assert child.drain(0.05) is False  # a slice of the serve loop ends too
    started = time.monotonic()
    first = child.take(str(tmp_path / "a.txt"))
    assert time.monotonic() - started < 5 and first["caught_up"] is False
    second = child.take(str(tmp_path / "b.txt"))
    assert first["records"] > 0 and second["records"] > 0
    assert first["summary"]["lost"] == second["summary"]["lost"] == 0
    assert first["records"] + second["records"] == child.seq - len(child.window.lines)


@pytest.mark.skipif(
    os.geteuid() != 0 or not os.access("/dev/kmsg", os.R_OK), reason="needs root and /dev/kmsg"
)
def test_the_child_reads_the_real_kernel_log_ahead_of_the_workload(tmp_path: Path) -> None:
    from harness.campaign.kmsg import CHILD_NICE, KmsgWindows

    with KmsgWindows() as windows:
        pid = windows._proc.pid
        assert os.getpriority(os.PRIO_PROCESS, pid) == CHILD_NICE
        assert windows.skip() >= 0
        windows.send_take(tmp_path / "kmsg.txt")  # answered later: one request at a time
        with pytest.raises(HarnessError, match="has not answered its last request"):
            windows.skip()
        window = windows.take_reply()
        assert window.records >= 0 and window.cpu_s >= 0
        assert (tmp_path / "kmsg.txt").exists()
    assert (
        not Path(f"/proc/{pid}").exists()
        or Path(f"/proc/{pid}/status").read_text().find("State:\tZ") >= 0
    )

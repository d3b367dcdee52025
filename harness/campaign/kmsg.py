"""The kernel log, read from /dev/kmsg from a start mark, and classified.

/dev/kmsg gives one record per printk: ``prio,seq,ts_us,flags;message`` with non-printable
bytes escaped as ``\\xNN`` (a printk with an embedded newline stays one record, its newline
written as ``\\x0a``). The EOD-race signature is such a record, from ``bio_check_eod()``::

    fio: attempt to access beyond end of device\\x0anvme0c1n1: rw=34817, sector=8, \
nr_sectors = 8 limit=0

on a per-path disk (nvmeXcYnZ) whose capacity was just set to 0 by nvme_ns_remove().
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import selectors
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.core.errors import HarnessError

KMSG = "/dev/kmsg"


class LineKind(StrEnum):
    EOD_RACE = "eod_race"  # beyond-end-of-device, limit=0, on a per-path disk
    EOD_OTHER = "eod_other"  # beyond-end-of-device anywhere else
    IO_ERROR = "io_error"  # block layer / nvme I/O errors
    PATH_EVENT = "path_event"  # failover, reconnect, reset, removal, ANA change
    HUNG_TASK = "hung_task"  # INFO: task ... blocked for more than N seconds
    KERNEL_BUG = "kernel_bug"  # WARN, BUG, oops, panic, lockdep, KASAN
    OTHER = "other"


@dataclass(frozen=True)
class KmsgRecord:
    seq: int
    ts_us: int  # CLOCK_MONOTONIC in microseconds (same clock as time.monotonic())
    level: int
    text: str  # unescaped; may hold newlines

    @property
    def ts_s(self) -> float:
        return self.ts_us / 1_000_000


EOD_RE = re.compile(r"attempt to access beyond end of device")
EOD_DETAIL_RE = re.compile(
    r"(?P<disk>\S+): rw=\d+, sector=\d+, nr_sectors = \d+ limit=(?P<limit>\d+)"
)
PER_PATH_DISK_RE = re.compile(r"^nvme\d+c\d+n\d+$")
HUNG_RE = re.compile(r"INFO: task .* blocked for more than \d+ seconds")
# "RIP: 0010:" is a kernel-mode register dump (an oops or a WARN); "RIP: 0033:" is the
# user-space frame at the end of any task's stack dump (a hung-task report): not a bug.
BUG_RE = re.compile(
    r"(WARNING: CPU: \d+|BUG: |kernel BUG at|Oops|general protection fault|Kernel panic"
    r"|possible circular locking|KASAN:|UBSAN:|RIP: 0010:)"
)
IO_ERROR_RE = re.compile(
    r"(I/O error, dev \S+|Buffer I/O error|critical (medium|target) error"
    r"|I/O Cmd\(|blk_update_request: I/O error|end_request: I/O error)"
)
# Any other message of an nvme controller: connect, failover, reconnect, reset, ANA, rescan.
PATH_EVENT_RE = re.compile(r"^nvme nvme\d+: ")


def parse_record(raw: str) -> KmsgRecord | None:
    """Parse one /dev/kmsg record (without its continuation lines)."""
    header, sep, message = raw.partition(";")
    if not sep:
        return None
    parts = header.split(",")
    if len(parts) < 3:
        return None
    try:
        prio, seq, ts_us = int(parts[0]), int(parts[1]), int(parts[2])
    except ValueError:
        return None
    first_line = message.split("\n", 1)[0]
    return KmsgRecord(seq=seq, ts_us=ts_us, level=prio & 7, text=unescape(first_line))


def unescape(text: str) -> str:
    """Undo /dev/kmsg's \\xNN escaping."""
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), text)


def classify(record: KmsgRecord) -> tuple[LineKind, str]:
    """The kind of a record and, for EOD lines, the disk it names ("" otherwise)."""
    text = record.text
    if EOD_RE.search(text):
        detail = EOD_DETAIL_RE.search(text)
        disk = detail.group("disk") if detail else ""
        limit = detail.group("limit") if detail else ""
        if limit == "0" and PER_PATH_DISK_RE.match(disk):
            return LineKind.EOD_RACE, disk
        return LineKind.EOD_OTHER, disk
    if BUG_RE.search(text):
        return LineKind.KERNEL_BUG, ""
    if HUNG_RE.search(text):
        return LineKind.HUNG_TASK, ""
    if IO_ERROR_RE.search(text):
        return LineKind.IO_ERROR, ""
    if PATH_EVENT_RE.search(text):
        return LineKind.PATH_EVENT, ""
    return LineKind.OTHER, ""


# --- fine classes -------------------------------------------------------------------------------
# Finer than LineKind (which the verdicts use, unchanged): one name per kind of event, so an
# iteration's log reads as counts and "other" is rare. The patterns are the 6.1.192 format
# strings (drivers/nvme/host/{multipath,core,tcp,rdma,fabrics}.c, drivers/nvme/target/*.c,
# block/{blk-core,genhd}.c); the first rule that matches a record's text wins.

KernelClass = str  # one of KERNEL_CLASSES

_CLASS_RULES: tuple[tuple[KernelClass, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        # multipath.c:nvme_ns_head_submit_bio: no path now, the bio waits on the requeue list
        ("no_usable_path", r"no usable path - requeuing I/O"),
        # ... and no path will come back (every controller deleting/dead): the bio fails
        ("no_available_path", r"no available path - failing I/O"),
        # core.c:nvme_validate_ns: uuid/nguid/eui64/csi changed, the host removes the ns
        ("ns_ids_changed", r"identifiers changed for nsid \d+"),
        (
            "ns_ids_conflict",
            r"IDs don't match for shared namespace|duplicate IDs|"
            r"Duplicate unshared namespace|ignoring nsid \d+ because of duplicate IDs|"
            r"clearing duplicate IDs|Ignoring bogus Namespace Identifiers",
        ),
        # core.c:nvme_scan_work / AEN: a namespace scan of one controller
        (
            "ns_scan",
            r"rescanning namespaces\.|Identify NS List failed|"
            r"reading changed ns log failed|Identify Descriptors failed|"
            r"Identify namespace failed|Command set not reported for nsid",
        ),
        # genhd.c:set_capacity_and_notify (a resize; "to 0" a namespace going away)
        ("ns_capacity", r"detected capacity change from \d+ to \d+"),
        # target configfs.c:nvmet_ns_enable... "adding nsid N to subsystem S"
        ("ns_added", r"^nvmet: adding nsid \d+ to subsystem"),
        (
            "ana",
            r"Failed to get ANA log|ANA log page size|Invalid MNAN value|"
            r"disabling ANA support",
        ),
        # core.c/tcp.c/rdma.c: a controller goes away (state deleting)
        ("ctrl_delete", r"Removing ctrl: NQN|Removing controller\.\.\."),
        # error recovery and resets (state resetting)
        (
            "ctrl_reset",
            r"starting error recovery|resetting controller|"
            r"reset controller|ANATT timeout",
        ),
        # reconnect loop (state connecting)
        ("ctrl_reconnect", r"Reconnecting in \d+ seconds|Failed reconnect attempt \d+"),
        ("ctrl_reconnected", r"Successfully reconnected \(\d+ attempts?\)"),
        ("ctrl_failfast", r"failfast expired"),
        # a (re)connect that failed on the wire or at the target
        (
            "ctrl_connect_error",
            r"failed to connect socket|failed to connect queue|"
            r"failed to create socket|Connect command failed|Connect rejected|"
            r"rdma connection establishment failed|rdma_resolve_(addr|route) failed|"
            r"rdma_connect_locked failed|failed to create CM ID|Property (Set|Get) error|"
            r"Could not set queue count|unable to set any I/O queues|"
            r"Connect for subsystem \S+ is not allowed|could not find controller \d+",
        ),
        # a new association (state new -> live)
        (
            "ctrl_connect",
            r"new ctrl: NQN|creating \d+ I/O queues|mapped \d+/\d+/\d+ "
            r"default/read/poll queues|I/O fail on reconnect controller after|"
            r"ctrl_loss_tmo < 0 will reconnect forever|failfast tmo \(\d+\) larger|"
            r"queue_size \d+ > ctrl sqsize|sqsize \d+ > ctrl maxcmd|Shutdown timeout set to",
        ),
        (
            "keep_alive",
            r"long keepalive RTT|failed nvme_keep_alive_end_io|keep-alive failed|"
            r"keep-alive timer \(\d+ seconds\) expired|keep alive interval updated",
        ),
        # tcp.c:nvme_tcp_timeout, rdma.c:nvme_rdma_timeout
        ("io_timeout", r"queue \d+: timeout request 0x[0-9a-f]+ type \d+|I/O \d+ QID \d+ timeout"),
        # tcp.c:nvme_tcp_stop_queue / nvme_tcp_state_change: the socket of a queue
        (
            "tcp_socket",
            r"timeout draining sock wmem allocation expired|"
            r"queue \d+ socket state \d+",
        ),
        (
            "transport_error",
            r"receive failed: |failed to send request|digest (error|mismatch)|"
            r"bad (pdu length|pfv|type) returned|got bad (cqe\.|c2hdata\.|r2t\.)?command_id|"
            r"unexpected (r2t|data)|for CQE 0x[0-9a-f]+ failed with status|"
            r"Received C2HTermReq|Unexpected RDMA CM event|post_recv cmd failed",
        ),
        # core.c:nvme_log_error: the NVMe status of a failed command (path or DNR errors)
        (
            "nvme_cmd_error",
            r"^\S+: .+\(0x[0-9a-f]+\)(, | @ LBA \d+, \d+ blocks, )"
            r".*\(sct 0x[0-9a-f]+ / sc 0x[0-9a-f]+\)",
        ),
        # blk-core.c:blk_print_req_error ("<status> error, dev ..."), buffer-head errors
        (
            "block_error",
            r"error, dev \S+, sector \d+|Buffer I/O error on dev|"
            r"blk_update_request: .* error",
        ),
        # the target: a command it failed (one per IO; floods), its controllers and ports
        ("nvmet_failed_cmd", r"^nvmet_(tcp|rdma): failed cmd|^nvmet_rdma: .*failed"),
        (
            "nvmet_ctrl",
            r"^nvmet: (creating (nvm|discovery) controller|ctrl \d+ fatal error|"
            r"connect request for invalid subsystem|hostnqn mismatch|connect by host)",
        ),
        ("nvmet_port", r"^nvmet_(tcp|rdma): enabling port|^nvmet_(tcp|rdma): .*port"),
        # soft-RoCE and the RDMA core: module load, device add/remove
        (
            "rdma",
            r"^(rdma_rxe|rxe|infiniband|ib_core|rdma_cm|ib_uverbs)\b|^rxe\d*:|"
            r"^nvme_(rdma|fabrics): |^nvmet_rdma: ",
        ),
        # one ratelimited printk site skipped N records
        ("suppressed", r"^\S+: \d+ callbacks suppressed"),
        (
            "net_link",
            r"ADDRCONF\(|link becomes ready|entered (promiscuous|disabled|"
            r"forwarding) (mode|state)|veth|^netem: ",
        ),
        # timer noise of an emulated (TCG) CPU
        ("vm_noise", r"hrtimer: interrupt took \d+ ns|clocksource|sched: RT throttling"),
    )
)

# Every class a record can get: the LineKind-backed ones first, "other" last.
KERNEL_CLASSES: tuple[KernelClass, ...] = (
    "eod_race",
    "eod_other",
    "kernel_bug",
    "hung_task",
    *(name for name, _ in _CLASS_RULES),
    "path_event",  # any other "nvme nvmeN: " line
    "other",
)


# Whole-line formats of the floods, with the (kind, class) the rules give them: a line that
# matches one in full is classified without trying every rule (the identity flip makes nvmet
# print thousands of "failed cmd" lines per iteration). Exact: the formats leave only numbers
# free, and no rule above tells such lines apart (tests/test_kmsg_classes.py checks that both
# paths agree).
KNOWN_FORMATS: tuple[tuple[re.Pattern[str], LineKind, KernelClass], ...] = (
    (
        re.compile(r"nvmet_(tcp|rdma): failed cmd [0-9a-f]+ id \d+ opcode \d+, data_len: \d+"),
        LineKind.OTHER,
        "nvmet_failed_cmd",
    ),
)

# The same formats matched on a raw /dev/kmsg record (``prio,seq,ts_us,flags;text`` then a
# newline and the record's dictionary lines), for the kernel log's process: a flood record
# is counted from one match, with no KmsgRecord built. Under TCG, parsing a record costs
# about 0.2 ms and classifying it 0.07 ms (a 6.1 guest on a 2-core host). Only the formats
# of kind OTHER: such a record changes nothing in a summary but its class's count. The
# formats' characters leave no room for a \xNN escape.
_RAW_FLOOD_FORMATS: tuple[tuple[re.Pattern[bytes], KernelClass], ...] = tuple(
    (re.compile(rb"(\d+),(\d+),(\d+),[^;]*;(" + pattern.pattern.encode() + rb")(?:\n|\Z)"), fine)
    for pattern, kind, fine in KNOWN_FORMATS
    if kind is LineKind.OTHER
)


def match_flood_record(raw: bytes) -> tuple[int, int, str, KernelClass] | None:
    """(seq, ts_us, text, fine class) of a raw /dev/kmsg record whose text is one of the
    flood formats (KNOWN_FORMATS of kind OTHER); None for any other record, which
    ``parse_record`` and ``KernelLogSummary.add`` handle."""
    for pattern, fine in _RAW_FLOOD_FORMATS:
        match = pattern.match(raw)
        if match is not None:
            return int(match[2]), int(match[3]), match[4].decode("ascii"), fine
    return None


def classify_fully(record: KmsgRecord) -> tuple[LineKind, str, KernelClass]:
    """(kind, EOD disk, fine class) of a record: ``classify`` and ``kernel_class``, with
    the flood formats (KNOWN_FORMATS) recognised first."""
    for pattern, kind, fine in KNOWN_FORMATS:
        if pattern.fullmatch(record.text):
            return kind, "", fine
    kind, disk = classify(record)
    return kind, disk, kernel_class(record, kind)


def kernel_class(record: KmsgRecord, kind: LineKind | None = None) -> KernelClass:
    """The fine class of a record (one of KERNEL_CLASSES; "other" when no rule matches).

    EOD, kernel-bug and hung-task records keep their LineKind names; any other record of an
    nvme controller that no rule names is "path_event". ``kind``: the record's
    ``classify`` kind when the caller has it already (a fault floods thousands of lines).
    """
    if kind is None:
        kind, _disk = classify(record)
    if kind in (LineKind.EOD_RACE, LineKind.EOD_OTHER, LineKind.KERNEL_BUG, LineKind.HUNG_TASK):
        return str(kind)
    text = record.text
    for name, pattern in _CLASS_RULES:
        if pattern.search(text):
            return name
    if kind is LineKind.PATH_EVENT:
        return "path_event"
    return "other"


def parse_dmesg_text(text: str) -> list[KmsgRecord]:
    """Records from dmesg-like text (``[   12.345678] message`` lines, as ``format_record``
    writes them to kmsg.txt); a line without the ``[ts]`` prefix continues the record
    before it (a printk with an embedded newline). Blank lines are skipped; seq counts
    from 0 and level is 6 (not in the text)."""
    records: list[KmsgRecord] = []
    for line in text.splitlines():
        match = _DMESG_LINE_RE.match(line)
        if match:
            ts_us = round(float(match.group("ts")) * 1_000_000)
            records.append(KmsgRecord(len(records), ts_us, 6, match.group("text")))
        elif line.strip() and records:
            last = records[-1]
            records[-1] = KmsgRecord(last.seq, last.ts_us, last.level, f"{last.text}\n{line}")
    return records


_DMESG_LINE_RE = re.compile(r"^\[\s*(?P<ts>\d+\.\d+)\] (?P<text>.*)$")


@dataclass
class KernelLogSummary:
    """Counts of classified kernel records over one stretch of time."""

    eod_race_lines: int = 0
    eod_race_disks: list[str] = field(default_factory=list)
    eod_other_lines: int = 0
    io_error_lines: int = 0
    path_event_lines: int = 0
    hung_task_lines: int = 0
    kernel_bug_lines: int = 0
    lost: int = 0  # records the ring buffer overwrote before they were read
    first_eod_race_ts_s: float | None = None
    last_eod_ts_s: float | None = None  # the last beyond-end-of-device line of any disk
    first_error_ts_s: float | None = None
    examples: list[str] = field(default_factory=list)  # notable lines, quoted in reports
    # records per fine class (kernel_class); only classes seen are keys
    classes: dict[str, int] = field(default_factory=dict)

    def add(self, record: KmsgRecord) -> LineKind:
        kind, disk, fine = classify_fully(record)
        self.classes[fine] = self.classes.get(fine, 0) + 1
        notable = True
        if kind is LineKind.EOD_RACE:
            self.eod_race_lines += 1
            if disk not in self.eod_race_disks:
                self.eod_race_disks.append(disk)
            if self.first_eod_race_ts_s is None:
                self.first_eod_race_ts_s = record.ts_s
            self.last_eod_ts_s = record.ts_s
        elif kind is LineKind.EOD_OTHER:
            self.eod_other_lines += 1
            self.last_eod_ts_s = record.ts_s
        elif kind is LineKind.IO_ERROR:
            self.io_error_lines += 1
        elif kind is LineKind.PATH_EVENT:
            self.path_event_lines += 1
            notable = False
        elif kind is LineKind.HUNG_TASK:
            self.hung_task_lines += 1
        elif kind is LineKind.KERNEL_BUG:
            self.kernel_bug_lines += 1
        else:
            notable = False
        if notable:
            if self.first_error_ts_s is None:
                self.first_error_ts_s = record.ts_s
            if len(self.examples) < 8:
                self.examples.append(record.text.replace("\n", " | "))
        return kind


def summarize(records: list[KmsgRecord]) -> KernelLogSummary:
    summary = KernelLogSummary()
    for record in records:
        summary.add(record)
    return summary


def format_record(record: KmsgRecord) -> str:
    """A dmesg-like line: ``[   12.345678] text``."""
    return format_line(record.ts_us, record.text)


def format_line(ts_us: int, text: str) -> str:
    """``format_record``'s line from a timestamp (microseconds) and a text."""
    return f"[{ts_us / 1_000_000:12.6f}] {text}"


class KmsgReader:
    """Reads new kernel log records; opened at the end so only new records are seen.

    The kernel's ring buffer is small (128 KiB with Debian's CONFIG_LOG_BUF_SHIFT=17) and a
    fault can flood it (nvmet logs one "failed cmd" line per IO it fails): records not read
    in time are overwritten (counted in ``lost``). With ``background=True`` a thread drains
    /dev/kmsg every ``poll_s`` seconds into memory, and ``read_available`` hands out what it
    collected; call ``close`` (or leave the ``with`` block) to stop it.
    """

    def __init__(self, path: str = KMSG, background: bool = False, poll_s: float = 0.05) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self._fd, 0, os.SEEK_END)
        self.lost = 0  # records overwritten before we read them
        self._lock = threading.Lock()
        self._collected: list[KmsgRecord] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._drain, args=(poll_s,), daemon=True)
            self._thread.start()

    def _drain(self, poll_s: float) -> None:
        while not self._stop.wait(poll_s):
            # Read under the lock: a record this thread read but had not stored yet would
            # otherwise go to the caller's next read_available (the next iteration).
            with self._lock:
                self._collected.extend(self._read_fd())

    def _read_fd(self) -> list[KmsgRecord]:
        records: list[KmsgRecord] = []
        while True:
            try:
                chunk = os.read(self._fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # ring buffer wrapped past our position
                    self.lost += 1
                    continue
                raise
            if not chunk:
                break
            record = parse_record(chunk.decode("utf-8", errors="replace"))
            if record is not None:
                records.append(record)
        return records

    def read_available(self) -> list[KmsgRecord]:
        """Every record written since the last call (never blocks for long)."""
        with self._lock:
            records = self._collected + self._read_fd()
            self._collected = []
        return records

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        os.close(self._fd)

    def __enter__(self) -> KmsgReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


CHILD_MODULE = "harness.campaign.kmsg_child"
CHILD_READY = "kmsg child ready"  # kmsg_child.READY (that module imports this one)
CHILD_TIMEOUT_S = 60.0
# The child's scheduling priority: it reads the kernel log while fio, the passthrough readers
# and nvmet keep the guest's vCPUs busy; at the default priority a take on Debian's 7.1.3
# image under TCG waited 7-8 s for it to catch up with 2,000-5,000 records. The BPF witness
# gets -10 (harness.campaign.witness.NICE). Since the harness's own thread runs at -5
# (harness.core.priority) the child shares the CPU with its polls at the same value, and with
# the host's cores loaded takes of 1,100-2,200 records waited 0.4-1.2 s: -10 as well.
CHILD_NICE = -10


@dataclass(frozen=True)
class LogWindow:
    """One window of the kernel log, as the child summed it up: the summary, how many
    records it had, and the child's CPU seconds for it (reading, classifying and writing
    its lines: the log's cost, apart from the campaign's wait for it)."""

    summary: KernelLogSummary
    records: int
    cpu_s: float


class KmsgWindows:
    """The campaign's kernel log, read and classified by a child process
    (harness/campaign/kmsg_child.py: why a process, and the protocol).

    ``skip()`` drops the records so far (setup noise); ``take(path)`` ends a window: its
    lines go to ``path`` (kmsg.txt), its summary comes back. ``send_take(path)`` ends the
    window now and ``take_reply()`` collects it later: the child writes and answers while
    the caller waits for something else (the block-layer witness). Raises HarnessError when
    the child does not start, dies, or does not answer in ``timeout_s`` seconds. As a
    context manager, the child never outlives the ``with`` block."""

    def __init__(self, timeout_s: float = CHILD_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._pending = False  # a take sent, its reply not read yet
        self._proc = subprocess.Popen(
            [sys.executable, "-m", CHILD_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        with contextlib.suppress(OSError):  # not root: the default priority
            os.setpriority(os.PRIO_PROCESS, self._proc.pid, CHILD_NICE)
        ready = self._reply()
        if ready != CHILD_READY:
            self.close()
            raise HarnessError(f"the kernel log reader did not start: {ready or 'no output'}")

    def _reply(self) -> str:
        assert self._proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._proc.stdout, selectors.EVENT_READ)
            if not selector.select(self.timeout_s):
                raise HarnessError(f"the kernel log reader did not answer in {self.timeout_s:g} s")
        return self._proc.stdout.readline().strip()

    def _send(self, request: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        if self._pending:
            raise HarnessError(
                "the kernel log reader has not answered its last request (it stopped "
                "answering, or its take's reply was never read)"
            )
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError as exc:
            raise HarnessError("the kernel log reader died") from exc
        self._pending = True

    def _answer(self) -> dict[str, Any]:
        line = self._reply()
        self._pending = False
        if not line:
            raise HarnessError(f"the kernel log reader died (exit {self._proc.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def skip(self) -> int:
        """Drop the records since the last call; how many there were."""
        self._send({"cmd": "skip"})
        return int(self._answer()["records"])

    def send_take(self, path: Path) -> None:
        """End the window since the last call now; its lines go to ``path``. The reply
        (:meth:`take_reply`) must be read before the next request."""
        self._send({"cmd": "take", "path": str(path)})

    def take_reply(self) -> LogWindow:
        """The window that ``send_take`` ended: its summary, records and CPU seconds."""
        reply = self._answer()
        return LogWindow(
            KernelLogSummary(**reply["summary"]), int(reply["records"]), float(reply["cpu_s"])
        )

    def take(self, path: Path) -> LogWindow:
        """The window since the last call: its lines written to ``path``, its summary."""
        self.send_take(path)
        return self.take_reply()

    def close(self) -> None:
        """End the child (it exits when its stdin closes; killed if it does not)."""
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> KmsgWindows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The kernel log's fine classes (kmsg.kernel_class) on real lines and on the 6.1.192 format
strings, and their per-class counts in KernelLogSummary."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.campaign.kmsg import (
    KERNEL_CLASSES,
    KernelLogSummary,
    KmsgRecord,
    LineKind,
    format_record,
    kernel_class,
    parse_dmesg_text,
    summarize,
)

DATA = Path(__file__).parent / "data"

# tests/data/kmsg_real.txt: one line per class, copied from kmsg.txt files of past runs
# (6.1.0-5x-amd64 guests, tcp over loopback and netns), in the order of the file.
REAL_CLASSES = [
    "vm_noise",
    "block_error",
    "ctrl_reset",
    "ctrl_reconnect",
    "ctrl_connect_error",
    "nvmet_port",
    "no_usable_path",
    "no_available_path",
    "eod_other",
    "ctrl_delete",
    "nvmet_ctrl",
    "ctrl_connect",
    "net_link",
    "keep_alive",
    "io_timeout",
    "ctrl_reconnected",
    "ns_scan",
    "suppressed",
    "eod_race",
    "nvmet_failed_cmd",
    "ns_ids_changed",
    "nvme_cmd_error",
]


def record(text: str) -> KmsgRecord:
    return KmsgRecord(seq=1, ts_us=1_000_000, level=6, text=text)


def test_real_lines_get_their_class() -> None:
    records = parse_dmesg_text((DATA / "kmsg_real.txt").read_text())
    assert [kernel_class(r) for r in records] == REAL_CLASSES


def test_parse_dmesg_text_joins_a_continuation_line() -> None:
    text = (
        "[  179.026434] fio: attempt to access beyond end of device\n"
        "nvme0c0n1: rw=67143681, sector=447304, nr_sectors = 8 limit=0\n"
        "\n"
        "[  179.5] nvme nvme0: rescanning namespaces.\n"
    )
    first, second = parse_dmesg_text(text)
    assert first.ts_us == 179_026_434
    assert first.text.endswith("\nnvme0c0n1: rw=67143681, sector=447304, nr_sectors = 8 limit=0")
    assert kernel_class(first) == "eod_race"
    assert second.seq == 1 and second.text == "nvme nvme0: rescanning namespaces."


def test_parse_dmesg_text_reads_what_format_record_writes() -> None:
    original = record("fio: attempt to access beyond end of device\nnvme0c1n1: rw=1, limit=0")
    (parsed,) = parse_dmesg_text(format_record(original))
    assert parsed.text == original.text and parsed.ts_us == original.ts_us


# Lines built from the 6.1.192 format strings (drivers/nvme/host/*.c, target/*.c, block/*.c)
# for classes the past runs never printed.
FORMAT_LINES = [
    ("nvme nvme1: qid 2: timeout draining sock wmem allocation expired", "tcp_socket"),
    ("nvme nvme1: queue 1 socket state 7", "tcp_socket"),
    ("nvme nvme0: receive failed:  -104", "transport_error"),
    ("nvme nvme0: failed to send request -32", "transport_error"),
    ("nvme nvme0: I/O 12 QID 1 timeout", "io_timeout"),
    ("nvme nvme0: Successfully reconnected (2 attempts)", "ctrl_reconnected"),
    ("nvme nvme0: rdma connection establishment failed (-104)", "ctrl_connect_error"),
    ("nvme nvme0: Connect rejected: status 8 (invalid service ID).", "ctrl_connect_error"),
    ("nvme nvme0: failfast expired", "ctrl_failfast"),
    ("nvme nvme0: resetting controller due to AER", "ctrl_reset"),
    ("nvme nvme0: ANATT timeout, resetting controller.", "ctrl_reset"),
    ("nvme nvme0: Removing controller...", "ctrl_delete"),
    ("nvme nvme0: Failed to get ANA log: -5", "ana"),
    ("nvme nvme0: IDs don't match for shared namespace 1", "ns_ids_conflict"),
    ("nvme0n1: detected capacity change from 524288 to 0", "ns_capacity"),
    ("nvmet: adding nsid 1 to subsystem nqn.2026-11.io.nvmf-harness:subsys-x", "ns_added"),
    ("nvme0: Admin Cmd(0x6), Invalid Field in Command (sct 0x0 / sc 0x2) DNR ", "nvme_cmd_error"),
    (
        "operation not supported error, dev nvme0c1n1, sector 8 op 0x1:(WRITE) flags 0x8800 "
        "phys_seg 1 prio class 2",
        "block_error",
    ),
    ("nvmet_rdma: enabling port 6000 (127.0.0.1:4421)", "nvmet_port"),
    ("rdma_rxe: loaded", "rdma"),
    ("nvme_fabrics: I/O fail on reconnect controller after 0 sec", "ctrl_connect"),
    ("nvme nvme0: keep alive interval updated from 5000 ms to 2500 ms", "keep_alive"),
    ("WARNING: CPU: 1 PID: 42 at drivers/nvme/host/core.c:100 nvme_x+0x1/0x2", "kernel_bug"),
    ("INFO: task kworker/u4:2:99 blocked for more than 120 seconds.", "hung_task"),
    ("nvme nvme0: something new", "path_event"),
    ("systemd[1]: Started something.", "other"),
]


@pytest.mark.parametrize(("text", "expected"), FORMAT_LINES)
def test_format_string_lines(text: str, expected: str) -> None:
    assert kernel_class(record(text)) == expected


def test_every_class_is_listed() -> None:
    produced = set(REAL_CLASSES) | {expected for _, expected in FORMAT_LINES}
    assert produced <= set(KERNEL_CLASSES)
    assert KERNEL_CLASSES[-1] == "other"


def test_summary_counts_classes_and_keeps_its_fields() -> None:
    records = parse_dmesg_text((DATA / "kmsg_real.txt").read_text())
    summary = summarize(records)
    assert sum(summary.classes.values()) == len(records)
    assert summary.classes["eod_race"] == 1 and "other" not in summary.classes
    # the LineKind counters are what they were before classes existed
    assert summary.eod_race_lines == 1 and summary.eod_other_lines == 1
    assert summary.io_error_lines == 2  # the Buffer I/O and the I/O Cmd line
    assert summary.path_event_lines == 9  # the "nvme nvmeN: " lines


def test_summary_add_still_returns_the_line_kind() -> None:
    summary = KernelLogSummary()
    assert summary.add(record("block nvme0n1: no usable path - requeuing I/O")) is LineKind.OTHER
    assert summary.classes == {"no_usable_path": 1}


# Raw /dev/kmsg records: the flood formats (the fast paths) and lines that only look alike.
RAW_RECORDS = [
    b"3,10,5000001,-;nvmet_tcp: failed cmd 0000000047ce6750 id 12 opcode 2, data_len: 4096\n",
    b"3,11,5000002,c;nvmet_rdma: failed cmd 00000000deadbeef id 3 opcode 1, data_len: 0\n"
    b" SUBSYSTEM=nvmet\n",
    b"6,12,5000003,-;nvmet_tcp: failed cmd 0000000047ce6750 id 13 opcode 2, data_len: 4096",
    b"3,14,5000004,-;nvmet_tcp: failed cmd 0000000047ce6750 id 13 opcode 2, data_len: 4096 more\n",
    b"3,15,5000005,-;nvmet_tcp: failed cmd \\x0a id 1 opcode 2, data_len: 1\n",
    b"4,16,5000006,-;fio: attempt to access beyond end of device\\x0anvme0c1n1: rw=34817, "
    b"sector=8, nr_sectors = 8 limit=0\n",
    b"6,17,5000007,-;nvme nvme0: rescanning namespaces.\n",
]


def test_the_flood_formats_classify_as_the_rules_do() -> None:
    """KNOWN_FORMATS (and their raw form) only save time: every record gets the kind and
    class the rules give it, and the child's lines and summary are the same either way."""
    from harness.campaign import kmsg
    from harness.campaign.kmsg_child import KmsgChild

    fast_hits = 0
    slow = KernelLogSummary()
    slow_lines = []
    for raw in RAW_RECORDS:
        parsed = kmsg.parse_record(raw.decode())
        assert parsed is not None
        kind, disk = kmsg.classify(parsed)
        assert kmsg.classify_fully(parsed) == (kind, disk, kmsg.kernel_class(parsed, kind))
        flood = kmsg.match_flood_record(raw)
        if flood is not None:
            fast_hits += 1
            assert flood == (parsed.seq, parsed.ts_us, parsed.text, "nvmet_failed_cmd")
        slow.add(parsed)
        slow_lines.append(format_record(parsed))
    assert fast_hits == 3  # the first three; the others only look alike

    class Replay(KmsgChild):
        def __init__(self) -> None:
            super().__init__(-1)
            self.left = list(RAW_RECORDS)

        def _read(self) -> bytes:
            if not self.left:
                raise BlockingIOError
            return self.left.pop(0)

    child = Replay()
    assert child.drain() is True
    slow.lost = 1  # seq 13 is not in the list
    assert child.window.summary == slow
    assert child.window.lines == slow_lines

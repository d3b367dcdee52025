"""The kernel log: /dev/kmsg records parsed, classified and summarised; the reader."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from harness.campaign.kmsg import (
    KernelLogSummary,
    KmsgReader,
    KmsgRecord,
    LineKind,
    classify,
    format_record,
    parse_record,
    summarize,
    unescape,
)

# Records as 6.1's /dev/kmsg gives them: one per read, "prio,seq,ts_us,flags;message\n",
# an embedded newline escaped as \x0a, dev_printk's dictionary as " KEY=value" lines.
EOD_RACE_RAW = (
    r"6,1234,107310926,-;fio: attempt to access beyond end of device\x0a"
    r"nvme0c2n1: rw=67143681, sector=15096, nr_sectors = 8 limit=0"
    "\n"
)
EOD_HEAD_RAW = (
    r"6,1240,107311000,-;fio: attempt to access beyond end of device\x0a"
    r"nvme0n1: rw=34817, sector=8, nr_sectors = 8 limit=0"
    "\n"
)
EOD_SIZED_RAW = (
    r"6,1241,107311100,-;fio: attempt to access beyond end of device\x0a"
    r"nvme0c1n1: rw=34817, sector=524288, nr_sectors = 8 limit=524288"
    "\n"
)
PATH_EVENT_RAW = (
    "4,1300,108000000,-;nvme nvme1: starting error recovery\n SUBSYSTEM=nvme\n DEVICE=c238:1\n"
)


def record(text: str, ts_us: int = 1_000_000, seq: int = 1, level: int = 6) -> KmsgRecord:
    return KmsgRecord(seq=seq, ts_us=ts_us, level=level, text=text)


# --- parse_record ------------------------------------------------------------------------------


def test_parse_the_eod_race_record() -> None:
    parsed = parse_record(EOD_RACE_RAW)
    assert parsed == KmsgRecord(
        seq=1234,
        ts_us=107310926,
        level=6,
        text="fio: attempt to access beyond end of device\n"
        "nvme0c2n1: rw=67143681, sector=15096, nr_sectors = 8 limit=0",
    )
    assert parsed.ts_s == pytest.approx(107.310926)


def test_parse_drops_the_dictionary_lines() -> None:
    parsed = parse_record(PATH_EVENT_RAW)
    assert parsed is not None
    assert parsed.text == "nvme nvme1: starting error recovery"
    assert parsed.level == 4
    assert parsed.seq == 1300


def test_parse_takes_the_level_from_prio_without_the_facility() -> None:
    # facility 3 (daemon) << 3 | level 6
    parsed = parse_record("30,7,5,-;systemd[1]: Started something.\n")
    assert parsed is not None
    assert parsed.level == 6


def test_parse_accepts_continuation_flag_and_extra_header_fields() -> None:
    parsed = parse_record("4,99,123456,c,caller=T42;nvme nvme0: reconnecting\n")
    assert parsed is not None
    assert (parsed.seq, parsed.ts_us, parsed.text) == (99, 123456, "nvme nvme0: reconnecting")


@pytest.mark.parametrize(
    "raw",
    ["", "no header at all", "6,12;too few fields", "x,1,2,-;bad prio", "6,1,ts,-;bad ts"],
)
def test_parse_rejects_malformed_records(raw: str) -> None:
    assert parse_record(raw) is None


def test_unescape() -> None:
    assert unescape(r"a\x0ab") == "a\nb"
    assert unescape(r"tab\x09end") == "tab\tend"
    assert unescape(r"C:\x5cdir") == "C:\\dir"
    # an escaped backslash followed by text that looks like an escape stays literal
    assert unescape(r"\x5cx41") == r"\x41"
    assert unescape("plain") == "plain"


def test_format_record() -> None:
    assert format_record(record("hello", ts_us=12_345_678)) == "[   12.345678] hello"


# --- classify ----------------------------------------------------------------------------------


def test_eod_race_on_a_per_path_disk_with_limit_zero() -> None:
    parsed = parse_record(EOD_RACE_RAW)
    assert parsed is not None
    assert classify(parsed) == (LineKind.EOD_RACE, "nvme0c2n1")


@pytest.mark.parametrize(
    ("raw", "disk"),
    [
        (EOD_HEAD_RAW, "nvme0n1"),  # the multipath head, not a path
        (EOD_SIZED_RAW, "nvme0c1n1"),  # a path disk that still has a capacity
    ],
)
def test_other_beyond_end_of_device_lines(raw: str, disk: str) -> None:
    parsed = parse_record(raw)
    assert parsed is not None
    assert classify(parsed) == (LineKind.EOD_OTHER, disk)


def test_eod_on_another_disk_is_other() -> None:
    text = (
        "dd: attempt to access beyond end of device\nsda1: rw=0, sector=9, nr_sectors = 8 limit=0"
    )
    assert classify(record(text)) == (LineKind.EOD_OTHER, "sda1")
    assert classify(record("fio: attempt to access beyond end of device")) == (
        LineKind.EOD_OTHER,
        "",
    )


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (
            "I/O error, dev nvme0c1n1, sector 15096 op 0x1:(WRITE) flags 0x8800 phys_seg 1 "
            "prio class 2",
            LineKind.IO_ERROR,
        ),
        ("Buffer I/O error on dev nvme0n1, logical block 0, async page read", LineKind.IO_ERROR),
        (
            "nvme0c1n1: I/O Cmd(0x2) @ LBA 0, 8 blocks, I/O Error (sct 0x3 / sc 0x71) ",
            LineKind.IO_ERROR,
        ),
        ("nvme nvme1: starting error recovery", LineKind.PATH_EVENT),
        ("nvme nvme1: Reconnecting in 1 seconds...", LineKind.PATH_EVENT),
        ('nvme nvme0: Removing ctrl: NQN "nqn.2026-11.io.nvmf-harness:s1"', LineKind.PATH_EVENT),
        ("nvme nvme12: ANA group 1: inaccessible.", LineKind.PATH_EVENT),
        ("INFO: task fio:123 blocked for more than 120 seconds.", LineKind.HUNG_TASK),
        ("INFO: task kworker/u4:2:56 blocked for more than 241 seconds.", LineKind.HUNG_TASK),
        (
            "WARNING: CPU: 1 PID: 56 at drivers/nvme/host/core.c:4290 nvme_ns_remove+0x1a/0x200 "
            "[nvme_core]",
            LineKind.KERNEL_BUG,
        ),
        ("BUG: kernel NULL pointer dereference, address: 0000000000000008", LineKind.KERNEL_BUG),
        ("kernel BUG at block/blk-mq.c:1234!", LineKind.KERNEL_BUG),
        ("Oops: 0000 [#1] PREEMPT SMP NOPTI", LineKind.KERNEL_BUG),
        ("general protection fault, probably for non-canonical address", LineKind.KERNEL_BUG),
        ("Kernel panic - not syncing: Fatal exception", LineKind.KERNEL_BUG),
        ("BUG: KASAN: use-after-free in nvme_find_path+0x2d/0x1c0", LineKind.KERNEL_BUG),
        ("RIP: 0010:nvme_ns_head_submit_bio+0x5e/0x1e0 [nvme_core]", LineKind.KERNEL_BUG),
        ("nvme0n1: p1", LineKind.OTHER),  # partition scan
        ("nvme nvme-fabrics: something", LineKind.OTHER),  # not a controller
        ("nvmet: adding nsid 1 to subsystem nqn.2026-11.io.nvmf-harness:s1", LineKind.OTHER),
        ("random: crng init done", LineKind.OTHER),
    ],
)
def test_classify(text: str, kind: LineKind) -> None:
    assert classify(record(text)) == (kind, "")


# A hung-task report as 6.1 prints it (each line its own record): fio blocked in io_submit.
# The "RIP: 0033:" line is the user-space register dump of the entry frame, not an oops.
HUNG_TASK_REPORT = [
    "INFO: task fio:1234 blocked for more than 120 seconds.",
    "      Not tainted 6.1.0-56-amd64 #1 Debian 6.1.192-2",
    '"echo 0 > /proc/sys/kernel/hung_task_timeout_secs" disables this message.',
    "task:fio             state:D stack:0     pid:1234  ppid:1200   flags:0x00004002",
    "Call Trace:",
    " <TASK>",
    " __schedule+0x34d/0x9e0",
    " schedule+0x5a/0xd0",
    " io_schedule+0x42/0x70",
    " blk_mq_get_tag+0x11a/0x2c0",
    " __x64_sys_io_submit+0x8d/0x180",
    " do_syscall_64+0x58/0xc0",
    " entry_SYSCALL_64_after_hwframe+0x64/0xce",
    "RIP: 0033:0x7f8c2e1b2e29",
    "RSP: 002b:00007ffd1e0f3a28 EFLAGS: 00000246 ORIG_RAX: 00000000000000d1",
    " </TASK>",
]


def test_a_hung_task_report_is_a_hang_not_a_kernel_bug() -> None:
    summary = summarize([record(text, seq=i) for i, text in enumerate(HUNG_TASK_REPORT)])
    assert summary.hung_task_lines == 1
    assert summary.kernel_bug_lines == 0


# --- KernelLogSummary ---------------------------------------------------------------------------


def test_summary_counts_each_kind_and_first_timestamps() -> None:
    texts = [
        (1_000_000, "nvme nvme1: starting error recovery"),  # path events are not errors
        (2_000_000, "I/O error, dev nvme0c1n1, sector 8 op 0x1:(WRITE) flags 0x0"),
        (
            3_000_000,
            "fio: attempt to access beyond end of device\n"
            "nvme0c1n1: rw=1, sector=8, nr_sectors = 8 limit=0",
        ),
        (
            4_000_000,
            "fio: attempt to access beyond end of device\n"
            "nvme0c2n1: rw=1, sector=8, nr_sectors = 8 limit=0",
        ),
        (
            5_000_000,
            "fio: attempt to access beyond end of device\n"
            "nvme0c1n1: rw=1, sector=16, nr_sectors = 8 limit=0",
        ),
        (
            6_000_000,
            "fio: attempt to access beyond end of device\n"
            "nvme0n1: rw=1, sector=16, nr_sectors = 8 limit=0",
        ),
        (7_000_000, "INFO: task fio:9 blocked for more than 120 seconds."),
        (8_000_000, "WARNING: CPU: 0 PID: 1 at lib/foo.c:1 bar+0x0/0x10"),
        (9_000_000, "nvme nvme2: Reconnecting in 1 seconds..."),
        (9_500_000, "random: crng init done"),
    ]
    summary = KernelLogSummary()
    kinds = [summary.add(record(text, ts_us=ts)) for ts, text in texts]
    assert kinds[0] is LineKind.PATH_EVENT
    assert kinds[2] is LineKind.EOD_RACE
    assert summary.eod_race_lines == 3
    assert summary.eod_race_disks == ["nvme0c1n1", "nvme0c2n1"]  # once each, first-seen order
    assert summary.eod_other_lines == 1
    assert summary.io_error_lines == 1
    assert summary.path_event_lines == 2
    assert summary.hung_task_lines == 1
    assert summary.kernel_bug_lines == 1
    assert summary.first_eod_race_ts_s == pytest.approx(3.0)
    assert summary.first_error_ts_s == pytest.approx(2.0)  # the I/O error, not the path event
    # notable lines only, newlines shown as " | "
    assert summary.examples[0].startswith("I/O error, dev nvme0c1n1")
    assert summary.examples[1] == (
        "fio: attempt to access beyond end of device | "
        "nvme0c1n1: rw=1, sector=8, nr_sectors = 8 limit=0"
    )
    assert not any("Reconnecting" in line or "crng" in line for line in summary.examples)
    assert len(summary.examples) == 7


def test_summary_examples_are_capped() -> None:
    records = [record(f"I/O error, dev nvme0c1n1, sector {i}", ts_us=i) for i in range(50)]
    summary = summarize(records)
    assert summary.io_error_lines == 50
    assert len(summary.examples) == 8
    assert summary.examples[0].endswith("sector 0")  # the first ones are kept


def test_empty_summary() -> None:
    summary = summarize([])
    assert summary.eod_race_lines == 0
    assert summary.first_eod_race_ts_s is None
    assert summary.first_error_ts_s is None
    assert summary.examples == []


# --- KmsgReader ----------------------------------------------------------------------------------
# /dev/kmsg returns one record per read(). A regular file returns whatever was written, so
# these tests write one record between reads, which is what the reader sees from /dev/kmsg.


def append(path: Path, raw: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(raw)


def test_reader_starts_at_the_end_and_reads_new_records(tmp_path: Path) -> None:
    log = tmp_path / "kmsg"
    log.write_text("6,1,100,-;old record from boot\n")
    with KmsgReader(str(log)) as reader:
        assert reader.read_available() == []  # what was there before is not ours
        append(log, EOD_RACE_RAW)
        records = reader.read_available()
        assert [r.seq for r in records] == [1234]
        assert classify(records[0])[0] is LineKind.EOD_RACE
        assert reader.read_available() == []  # nothing new: does not block
        append(log, PATH_EVENT_RAW)
        assert [r.text for r in reader.read_available()] == ["nvme nvme1: starting error recovery"]
        append(log, "garbage without a header\n")
        assert reader.read_available() == []
        assert reader.lost == 0


def test_reader_counts_records_lost_to_a_wrapped_ring_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/dev/kmsg answers EPIPE once when records were overwritten before they were read."""
    log = tmp_path / "kmsg"
    log.write_text("")
    real_read = os.read
    with KmsgReader(str(log)) as reader:
        answers: list[bytes | OSError] = [
            OSError(errno.EPIPE, "Broken pipe"),
            EOD_RACE_RAW.encode(),
            BlockingIOError(errno.EAGAIN, "again"),
        ]

        def fake_read(fd: int, size: int) -> bytes:
            if not answers:
                return real_read(fd, size)
            answer = answers.pop(0)
            if isinstance(answer, OSError):
                raise answer
            return answer

        monkeypatch.setattr(os, "read", fake_read)
        records = reader.read_available()
        monkeypatch.undo()
    assert [r.seq for r in records] == [1234]
    assert reader.lost == 1


def test_reader_raises_other_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "kmsg"
    log.write_text("")
    with KmsgReader(str(log)) as reader:

        def fail(fd: int, size: int) -> bytes:
            raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(os, "read", fail)
        with pytest.raises(OSError, match="Input/output"):
            reader.read_available()
        monkeypatch.undo()


def test_reader_of_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        KmsgReader(str(tmp_path / "nope"))


def test_background_reader_drains_before_the_ring_buffer_would_wrap(tmp_path: Path) -> None:
    """With background=True the records are taken off the fd while the caller is busy (a
    flood of nvmet lines would otherwise overwrite them), and handed out once each."""
    log = tmp_path / "kmsg"
    log.write_text("")
    with KmsgReader(str(log), background=True, poll_s=0.01) as reader:
        append(log, EOD_RACE_RAW)
        deadline = time.monotonic() + 5
        while not reader._collected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.seq for r in reader._collected] == [1234]  # read without being asked
        append(log, PATH_EVENT_RAW)
        records = reader.read_available()
        assert records[0].seq == 1234
        assert records[-1].text == "nvme nvme1: starting error recovery"
        assert reader.read_available() == []
    assert reader._thread is not None and not reader._thread.is_alive()


def test_a_record_the_background_thread_holds_is_not_handed_to_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread read a record and was about to store it when the caller asked: the
    caller must get it now (it belongs to this iteration), not on its next call."""
    log = tmp_path / "kmsg"
    log.write_text("")
    real_read = os.read
    thread_holds_a_record = threading.Event()

    with KmsgReader(str(log), background=True, poll_s=0.01) as reader:

        def slow_thread_read(fd: int, size: int) -> bytes:
            data = real_read(fd, size)
            if data and threading.current_thread() is reader._thread:
                thread_holds_a_record.set()
                time.sleep(0.3)  # the caller asks now
            return data

        monkeypatch.setattr(os, "read", slow_thread_read)
        append(log, EOD_RACE_RAW)
        assert thread_holds_a_record.wait(5)
        assert [r.seq for r in reader.read_available()] == [1234]
        monkeypatch.undo()


def test_summary_keeps_the_last_beyond_end_of_device_line() -> None:
    """The campaign waits out bio_check_eod()'s printk ratelimit from this instant."""
    summary = KernelLogSummary()
    first = parse_record(EOD_RACE_RAW)
    assert first is not None
    summary.add(first)
    assert summary.last_eod_ts_s == first.ts_s
    later = parse_record(
        "6,1300,99000000,-;dd: attempt to access beyond end of device\\x0asda: rw=0, "
        "sector=8, nr_sectors = 8 limit=4"
    )
    assert later is not None
    summary.add(later)  # another disk, same call site, same ratelimit
    assert summary.last_eod_ts_s == 99.0

"""The stale-write checker (harness/stale_write.py) on a regular file and on fakes that lose a
write, land an old one late, fail or hang."""

from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from harness.bed.host import MultipathDevice
from harness.campaign.runner import Campaign
from harness.campaign.stale_write import (
    BLOCK_BYTES,
    BlockCodec,
    BlockIo,
    DeviceIo,
    StaleWriteChecker,
    tail_region,
)
from harness.campaign.verdict import verdict
from harness.campaign.workload import FioJob
from harness.config.campaign import CampaignConfig, override
from harness.core.errors import HarnessError
from harness.core.kernelfs import KernelFs
from harness.core.results import FAILING_VERDICTS, Verdict, summarize
from tests.test_results import make_record

MIB = 1024 * 1024


class MemoryIo:
    """A device in memory (never-written blocks read as zeros). ``lose_nth``: the write of
    that number (``writes`` counts them, 1-based) is acknowledged without landing;
    ``fail_writes``: that many next writes raise EIO, landing first when ``land_failed``."""

    def __init__(self) -> None:
        self.blocks: dict[int, bytes] = {}
        self.lose_nth = 0
        self.fail_writes = 0
        self.land_failed = False
        self.writes = 0

    def write(self, offset: int, data: bytes) -> None:
        self.writes += 1
        if self.fail_writes:
            self.fail_writes -= 1
            if self.land_failed:
                self.blocks[offset] = data
            raise OSError(errno.EIO, "Input/output error")
        if self.writes == self.lose_nth:
            return
        self.blocks[offset] = data

    def read(self, offset: int, length: int) -> bytes:
        return self.blocks.get(offset, bytes(length))

    def close(self) -> None:
        pass


def checker(
    blocks: int = 1, threads: int = 2, open_io: Callable[[], BlockIo] | None = None
) -> StaleWriteChecker:
    return StaleWriteChecker(
        path="/dev/not-opened",
        offset=8 * MIB,
        blocks=blocks,
        run_id="run-1",
        threads=threads,
        open_io=open_io,
    )


def test_tail_region_is_whole_mib_at_the_end_and_fio_stays_below() -> None:
    head = 256 * MIB
    assert tail_region(head, 256, 4096) == (255 * MIB, MIB)
    assert tail_region(head, 257, 4096) == (254 * MIB, 2 * MIB)
    assert tail_region(head + 4096, 1, 4096) == (255 * MIB, MIB + 4096)
    with pytest.raises(ValueError):
        tail_region(MIB, 1, 4096)
    with pytest.raises(ValueError):
        tail_region(head, 0, 4096)
    offset, _ = tail_region(head, 256, 4096)
    for numjobs in (1, 2, 3, 7):
        job = FioJob(filename="/dev/x", size_bytes=offset, numjobs=numjobs)
        assert 0 < numjobs * job.region_bytes() <= offset
        assert f"--size={job.region_bytes()}" in job.argv(None)


def test_codec_round_trip_and_rejections() -> None:
    codec = BlockCodec(BlockCodec.tag("20260101-000000-abcdef"), 4096, 512)
    block = codec.encode(8192, 7)
    assert len(block) == 4096
    assert codec.decode(8192, block) == 7
    assert codec.decode(8192 + 4096, block) is None  # another LBA
    flipped = bytearray(block)
    flipped[3000] ^= 1
    assert codec.decode(8192, bytes(flipped)) is None  # bad checksum
    other = BlockCodec(BlockCodec.tag("20260101-000000-123456"), 4096, 512)
    assert other.decode(8192, block) is None  # another run
    assert codec.decode(8192, bytes(4096)) is None


def test_clean_cycles_count_ios_and_nothing_else() -> None:
    check, io = checker(), MemoryIo()
    assert check.cycle_block(io, 0)  # first cycle: no pre-read, 2 writes, 1 read
    assert check.cycle_block(io, 0)  # read, 2 writes, read
    window = check.take_window()
    assert (window.ios, window.stale, window.mismatches, window.errors) == (7, 0, 0, 0)
    assert check.codec.decode(check.block_offset(0), io.read(check.block_offset(0), 4096)) == 4
    assert check.take_window().ios == 0  # a new window


def test_old_generation_landing_late_is_a_stale_write_counted_once() -> None:
    check, io = checker(), MemoryIo()
    offset = check.block_offset(0)
    check.cycle_block(io, 0)  # generations 1 then 2
    io.blocks[offset] = check.codec.encode(offset, 1)  # generation 1 lands after 2
    check.cycle_block(io, 0)  # the pre-read sees 1
    check.cycle_block(io, 0)
    stats = check.take_window()
    assert stats.stale == 1 and stats.mismatches == 0
    assert stats.examples == [f"LBA {offset // 512}: read generation 1, wrote 2"]


def test_lost_write_is_a_stale_write_on_the_read_back() -> None:
    check, io = checker(), MemoryIo()
    check.cycle_block(io, 0)  # writes 1 and 2: generations 1 and 2
    io.lose_nth = 4  # generation 3 lands, 4 is acknowledged but lost
    check.cycle_block(io, 0)  # the read-back shows 3
    check.cycle_block(io, 0)  # 5 and 6 land: no second count
    stats = check.take_window()
    assert (stats.stale, stats.mismatches) == (1, 0), stats


def test_foreign_content_is_a_mismatch_not_stale() -> None:
    check, io = checker(), MemoryIo()
    offset = check.block_offset(0)
    check.cycle_block(io, 0)
    io.blocks[offset] = bytes(4096)
    check.cycle_block(io, 0)
    stats = check.take_window()
    assert (stats.stale, stats.mismatches) == (0, 1)


@pytest.mark.parametrize("landed", [False, True])
def test_a_failed_write_is_an_error_and_either_outcome_reads_fine(landed: bool) -> None:
    check, io = checker(), MemoryIo()
    check.cycle_block(io, 0)
    io.fail_writes, io.land_failed = 1, landed
    assert not check.cycle_block(io, 0)
    assert check.cycle_block(io, 0)  # the pre-read finds 2 or 3: both may be there
    stats = check.take_window()
    assert (stats.errors, stats.stale, stats.mismatches) == (1, 0, 0)
    assert stats.examples == ["Input/output error"]


def test_threads_on_a_regular_file(tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.write_bytes(bytes(16 * MIB))
    check = StaleWriteChecker(
        path=str(device),
        offset=15 * MIB,
        blocks=32,
        run_id="run-2",
        threads=3,
        open_io=lambda: DeviceIo(str(device), BLOCK_BYTES, direct=False),
    )
    check.start()
    time.sleep(0.5)
    window = check.take_window()
    assert check.stop(timeout_s=5) == 0
    assert window.ios > 32 and (window.stale, window.mismatches, window.errors) == (0, 0, 0)
    data = device.read_bytes()
    assert data[: 15 * MIB] == bytes(15 * MIB)  # nothing outside the region
    written = [
        check.codec.decode(off, data[off : off + 4096]) for off in range(15 * MIB, 16 * MIB, 4096)
    ]
    assert all(g is not None and g % 2 == 0 for g in written[:32]), written[:32]
    assert written[32:] == [None] * (len(written) - 32)


def test_open_failure_is_an_error(tmp_path: Path) -> None:
    check = StaleWriteChecker(path=str(tmp_path / "missing"), offset=0, blocks=4, run_id="r")
    check.start()
    assert check.stop(timeout_s=5) == 0
    assert check.stats.errors == 2 and check.stats.ios == 0


def test_a_wedged_io_is_a_stall_and_stop_is_bounded() -> None:
    release = threading.Event()

    class WedgedIo(MemoryIo):
        def write(self, offset: int, data: bytes) -> None:
            release.wait(30)
            super().write(offset, data)

    check = checker(blocks=2, threads=1, open_io=WedgedIo)
    check.start()
    time.sleep(0.3)
    assert check.take_window().max_io_s >= 0.25
    started = time.monotonic()
    assert check.stop(timeout_s=0.2) == 1  # still in its IO
    assert time.monotonic() - started < 1.0
    release.set()
    assert check.stop(timeout_s=5) == 0


def test_misaligned_region_is_refused() -> None:
    with pytest.raises(ValueError):
        StaleWriteChecker(path="/x", offset=512, blocks=1, run_id="r")
    with pytest.raises(ValueError):
        StaleWriteChecker(
            path="/x", offset=0, blocks=1, run_id="r", lba_bytes=4096, block_bytes=2048
        )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"stale_writes": 1}, Verdict.STALE_WRITE),
        ({"stale_write_mismatches": 2}, Verdict.STALE_WRITE),
        # data lost outranks an application error; a hang or kernel bug outranks it
        ({"stale_writes": 1, "app_eio": 3, "eod_race_lines": 1}, Verdict.STALE_WRITE),
        ({"stale_writes": 1, "hang": True}, Verdict.HANG),
        # the check's own failed IOs are not stale writes; the check is an application on
        # the head, so they are application EIO: a bug while another path was live...
        ({"stale_write_errors": 5, "another_path_live": True}, Verdict.EIO),
        # ... expected with none
        ({"stale_write_errors": 5, "another_path_live": False}, Verdict.EXPECTED_EIO),
        ({"stale_write_ios": 100}, Verdict.PASS),
    ],
)
def test_verdict(changes: dict[str, object], expected: str) -> None:
    assert verdict(make_record(**changes)) == expected
    assert (expected in FAILING_VERDICTS) == (expected not in (Verdict.PASS, Verdict.EXPECTED_EIO))


def test_summary_counts_stale_and_mismatched_reads() -> None:
    records = [
        json.loads(make_record(stale_writes=2, stale_write_mismatches=1).to_json()),
        json.loads(make_record().to_json()),
    ]
    assert summarize(records)[-1].stale_writes == 3


def campaign_on_fake_head(
    tmp_path: Path, lba_bytes: int, **workload: object
) -> tuple[Campaign, MultipathDevice]:
    """A Campaign whose /sys holds one 256 MiB head nvme0n1 with ``lba_bytes`` blocks."""
    queue = tmp_path / "sys/sys/block/nvme0n1/queue"
    queue.mkdir(parents=True)
    (queue / "logical_block_size").write_text(f"{lba_bytes}\n")
    (queue.parent / "size").write_text(f"{256 * MIB // 512}\n")
    config = override(CampaignConfig(), "workload", **workload)
    campaign = Campaign(config, tmp_path / "out")
    campaign.bed.kfs = KernelFs(root=tmp_path / "sys", timeout_s=5.0)
    campaign.bed.host = cast(Any, object())
    device = cast(MultipathDevice, SimpleNamespace(head="nvme0n1", head_dev="/dev/nvme0n1"))
    return campaign, device


@pytest.mark.parametrize(
    ("lba_bytes", "blocks", "fio_bytes"),
    [(512, 256, 255 * MIB), (4096, 256, 255 * MIB), (512, 257, 254 * MIB), (4096, 1, 255 * MIB)],
)
def test_the_campaign_keeps_fio_below_the_checks_region(
    tmp_path: Path, lba_bytes: int, blocks: int, fio_bytes: int
) -> None:
    campaign, device = campaign_on_fake_head(
        tmp_path, lba_bytes, stale_write_check=True, stale_write_blocks=blocks
    )
    job = campaign.io.fio_job(device)
    assert job.size_bytes == fio_bytes
    assert job.numjobs * job.region_bytes() <= fio_bytes
    assert campaign.io.stale_write_region(device) == (fio_bytes, lba_bytes)


def test_without_the_check_fio_has_the_whole_head(tmp_path: Path) -> None:
    campaign, device = campaign_on_fake_head(tmp_path, 512)
    assert campaign.io.fio_job(device).size_bytes == 256 * MIB
    assert campaign.io.stale_write_region(device) is None
    assert campaign.io._start_stale_write(device) is None


def test_a_region_too_large_for_the_head_is_one_line(tmp_path: Path) -> None:
    campaign, device = campaign_on_fake_head(
        tmp_path, 512, stale_write_check=True, stale_write_blocks=65536
    )
    with pytest.raises(HarnessError, match=r"lower workload\.stale_write_blocks"):
        campaign.io.fio_job(device)


def test_threads_flag_lost_writes_on_a_shared_device() -> None:
    """Workers on one shared device that acknowledges every 25th write without landing it:
    each lost write leaves the older generation, and the workers count it as stale."""
    shared = MemoryIo()
    lock = threading.Lock()

    class Lossy:
        def write(self, offset: int, data: bytes) -> None:
            with lock:
                shared.writes += 1
                if shared.writes % 25:
                    shared.blocks[offset] = data

        def read(self, offset: int, length: int) -> bytes:
            with lock:
                return shared.read(offset, length)

        def close(self) -> None:
            pass

    check = checker(blocks=16, threads=4, open_io=Lossy)
    check.start()
    time.sleep(0.3)
    assert check.stop(timeout_s=5) == 0
    stats = check.take_window()
    lost = shared.writes // 25
    assert lost >= 4 and stats.errors == 0
    # a lost generation N+1 leaves N: one stale read; a lost N is overwritten by N+1 before
    # any read
    assert 0 < stats.stale <= lost and stats.mismatches == 0, (stats, lost)

"""The passthrough readers: the command layout, windows that add up to the total, stop. A
regular file stands in for the head: its ioctl fails (ENOTTY), which the readers count as
failed commands."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.campaign.passthru import PASSTHRU_CMD, PassthruReaders, read_command

WAIT_S = 20.0


def _wait_for(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT_S} s")
        time.sleep(0.02)


def _readers(head: Path, threads: int = 2) -> PassthruReaders:
    return PassthruReaders(
        head_dev=str(head), nsid=1, lba_bytes=512, capacity_lbas=4096, threads=threads
    )


@pytest.fixture
def fake_head(tmp_path: Path) -> Path:
    head = tmp_path / "nvme0n1"
    head.write_bytes(b"\0" * 4096 * 512)
    return head


def test_read_command_layout() -> None:
    command = read_command(nsid=3, slba=(5 << 32) | 7, blocks=8, buffer_addr=0x1000, data_len=4096)
    fields = PASSTHRU_CMD.unpack(bytes(command))
    assert len(command) == 72
    assert fields[0] == 0x02 and fields[3] == 3  # opcode Read, nsid
    assert fields[7] == 0x1000 and fields[9] == 4096  # addr, data_len
    assert (fields[10], fields[11], fields[12]) == (7, 5, 7)  # slba low, high, blocks - 1
    with pytest.raises(ValueError):
        read_command(1, 0, 0, 0, 0)


def test_windows_add_up_to_the_total_and_stop_ends_every_reader(fake_head: Path) -> None:
    readers = _readers(fake_head)
    readers.start()
    try:
        _wait_for(lambda: readers.stats.commands >= 4, "commands counted")
        first = readers.take_window()
        _wait_for(lambda: readers.stats.commands >= first.commands + 4, "more commands")
        second = readers.take_window()
    finally:
        total = readers.stop()
    third = readers.take_window()
    assert first.commands > 0 and second.commands > 0
    assert first.errors == first.commands  # every ioctl on a regular file fails
    assert total.commands == first.commands + second.commands + third.commands
    assert total.errors == total.commands
    assert not any(worker.is_alive() for worker in readers._workers)


def test_a_head_that_cannot_be_opened_is_one_error(tmp_path: Path) -> None:
    readers = _readers(tmp_path / "missing", threads=1)
    readers.start()
    stats = readers.stop()
    assert (stats.commands, stats.errors) == (0, 1)


def test_a_reader_still_in_its_command_after_the_timeout_is_counted_stuck(tmp_path: Path) -> None:
    """A FIFO's open blocks until a writer comes: the reader is held in the kernel, as one
    whose command never completes."""
    fifo = tmp_path / "held"
    os.mkfifo(fifo)
    readers = _readers(fifo, threads=1)
    readers.start()
    stats = readers.stop(timeout_s=0.2)
    assert stats.stuck == 1
    writer = os.open(fifo, os.O_WRONLY)  # lets the reader go: its ioctl fails, it sees stop
    try:
        assert readers.stop(timeout_s=WAIT_S).stuck == 0
    finally:
        os.close(writer)

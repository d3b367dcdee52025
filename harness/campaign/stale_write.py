"""A stale-write check beside fio: overwrite the same blocks in a known order, read them back.

fio's crc32c verify sees a block whose content does not match what fio wrote there, but not
an *older* version of its own data: a block that still (or again) holds the previous write
verifies fine. A stale write is exactly that: write A, then write B to the same LBA, both
acknowledged, and a later read returns A. Across a failover it can come from a write that
was sent down the failing path, retried down another one (multipath.c:nvme_failover_req
requeues it) and then executed late by the target after the newer write.

The checker owns a region of the head that fio does not use (``tail_region``: the head's
last MiB(s); the campaign shrinks fio's size by as much). It cuts it into blocks of
``block_bytes`` (4 KiB or the head's logical block size if larger); ``threads`` workers each
own every ``threads``-th block and cycle over them. One cycle on a block:

1. read it: it must hold the last generation acknowledged there (or, after an IO error, one
   of the generations that may have landed) -- catches a late write that landed after step 4
   of the previous cycle;
2. write generation N, synchronously (O_DIRECT|O_DSYNC: the write returns once the
   controller completed it, block/fops.c:blkdev_direct_IO, as a FUA write:
   block/fops.c:dio_bio_write_op sets REQ_FUA for a dsync iocb);
3. write generation N+1 the same way;
4. read it back: it must hold N+1.

Each block carries a header (magic, run tag, its LBA in the head's logical blocks, its
generation, a crc32 of the whole block). A read showing an older generation of this block
is a *stale write*; a read showing anything else (bad checksum, another LBA or run, a
generation never written) is a *mismatch*; an IO that fails (EIO while no path was usable...)
is an *error*, counted apart (fio's EIO is the application-error verdict). After an error the
block's expected content is the range of generations that may have landed.

Workers are daemon threads, one synchronous IO at a time each; an IO the kernel holds (no
path, requeued until a path returns) shows as a growing ``max_io_s`` and never blocks the
harness: ``take_window`` only reads counters, ``stop`` waits a bounded time.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from harness.core.priority import become_workload_thread

MAGIC = b"NVMFSTAL"
# magic, run tag (16 bytes), LBA (logical blocks of the head), generation, crc32 of the block
# with this field zero
HEADER = struct.Struct("<8s16sQQI")
BLOCK_BYTES = 4096
RESERVE_ALIGN = 1024 * 1024  # the checker's region is whole MiBs at the head's end
MAX_EXAMPLES = 8
STOP_TIMEOUT_S = 10.0


def tail_region(head_bytes: int, blocks: int, block_bytes: int) -> tuple[int, int]:
    """(offset, length) in bytes of the checker's region: the head's last whole MiBs that
    hold ``blocks`` blocks of ``block_bytes``. fio must stay below ``offset``.

    Raises ValueError when the head cannot hold the region and 1 MiB more for fio.
    """
    if blocks < 1 or block_bytes < 512 or block_bytes % 512:
        raise ValueError(f"bad region: {blocks} blocks of {block_bytes} bytes")
    need = blocks * block_bytes
    reserve = -(-need // RESERVE_ALIGN) * RESERVE_ALIGN
    offset = (head_bytes - reserve) // RESERVE_ALIGN * RESERVE_ALIGN
    if offset < RESERVE_ALIGN:
        raise ValueError(f"a head of {head_bytes} bytes cannot hold {need} bytes for the check")
    return offset, head_bytes - offset


@dataclass(frozen=True)
class BlockCodec:
    """Encodes and decodes one block: header, then the (LBA, generation) pair repeated, so a
    torn or mixed block fails the checksum. ``lba_bytes`` is the head's logical block size."""

    run_tag: bytes
    block_bytes: int = BLOCK_BYTES
    lba_bytes: int = 512

    @staticmethod
    def tag(run_id: str) -> bytes:
        """A run id as the header's 16-byte run tag."""
        return run_id.encode()[-16:].rjust(16, b"\0")

    def encode(self, offset: int, generation: int) -> bytes:
        lba = offset // self.lba_bytes
        fill = struct.pack("<QQ", lba, generation)
        body = (fill * (self.block_bytes // len(fill) + 1))[: self.block_bytes - HEADER.size]
        head = HEADER.pack(MAGIC, self.run_tag, lba, generation, 0)
        crc = zlib.crc32(head + body)
        return HEADER.pack(MAGIC, self.run_tag, lba, generation, crc) + body

    def decode(self, offset: int, data: bytes) -> int | None:
        """The generation a block read at ``offset`` holds, or None when it is not a block of
        this run at this LBA with a good checksum."""
        if len(data) != self.block_bytes:
            return None
        magic, tag, lba, generation, crc = HEADER.unpack_from(data)
        if magic != MAGIC or tag != self.run_tag or lba != offset // self.lba_bytes:
            return None
        zeroed = HEADER.pack(magic, tag, lba, generation, 0) + data[HEADER.size :]
        return int(generation) if zlib.crc32(zeroed) == crc else None


class BlockIo(Protocol):
    """Synchronous, durable block IO on one open device (or file). Errors: OSError."""

    def write(self, offset: int, data: bytes) -> None: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def close(self) -> None: ...


class DeviceIo:
    """``path`` opened O_RDWR|O_DSYNC, with O_DIRECT when ``direct`` (a block device: no page
    cache on the host between the write and the read-back). O_DIRECT needs an aligned buffer:
    an anonymous mmap is page aligned. Without O_DIRECT (a test file), fdatasync per write."""

    def __init__(self, path: str, block_bytes: int, direct: bool = True) -> None:
        flags = os.O_RDWR | os.O_DSYNC | (os.O_DIRECT if direct else 0)
        self.direct = direct
        self.fd = os.open(path, flags)
        self.buffer = mmap.mmap(-1, block_bytes)

    def write(self, offset: int, data: bytes) -> None:
        self.buffer[: len(data)] = data
        done = os.pwritev(self.fd, [memoryview(self.buffer)[: len(data)]], offset)
        if done != len(data):
            raise OSError(errno.EIO, f"short write: {done} of {len(data)} bytes")
        if not self.direct:
            os.fdatasync(self.fd)

    def read(self, offset: int, length: int) -> bytes:
        done = os.preadv(self.fd, [memoryview(self.buffer)[:length]], offset)
        if done != length:
            raise OSError(errno.EIO, f"short read: {done} of {length} bytes")
        return bytes(self.buffer[:length])

    def close(self) -> None:
        self.buffer.close()
        os.close(self.fd)


@dataclass
class StaleWriteStats:
    """What the checker saw: IOs completed (writes + reads), reads showing an older
    generation (stale), reads showing no valid block of ours (mismatch), failed IOs, the
    longest IO in seconds (an IO still in flight counts with its age), and a few examples."""

    ios: int = 0
    stale: int = 0
    mismatches: int = 0
    errors: int = 0
    max_io_s: float = 0.0
    examples: list[str] = field(default_factory=list)


@dataclass
class _Block:
    """One block's state: the generations that may be on disk are ``low``..``high``;
    ``known`` is False until the first acknowledged write and after a failed check (what is
    there was counted once; the next acknowledged write makes it known again)."""

    offset: int
    low: int = 0
    high: int = 0
    known: bool = False


@dataclass
class StaleWriteChecker:
    """``threads`` workers cycling over ``blocks`` blocks from ``offset`` (bytes) of
    ``path`` until ``stop``; worker i owns blocks i, i + threads, ... ``open_io`` opens one
    worker's BlockIo (tests pass a fake). Raises ValueError when the region does not align
    to ``block_bytes`` and ``block_bytes`` to the head's logical block size ``lba_bytes``."""

    path: str
    offset: int
    blocks: int
    run_id: str
    lba_bytes: int = 512
    block_bytes: int = BLOCK_BYTES
    threads: int = 2
    open_io: Callable[[], BlockIo] | None = None
    stats: StaleWriteStats = field(default_factory=StaleWriteStats)
    window: StaleWriteStats = field(default_factory=StaleWriteStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)
    _busy_since: dict[int, float] = field(default_factory=dict)
    _state: list[_Block] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.block_bytes % self.lba_bytes or self.offset % self.block_bytes:
            raise ValueError(
                f"blocks of {self.block_bytes} bytes at {self.offset} do not align to "
                f"{self.lba_bytes}-byte logical blocks"
            )
        self.codec = BlockCodec(BlockCodec.tag(self.run_id), self.block_bytes, self.lba_bytes)
        self._state = [_Block(self.offset + i * self.block_bytes) for i in range(self.blocks)]

    def _open(self) -> BlockIo:
        if self.open_io is not None:
            return self.open_io()
        return DeviceIo(self.path, self.block_bytes)

    def start(self) -> None:
        """Start the workers (each opens the device itself; an open that fails is an error)."""
        for index in range(min(self.threads, self.blocks)):
            worker = threading.Thread(target=self._loop, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def _loop(self, index: int) -> None:
        become_workload_thread()  # the workload, behind the harness's steps
        try:
            io = self._open()
        except OSError as exc:
            self._count(errors=1, example=f"open {self.path}: {exc.strerror}")
            return
        try:
            mine = self._state[index :: max(1, self.threads)]
            while not self._stop.is_set():
                for block in mine:
                    if self._stop.is_set():
                        break
                    if not self.cycle(io, block, index):
                        time.sleep(0.01)  # no path right now: do not spin
        finally:
            io.close()

    def cycle(self, io: BlockIo, block: _Block, worker: int = 0) -> bool:
        """One cycle on ``block`` (read, write N, write N+1, read); False on an IO error."""
        if block.known and not self._check(io, block, worker):
            return False
        for generation in (block.high + 1, block.high + 2):
            block.high = generation  # may be on disk from here on, acknowledged or not
            data = self.codec.encode(block.offset, generation)
            if not self._io(worker, partial(io.write, block.offset, data)):
                return False
            block.low, block.known = generation, True  # acknowledged: nothing older may be read
        return self._check(io, block, worker)

    def cycle_block(self, io: BlockIo, number: int) -> bool:
        """One cycle on block ``number`` of the region in the caller's thread (a test's
        deterministic step; do not mix with running workers)."""
        return self.cycle(io, self._state[number])

    def block_offset(self, number: int) -> int:
        """Byte offset on the head of block ``number`` of the region."""
        return self._state[number].offset

    def _check(self, io: BlockIo, block: _Block, worker: int) -> bool:
        data: list[bytes] = []
        if not self._io(worker, lambda: data.append(io.read(block.offset, self.block_bytes))):
            return False
        found = self.codec.decode(block.offset, data[0])
        lba = block.offset // self.lba_bytes
        if found is not None and block.low <= found <= block.high:
            return True
        if found is not None and found < block.low:
            self._count(stale=1, example=f"LBA {lba}: read generation {found}, wrote {block.low}")
        else:
            what = "no valid block" if found is None else f"generation {found}"
            self._count(mismatches=1, example=f"LBA {lba}: {what}, wrote {block.low}")
        block.known = False  # counted once; the next acknowledged write resynchronises
        return True

    def _io(self, worker: int, operation: Callable[[], None]) -> bool:
        started = time.monotonic()
        with self._lock:
            self._busy_since[worker] = started
        try:
            operation()
            ok, example = True, ""
        except OSError as exc:
            ok, example = False, f"{exc.strerror or exc}"
        took = time.monotonic() - started
        with self._lock:
            self._busy_since.pop(worker, None)
            for stats in (self.stats, self.window):
                stats.ios += 1 if ok else 0
                stats.errors += 0 if ok else 1
                stats.max_io_s = max(stats.max_io_s, took)
                if example and len(stats.examples) < MAX_EXAMPLES:
                    stats.examples.append(example)
        return ok

    def _count(
        self, stale: int = 0, mismatches: int = 0, errors: int = 0, example: str = ""
    ) -> None:
        with self._lock:
            for stats in (self.stats, self.window):
                stats.stale += stale
                stats.mismatches += mismatches
                stats.errors += errors
                if example and len(stats.examples) < MAX_EXAMPLES:
                    stats.examples.append(example)

    def take_window(self) -> StaleWriteStats:
        """The counts since the last call (or the start), and a new window. An IO in flight
        counts in ``max_io_s`` with its age now (a wedged IO is a stall, seen here)."""
        now = time.monotonic()
        with self._lock:
            taken, self.window = self.window, StaleWriteStats()
            for since in self._busy_since.values():
                taken.max_io_s = max(taken.max_io_s, now - since)
        return taken

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Stop the workers; waits at most ``timeout_s`` in all. Returns how many are still in
        an IO (wedged: the kernel holds it; the thread ends when the IO does, e.g. when the
        controllers are deleted at teardown)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        return sum(1 for worker in self._workers if worker.is_alive())

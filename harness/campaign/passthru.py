"""A second application on the head: synchronous NVMe passthrough reads (NVME_IOCTL_IO_CMD).

Management tools and passthrough users (nvme-cli's ``nvme read``, databases that drive the
device directly) send NVMe commands through the multipath head's ioctl. On 6.1 such an
ioctl holds the head's SRCU read lock while the command runs: ioctl.c:nvme_ns_head_ioctl()
takes srcu_read_lock(&head->srcu), picks a path with nvme_find_path() and only unlocks
after nvme_ns_ioctl() returned, i.e. after the target answered. core.c:nvme_ns_remove()
waits for such readers in synchronize_srcu() right after set_capacity(disk, 0); so while a
passthrough command is in flight, the window in which other bios are remapped to the
zero-capacity per-path disk lasts as long as that command does (under IO load, one IO
latency: tens of milliseconds under TCG). No kernel change and no instrumentation: it is
what such an application does to the kernel anyway.

The reads land in a buffer of ours and nothing is written. The readers only ever open the
head the device interlock accepted (harness/safety.py), the caller's job.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import random
import struct
import threading
import time
from dataclasses import dataclass, field

from harness.core.priority import become_workload_thread

# include/uapi/linux/nvme_ioctl.h: struct nvme_passthru_cmd (72 bytes) and
# NVME_IOCTL_IO_CMD = _IOWR('N', 0x43, struct nvme_passthru_cmd).
PASSTHRU_CMD = struct.Struct("=BBHIIIQQIIIIIIIIII")
NVME_IOCTL_IO_CMD = (3 << 30) | (PASSTHRU_CMD.size << 16) | (ord("N") << 8) | 0x43
NVME_CMD_READ = 0x02
COMMAND_TIMEOUT_MS = 30_000


def read_command(nsid: int, slba: int, blocks: int, buffer_addr: int, data_len: int) -> bytearray:
    """One Read command (NVMe NVM command set, opcode 02h) as the ioctl's argument:
    CDW10/11 the starting LBA, CDW12 bits 15:0 the number of logical blocks minus one."""
    if blocks < 1 or blocks > 1 << 16:
        raise ValueError(f"blocks must be 1..65536, got {blocks}")
    return bytearray(
        PASSTHRU_CMD.pack(
            NVME_CMD_READ,
            0,
            0,
            nsid,
            0,
            0,
            0,
            buffer_addr,
            0,
            data_len,
            slba & 0xFFFFFFFF,
            slba >> 32,
            blocks - 1,
            0,
            0,
            0,
            COMMAND_TIMEOUT_MS,
            0,
        )
    )


@dataclass
class PassthruStats:
    """What the readers did: commands completed, how many failed (an NVMe status or an
    errno), and the longest command in seconds (how long each held the head's SRCU).
    ``stuck``: readers still in their command when ``stop`` gave up waiting (each holds the
    head's SRCU, so a namespace removal or controller deletion waits for it)."""

    commands: int = 0
    errors: int = 0
    max_command_s: float = 0.0
    total_command_s: float = 0.0
    stuck: int = 0

    @property
    def mean_command_s(self) -> float:
        return self.total_command_s / self.commands if self.commands else 0.0


@dataclass
class PassthruReaders:
    """``threads`` threads, each issuing one synchronous Read of ``read_bytes`` at a random
    offset of the head at a time, until ``stop``. ``nsid`` is the namespace ID; the head's
    logical block size (bytes) and capacity (logical blocks) come from sysfs."""

    head_dev: str
    nsid: int
    lba_bytes: int
    capacity_lbas: int
    threads: int = 1
    read_bytes: int = 65536
    seed: int = 1
    stats: PassthruStats = field(default_factory=PassthruStats)
    window: PassthruStats = field(default_factory=PassthruStats)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        blocks = max(1, self.read_bytes // self.lba_bytes)
        if self.capacity_lbas <= blocks:
            raise ValueError(f"{self.head_dev} holds {self.capacity_lbas} blocks, too few")
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._loop, args=(random.Random(self.seed + index), blocks), daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def _loop(self, rng: random.Random, blocks: int) -> None:
        become_workload_thread()  # the workload, behind the harness's steps
        data_len = blocks * self.lba_bytes
        buffer = ctypes.create_string_buffer(data_len)
        try:
            fd = os.open(self.head_dev, os.O_RDONLY)
        except OSError:
            with self._lock:
                self.stats.errors += 1
            return
        try:
            while not self._stop.is_set():
                slba = rng.randrange(0, self.capacity_lbas - blocks)
                command = read_command(self.nsid, slba, blocks, ctypes.addressof(buffer), data_len)
                started = time.monotonic()
                try:
                    status = fcntl.ioctl(fd, NVME_IOCTL_IO_CMD, command, True)
                except OSError:
                    status = -1
                    time.sleep(0.01)  # no path right now: do not spin
                took = time.monotonic() - started
                with self._lock:
                    for stats in (self.stats, self.window):
                        stats.commands += 1
                        stats.errors += 1 if status != 0 else 0
                        stats.total_command_s += took
                        stats.max_command_s = max(stats.max_command_s, took)
        finally:
            os.close(fd)

    def take_window(self) -> PassthruStats:
        """The commands completed since the last call (or the start), and a new window."""
        with self._lock:
            taken, self.window = self.window, PassthruStats()
        return taken

    def stop(self, timeout_s: float = 35.0) -> PassthruStats:
        """Stop the readers (each finishes its command first: up to the command timeout);
        the totals, with ``stuck`` the readers still in a command after ``timeout_s``
        seconds (waited for in turn)."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=timeout_s)
        self.stats.stuck = sum(worker.is_alive() for worker in self._workers)
        return self.stats

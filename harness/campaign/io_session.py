"""The campaign's IO: one fio on the multipath head for the whole campaign (with the
passthrough readers and the stale-write check when configured), cut into windows.

Each iteration owns the time window between two status snapshots of fio, so its IO counts,
errors, verify failures and p99 are exact for that window without a restart (a restart cost
~1.4 s per iteration under TCG). fio is started again only when it exited or the head it
opened is gone (another gendisk: /sys/block/<head>/diskseq).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.bed.blocked import describe_blocked
from harness.bed.host import MultipathDevice
from harness.bed.testbed import NSID, Testbed
from harness.campaign.fio_stream import FioSnapshot, FioStream, FioStreamError, window_result
from harness.campaign.passthru import PassthruReaders
from harness.campaign.stale_write import BLOCK_BYTES, StaleWriteChecker, tail_region
from harness.campaign.workload import FioJob, FioResult
from harness.config.campaign import CampaignConfig
from harness.core.errors import HarnessError
from harness.core.kernelfs import KernelFs

IO_START_TIMEOUT_S = 30.0  # a failure bound, not a wait: IO usually flows within 1-2 s


@dataclass
class IoSession:
    """The campaign's running IO: one fio (and the passthrough readers) on one head.

    ``head`` is (head name, diskseq) of the gendisk fio opened; ``last`` the snapshot that
    ends the previous window (the start of the next one); ``number`` counts fio starts.
    """

    fio: FioStream
    readers: PassthruReaders | None
    head: tuple[str, str]
    last: FioSnapshot
    number: int
    start_s: float  # starting fio until IO flowed on the paths, seconds
    stale: StaleWriteChecker | None = None  # workload.stale_write_check
    stuck_readers: int = 0  # passthrough readers still in a command after stop()'s timeout

    def stop(self) -> tuple[int | None, bool]:
        """Stop the readers and fio; (fio's exit status, killed). Readers that stay in
        their command past PassthruReaders.stop's timeout are counted in ``stuck_readers``.
        fio stops even when stopping the readers was interrupted (their wait can be long:
        a Ctrl-C then)."""
        try:
            if self.readers is not None:
                self.stuck_readers = self.readers.stop().stuck
            if self.stale is not None:
                self.stale.stop()  # bounded: a worker wedged in an IO is left to end with it
        finally:
            stopped = self.fio.stop()
        return stopped


class CampaignIo:
    """The running IO of a campaign on ``bed`` (as root, in the VM): ``ensure`` starts fio
    (again) when needed, ``close_window`` ends an iteration's window, ``stop`` ends it all.
    ``starts`` counts fio starts (1: the first); their outputs go to ``outdir``/fio[-N].
    ``stuck_readers`` counts the passthrough readers that did not leave their command when
    a session stopped (a kernel that never completes it: docs/kernels.md)."""

    def __init__(self, bed: Testbed, config: CampaignConfig, outdir: Path, run_id: str) -> None:
        self.bed = bed
        self.config = config
        self.outdir = outdir
        self.run_id = run_id
        self.session: IoSession | None = None
        self.starts = 0
        self.stuck_readers = 0

    def head_key(self, device: MultipathDevice) -> tuple[str, str]:
        """(head name, diskseq): a new gendisk under the same name has another diskseq
        (block/genhd.c:inc_diskseq, 5.15+)."""
        diskseq = self.bed.kfs.read(f"/sys/block/{device.head}/diskseq", default="")
        return device.head, diskseq.strip()

    def ensure(self, device: MultipathDevice) -> IoSession:
        """The running IO session, started (again) when there is none, fio exited, or the
        head fio opened is not the head now. ``device`` has passed the interlock."""
        io = self.session
        if io is not None and io.fio.running() and io.head == self.head_key(device):
            return io
        if io is not None:
            self._stop(io)
        return self._start(device)

    def _start(self, device: MultipathDevice) -> IoSession:
        """Start fio (and the passthrough readers) on the head; returns once IO completes on
        the paths, with the first snapshot. Raises HarnessError when fio exits or no IO flows
        within IO_START_TIMEOUT_S."""
        self.starts += 1
        workdir = self.outdir / ("fio" if self.starts == 1 else f"fio-{self.starts}")
        started = time.monotonic()
        stream = FioStream(self.fio_job(device), workdir)
        try:
            wait_io_flowing(stream, lambda: self.progress()[0])
            readers = self.start_passthru(device)
            stale = self._start_stale_write(device)
            first = stream.snapshot()
        except BaseException:
            stream.stop()
            raise
        self.session = IoSession(
            fio=stream,
            readers=readers,
            head=self.head_key(device),
            last=first,
            number=self.starts,
            start_s=time.monotonic() - started,
            stale=stale,
        )
        return self.session

    def close_window(self, io: IoSession, error: str, hang: bool) -> tuple[FioResult | None, str]:
        """End the iteration's window: fio's status now (or, on a hang, after stopping it),
        the window's result from the previous snapshot. A fio that exited or does not answer
        is stopped (the next iteration starts a new one) and named in the error."""
        start = io.last
        exit_code: int | None = None
        killed = False
        try:
            if hang:
                raise FioStreamError("the kernel stopped completing IO")
            end = io.fio.snapshot()
        except FioStreamError as exc:
            exit_code, killed = self._stop(io)
            end = io.fio.snapshots[-1] if io.fio.snapshots else start
            if not hang:
                error = error or str(exc)
        io.last = end
        lines = io.fio.window_lines(start, end if self.session is not None else None)
        return window_result(start, end, lines, exit_code, killed), error

    def stop(self) -> None:
        if self.session is not None:
            with contextlib.suppress(HarnessError):
                self._stop(self.session)
            self.session = None

    def _stop(self, io: IoSession) -> tuple[int | None, bool]:
        """Stop ``io``; (fio's exit status, killed). Once it stopped, the session no longer
        runs and its stuck readers are counted; a stop that raised keeps the session, for
        the teardown's ``stop`` to try again."""
        stopped = io.stop()
        self.session = None
        self.stuck_readers += io.stuck_readers
        return stopped

    def start_passthru(self, device: MultipathDevice) -> PassthruReaders | None:
        """Start the passthrough readers on the (interlock-checked) head, if configured."""
        return start_passthru(self.bed, self.config, device)

    def stale_write_region(self, device: MultipathDevice) -> tuple[int, int] | None:
        """(offset in bytes, logical block size) of the stale-write check's region, the
        head's last whole MiBs (harness/stale_write.py tail_region); None when it is off."""
        wcfg = self.config.workload
        if not wcfg.stale_write_check:
            return None
        head = f"/sys/block/{device.head}"
        lba_bytes = int(self.bed.kfs.read(f"{head}/queue/logical_block_size", default="0"))
        sectors = int(self.bed.kfs.read(f"{head}/size", default="0"))
        if lba_bytes <= 0 or sectors <= 0:
            raise HarnessError(f"{device.head_dev}: no block size or capacity in sysfs")
        block = max(BLOCK_BYTES, lba_bytes)
        try:
            offset, _ = tail_region(sectors * 512, wcfg.stale_write_blocks, block)
        except ValueError as exc:
            raise HarnessError(str(exc), hint="lower workload.stale_write_blocks") from None
        return offset, lba_bytes

    def _start_stale_write(self, device: MultipathDevice) -> StaleWriteChecker | None:
        """Start the stale-write check on the (interlock-checked) head, if configured."""
        region = self.stale_write_region(device)
        if region is None:
            return None
        checker = StaleWriteChecker(
            path=device.head_dev,
            offset=region[0],
            blocks=self.config.workload.stale_write_blocks,
            run_id=self.run_id,
            lba_bytes=region[1],
            block_bytes=max(BLOCK_BYTES, region[1]),
        )
        checker.start()
        return checker

    def path_ios(self, device: MultipathDevice | None) -> list[int]:
        """Each path's completed IOs on ``device`` (the topology read at the window's
        start: the warmup changes none), Testbed.path_ios."""
        return self.bed.path_ios(device)

    def progress(self) -> tuple[int, int]:
        """(IOs completed, in flight) summed over the per-path disks: the head itself keeps
        no IO statistics on 6.1 (it is bio-based), the paths do."""
        assert self.bed.host is not None
        done = inflight = 0
        for ctrl in self.bed.host.controllers(self.bed.nqn):
            for disk in ctrl.path_disks:
                completed, active = self.bed.host.io_completed(disk)
                done += completed
                inflight += active
        return done, inflight

    def fio_job(self, device: MultipathDevice) -> FioJob:
        stale_region = self.stale_write_region(device)  # fio stays below it
        return fio_job(self.bed, self.config, device, stale_region[0] if stale_region else None)


def wait_io_flowing(fio: FioStream, completed: Callable[[], int]) -> None:
    """Until the paths completed 100 IOs more than when called (``completed``: IOs completed
    on the per-path disks so far). HarnessError when fio exits first or after
    IO_START_TIMEOUT_S seconds."""
    deadline = time.monotonic() + IO_START_TIMEOUT_S
    baseline = completed()
    while time.monotonic() < deadline:
        if not fio.running():
            raise HarnessError(f"fio exited at start: see {fio.stderr_path}")
        if completed() > baseline + 100:
            return
        time.sleep(0.02)
    raise HarnessError(f"no IO on the head {IO_START_TIMEOUT_S:g} s after fio started")


def fio_job(
    bed: Testbed, config: CampaignConfig, device: MultipathDevice, below_bytes: int | None = None
) -> FioJob:
    """The config's fio job on ``device``'s head (which the caller checked with the device
    interlock), over the whole head or its first ``below_bytes``. HarnessError when sysfs
    shows no capacity (/sys/block/<head>/size, 512-byte sectors)."""
    wcfg = config.workload
    sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size", default="0"))
    if sectors <= 0:
        raise HarnessError(f"{device.head_dev} has no capacity")
    return FioJob(
        filename=device.head_dev,
        size_bytes=below_bytes if below_bytes is not None else sectors * 512,
        rw=wcfg.rw,
        bs=wcfg.bs,
        iodepth=wcfg.iodepth,
        numjobs=wcfg.numjobs,
        verify=wcfg.verify,
    )


def start_passthru(
    bed: Testbed, config: CampaignConfig, device: MultipathDevice
) -> PassthruReaders | None:
    """Start the config's passthrough readers (workload.passthru_readers, _kib) on
    ``device``'s head, which the caller checked with the device interlock; None when the
    config has none. HarnessError when sysfs shows no block size or capacity."""
    wcfg = config.workload
    if wcfg.passthru_readers <= 0:
        return None
    lba_bytes = int(bed.kfs.read(f"/sys/block/{device.head}/queue/logical_block_size", default="0"))
    sectors = int(bed.kfs.read(f"/sys/block/{device.head}/size", default="0"))
    if lba_bytes <= 0 or sectors <= 0:
        raise HarnessError(f"{device.head_dev}: no block size or capacity in sysfs")
    readers = PassthruReaders(
        head_dev=device.head_dev,
        nsid=NSID,
        lba_bytes=lba_bytes,
        capacity_lbas=sectors * 512 // lba_bytes,
        threads=wcfg.passthru_readers,
        read_bytes=wcfg.passthru_kib * 1024,
        seed=config.campaign.seed,
    )
    readers.start()
    return readers


def stuck_readers_error(stuck: int, kfs: KernelFs) -> str:
    """The teardown error for ``stuck`` passthrough readers still in their command after
    their stop timeout, with the tasks blocked in the kernel now."""
    return (
        f"{stuck} passthrough reader(s) still in their command after the stop timeout (each "
        "holds the head's SRCU: deletions wait for it; docs/kernels.md, passthrough after a "
        f"controller deletion): {describe_blocked(kfs)}"
    )

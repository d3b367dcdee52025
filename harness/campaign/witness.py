"""The block-layer witness of the race: bios that failed the end-of-device check on a
per-path disk whose capacity was 0, seen by BPF instead of the kernel log.

Why: since v6.17 (upstream ab073abf6d97) ``block/blk-core.c:bio_check_eod()`` fails a bio to
a zero-capacity disk *before* its ``pr_info_ratelimited()``: the race still gives the
application EIO, but the kernel prints nothing (harness.kernels.source_check: "fails it
silently"). Where it does print, the print is ratelimited (10 lines per 5 s), so a burst
hides most failed bios. This witness does not depend on printk.

What it sees (a bpftrace program, kprobes with BTF types):

- ``kprobe:submit_bio_noacct``: a bio that carries data (``bi_iter.bi_size > 0``) is noted
  for this thread (one map update per bio);
- ``kprobe:bio_endio`` on the same thread and bio, before ``submit_bio_noacct()`` returned:
  the bio was ended inside the submission, i.e. by one of its checks; if its disk's capacity
  (``bio->bi_bdev->bd_nr_sectors``) is 0 *now*, that is ``bio_check_eod()`` (``end_io:
  bio->bi_status = BLK_STS_IOERR; bio_endio(bio);`` in 6.1, ``bio_endio_status(bio,
  status)`` in 7.x). The capacity is read at the end, not at entry: with a controller
  deletion it drops to 0 between the two (microseconds, more under the BPF widener), and a
  check at entry missed 5 of 6 race iterations of race-ctrl-delete-widened on 6.1.192 that
  the kernel line saw. One line per bio:
  time (CLOCK_MONOTONIC ns, the clock of time.monotonic()), disk, sector, sectors, status;
- ``kretprobe:submit_bio_noacct`` forgets the note. With the fix, BIO_REMAPPED makes
  ``submit_bio_noacct()`` skip the check, the bio is queued (``current->bio_list``) and
  returns unended: nothing is printed;
- ``interval:ms:25``: a heartbeat, so a reader knows every event before a time was printed.

An event counts for the race when its disk is a per-path disk (``nvmeXcYnZ``: hidden, only
the multipath head remaps bios to it) and its status is BLK_STS_IOERR (10 in every kernel
this harness knows). Events elsewhere are counted apart (``other_events``).

Where bpftrace, BTF (``/sys/kernel/btf/vmlinux``) or kprobes are missing, or bpftrace
refuses the program, :func:`unavailable_reason` / :meth:`Witness.wait_attached` say why in
one line and the campaign counts the kernel line only (and says so, once).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from harness.bed.cleanup import WITNESS_MARK
from harness.core.errors import HarnessError, ToolError
from harness.core.procs import require_tool

PROCESS_MARK = WITNESS_MARK  # in bpftrace's -e program: clean finds a leftover
READY_MARK = "WITNESS READY"
EVENT_MARK = "WITNESS EOD"
TICK_MARK = "WITNESS TICK"
BLK_STS_IOERR = 10  # include/linux/blk_types.h, 6.1 to 7.3
PER_PATH_DISK = re.compile(r"nvme\d+c\d+n\d+")
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
KPROBE_EVENTS = Path("/sys/bus/event_source/devices/kprobe")
ATTACH_TIMEOUT_S = 120.0  # the widener's first attach took 30 s under TCG
STOP_TIMEOUT_S = 30.0
CATCH_UP_S = 0.05  # events before an instant are read once a tick this much later is
CATCH_UP_TIMEOUT_S = 20.0  # a burst of hundreds of events under TCG took bpftrace over 5 s
POLL_S = 0.05  # waiting for bpftrace to attach
TAKE_POLL_S = 0.01  # a take's wait for the tick after its cut: ticks come every TICK_MS
TICK_MS = 25

PROGRAM = f"""// {PROCESS_MARK}: harness clean finds a leftover bpftrace by this line
BEGIN {{ printf("{READY_MARK} %llu\\n", nsecs); }}

kprobe:submit_bio_noacct /((struct bio *)arg0)->bi_iter.bi_size > 0/
{{
  @pending[tid] = arg0;
}}

kprobe:bio_endio /@pending[tid] == arg0/
{{
  $bio = (struct bio *)arg0;
  if ($bio->bi_bdev->bd_nr_sectors == 0) {{
    printf("{EVENT_MARK} %llu %s %llu %u %u\\n", nsecs, $bio->bi_bdev->bd_disk->disk_name,
           $bio->bi_iter.bi_sector, $bio->bi_iter.bi_size >> 9, $bio->bi_status);
  }}
  delete(@pending[tid]);
}}

kretprobe:submit_bio_noacct /@pending[tid]/ {{ delete(@pending[tid]); }}

interval:ms:{TICK_MS} {{ printf("{TICK_MARK} %llu\\n", nsecs); }}

END {{ clear(@pending); }}
"""

_EVENT_RE = re.compile(rf"^{EVENT_MARK} (\d+) (\S+) (\d+) (\d+) (\d+)$")
_TICK_RE = re.compile(rf"^(?:{TICK_MARK}|{READY_MARK}) (\d+)$")
# bpftrace's own line when the perf ring buffer was full and it dropped events (a heartbeat
# or a failed bio: it cannot say which)
_LOST_RE = re.compile(r"^Lost (\d+) events$")
# Perf ring buffer pages per CPU (bpftrace's default 64 dropped 1,060 events in 10
# iterations of Debian's 7.1.3 under a loaded TCG host: a burst of hundreds of failed bios
# while bpftrace waited for a CPU). 1024 pages = 4 MiB per CPU.
PERF_RB_PAGES = 1024
# bpftrace's scheduling priority in the guest: it competes for two vCPUs with fio, the
# passthrough readers, nvmet and the kernel log's flood, and at the default priority it fell
# more than CATCH_UP_TIMEOUT_S behind on Debian's 7.1.3 image (its late events were counted
# in the next iteration). -10: ahead of the workload, behind nothing the kernel needs.
NICE = -10


@dataclass(frozen=True)
class WitnessEvent:
    """One bio the end-of-device check failed on a zero-capacity disk.

    ``ts_s``: CLOCK_MONOTONIC seconds (time.monotonic()'s clock); ``sector`` and
    ``sectors`` in 512-byte sectors; ``status``: blk_status_t (10 is BLK_STS_IOERR)."""

    ts_s: float
    disk: str
    sector: int
    sectors: int
    status: int

    @property
    def is_race(self) -> bool:
        """A per-path disk failing the bio with BLK_STS_IOERR: the race's bio."""
        return self.status == BLK_STS_IOERR and PER_PATH_DISK.fullmatch(self.disk) is not None


def parse_event(line: str) -> WitnessEvent | None:
    """The event of one output line, or None for any other line."""
    match = _EVENT_RE.match(line.strip())
    if match is None:
        return None
    ns, disk, sector, sectors, status = match.groups()
    return WitnessEvent(int(ns) / 1e9, disk, int(sector), int(sectors), int(status))


def parse_lost(line: str) -> int:
    """The events bpftrace says it dropped in one output line (0 for any other line)."""
    match = _LOST_RE.match(line.strip())
    return int(match.group(1)) if match else 0


def parse_tick(line: str) -> float | None:
    """The time (CLOCK_MONOTONIC seconds) of a heartbeat or ready line, else None."""
    match = _TICK_RE.match(line.strip())
    return int(match.group(1)) / 1e9 if match else None


@dataclass
class WitnessWindow:
    """What the witness saw between two instants (one iteration).

    ``events``: race events (per-path disk, BLK_STS_IOERR); ``disks``: their disks in order
    of first event; ``first_ts_s``: the first one's time; ``other_events``: failed bios on
    other disks or with another status; ``lost``: events bpftrace dropped (ring buffer full)
    while this window was read; ``caught_up``: bpftrace printed a heartbeat after the
    window's end before it was taken. A window with ``lost`` or not ``caught_up`` is not
    complete: a race bio may be missing from it (or counted in the next one)."""

    events: int = 0
    disks: list[str] = field(default_factory=list)
    first_ts_s: float | None = None
    other_events: int = 0
    examples: list[str] = field(default_factory=list)  # a few events, as printed
    lost: int = 0
    caught_up: bool = True

    @property
    def complete(self) -> bool:
        """Whether "no race bio in this window" is a claim."""
        return self.caught_up and self.lost == 0

    def add(self, event: WitnessEvent) -> None:
        """Count ``event``."""
        if not event.is_race:
            self.other_events += 1
            return
        self.events += 1
        if event.disk not in self.disks:
            self.disks.append(event.disk)
        if self.first_ts_s is None:
            self.first_ts_s = event.ts_s
        if len(self.examples) < 3:
            self.examples.append(
                f"bpf: {event.disk}: sector {event.sector}, {event.sectors} sectors, "
                f"status {event.status} (capacity 0)"
            )


def bpftrace_environment(modules_root: Path = Path("/lib/modules")) -> dict[str, str]:
    """The environment bpftrace runs in. A kernel built from a tree (nvmf-harness
    build-kernel) boots with ``/lib/modules/<release>/build`` pointing at its kdir, which has
    the generated headers but not the source's: bpftrace 0.17 then tries to compile
    ``include/linux/kconfig.h`` and fails. The kdir's ``source`` link names the source tree:
    BPFTRACE_KERNEL_SOURCE and BPFTRACE_KERNEL_BUILD point bpftrace at both."""
    env = dict(os.environ)
    env.setdefault("BPFTRACE_PERF_RB_PAGES", str(PERF_RB_PAGES))
    build = modules_root / platform.release() / "build"
    if (build / "include/linux/kconfig.h").is_file():
        return env
    if (build / "source/include/linux/kconfig.h").is_file():
        env["BPFTRACE_KERNEL_SOURCE"] = str((build / "source").resolve())
        env["BPFTRACE_KERNEL_BUILD"] = str(build.resolve())
    return env


def unavailable_reason(
    btf: Path = BTF_VMLINUX, kprobes: Path = KPROBE_EVENTS, bpftrace: str = "bpftrace"
) -> str | None:
    """Why the witness cannot run in this kernel (one line), or None when it may."""
    try:
        require_tool(bpftrace)
    except ToolError as exc:
        return str(exc)
    if not btf.exists():
        return f"no BTF ({btf}): bpftrace cannot read struct bio (CONFIG_DEBUG_INFO_BTF)"
    if not kprobes.exists():
        return f"no kprobes ({kprobes}: CONFIG_KPROBES)"
    return None


class Witness:
    """Runs the witness's bpftrace for a campaign; reads its events per window.

    ``launch()`` starts bpftrace (it compiles and attaches while the test bed is built),
    ``wait_attached()`` waits for it, ``take(end_s)`` returns the window from the previous
    ``take`` (or the attach) to ``end_s``, ``stop()`` ends bpftrace. As a context manager,
    bpftrace never outlives the ``with`` block. Raises ToolError when bpftrace cannot start
    or attach (the message is bpftrace's last line).
    """

    def __init__(
        self,
        output: Path,
        bpftrace: str = "bpftrace",
        attach_timeout_s: float = ATTACH_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.output = output
        self.bpftrace = bpftrace
        self.attach_timeout_s = attach_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.total = WitnessWindow()  # every window taken so far
        self._proc: subprocess.Popen[bytes] | None = None
        # The output, opened once and read on from where the last read ended: it is on the
        # run's shared directory (9p in the VM), where each open and close is a round trip
        # to the host, and the take polls it every TAKE_POLL_S.
        self._stream: BinaryIO | None = None
        self._offset = 0  # bytes of the output read so far
        self._partial = ""  # a line not yet ended
        self._last_tick_s = 0.0
        self._pending: list[WitnessEvent] = []  # read, not yet in a window (later than it)
        self._lost = 0  # events bpftrace dropped since the last window was taken
        self._window_start_s = 0.0

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def launch(self) -> None:
        """Start bpftrace without waiting for it to attach."""
        if self._proc is not None:
            raise ToolError("the witness is already running")
        binary = require_tool(self.bpftrace)
        self.output.parent.mkdir(parents=True, exist_ok=True)
        with self.output.open("wb") as out:
            self._proc = subprocess.Popen(
                [binary, "-B", "line", "-e", PROGRAM],
                env=bpftrace_environment(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        with contextlib.suppress(OSError):  # not root: the default priority
            os.setpriority(os.PRIO_PROCESS, self._proc.pid, NICE)

    def wait_attached(self) -> None:
        """Wait for bpftrace's ready line; on failure bpftrace is killed and ToolError
        raised with its last line."""
        deadline = time.monotonic() + self.attach_timeout_s
        try:
            while True:
                self._read()
                if self._last_tick_s:
                    self._window_start_s = self._last_tick_s
                    return
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise ToolError(
                        f"bpftrace exited ({self._proc.returncode}) before attaching: "
                        f"{self._last_line()}",
                        hint=f"output in {self.output}",
                    )
                if time.monotonic() > deadline:
                    raise ToolError(f"bpftrace did not attach in {self.attach_timeout_s:g} s")
                time.sleep(POLL_S)
        except BaseException:
            self._kill()
            raise

    def take(self, end_s: float) -> WitnessWindow:
        """The events from the end of the previous window to ``end_s`` (time.monotonic()
        seconds). Waits (at most CATCH_UP_TIMEOUT_S) until bpftrace printed a heartbeat
        CATCH_UP_S after ``end_s``, so no event of the window is still in its buffers.
        Raises ToolError when bpftrace died."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
        caught_up = False
        while True:
            self._read()
            if self._last_tick_s >= end_s + CATCH_UP_S:
                caught_up = True
                break
            if not self.running:
                raise ToolError(f"the witness's bpftrace ended: {self._last_line()}")
            if time.monotonic() > deadline:
                break  # a stalled bpftrace: take what is there; later events go later
            time.sleep(TAKE_POLL_S)
        window = WitnessWindow(lost=self._lost, caught_up=caught_up)
        self.total.lost += self._lost
        self._lost = 0
        later = []
        for event in self._pending:
            if event.ts_s < end_s:
                window.add(event)
                self.total.add(event)
            else:
                later.append(event)
        self._pending = later
        self._window_start_s = end_s
        return window

    def stop(self) -> None:
        """Stop bpftrace (SIGINT; SIGKILL when it does not end in stop_timeout_s)."""
        proc = self._proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            pass
        finally:
            self._kill()

    def _read(self) -> None:
        """Parse what bpftrace appended to the output since the last read."""
        try:
            if self._stream is None:
                stream = self.output.open("rb")
                try:
                    stream.seek(self._offset)
                except OSError:
                    stream.close()
                    raise
                self._stream = stream
            chunk = self._stream.read()
        except OSError:
            # a failed read may have moved the position past bytes it then dropped: the
            # next read opens the file again at what was read so far
            if self._stream is not None:
                self._stream.close()
                self._stream = None
            return
        self._offset += len(chunk)
        text = self._partial + chunk.decode(errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        for line in lines:
            event = parse_event(line)
            if event is not None:
                self._pending.append(event)
                continue
            tick = parse_tick(line)
            if tick is not None:
                self._last_tick_s = max(self._last_tick_s, tick)
                continue
            self._lost += parse_lost(line)

    def _last_line(self) -> str:
        try:
            text = self.output.read_text(errors="replace")
        except OSError:
            return "no output"
        lines = [line for line in text.splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    def _kill(self) -> None:
        if self._stream is not None:  # a later read opens it again where this one ended
            self._stream.close()
            self._stream = None
        proc = self._proc
        self._proc = None
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.stop_timeout_s)

    def __enter__(self) -> Witness:
        self.launch()
        self.wait_attached()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_or_say_why(output: Path, bpftrace: str = "bpftrace") -> tuple[Witness | None, str]:
    """A launched Witness, or None and the one-line reason it cannot run here."""
    reason = unavailable_reason(bpftrace=bpftrace)
    if reason is not None:
        return None, reason
    witness = Witness(output, bpftrace=bpftrace)
    try:
        witness.launch()
    except HarnessError as exc:
        return None, str(exc)
    return witness, ""

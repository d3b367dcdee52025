"""The race widener: a bpftrace program that holds bios inside the multipath race window.

nvme_ns_head_submit_bio() fires ``tracepoint:block:block_bio_remap`` after it has moved a bio
to a path's disk (bio_set_dev) and before it calls submit_bio_noacct(), which is where an
unfixed kernel checks the bio against the path's capacity. A busy-wait in that tracepoint
makes the window between choosing a path and the capacity check last ``delay_us``, so a
concurrent namespace removal (set_capacity(0)) lands inside it far more often.

Pitfalls measured on 6.1 (docs/measurements/2026-11-24-first-probes.md): a loop that only
counts is deleted by LLVM, so every turn reads ``nsecs`` (a helper call); the verifier
refuses 4,000+ such turns and takes 1,000, so the delay is "up to delay_us, or 1,000 clock
reads, whichever ends first". The delay actually spent is measured and reported.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from harness.bed.cleanup import WIDENER_MARK
from harness.campaign.witness import bpftrace_environment
from harness.core.errors import ConfigError, ToolError
from harness.core.procs import require_tool

TRACEPOINT = "tracepoint:block:block_bio_remap"
MAX_TURNS = 1000  # the verifier takes 1,000 turns with a helper call; 4,000 it refuses
READY_MARK = "WIDENER READY"
STATS_MARK = "WIDENER STATS"
END_MARK = "WIDENER END"
MAPS = (
    "@seen",
    "@delayed",
    "@turn_limited",
    "@delay_sum_us",
    "@delay_max_us",
    "@delay_hist_us",
)
ATTACH_TIMEOUT_S = 120.0  # under TCG the first attach took 30 s, later ones 7 s
STOP_TIMEOUT_S = 30.0
POLL_S = 0.1

_VALUE_RE = re.compile(r"^(@\w+): (\d+)$")
_BUCKET_RE = re.compile(r"^\[(\d+[KMGTP]?)(?:, (\d+[KMGTP]?))?[)\]]\s+(\d+)\s+\|")
_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}


@dataclass(frozen=True)
class WidenerConfig:
    """How long to hold a bio and how many bios to hold."""

    delay_us: int = 500
    sample_every: int = 1  # hold every Nth remapped bio (1: all)
    max_turns: int = MAX_TURNS
    old_dev: int | None = None  # only bios remapped from this dev_t (kernel encoding)

    def __post_init__(self) -> None:
        if not 1 <= self.delay_us <= 1_000_000:
            raise ConfigError(f"widener delay_us must be 1..1000000, not {self.delay_us}")
        if self.sample_every < 1:
            raise ConfigError(f"widener sample_every must be >= 1, not {self.sample_every}")
        if not 1 <= self.max_turns <= MAX_TURNS:
            raise ConfigError(
                f"widener max_turns must be 1..{MAX_TURNS}, not {self.max_turns}",
                hint="the BPF verifier refuses longer loops with a helper call",
            )


@dataclass(frozen=True)
class WidenerStats:
    """What the widener did, from the maps bpftrace printed when it stopped."""

    bios_seen: int
    bios_delayed: int
    bios_turn_limited: int  # held bios whose loop ran out of turns before delay_us
    delay_sum_us: int
    max_delay_us: int
    histogram: tuple[tuple[int, int, int], ...]  # (low_us, high_us exclusive, count)

    @property
    def mean_delay_us(self) -> float:
        return self.delay_sum_us / self.bios_delayed if self.bios_delayed else 0.0

    @property
    def median_bucket_us(self) -> tuple[int, int] | None:
        """The power-of-two histogram bucket that holds the median delay."""
        total = sum(count for _, _, count in self.histogram)
        if total == 0:
            return None
        seen = 0
        for low, high, count in self.histogram:
            seen += count
            if seen * 2 >= total:
                return (low, high)
        return None


def kernel_devt(major: int, minor: int) -> int:
    """dev_t as the kernel (and its tracepoints) encode it: MKDEV = major << 20 | minor."""
    return (major << 20) | minor


PROCESS_MARK = WIDENER_MARK  # in the command line (-e program) of our bpftrace


def program_text(config: WidenerConfig) -> str:
    """The bpftrace program for ``config``."""
    delay_ns = config.delay_us * 1000
    predicate = f" /args->old_dev == {config.old_dev}/" if config.old_dev is not None else ""
    hold = [
        "$t0 = nsecs;",
        "$i = 0;",
        f"while ($i < {config.max_turns}) {{",
        f"  if (nsecs - $t0 >= {delay_ns}) {{ break; }}",
        "  $i++;",
        "}",
        "$us = (nsecs - $t0) / 1000;",
        "@delayed = count();",
        f"if ($i >= {config.max_turns}) {{ @turn_limited = count(); }}",
        "@delay_sum_us = sum($us);",
        "@delay_max_us = max($us);",
        "@delay_hist_us = hist($us);",
    ]
    if config.sample_every > 1:
        body = [
            "$n = @turn;",
            "@turn = $n + 1;",
            f"if ($n % {config.sample_every} == 0) {{",
            *[f"  {line}" for line in hold],
            "}",
        ]
    else:
        body = hold
    maps = [*MAPS, "@turn"] if config.sample_every > 1 else list(MAPS)
    lines = [
        f"// {PROCESS_MARK}: harness clean finds a leftover bpftrace by this line",
        f'BEGIN {{ printf("{READY_MARK}\\n"); }}',
        "",
        f"{TRACEPOINT}{predicate}",
        "{",
        "  @seen = count();",
        *[f"  {line}" for line in body],
        "}",
        "",
        "END",
        "{",
        f'  printf("{STATS_MARK}\\n");',
        *[f"  print({name});" for name in MAPS],
        f'  printf("{END_MARK}\\n");',
        *[f"  clear({name});" for name in maps],
        "}",
    ]
    return "\n".join(lines) + "\n"


def _number(text: str) -> int:
    suffix = text[-1] if text[-1] in _SUFFIX else ""
    digits = text[: -1 if suffix else None]
    return int(digits) * _SUFFIX[suffix]


def parse_output(text: str) -> WidenerStats:
    """Parse what bpftrace printed between STATS_MARK and END_MARK at exit."""
    lines = text.splitlines()
    try:
        start = lines.index(STATS_MARK)
        end = lines.index(END_MARK, start)
    except ValueError as exc:
        raise ToolError(f"bpftrace printed no widener statistics: {_last_line(text)}") from exc
    values: dict[str, int] = {}
    buckets: list[tuple[int, int, int]] = []
    for line in lines[start + 1 : end]:
        value = _VALUE_RE.match(line.strip())
        if value:
            values[value.group(1)] = int(value.group(2))
            continue
        bucket = _BUCKET_RE.match(line.strip())
        if bucket:
            low = _number(bucket.group(1))
            high = _number(bucket.group(2)) if bucket.group(2) else low + 1
            buckets.append((low, high, int(bucket.group(3))))
    return WidenerStats(
        bios_seen=values.get("@seen", 0),
        bios_delayed=values.get("@delayed", 0),
        bios_turn_limited=values.get("@turn_limited", 0),
        delay_sum_us=values.get("@delay_sum_us", 0),
        max_delay_us=values.get("@delay_max_us", 0),
        histogram=tuple(buckets),
    )


class Widener:
    """Runs the widener's bpftrace for the duration of a fault run.

    ``start()`` returns once the probes are attached; ``stop()`` ends bpftrace and returns its
    statistics. As a context manager, bpftrace never outlives the ``with`` block.
    """

    def __init__(
        self,
        config: WidenerConfig | None = None,
        output_dir: Path | None = None,
        attach_timeout_s: float = ATTACH_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        bpftrace: str = "bpftrace",
    ) -> None:
        self.config = config or WidenerConfig()
        self.output_dir = output_dir
        self.attach_timeout_s = attach_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.bpftrace = bpftrace
        self.output_path: Path | None = None
        self.stats: WidenerStats | None = None
        self._text = ""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def output_text(self) -> str:
        """What bpftrace printed (kept after stop() even when its temporary file is gone)."""
        if self.output_path is None:
            return self._text
        try:
            return self.output_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self) -> None:
        """Start bpftrace and wait until its probe is attached."""
        self.launch()
        self.wait_attached()

    def launch(self) -> None:
        """Start bpftrace without waiting: compiling and attaching the program takes ~11 s
        under qemu TCG, so a campaign builds its test bed meanwhile (``wait_attached``)."""
        if self._proc is not None:
            raise ToolError("the widener is already running")
        binary = require_tool(self.bpftrace)
        fd, name = tempfile.mkstemp(prefix="widener-", suffix=".out", dir=self.output_dir)
        self.output_path = Path(name)
        try:
            self._proc = subprocess.Popen(
                [binary, "-B", "none", "-e", program_text(self.config)],
                env=bpftrace_environment(),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
            )
        finally:
            os.close(fd)

    def wait_attached(self) -> None:
        """Wait for the probe; on failure bpftrace is killed and the error raised."""
        try:
            self._wait_attached()
        except BaseException:
            self._kill()
            self._text = self.output_text()
            raise

    def _wait_attached(self) -> None:
        deadline = time.monotonic() + self.attach_timeout_s
        while True:
            text = self.output_text()
            if READY_MARK in text.splitlines():
                return
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ToolError(
                    f"bpftrace exited ({self._proc.returncode}) before attaching: "
                    f"{_last_line(text)}",
                    hint=f"full output in {self.output_path}",
                )
            if time.monotonic() > deadline:
                raise ToolError(
                    f"bpftrace did not attach in {self.attach_timeout_s:g} s",
                    hint=f"output so far in {self.output_path}",
                )
            time.sleep(POLL_S)

    def stop(self) -> WidenerStats:
        """Stop bpftrace (SIGINT, so it prints its maps) and return the statistics."""
        proc = self._proc
        if proc is None:
            raise ToolError("the widener is not running")
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise ToolError(
                    f"bpftrace did not stop in {self.stop_timeout_s:g} s; killed it"
                ) from exc
        finally:
            self._kill()
        self._text = self.output_text()
        self._forget_output()
        self.stats = parse_output(self._text)
        return self.stats

    def _forget_output(self) -> None:
        """Remove bpftrace's output file unless the caller asked for it (output_dir)."""
        if self.output_dir is None and self.output_path is not None:
            self.output_path.unlink(missing_ok=True)
            self.output_path = None

    def _kill(self) -> None:
        proc = self._proc
        self._proc = None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(timeout=self.stop_timeout_s)

    def __enter__(self) -> Widener:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is None:
            return
        if exc_type is None:
            self.stop()
        else:
            self._kill()
            self._text = self.output_text()
            self._forget_output()


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"

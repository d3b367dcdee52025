"""bench-kernel-log's figures, table and busy-host fixture (no VM: records are written here)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness.bench import kernel_log
from harness.cli import app as cli
from harness.core.exits import ExitCode
from harness.core.paths import BUILD_DIR
from harness.core.results import RESULTS_FILE, JsonlWriter


def write_run(
    rundir: Path, iterations: list[tuple[float, float, int, str]], cpu_s_per_record: float = 0.0
) -> None:
    """(cycle_s, kernel_log s, records, verdict) per iteration, plus a non-iteration record;
    ``kmsg_cpu_s`` is ``cpu_s_per_record`` times the records (0: an older revision's record,
    without the field)."""
    rundir.mkdir(parents=True, exist_ok=True)
    with JsonlWriter(rundir / RESULTS_FILE) as writer:
        writer.append({"event": "campaign_start"})
        for cycle, klog, records, verdict in iterations:
            writer.append(
                {
                    "cycle_s": cycle,
                    "verdict": verdict,
                    "app_eio": verdict.startswith("eio"),
                    "phases_s": {"warmup": 0.5, "kernel_log": klog},
                    "kernel_classes": {"nvmet_failed_cmd": records - 2, "identifiers": 2},
                    "kmsg_lost": 1 if records > 3000 else 0,
                }
                | ({"kmsg_cpu_s": cpu_s_per_record * records} if cpu_s_per_record else {})
            )


def test_figures_from_a_runs_records(tmp_path: Path) -> None:
    write_run(
        tmp_path / "r",
        [(2.0, 0.1, 1000, "eio_race"), (3.0, 0.3, 3000, "pass"), (1.0, 0.2, 4000, "eio")],
        cpu_s_per_record=40e-6,
    )
    run = kernel_log.run_figures(tmp_path / "r", "abc", "quiet", (0.5, 1.5), 90.0)
    assert (run.iterations, run.race_iterations, run.app_eio_iterations) == (3, 1, 2)
    assert (run.cycle_s_median, run.cycle_s_mean) == (2.0, 2.0)
    assert (run.kernel_log_s_median, run.kernel_log_s_max) == (0.2, 0.3)
    assert (run.records_median, run.records_max, run.kmsg_lost) == (3000, 4000, 1)
    assert run.kernel_log_s_per_1000 == pytest.approx(1000 * 0.6 / 8000)
    assert run.at_3000_s == pytest.approx(0.225)
    assert run.cpu_us_per_record == pytest.approx(40.0)
    assert run.meets_kernel_log_goal is False and run.meets_cycle_goal is True
    busy = kernel_log.run_figures(tmp_path / "r", "abc", "busy", (2.0, 2.0), 90.0)
    assert busy.meets_cycle_goal is True  # 2.0 s median <= 4 s
    empty = kernel_log.run_figures(tmp_path / "none", "abc", "quiet", (0.0, 0.0), 1.0)
    assert empty.iterations == 0 and empty.meets_kernel_log_goal is None
    assert empty.cpu_us_per_record is None


def test_the_table_and_report_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "a-quiet", [(9.0, 5.0, 2000, "eio_race")])
    write_run(tmp_path / "b-busy", [(3.0, 0.1, 3000, "eio_race")], cpu_s_per_record=25e-6)
    runs = [
        kernel_log.run_figures(tmp_path / "a-quiet", "a", "quiet", (0.1, 0.2), 100.0),
        kernel_log.run_figures(tmp_path / "b-busy", "b", "busy", (2.1, 2.3), 80.0),
    ]
    text = kernel_log.write(runs, tmp_path)
    rows = text.splitlines()
    assert len(rows) == 4 and rows[0].count("|") == rows[2].count("|") == 16
    assert "| a | quiet | 1 | 1 / 1 | 9.0 (9.0) | <= 2: no |" in rows[2]
    assert "| 0.033 | 0.10 | yes | 25 | 0 |" in rows[3]
    assert "| 2.500 | 7.50 | no | - | 0 |" in rows[2]  # no CPU figure in its records
    # --report-only recomputes from the runs' records
    write_run(tmp_path / "b-busy", [(1.0, 0.1, 3000, "pass")])
    argv = ["bench-kernel-log", "--out", str(tmp_path), "--report-only"]
    assert cli.main(argv) == ExitCode.OK
    assert "| b | busy | 2 | 1 / 1 |" in capsys.readouterr().out


def test_report_only_without_a_report_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench-kernel-log", "--out", str(tmp_path), "--report-only"]
    assert cli.main(argv) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kernel-log.json" in err


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_busy_host_spins_one_process_per_core_and_leaves_none(tmp_path: Path) -> None:
    with kernel_log.busy_host(2) as pids:
        assert len(pids) == 2
        time.sleep(0.5)
        assert all(cpu_seconds(pid) > 0.05 for pid in pids)  # they really spin
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    with pytest.raises(RuntimeError), kernel_log.busy_host(1) as pids:
        raise RuntimeError("a failing run")
    assert not Path(f"/proc/{pids[0]}").exists()


def test_vm_argv_boots_the_same_builds_for_every_revision(tmp_path: Path) -> None:
    options = kernel_log.KernelLogOptions(out=tmp_path, iterations=7, kernel="/boot/k")
    argv = kernel_log.vm_argv(options, tmp_path / "run")
    assert argv[1:4] == ["-m", "harness.cli", "vm"]
    assert argv[argv.index("--modules") + 1] == str((BUILD_DIR / "modules").resolve())
    assert argv[argv.index("--iterations") + 1] == "7" and argv[-2:] == ["--kernel", "/boot/k"]


def test_each_revision_runs_its_own_main_config_unless_one_is_given(tmp_path: Path) -> None:
    """A revision that tuned the main config is measured with its own."""
    older = tmp_path / "checkouts" / "abc1234"
    options = kernel_log.KernelLogOptions(out=tmp_path)
    argv = kernel_log.vm_argv(options, tmp_path / "run", older)
    assert argv[argv.index("--config") + 1] == str(older / "configs/race-ns-remove-path.toml")
    given = tmp_path / "mine.toml"
    options = kernel_log.KernelLogOptions(out=tmp_path, config=given)
    argv = kernel_log.vm_argv(options, tmp_path / "run", older)
    assert argv[argv.index("--config") + 1] == str(given)


def test_an_unknown_revision_is_a_usage_error() -> None:
    from harness.core.errors import UsageError

    with pytest.raises(UsageError, match="does not know"):
        kernel_log.checkout("no-such-revision-xyz")


def test_the_hit_rate_before_and_after_with_fisher(tmp_path: Path) -> None:
    write_run(
        tmp_path / "old", [(9.0, 5.0, 2000, "eio_race")] * 15 + [(9.0, 5.0, 2000, "pass")] * 5
    )
    write_run(
        tmp_path / "new", [(2.0, 0.1, 2000, "eio_race")] * 4 + [(2.0, 0.1, 2000, "pass")] * 16
    )
    runs = [
        kernel_log.run_figures(tmp_path / "old", "old", "quiet", (0.0, 0.0), 1.0),
        kernel_log.run_figures(tmp_path / "new", "new", "quiet", (0.0, 0.0), 1.0),
    ]
    (line,) = kernel_log.hit_rate_lines(runs)
    assert "old 15/20, new 4/20" in line and "p=0.00" in line
    assert kernel_log.hit_rate_lines(runs[:1]) == []
    assert "first revision against the last" in kernel_log.write(runs, tmp_path)

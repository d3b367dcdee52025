"""Benchmarks: console timing, and the tables computed from result directories alone."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.bench import benchmark as bench
from harness.bench.benchmark import (
    EioRun,
    LineTimer,
    censored_median,
    collect,
    configured_waits,
    eio_run,
    eio_scenario,
    fault_rates,
    markdown,
    throughput,
)
from harness.cli import main
from harness.cli.app import build_parser
from harness.cli.bench import options_from_args
from harness.core.results import (
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    JsonlWriter,
    write_json_atomic,
)
from tests.test_fio_p99 import with_clat
from tests.test_workload import fio_job, fio_output

GUEST = "nvmf-harness: "


def iteration_line(
    n: int, total: int, verdict: str, eio: int = 0, fault: str = "ctrl_delete"
) -> str:
    return (
        f"{GUEST}[{n}/{total}] {fault} path {n % 2}: {verdict} (app EIO {eio}, EOD-race lines "
        f"{eio}, recover 1.2 s, cycle 5.1 s, 4100 IOPS) | total EIO {eio}"
    )


@dataclass
class StepClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


# --- LineTimer ------------------------------------------------------------------------------------


def test_line_timer_times_campaign_first_iteration_and_first_eio() -> None:
    clock = StepClock(1000.0)
    timer = LineTimer(started=990.0, clock=clock)
    feed = [
        (1001.0, "[    2.1] virtme-init: starting"),
        (1002.0, f"{GUEST}loaded unfixed nvme modules, nvme_core srcversion 6E05"),
        (1003.5, f"{GUEST}campaign race-ctrl-delete-widened: 10 iterations of ctrl_delete on x"),
        (1010.0, iteration_line(1, 10, "pass")),
        (1016.0, iteration_line(2, 10, "expected_eio", eio=1)),  # not the bug: not counted
        (1022.0, iteration_line(3, 10, "eio_race", eio=3)),
        (1028.0, iteration_line(4, 10, "eio", eio=1)),
    ]
    for at, text in feed:
        clock.now = at
        timer.line(text)
    data = timer.to_dict()
    assert data["campaign_line_s"] == 13.5
    assert data["first_iteration_s"] == 20.0
    assert data["first_eio_s"] == 32.0
    assert "[3/10]" in data["first_eio_line"]
    assert data["iteration_lines"] == 4


def test_line_timer_without_eio() -> None:
    timer = LineTimer(started=0.0, clock=StepClock(5.0))
    timer.line(iteration_line(1, 2, "pass"))
    timer.line("fio: attempt to access beyond end of device")  # kernel line, not an iteration
    assert timer.first_eio_s is None and timer.first_iteration_s == 5.0


# --- medians with a cap ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([3.0, 1.0, 2.0], 2.0),
        ([1.0, None, 2.0], 2.0),  # a miss counts as longer than every hit
        ([1.0, None], None),  # the median lies among the misses
        ([None, None, 4.0], None),
        ([], None),
        ([1.0, 2.0, 3.0, None, None], 3.0),
    ],
)
def test_censored_median(values: list[float | None], expected: float | None) -> None:
    assert censored_median(values) == expected


# --- time-to-EIO runs -----------------------------------------------------------------------------


def record(iteration: int, verdict: str = "pass", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "iteration": iteration,
        "fault": "ctrl_delete",
        "verdict": verdict,
        "app_eio": 0 if verdict == "pass" else 2,
        "cycle_s": 5.0,
        "first_eio_at_s": None if verdict == "pass" else 10.0 * iteration + 0.5,
        "pre_fault_iops": 4000.0,
        "fio_iops": 3500.0,
        "widener": True,
        "variant": "unfixed",
    }
    data.update(changes)
    return data


def write_run(
    rundir: Path,
    records: list[dict[str, Any]],
    timing: dict[str, Any],
    summary: dict[str, Any] | None = None,
) -> Path:
    rundir.mkdir(parents=True)
    with JsonlWriter(rundir / RESULTS_FILE) as writer:
        for item in records:
            writer.append(item)
    write_json_atomic(rundir / bench.TIMING_FILE, timing)
    if summary is not None:
        write_json_atomic(rundir / SUMMARY_FILE, summary)
    return rundir


def timing(run: int, first_eio_s: float | None, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "scenario": "widened",
        "run": run,
        "seed": 10 + run,
        "widener": True,
        "variant": "unfixed",
        "max_iterations": 10,
        "campaign_line_s": 25.0 + run,
        "first_iteration_s": 33.0 + run,
        "first_eio_s": first_eio_s,
        "wall_s": 60.0 + run,
        "limit_s": 900.0,
        "timed_out": False,
        "crashed": False,
    }
    data.update(changes)
    return data


def test_eio_run_takes_the_first_eio_record(tmp_path: Path) -> None:
    rundir = write_run(
        tmp_path / "widened" / "run-01",
        [record(1), record(2, "expected_eio"), record(3, "eio_race")],
        timing(1, 48.25),
        {"max_rss_kib": 41234},
    )
    run = eio_run(rundir)
    assert run.eio and run.first_eio_verdict == "eio_race" and run.first_eio_iteration == 3
    assert run.host_s_to_first_eio == 48.25
    assert run.first_eio_at_s == 30.5
    assert (run.iterations, run.max_iterations, run.seed) == (3, 10, 11)
    assert run.max_rss_kib == 41234
    assert run.host_s_to_campaign_line == 26.0


def test_eio_run_without_an_eio_record_has_no_time(tmp_path: Path) -> None:
    # the console showed an EIO line but the VM died before... no record: no EIO claimed
    rundir = write_run(
        tmp_path / "natural" / "run-02",
        [record(1), record(2), {"iteration": 3, "verdict": "vm_timeout"}],
        timing(2, 99.0, scenario="natural", timed_out=True),
    )
    run = eio_run(rundir)
    assert not run.eio and run.host_s_to_first_eio is None and run.first_eio_at_s is None
    assert run.iterations == 2  # the runner's vm_timeout record is not an iteration
    assert run.timed_out and run.max_rss_kib is None


def make_run(run: int, host_s: float | None, iterations: int = 10, **changes: Any) -> EioRun:
    data: dict[str, Any] = {
        "scenario": "s",
        "run": run,
        "seed": run,
        "widener": False,
        "variant": "unfixed",
        "iterations": iterations,
        "max_iterations": 10,
        "eio": host_s is not None,
        "first_eio_iteration": iterations if host_s is not None else None,
        "first_eio_verdict": "eio_race" if host_s is not None else "",
        "host_s_to_first_eio": host_s,
        "first_eio_at_s": None if host_s is None else host_s - 20,
        "host_s_to_campaign_line": 20.0,
        "host_s_to_first_iteration": 27.0,
        "wall_s": 100.0 + run,
        "limit_s": 900.0,
        "timed_out": False,
        "crashed": False,
        "max_rss_kib": 40000,
    }
    data.update(changes)
    return EioRun(**data)


def test_scenario_median_over_runs_with_hits() -> None:
    runs = [make_run(1, 40.0, 3), make_run(2, 60.0, 5), make_run(3, 50.0, 4)]
    result = eio_scenario("widened", runs)
    assert result.runs_with_eio == 3
    assert result.median_host_s_to_first_eio == 50.0
    assert result.median_first_eio_at_s == 30.0
    assert result.median_iterations_to_eio == 4.0
    assert result.result == "median 50.0 s to the first EIO (3/3 runs saw one)"


def test_scenario_without_eio_says_so_with_the_cap() -> None:
    runs = [make_run(1, None), make_run(2, None, timed_out=True)]
    result = eio_scenario("natural", runs)
    assert result.median_host_s_to_first_eio is None
    assert result.result == (
        "no EIO within 10 iterations / 102 s (time limit reached) in 2 of 2 runs"
    )


def test_scenario_with_some_misses_reports_both() -> None:
    runs = [make_run(1, 30.0, 2), make_run(2, None), make_run(3, 45.0, 6)]
    result = eio_scenario("natural", runs)
    assert result.median_host_s_to_first_eio == 45.0  # the miss counts as longest
    assert result.result.startswith("median 45.0 s to the first EIO (2/3 runs saw one)")
    assert result.result.endswith("no EIO within 10 iterations / 102 s in the other 1")


def test_scenario_with_no_runs() -> None:
    assert eio_scenario("x", []).result == "not run"


# --- fault rates against the floor ----------------------------------------------------------------


FLOOR: dict[str, Any] = {
    "repeat": 3,
    "ops": [
        {"name": "ctrl_delete", "action_s": [0.1, 0.2, 0.3], "total_s": [0.2, 0.3, 0.4]},
        {"name": "connect", "action_s": [0.6, 0.7, 0.8], "total_s": [0.7, 0.8, 0.9]},
        {"name": "ctrl_reset", "action_s": [0.5], "total_s": [0.6]},
        {"name": "port_unlink", "action_s": [], "total_s": [], "errors": ["#1: x", "#2: y"]},
        {"name": "port_link", "action_s": [0.01], "total_s": [1.1]},
    ],
}
CAMPAIGN = {"warmup_s": 1.0, "jitter_s": 0.5, "hold_s": 1.0, "settle_s": 1.0}


def test_configured_waits() -> None:
    assert configured_waits(CAMPAIGN) == 3.25
    assert configured_waits({}) == 0.0


def test_fault_rates_per_fault_against_the_floor() -> None:
    records = [
        record(1, fault="ctrl_delete", cycle_s=5.0),
        record(2, fault="ctrl_reset", cycle_s=4.0),
        record(3, fault="ctrl_delete", cycle_s=7.0),
        record(4, fault="port_remove", cycle_s=6.0),
        record(5, fault="ns_disable", cycle_s=3.0),
    ]
    rates = {r.fault: r for r in fault_rates(records, FLOOR, CAMPAIGN)}
    delete = rates["ctrl_delete"]
    assert (delete.iterations, delete.mean_cycle_s, delete.per_minute) == (2, 6.0, 10.0)
    assert delete.floor_ops == ("ctrl_delete", "connect")
    assert delete.floor_s == 1.1  # median total of delete (0.3) + connect (0.8)
    assert delete.floor_per_minute == 54.5
    assert delete.overhead_s == 1.65  # 6.0 - 1.1 - 3.25
    assert rates["ctrl_reset"].floor_s == 0.6
    # a floor op that never succeeded gives no floor for the fault, not a made-up one
    assert rates["port_remove"].floor_s is None and rates["port_remove"].overhead_s is None
    assert rates["ns_disable"].floor_ops == () and rates["ns_disable"].floor_s is None
    assert rates["ns_disable"].per_minute == 20.0
    assert delete.fio_start_stop_s is None  # records without io_start_s: not made up


def test_fault_rates_show_fio_start_and_stop() -> None:
    records = [
        record(1, cycle_s=5.0, io_start_s=1.0, io_stop_s=0.2),
        record(2, cycle_s=5.0, io_start_s=2.0, io_stop_s=0.4),
    ]
    (rate,) = fault_rates(records, FLOOR, CAMPAIGN)
    # the first iteration's fio start is the campaign's setup: out of its cycle and of the
    # fio figure; the second iteration's (a restart) stays: (0.2 + 2.0 + 0.4) / 2
    assert rate.fio_start_stop_s == 1.3
    assert rate.mean_cycle_s == 4.5  # (5.0 - 1.0 + 5.0) / 2
    # an iteration that failed before fio started: the start is the next one's
    failed_first = [record(1, cycle_s=0.5, io_start_s=0.0, fio_run=1), *records]
    (rate,) = fault_rates(failed_first, FLOOR, CAMPAIGN)
    assert rate.mean_cycle_s == 3.167  # (0.5 + 4.0 + 5.0) / 3


# --- throughput -----------------------------------------------------------------------------------


def test_throughput_ratio_against_the_baseline() -> None:
    records = [record(i, pre_fault_iops=v) for i, v in enumerate([3800.0, 3900.0, 4100.0], 1)]
    base = {"seconds": 20.0, "iops": 4000.0, "p99_clat_us": 200.0}
    result = throughput(base, records, [300.0, 500.0, 400.0])
    assert result.harness_pre_fault_iops == 3900.0
    assert result.iops_ratio == 0.975 and result.meets_goal
    assert result.harness_p99_clat_us == 400.0 and result.p99_ratio == 2.0
    assert result.harness_iteration_iops == 3500.0
    low = throughput(base, [record(1, pre_fault_iops=3000.0)], [])
    assert low.iops_ratio == 0.75 and low.meets_goal is False and low.p99_ratio is None


def test_throughput_without_baseline() -> None:
    result = throughput(None, [record(1)], [])
    assert result.iops_ratio is None and result.meets_goal is None and result.baseline_iops is None


# --- a whole bench directory ---------------------------------------------------------------------


def build_bench_dir(out: Path) -> None:
    write_json_atomic(
        out / "bench-meta.json",
        {"scenarios": ["widened", "natural"], "variant": "unfixed", "max_iterations": 10},
    )
    # natural is created first on disk but must be listed second (meta order)
    write_run(out / "eio/natural/run-01", [record(i) for i in range(1, 11)], timing(1, None))
    write_run(out / "eio/natural/run-02", [record(i) for i in range(1, 11)], timing(2, None))
    write_run(
        out / "eio/widened/run-01",
        [record(1), record(2, "eio_race")],
        timing(1, 44.0),
        {"max_rss_kib": 50000},
    )
    write_run(
        out / "eio/widened/run-02",
        [record(1, "eio_race")],
        timing(2, 36.0),
        {"max_rss_kib": 52000},
    )
    campaign = out / "throughput" / "campaign"
    faults = ["ctrl_delete", "ctrl_reset"]
    records = [record(i, fault=faults[i % 2], cycle_s=4.0 + i) for i in range(1, 5)]
    write_run(
        campaign,
        records,
        {},
        {"baseline": {"seconds": 10.0, "iops": 4000.0, "p99_clat_us": 250.0}, "max_rss_kib": 60000},
    )
    write_json_atomic(campaign / RUN_FILE, {"config": {"campaign": CAMPAIGN}})
    for index, p99_ns in ((1, 300_000), (2, 500_000)):
        it = campaign / "iterations" / f"{index:04d}"
        it.mkdir(parents=True)
        job = with_clat(fio_job(100, 100, 50.0, 50.0, 2000), p99_ns, 1000)
        (it / "fio.json").write_text(fio_output(job))
    (out / "throughput" / "floor").mkdir()
    write_json_atomic(out / "throughput" / "floor" / "floor.json", FLOOR)


def test_collect_and_markdown_from_directories(tmp_path: Path) -> None:
    build_bench_dir(tmp_path)
    report = collect(tmp_path)
    assert [s.scenario for s in report.eio] == ["widened", "natural"]
    widened, natural = report.eio
    assert widened.median_host_s_to_first_eio == 40.0 and widened.runs_with_eio == 2
    assert natural.median_host_s_to_first_eio is None
    assert natural.result.startswith("no EIO within 10 iterations")
    assert {r.fault for r in report.fault_rates} == {"ctrl_delete", "ctrl_reset"}
    assert report.throughput is not None
    assert report.throughput.harness_p99_clat_us == 400.0  # from the iterations' fio.json
    assert report.throughput.iops_ratio == 1.0
    assert report.boot is not None
    assert report.boot.max_rss_kib.n == 3 and report.boot.max_rss_kib.max == 60000
    assert report.boot.s_to_campaign_line.n == 4
    assert report.floor[3].name == "port_unlink" and report.floor[3].errors == 2

    text = markdown(report)
    for heading in ("## 1.", "## 2.", "## 3.", "## 4."):
        assert heading in text
    assert "no EIO within 10 iterations" in text
    assert "ctrl_delete + connect" in text
    assert "meets goal" in text
    # every table row has as many cells as its header
    for block in text.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            widths = {line.count(" | ") for line in rows if not line.startswith("|---")}
            assert len(widths) == 1, block


def test_write_and_report_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_bench_dir(tmp_path)
    assert main(["bench", "--out", str(tmp_path), "--report-only"]) == 0
    data = json.loads((tmp_path / bench.BENCH_JSON).read_text())
    assert data["eio"][0]["scenario"] == "widened"
    assert data["throughput"]["baseline_iops"] == 4000.0
    assert (tmp_path / bench.BENCH_MD).read_text() == capsys.readouterr().out


def test_report_only_of_a_missing_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--out", str(tmp_path / "nope"), "--report-only"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a bench directory" in err[0]  # bad input: exit 2


def test_empty_bench_directory_renders(tmp_path: Path) -> None:
    text = markdown(collect(tmp_path))
    section2 = text[text.index("## 2.") : text.index("## 3.")]
    section3 = text[text.index("## 3.") : text.index("## 4.")]
    # --skip-throughput: both sections say so instead of showing empty tables
    assert "Not measured." in section2 and "|" not in section2
    assert "Not measured." in section3


def test_parser_scenarios_and_defaults(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["bench", "--out", str(tmp_path), "--runs", "7", "--scenario", "a=configs/x.toml"]
    )
    options = options_from_args(args)
    assert options.runs == 7 and options.scenarios == (("a", Path("configs/x.toml")),)
    assert options.max_iterations == 60 and options.variant == "unfixed"
    default = options_from_args(build_parser().parse_args(["bench", "--out", "x"]))
    assert [name for name, _ in default.scenarios] == ["widened", "natural"]
    assert all(path.is_file() for _, path in default.scenarios)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--out", "x", "--scenario", "noequals"])


def test_vm_timeout_grows_with_iterations() -> None:
    from harness.config.campaign import CampaignConfig, override

    small = bench._vm_timeout(override(CampaignConfig(), "campaign", iterations=1))
    large = bench._vm_timeout(override(CampaignConfig(), "campaign", iterations=10))
    assert 300 < small < large


def test_pace_goal_floor_multiple_and_previous_figures(tmp_path: Path) -> None:
    from harness.bench.benchmark import _floor_goal_cell, _goal_cell, previous_rates
    from harness.core.errors import HarnessError

    ops: list[Any] = [
        {"name": "ns_remove_path", "action_s": [0.3], "total_s": [0.3]},
        {"name": "ns_restore_path", "action_s": [0.2], "total_s": [0.2]},
    ]
    floor = {"ops": ops + list(FLOOR["ops"])}
    previous = tmp_path / "bench.json"
    rows = [{"fault": "ns_remove_path", "per_minute": 6.4}]
    previous.write_text(json.dumps({"fault_rates": rows}))
    records = [record(1, fault="ns_remove_path", cycle_s=1.2), record(2, cycle_s=2.4)]
    rates = {r.fault: r for r in fault_rates(records, floor, CAMPAIGN, previous_rates(previous))}
    ns, delete = rates["ns_remove_path"], rates["ctrl_delete"]
    assert (ns.per_minute, ns.floor_s, ns.floor_multiple) == (50.0, 0.5, 2.4)
    assert (ns.goal_per_minute, ns.previous_per_minute) == (40.0, 6.4)
    assert _goal_cell(ns) == "40: met"
    assert _floor_goal_cell(ns.floor_multiple) == "met"
    # ctrl_delete: 25 per minute, but 2.4 s is 2.2x its 1.1 s floor: met; 20 per minute goal
    assert (delete.floor_s, delete.floor_multiple, delete.previous_per_minute) == (1.1, 2.18, None)
    assert _goal_cell(delete) == "20: met"
    slow = fault_rates([record(1, cycle_s=4.0)], floor, CAMPAIGN)[0]
    assert _goal_cell(slow) == "20: not met"  # 15 per minute
    assert _floor_goal_cell(slow.floor_multiple) == "not met"  # 3.6x the floor
    quick_ops: list[Any] = [
        {"name": "ns_remove_path", "action_s": [0.1], "total_s": [0.1]},
        {"name": "ns_restore_path", "action_s": [0.1], "total_s": [0.1]},
    ]
    quick_floor = {"ops": quick_ops + list(FLOOR["ops"])}
    far = fault_rates([record(1, fault="ns_remove_path", cycle_s=1.2)], quick_floor, CAMPAIGN)[0]
    # 50 per minute meets its goal, 6x the floor does not: two cells, not one
    assert (_goal_cell(far), _floor_goal_cell(far.floor_multiple)) == ("40: met", "not met")
    assert (far.floor_io_s, far.floor_io_multiple, _floor_goal_cell(None)) == (None, None, "-")
    # the same ops under IO: 0.45 s, so the 1.2 s cycle is 2.67x the floor under IO
    io_ops: list[Any] = [
        {"name": "ns_remove_path", "action_s": [0.2], "total_s": [0.25, 0.3, 0.2]},
        {"name": "ns_restore_path", "action_s": [0.2], "total_s": [0.2]},
    ]
    under_io = fault_rates(
        [record(1, fault="ns_remove_path", cycle_s=1.2)],
        quick_floor,
        CAMPAIGN,
        floor_io={"ops": io_ops},
    )[0]
    assert (under_io.floor_multiple, under_io.floor_io_s, under_io.floor_io_multiple) == (
        6.0,
        0.45,
        2.67,
    )
    assert _floor_goal_cell(under_io.floor_io_multiple) == "met"
    assert under_io.overhead_io_s == round(1.2 - 0.45 - 3.25, 3)  # waits: 1 + 0.25 + 1 + 1
    assert previous_rates(None) == {}
    (tmp_path / "broken.json").write_text("[")
    with pytest.raises(HarnessError, match=r"not a bench\.json"):
        previous_rates(tmp_path / "broken.json")

"""Results: fsynced JSON lines, torn-line tolerance, per-fault summaries and the table."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.core import results
from harness.core.results import (
    FaultSummary,
    IterationRecord,
    JsonlWriter,
    Verdict,
    median,
    read_records,
    render_table,
    summarize,
    write_json_atomic,
)


def make_record(**changes: Any) -> IterationRecord:
    values: dict[str, Any] = {
        "run_id": "run-1",
        "iteration": 0,
        "fault": "ctrl_delete",
        "path": 0,
        "kernel_release": "6.1.0-56-amd64",
        "variant": "unfixed",
        "srcversion": "6E052DFC06DA8E036E0639E",
        "iopolicy": "round-robin",
        "widener": True,
        "started_at": 0.0,
        "inject_at_s": 1.0,
        "restore_at_s": 2.0,
        "inject_s": 0.1,
        "restore_s": 0.7,
        "cycle_s": 6.0,
        "recovered": True,
        "time_to_recover_s": 1.5,
        "another_path_live": True,
        "app_eio": 0,
        "app_other_errors": 0,
        "verify_failures": 0,
        "fio_exit_code": 0,
        "fio_iops": 1000.0,
        "fio_read_ios": 10,
        "fio_write_ios": 10,
        "eod_race_lines": 0,
        "eod_race_disks": [],
        "io_error_lines": 0,
        "path_event_lines": 2,
        "hung_task_lines": 0,
        "kernel_bug_lines": 0,
        "hang": False,
        "max_stall_s": 0.2,
        "first_eio_at_s": None,
        "verdict": Verdict.PASS,
    }
    values.update(changes)
    return IterationRecord(**values)


def record_dict(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(make_record(**changes).to_json())
    return data


# --- JsonlWriter / read_records -----------------------------------------------------------


def test_writer_appends_and_each_record_is_readable_at_once(tmp_path: Path) -> None:
    path = tmp_path / results.RESULTS_FILE
    with JsonlWriter(path) as writer:
        for iteration in range(3):
            writer.append(make_record(iteration=iteration))
            # another reader, while the writer still has the file open
            with path.open(encoding="utf-8") as other:
                lines = other.read().splitlines()
            assert len(lines) == iteration + 1
            assert json.loads(lines[-1])["iteration"] == iteration
        writer.append({"kind": "note", "text": "plain dict"})
    assert [r.get("iteration") for r in read_records(path)] == [0, 1, 2, None]


def test_writer_fsyncs_every_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    with JsonlWriter(tmp_path / "r.jsonl") as writer:
        writer.append(make_record())
        assert len(synced) == 1
        writer.append(make_record(iteration=1))
        assert len(synced) == 2


def test_writer_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as writer:
        writer.append(make_record(iteration=0))
    with JsonlWriter(path) as writer:
        writer.append(make_record(iteration=1))
    assert [r["iteration"] for r in read_records(path)] == [0, 1]


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    record = make_record(eod_race_disks=["nvme0c1n1"], kernel_examples=["a", "b"])
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as writer:
        writer.append(record)
    (loaded,) = read_records(path)
    assert IterationRecord(**loaded) == record


def test_read_records_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = [make_record(iteration=i).to_json() for i in range(2)]
    torn = make_record(iteration=2).to_json()[:57]
    path.write_text(good[0] + "\n\n" + good[1] + "\n" + torn, encoding="utf-8")
    assert [r["iteration"] for r in read_records(path)] == [0, 1]


def test_read_records_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert list(read_records(tmp_path / "none.jsonl")) == []


def test_append_after_a_torn_line_keeps_the_new_record(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(make_record(iteration=0).to_json() + "\n" + '{"iteration": 1, "fau')
    with JsonlWriter(path) as writer:
        writer.append(make_record(iteration=2))
    assert [r["iteration"] for r in read_records(path)] == [0, 2]


# --- write_json_atomic --------------------------------------------------------------------


def test_write_json_atomic(tmp_path: Path) -> None:
    path = tmp_path / results.SUMMARY_FILE
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"b": 1, "a": [1, 2]}
    write_json_atomic(path, {"c": None})
    text = path.read_text()
    assert json.loads(text) == {"c": None}
    assert text.endswith("}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == [results.SUMMARY_FILE]


def test_write_json_atomic_sorts_keys(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_json_atomic(path, {"z": 1, "a": 2})
    assert path.read_text().index('"a"') < path.read_text().index('"z"')
    assert not list(tmp_path.glob("*.tmp"))


# --- summaries ----------------------------------------------------------------------------


def test_median() -> None:
    assert median([]) is None
    assert median([3.0]) == 3.0
    assert median([5.0, 1.0, 3.0]) == 3.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_summarize_per_fault_and_all() -> None:
    records = [
        record_dict(fault="ctrl_delete", iteration=0, cycle_s=6.0, time_to_recover_s=1.0),
        record_dict(
            fault="ctrl_reset",
            iteration=1,
            app_eio=2,
            eod_race_lines=2,
            first_eio_at_s=40.0,
            verdict=Verdict.EIO_RACE,
            cycle_s=4.0,
            time_to_recover_s=None,
            fio_iops=0.0,
        ),
        record_dict(
            fault="ctrl_delete",
            iteration=2,
            app_eio=1,
            first_eio_at_s=30.0,
            another_path_live=False,
            verdict=Verdict.EIO,
            cycle_s=8.0,
            time_to_recover_s=3.0,
            fio_iops=3000.0,
        ),
        record_dict(
            fault="ctrl_delete",
            iteration=3,
            hang=True,
            kernel_bug_lines=3,
            recovered=False,
            verify_failures=1,
            verdict=Verdict.HANG,
            cycle_s=10.0,
        ),
        record_dict(fault="ns_disable", iteration=4, verdict=Verdict.INFRA_ERROR, cycle_s=0.0),
    ]
    summaries = summarize(records)
    assert [s.fault for s in summaries] == ["ctrl_delete", "ctrl_reset", "ns_disable", "all"]
    delete, reset, disable, total = summaries

    assert delete.iterations == 3
    assert delete.iterations_with_eio == 1
    assert delete.eio_count == 1
    assert delete.race_iterations == 0  # its EIO came with no other path live
    assert delete.first_eio_at_s == 30.0
    assert delete.hangs == 1
    assert delete.kernel_bugs == 1
    assert delete.not_recovered == 1
    assert delete.verify_failures == 1
    assert delete.mean_cycle_s == 8.0
    assert delete.median_recover_s == 1.5  # 1.0, 3.0 and 1.5 (default)
    assert delete.median_iops == 1000.0

    assert reset.race_iterations == 1
    assert reset.eod_race_lines == 2
    assert reset.median_recover_s is None
    assert reset.median_iops is None
    assert disable.infra_errors == 1

    assert total.iterations == 5
    assert total.eio_count == 3
    assert total.iterations_with_eio == 2
    assert total.race_iterations == 1
    assert total.first_eio_at_s == 30.0
    assert total.mean_cycle_s == pytest.approx(28.0 / 5)

    data = total.to_dict()
    assert "recover_s" not in data and "iops" not in data
    assert data["mean_cycle_s"] == 5.6
    assert data["fault"] == "all"
    json.dumps(data)


def test_summarize_nothing_gives_an_empty_all_row() -> None:
    (total,) = summarize([])
    assert total.fault == "all"
    assert total.iterations == 0
    assert total.mean_cycle_s == 0.0


COUNTERS = (
    "iterations",
    "iterations_with_eio",
    "eio_count",
    "eod_race_lines",
    "race_iterations",
    "verify_failures",
    "hangs",
    "kernel_bugs",
    "not_recovered",
    "infra_errors",
)

records_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "fault": st.sampled_from(["ctrl_delete", "ctrl_reset", "port_remove"]),
            "app_eio": st.integers(0, 5),
            "another_path_live": st.booleans(),
            "eod_race_lines": st.integers(0, 5),
            "verify_failures": st.integers(0, 2),
            "hang": st.booleans(),
            "kernel_bug_lines": st.integers(0, 2),
            "recovered": st.booleans(),
            "verdict": st.sampled_from([Verdict.PASS, Verdict.EIO, Verdict.INFRA_ERROR]),
            "cycle_s": st.floats(0, 100),
            "first_eio_at_s": st.none() | st.floats(0, 1000),
        }
    ),
    max_size=30,
)


@settings(max_examples=200)
@given(records_strategy)
def test_all_row_is_the_sum_of_the_fault_rows(records: list[dict[str, Any]]) -> None:
    *per_fault, total = summarize(records)
    assert total.fault == "all"
    assert len({s.fault for s in per_fault}) == len(per_fault)
    for counter in COUNTERS:
        assert getattr(total, counter) == sum(getattr(s, counter) for s in per_fault)
    firsts = [s.first_eio_at_s for s in per_fault if s.first_eio_at_s is not None]
    assert total.first_eio_at_s == (min(firsts) if firsts else None)
    assert total.race_iterations <= total.iterations_with_eio <= total.iterations


# --- table --------------------------------------------------------------------------------

HEADER = [
    "fault",
    "iters",
    "iters w/ EIO",
    "EIO",
    "race iters",
    "EOD lines",
    "BPF bios",
    "verify",
    "hangs",
    "bugs",
    "unrecov",
    "cycle s",
    "recover s",
    "IOPS",
]


def test_render_table_columns() -> None:
    summaries = summarize(
        [
            record_dict(fault="ctrl_delete", app_eio=12, time_to_recover_s=1.25, fio_iops=1234.4),
            record_dict(fault="port_remove", time_to_recover_s=None, fio_iops=0.0),
        ]
    )
    lines = render_table(summaries).splitlines()
    assert len(lines) == 2 + len(summaries)
    assert [cell.strip() for cell in lines[0].split("  ") if cell.strip()] == HEADER
    assert set(lines[1].replace(" ", "")) == {"-"}
    widths = [len(dashes) for dashes in lines[1].split("  ")]
    assert len(widths) == len(HEADER)
    assert sum(widths) + 2 * (len(widths) - 1) == len(lines[1])

    def cells(line: str) -> list[str]:
        out, pos = [], 0
        for width in widths:
            out.append(line[pos : pos + width].strip())
            pos += width + 2
        return out

    delete, remove, total = (cells(line) for line in lines[2:])
    assert delete == [
        "ctrl_delete",
        "1",
        "1",
        "12",
        "1",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "6.0",
        "1.25",
        "1234",
    ]
    assert remove[0] == "port_remove"
    assert remove[-2:] == ["-", "-"]
    assert total[:4] == ["all", "2", "1", "12"]
    for line in lines:
        assert line == line.rstrip()


def test_render_table_right_aligns_numbers() -> None:
    lines = render_table(summarize([record_dict(app_eio=7)])).splitlines()
    eio_column_end = lines[0].index("  EIO  ") + len("  EIO")
    assert lines[2][eio_column_end - 1] == "7"
    assert lines[2][eio_column_end - 2] == " "
    assert lines[2].startswith("ctrl_delete ")


def test_fault_summary_defaults() -> None:
    summary = FaultSummary("x")
    assert summary.median_recover_s is None
    assert summary.to_dict()["median_iops"] is None


def test_a_race_seen_only_by_the_block_layer_witness_is_a_race_iteration() -> None:
    """Since v6.17 the kernel prints no line for the race's bios: the BPF witness's count
    alone makes the iteration a race iteration (and None, not running, does not)."""
    from harness.core.results import is_race_iteration, race_seen

    base = {"app_eio": 3, "another_path_live": True, "eod_race_lines": 0}
    assert not is_race_iteration({**base, "witness_events": None})
    assert not is_race_iteration({**base, "witness_events": 0})
    assert is_race_iteration({**base, "witness_events": 12})
    assert not is_race_iteration({**base, "witness_events": 12, "another_path_live": False})
    assert race_seen({"eod_race_lines": 1}) and not race_seen({})


def test_a_race_seen_only_by_the_stale_write_checker_is_a_race_iteration() -> None:
    from harness.core.results import is_race_iteration

    base = {"app_eio": 0, "another_path_live": True, "eod_race_lines": 2}
    assert not is_race_iteration(base)
    assert is_race_iteration({**base, "stale_write_errors": 2})
    assert not is_race_iteration({**base, "stale_write_errors": 2, "another_path_live": False})

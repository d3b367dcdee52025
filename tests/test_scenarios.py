"""The scenario table is computed from the JSON lines alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.analysis.scenarios import markdown, scenario_result, write
from harness.core.results import RESULTS_FILE, SUMMARY_FILE, JsonlWriter


def _record(iteration: int, eio: int, race_lines: int, live: bool = True) -> dict[str, Any]:
    return {
        "iteration": iteration,
        "fault": "ctrl_delete",
        "variant": "unfixed",
        "widener": True,
        "iopolicy": "round-robin",
        "app_eio": eio,
        "another_path_live": live,
        "eod_race_lines": race_lines,
        "cycle_s": 5.0,
        "first_eio_at_s": 40.0 + iteration if eio else None,
    }


def _results(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    with JsonlWriter(tmp_path / RESULTS_FILE) as writer:
        for record in records:
            writer.append(record)
    return tmp_path


def test_hit_rate_counts_only_race_iterations(tmp_path: Path) -> None:
    records = [
        _record(1, 0, 0),
        _record(2, 2, 2),
        _record(3, 1, 0),  # EIO without the race line: not a race hit
        _record(4, 3, 1, live=False),  # no other path live: not a race hit
        _record(5, 1, 1),
    ]
    result = scenario_result("s", _results(tmp_path, records))
    assert (result.iterations, result.race_iterations, result.app_eio_iterations) == (5, 2, 4)
    assert result.hit_rate == 0.4
    assert result.first_eio_s == 42.0
    assert result.expected_s_to_first_hit == 12.5
    assert result.variant == "unfixed" and result.widener


def test_no_hits_and_widener_delay(tmp_path: Path) -> None:
    _results(tmp_path, [_record(1, 0, 0), _record(2, 0, 0)])
    (tmp_path / SUMMARY_FILE).write_text(
        json.dumps({"widener": {"bios_delayed": 4, "delay_sum_us": 1000}})
    )
    result = scenario_result("quiet", tmp_path)
    assert result.hit_rate == 0.0 and result.expected_s_to_first_hit is None
    assert result.widener_mean_delay_us == 250.0


def test_markdown_and_files(tmp_path: Path) -> None:
    result = scenario_result("s", _results(tmp_path, [_record(1, 1, 1)]))
    text = write([result], tmp_path)
    assert text == markdown([result])
    lines = text.splitlines()
    assert lines[0].startswith("| scenario |") and lines[2].startswith("| s | unfixed | yes |")
    assert json.loads((tmp_path / "scenarios.json").read_text())[0]["hit_rate"] == 1.0


def test_every_verdict_is_counted_most_first(tmp_path: Path) -> None:
    records = [_record(i, 0, 0) for i in range(1, 6)]
    for record, verdict in zip(
        records, ["pass", "hang", "pass", "expected_eio", "pass"], strict=True
    ):
        record["verdict"] = verdict
    result = scenario_result("s", _results(tmp_path, records))
    assert result.verdicts == "pass 3, expected_eio 1, hang 1"
    assert markdown([result]).splitlines()[2].endswith("| pass 3, expected_eio 1, hang 1 |")

"""Stock versus patched: outcomes read from results directories, the comparison, headlines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness import compare as compare_mod
from harness.compare import Comparison, VariantOutcome, compare, outcome, render, write
from harness.results import RESULTS_FILE, JsonlWriter, Verdict
from tests.test_results import record_dict

RACE: dict[str, Any] = {
    "app_eio": 2,
    "another_path_live": True,
    "eod_race_lines": 1,
    "verdict": Verdict.EIO_RACE,
}


def results_dir(tmp_path: Path, name: str, records: list[dict[str, Any]]) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    with JsonlWriter(directory / RESULTS_FILE) as writer:
        for record in records:
            writer.append(record)
    return directory


def variant_records(
    variant: str, iterations: int, races: int, **extra: Any
) -> list[dict[str, Any]]:
    srcversion = {"unfixed": "6E052DFC06DA8E036E0639E", "fixed": "1F49BEBD82E17B252F08608"}
    records = []
    for index in range(iterations):
        changes: dict[str, Any] = {
            "iteration": index + 1,
            "variant": variant,
            "srcversion": srcversion.get(variant, ""),
        }
        if index < races:
            changes.update(RACE, first_eio_at_s=100.0 - index)
        changes.update(extra)
        records.append(record_dict(**changes))
    return records


def outcome_of(tmp_path: Path, variant: str, records: list[dict[str, Any]]) -> VariantOutcome:
    return outcome(variant, results_dir(tmp_path, variant, records))


# --- outcome -----------------------------------------------------------------------------------


def test_outcome_counts_race_iterations_only_with_all_three_signs(tmp_path: Path) -> None:
    records = [
        record_dict(iteration=1, **RACE, first_eio_at_s=40.0),
        # EIO with the signature but no other path live: not the race
        record_dict(iteration=2, app_eio=1, another_path_live=False, eod_race_lines=1),
        # EIO with another path live but no signature
        record_dict(iteration=3, app_eio=4, another_path_live=True, first_eio_at_s=12.5),
        # the signature without an application EIO
        record_dict(iteration=4, eod_race_lines=3),
        record_dict(iteration=5, verify_failures=2, hang=True),
        record_dict(iteration=6, verdict=Verdict.INFRA_ERROR, error="x"),
    ]
    result = outcome_of(tmp_path, "unfixed", records)
    assert result.variant == "unfixed"
    assert result.srcversion == "6E052DFC06DA8E036E0639E"
    assert result.iterations == 6
    assert result.iterations_with_app_eio == 3
    assert result.race_iterations == 1
    assert result.failed
    assert result.eio_count == 2 + 1 + 4
    assert result.eod_race_lines == 1 + 1 + 3
    assert result.verify_failures == 2
    assert result.hangs == 1
    assert result.infra_errors == 1
    assert not result.crashed
    assert result.time_to_first_eio_s == 12.5
    # 1 of 6: the p with (1-p)^6 + 6p(1-p)^5 = 0.05
    assert result.failure_rate_upper95 == pytest.approx(0.5818, abs=1e-4)


def test_outcome_of_a_crashed_vm(tmp_path: Path) -> None:
    records = variant_records("fixed", 3, 0)
    records.append({"run_id": "r", "iteration": 4, "fault": "unknown", "verdict": "kernel_crash"})
    result = outcome_of(tmp_path, "fixed", records)
    assert result.crashed
    assert result.iterations == 3  # the crash record is not an iteration
    assert not result.failed


def test_outcome_of_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = outcome("fixed", tmp_path / "empty")
    assert result.iterations == 0
    assert result.srcversion == ""
    assert result.time_to_first_eio_s is None
    assert result.failure_rate_upper95 == 1.0
    assert not result.failed


# --- compare and headlines ---------------------------------------------------------------------


def test_reproduced_and_fixed(tmp_path: Path) -> None:
    stock = outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 3))
    patched = outcome_of(tmp_path, "fixed", variant_records("fixed", 10, 0))
    result = compare(stock, patched)
    assert result.reproduced
    assert result.fixed
    assert result.fisher_p == pytest.approx(0.210526, abs=1e-6)
    headline = result.headline()
    assert headline.startswith("REPRODUCED AND FIXED: ")
    assert "unfixed saw app EIO with the EOD-race signature in 3/10 iterations" in headline
    assert "fixed saw none in 10" in headline
    assert "p=0.211" in headline
    assert "< 25.9% at 95%" in headline  # Clopper-Pearson 0/10


def test_strong_evidence(tmp_path: Path) -> None:
    stock = outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 8))
    patched = outcome_of(tmp_path, "fixed", variant_records("fixed", 10, 0))
    assert compare(stock, patched).fisher_p == pytest.approx(90 / 125970, abs=1e-6)


def test_not_fixed(tmp_path: Path) -> None:
    stock = outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 3))
    patched = outcome_of(tmp_path, "fixed", variant_records("fixed", 10, 1))
    result = compare(stock, patched)
    assert result.reproduced
    assert not result.fixed
    assert result.headline() == ("NOT FIXED: fixed also failed (1/10 iterations; unfixed: 3/10)")


def test_not_reproduced(tmp_path: Path) -> None:
    stock = outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 0))
    patched = outcome_of(tmp_path, "fixed", variant_records("fixed", 10, 0))
    result = compare(stock, patched)
    assert not result.reproduced
    assert not result.fixed
    assert result.fisher_p == 1.0
    headline = result.headline()
    assert headline.startswith("NOT REPRODUCED: unfixed saw no EOD-race EIO in 10 iterations")
    assert "(fixed: 0/10)" in headline
    assert "--widen" in headline


@pytest.mark.parametrize(
    ("patched_records", "why"),
    [
        (variant_records("fixed", 5, 0), "fewer iterations than the stock run"),
        (variant_records("fixed", 10, 0, hang=True), "a hang"),
        (
            [
                *variant_records("fixed", 10, 0),
                {"iteration": 11, "fault": "unknown", "verdict": "kernel_crash"},
            ],
            "a crashed VM",
        ),
    ],
)
def test_not_fixed_without_a_clean_patched_run(
    tmp_path: Path, patched_records: list[dict[str, Any]], why: str
) -> None:
    stock = outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 3))
    patched = outcome_of(tmp_path, "fixed", patched_records)
    result = compare(stock, patched)
    assert result.reproduced
    assert not result.fixed, why
    assert not result.headline().startswith("REPRODUCED AND FIXED")


# --- render and write ---------------------------------------------------------------------------


def comparison(tmp_path: Path) -> Comparison:
    return compare(
        outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 3)),
        outcome_of(tmp_path, "fixed", variant_records("fixed", 12, 0)),
    )


def test_render_is_a_table_of_both_variants(tmp_path: Path) -> None:
    text = render(comparison(tmp_path))
    lines = text.splitlines()
    assert lines[0].split() == ["unfixed", "fixed"]
    assert set(lines[1]) == {"-"}
    rows = {line[:36].strip(): line[36:].split() for line in lines[2:] if line.strip()}
    assert rows["nvme_core srcversion"] == ["6E052DFC06DA8E036E0639E", "1F49BEBD82E17B252F08608"]
    assert rows["iterations"] == ["10", "12"]
    assert rows["of them EOD race, other path live"] == ["3", "0"]
    assert rows["VM crashed"] == ["no", "no"]
    assert rows["time to first EIO (s)"] == ["98", "-"]
    assert "two-sided p = " in text
    assert lines[-1].startswith("REPRODUCED AND FIXED")


def test_write_saves_json_and_table(tmp_path: Path) -> None:
    result = comparison(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    text = write(result, out)
    assert (out / compare_mod.COMPARE_TABLE).read_text() == text + "\n"
    data = json.loads((out / compare_mod.COMPARE_JSON).read_text())
    assert data["reproduced"] is True
    assert data["fixed"] is True
    assert data["headline"] == result.headline()
    assert data["stock"]["race_iterations"] == 3
    assert data["patched"]["iterations"] == 12
    assert data["fisher_p"] == result.fisher_p

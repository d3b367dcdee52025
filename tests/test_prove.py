"""prove-fixed: parts until N clean iterations or the first failure, resumed after a kill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import prove
from harness.core.errors import HarnessError
from harness.core.exits import ExitCode


def write_part(part: Path, verdicts: list[str], elapsed_s: float | None = 60.0) -> None:
    part.mkdir(parents=True, exist_ok=True)
    with (part / "results.jsonl").open("w") as f:
        for index, verdict in enumerate(verdicts):
            record = {"iteration": index + 1, "verdict": verdict, "app_eio": 0}
            f.write(json.dumps(record) + "\n")
    if elapsed_s is not None:
        (part / "summary.json").write_text(json.dumps({"elapsed_s": elapsed_s}))


class FakeParts:
    """run_part stand-in: each call writes the next prepared list of verdicts."""

    def __init__(self, parts: list[list[str]]) -> None:
        self.parts = parts
        self.calls: list[tuple[str, int]] = []

    def __call__(self, part: Path, iterations: int) -> int:
        self.calls.append((part.name, iterations))
        verdicts = self.parts.pop(0)
        write_part(part, verdicts[:iterations])
        return 0


def run(outdir: Path, parts: FakeParts, target: int) -> tuple[int, list[str]]:
    said: list[str] = []
    status = prove.prove(outdir, "race", "fixed", target, parts, said.append)
    return status, said


def test_proven_after_enough_clean_iterations(tmp_path: Path) -> None:
    parts = FakeParts([["pass"] * 10])
    status, said = run(tmp_path, parts, target=10)
    assert status == ExitCode.OK
    assert parts.calls == [("part-01", 10)]
    data = json.loads((tmp_path / "prove.json").read_text())
    assert data["status"] == "proven" and data["clean"] == 10
    # 10 clean iterations: the rate is below 1 - 0.05 ** (1/10) = 25.9 % at 95 %
    assert data["upper_bound_95"] == pytest.approx(1 - 0.05 ** (1 / 10), abs=1e-6)
    assert said[-1].startswith("FIXED: 10 clean iterations") and "25.89 %" in said[-1]


def test_first_failure_ends_the_run(tmp_path: Path) -> None:
    parts = FakeParts([["pass", "pass", "eio_race"]])
    status, said = run(tmp_path, parts, target=100)
    assert status == ExitCode.FAILED
    data = json.loads((tmp_path / "prove.json").read_text())
    assert data["status"] == "failed" and data["failure"]["iteration"] == 3
    assert said[-1].startswith("NOT FIXED: iteration 3 of part-01 failed (eio_race")


def test_a_killed_run_resumes_with_what_is_missing(tmp_path: Path) -> None:
    # the first command was killed after 4 clean iterations (no summary written)
    write_part(tmp_path / "part-01", ["pass"] * 4, elapsed_s=None)
    (tmp_path / "prove.json").write_text(json.dumps({"config": "race", "variant": "fixed"}))
    parts = FakeParts([["pass"] * 6])
    status, said = run(tmp_path, parts, target=10)
    assert status == ExitCode.OK
    assert parts.calls == [("part-02", 6)]
    assert said[0].startswith("resuming") and "4/10 clean" in said[0]


def test_expected_errors_and_infra_errors_are_not_clean(tmp_path: Path) -> None:
    parts = FakeParts([["pass", "infra_error", "expected_eio", "pass"], ["pass"] * 2])
    status, _ = run(tmp_path, parts, target=4)
    assert status == ExitCode.OK
    assert parts.calls == [("part-01", 4), ("part-02", 2)]
    data = json.loads((tmp_path / "prove.json").read_text())
    assert (data["clean"], data["infra_errors"], data["other"]) == (4, 1, 1)


def test_a_part_that_runs_nothing_is_infrastructure(tmp_path: Path) -> None:
    status, said = run(tmp_path, FakeParts([[]]), target=5)
    assert status == ExitCode.INFRA
    assert "ran no iteration" in said[-1]


def test_too_many_infra_errors_end_the_run(tmp_path: Path) -> None:
    parts = FakeParts([["infra_error", "infra_error", "pass"]] * 3)
    status, said = run(tmp_path, parts, target=20)
    assert status == ExitCode.INFRA
    assert "could not run" in said[-1]


def test_another_runs_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "prove.json").write_text(json.dumps({"config": "other", "variant": "fixed"}))
    with pytest.raises(HarnessError, match="holds a prove-fixed run of other"):
        run(tmp_path, FakeParts([]), target=5)


def test_state_rates(tmp_path: Path) -> None:
    write_part(tmp_path / "part-01", ["pass"] * 30, elapsed_s=45.0)
    state = prove.read_state(tmp_path, "race", "fixed", 1000)
    data: dict[str, Any] = state.to_dict()
    assert data["iterations_per_min"] == 40.0
    assert data["status"] == "running"
    assert "30/1000 clean iterations so far" in prove.describe(state)

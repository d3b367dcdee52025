"""Scenario table: per named config, the race's hit rate per fault iteration.

``nvmf-harness scenarios`` runs each config in a VM on one module variant (normally
``unfixed``) and tabulates, from the results alone: iterations, race iterations (app EIO with
the EOD-race line while another path was live), hit rate, time from campaign start to the
first EIO, mean cycle time, the expected time to a first hit (cycle / hit rate), and every
verdict counted (what a scenario that is not about the race found: hangs, expected EIOs...).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.core.results import (
    RESULTS_FILE,
    SUMMARY_FILE,
    is_iteration,
    is_race_iteration,
    read_json_object,
    read_records,
    write_json_atomic,
)


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    variant: str
    widener: bool
    iopolicy: str
    iterations: int
    race_iterations: int
    app_eio_iterations: int
    hit_rate: float
    first_eio_s: float | None
    mean_cycle_s: float
    expected_s_to_first_hit: float | None
    widener_mean_delay_us: float | None
    # every iteration's verdict, counted ("pass 4, expected_eio 1"): what the scenario found
    verdicts: str = ""


def verdict_counts(records: list[dict[str, Any]]) -> str:
    """``pass 4, expected_eio 1``: the records' verdicts with their counts, most first."""
    counts = Counter(str(r.get("verdict", "?")) for r in records)
    return ", ".join(
        f"{name} {n}" for name, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))
    )


def scenario_result(name: str, results_dir: Path) -> ScenarioResult:
    records = [r for r in read_records(results_dir / RESULTS_FILE) if is_iteration(r)]
    race = [r for r in records if is_race_iteration(r)]
    eio = [r for r in records if r["app_eio"]]
    n = len(records)
    rate = len(race) / n if n else 0.0
    cycle = sum(float(r["cycle_s"]) for r in records) / n if n else 0.0
    firsts = [float(r["first_eio_at_s"]) for r in eio if r.get("first_eio_at_s") is not None]
    delay = None
    widener = read_json_object(results_dir / SUMMARY_FILE).get("widener") or {}
    if widener.get("bios_delayed"):
        delay = round(widener["delay_sum_us"] / widener["bios_delayed"], 1)
    first = records[0] if records else {}
    return ScenarioResult(
        scenario=name,
        variant=str(first.get("variant", "")),
        widener=bool(first.get("widener", False)),
        iopolicy=str(first.get("iopolicy", "")),
        iterations=n,
        race_iterations=len(race),
        app_eio_iterations=len(eio),
        hit_rate=round(rate, 3),
        first_eio_s=round(min(firsts), 1) if firsts else None,
        mean_cycle_s=round(cycle, 2),
        expected_s_to_first_hit=round(cycle / rate, 1) if rate else None,
        widener_mean_delay_us=delay,
        verdicts=verdict_counts(records),
    )


COLUMNS = (
    ("scenario", "scenario"),
    ("variant", "variant"),
    ("widener", "widener"),
    ("iopolicy", "iopolicy"),
    ("iterations", "iterations"),
    ("race iters", "race_iterations"),
    ("hit rate", "hit_rate"),
    ("first EIO s", "first_eio_s"),
    ("cycle s", "mean_cycle_s"),
    ("E[s to hit]", "expected_s_to_first_hit"),
    ("widen us", "widener_mean_delay_us"),
    ("verdicts", "verdicts"),
)


def markdown(results: list[ScenarioResult]) -> str:
    lines = ["| " + " | ".join(title for title, _ in COLUMNS) + " |"]
    lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
    for result in results:
        cells = []
        for _, key in COLUMNS:
            value = getattr(result, key)
            cells.append(
                "-"
                if value is None
                else ("yes" if value is True else "no" if value is False else str(value))
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(results: list[ScenarioResult], outdir: Path) -> str:
    text = markdown(results)
    (outdir / "scenarios.md").write_text(text + "\n")
    data: list[dict[str, Any]] = [asdict(result) for result in results]
    write_json_atomic(outdir / "scenarios.json", data)
    return text

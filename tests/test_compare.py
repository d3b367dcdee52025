"""Stock versus patched: outcomes read from results directories, the verdict and its numbers,
and ``nvmf-harness compare`` end to end with the VM faked.

Numbers used (one-sided Fisher, the stock row failing more; see tests/test_stats.py):
4/20 vs 0/20: p = C(20,4)/C(40,4) = 0.0530; 6/20 vs 0/20: 0.0101; 9/10 vs 0/10:
10/C(20,9) = 5.95e-5. Clopper-Pearson one-sided 95% bounds: 0/10 25.9%, 0/20 13.9%,
0/58 5.03%, 0/59 4.95%.
"""

from __future__ import annotations

import json
import random
from math import comb
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from harness.analysis import compare as compare_mod
from harness.analysis.compare import (
    Comparison,
    ComparisonVerdict,
    VariantOutcome,
    compare,
    outcome,
    render,
    write,
)
from harness.cli import app as cli
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE, JsonlWriter, Verdict
from harness.vm import batch as vm_batch
from harness.vm.boot import VmResult
from tests.test_results import record_dict

RACE: dict[str, Any] = {
    "app_eio": 2,
    "another_path_live": True,
    "eod_race_lines": 1,
    "witness_events": 2,  # the BPF witness saw both bios; the kernel printed one line
    "verdict": Verdict.EIO_RACE,
}
SRCVERSION = {"unfixed": "6E052DFC06DA8E036E0639E", "fixed": "1F49BEBD82E17B252F08608"}
CONFIG = Path(__file__).resolve().parent.parent / "configs" / "race-ctrl-delete-widened.toml"


def results_dir(tmp_path: Path, name: str, records: list[dict[str, Any]]) -> Path:
    directory = tmp_path / name
    directory.mkdir(parents=True)
    with JsonlWriter(directory / RESULTS_FILE) as writer:
        for record in records:
            writer.append(record)
    return directory


def variant_records(
    variant: str, iterations: int, races: int, **extra: Any
) -> list[dict[str, Any]]:
    records = []
    for index in range(iterations):
        changes: dict[str, Any] = {
            "iteration": index + 1,
            "variant": variant,
            "srcversion": SRCVERSION.get(variant, ""),
            "witness_events": 0,  # a run with the block-layer witness
        }
        if index < races:
            changes.update(RACE, first_eio_at_s=100.0 - index)
        changes.update(extra)
        records.append(record_dict(**changes))
    return records


def outcome_of(tmp_path: Path, variant: str, records: list[dict[str, Any]]) -> VariantOutcome:
    return outcome(variant, results_dir(tmp_path, variant, records))


def counts(stock: tuple[int, int], patched: tuple[int, int], **options: Any) -> Comparison:
    """compare() of clean runs: (race iterations, iterations) per variant."""
    return compare(
        VariantOutcome.of_counts("unfixed", stock[1], stock[0]),
        VariantOutcome.of_counts("fixed", patched[1], patched[0]),
        **options,
    )


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
    assert result.trials == 5  # the infra error tested nothing
    assert result.iterations_with_app_eio == 3
    assert result.race_iterations == 1
    assert result.failed
    assert result.eio_count == 2 + 1 + 4
    assert result.eod_race_lines == 1 + 1 + 3
    assert result.verify_failures == 2
    assert result.hangs == 1
    assert result.infra_errors == 1
    assert not result.crashed
    assert not result.clean  # a hang
    assert result.time_to_first_eio_s == 12.5
    # 1 of 5 trials: the p with (1-p)^5 + 5p(1-p)^4 = 0.05
    assert result.failure_rate_upper95 == pytest.approx(0.6574, abs=1e-4)


def test_outcome_of_a_crashed_vm(tmp_path: Path) -> None:
    records = variant_records("fixed", 3, 0)
    records.append({"run_id": "r", "iteration": 4, "fault": "unknown", "verdict": "kernel_crash"})
    result = outcome_of(tmp_path, "fixed", records)
    assert result.crashed
    assert result.iterations == 3  # the crash record is not an iteration
    assert not result.failed
    assert not result.clean


def test_outcome_of_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = outcome("fixed", tmp_path / "empty")
    assert result.iterations == 0
    assert result.srcversion == ""
    assert result.time_to_first_eio_s is None
    assert result.failure_rate_upper95 == 1.0
    assert not result.failed
    assert not result.clean


def test_outcome_pools_several_directories(tmp_path: Path) -> None:
    first = results_dir(tmp_path, "batch-01/unfixed", variant_records("unfixed", 5, 2))
    second = results_dir(tmp_path, "batch-02/unfixed", variant_records("unfixed", 4, 1))
    pooled = outcome("unfixed", first, second)
    assert (pooled.iterations, pooled.race_iterations, pooled.eio_count) == (9, 3, 6)
    assert pooled.time_to_first_eio_s == 99.0
    assert pooled.srcversion == SRCVERSION["unfixed"]
    assert pooled == outcome("unfixed", first, second, tmp_path / "missing")


def test_of_counts_is_a_clean_run() -> None:
    result = VariantOutcome.of_counts("fixed", 10, 0)
    assert (result.trials, result.race_iterations, result.clean) == (10, 0, True)
    assert result.failure_rate_upper95 == pytest.approx(0.2589, abs=1e-4)


# --- the verdicts ------------------------------------------------------------------------------


def test_4_of_20_vs_0_of_20_is_inconclusive_and_says_what_would_decide() -> None:
    """The case that started this: 4/20 vs 0/20 once printed REPRODUCED AND FIXED."""
    result = counts((4, 20), (0, 20))
    assert result.verdict == ComparisonVerdict.INCONCLUSIVE
    assert not result.reproduced and not result.fixed
    assert result.fisher_p_one_sided == pytest.approx(comb(20, 4) / comb(40, 4), rel=1e-5)
    assert result.fisher_p == pytest.approx(0.106029, rel=1e-5)  # two-sided, as before
    assert result.needed_iterations == 44
    assert result.needed_at_rates == (0.2, 0.0)
    assert result.headline() == (
        "INCONCLUSIVE: unfixed 4/20 vs fixed 0/20 race iterations (one-sided Fisher "
        "p=0.053 >= alpha=0.01); 44 iterations per variant would decide it at true rates of "
        "20.0% vs 0.0% (80% power)"
    )


def test_9_of_10_vs_0_of_10_is_reproduced_and_fixed() -> None:
    result = counts((9, 10), (0, 10))
    assert result.verdict == ComparisonVerdict.REPRODUCED_AND_FIXED
    assert result.reproduced and result.fixed
    assert result.fisher_p_one_sided == pytest.approx(10 / comb(20, 9), rel=1e-5)
    assert result.needed_iterations is None and result.needed_at_rates is None
    assert result.headline() == (
        "REPRODUCED AND FIXED: unfixed saw app EIO with the race's failed bios in 9/10 "
        "iterations (kernel line 9, BPF witness 9), fixed in 0/10 (one-sided Fisher "
        "p=5.95e-05 < alpha=0.01); fixed race rate < 25.9% at 95%"
    )


def test_alpha_decides_a_borderline_case() -> None:
    """6/20 vs 0/20 (the README's run): p = 0.0101, just above the default 0.01."""
    assert counts((6, 20), (0, 20)).verdict == ComparisonVerdict.INCONCLUSIVE
    assert counts((6, 20), (0, 20)).needed_iterations == 29
    looser = counts((6, 20), (0, 20), alpha=0.05)
    assert looser.verdict == ComparisonVerdict.REPRODUCED_AND_FIXED
    assert "p=0.0101 < alpha=0.05" in looser.headline()


@pytest.mark.parametrize(
    ("stock", "patched", "reproduced"),
    [((4, 20), (1, 20), False), ((0, 20), (1, 20), False), ((20, 20), (1, 20), True)],
)
def test_one_race_on_the_patched_variant_is_not_fixed(
    stock: tuple[int, int], patched: tuple[int, int], reproduced: bool
) -> None:
    """A counterexample needs no test: one race iteration on the fixed kernel is NOT FIXED,
    whatever the stock variant did (significant or not)."""
    result = counts(stock, patched)
    assert result.verdict == ComparisonVerdict.NOT_FIXED
    assert result.reproduced is reproduced
    assert not result.fixed
    headline = result.headline()
    assert headline.startswith(
        "NOT FIXED: fixed saw app EIO with the race's failed bios in 1/20 iterations "
        "(kernel line 1, BPF witness 1) (one is a counterexample); "
    )
    assert f"unfixed: {stock[0]}/{stock[1]} (one-sided Fisher p=" in headline


def test_not_reproduced_needs_the_stock_bound_below_the_rate_looked_for() -> None:
    result = counts((0, 59), (0, 59))
    assert result.verdict == ComparisonVerdict.NOT_REPRODUCED
    assert result.headline() == (
        "NOT REPRODUCED: unfixed saw no race EIO in 59 iterations: its race rate is "
        "< 5.0% at 95%, below the 5% looked for (fixed: 0/59); try --widen or another scenario"
    )
    # one iteration fewer: the bound (5.03%) is not below 5%, nothing is claimed
    assert counts((0, 58), (0, 58)).verdict == ComparisonVerdict.INCONCLUSIVE
    assert counts((0, 20), (0, 20), min_rate=0.2).verdict == ComparisonVerdict.NOT_REPRODUCED


def test_no_stock_race_yet_is_inconclusive_with_the_n_for_the_stated_rate() -> None:
    result = counts((0, 20), (0, 20))
    assert result.verdict == ComparisonVerdict.INCONCLUSIVE
    assert result.needed_iterations == 180
    assert result.needed_at_rates == (0.05, 0.0)
    assert result.headline() == (
        "INCONCLUSIVE: unfixed 0/20 vs fixed 0/20 race iterations (one-sided Fisher p=1 >= "
        "alpha=0.01; unfixed race rate < 13.9% at 95%); no number of iterations decides it at "
        "a true unfixed rate of 0; 180 iterations per variant would decide it at true rates of "
        "5.0% vs 0.0% (80% power)"
    )


def test_rates_too_close_for_the_search_say_so() -> None:
    result = counts((1, 500), (0, 500))
    assert result.verdict == ComparisonVerdict.INCONCLUSIVE
    assert result.needed_iterations is None
    assert "more than 2000 iterations per variant would decide it" in result.headline()


@pytest.mark.parametrize(
    ("patched_records", "why"),
    [
        (variant_records("fixed", 10, 0, hang=True), "10 hang(s)"),
        (
            [
                *variant_records("fixed", 10, 0),
                {"iteration": 11, "fault": "unknown", "verdict": "kernel_crash"},
            ],
            "its VM crashed or timed out",
        ),
        ([], "it ran no iteration"),
    ],
)
def test_a_patched_run_that_is_not_clean_claims_nothing(
    tmp_path: Path, patched_records: list[dict[str, Any]], why: str
) -> None:
    stock = outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 9))
    patched = outcome_of(tmp_path, "fixed", patched_records)
    result = compare(stock, patched)
    assert result.verdict == ComparisonVerdict.INCONCLUSIVE
    assert not result.fixed
    assert result.needed_iterations is None
    assert f"but the fixed run was not clean ({why})" in result.headline()


def test_fewer_patched_iterations_only_widen_the_bound(tmp_path: Path) -> None:
    """No rule on equal iteration counts: the test and the bound carry the difference."""
    result = counts((10, 10), (0, 6))
    assert result.verdict == ComparisonVerdict.REPRODUCED_AND_FIXED
    assert "fixed race rate < 39.3% at 95%" in result.headline()


def test_infra_errors_are_not_trials(tmp_path: Path) -> None:
    stock = outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 9))
    patched_records = variant_records("fixed", 10, 0)
    for record in patched_records[:6]:
        record["verdict"] = Verdict.INFRA_ERROR
    result = compare(stock, outcome_of(tmp_path, "fixed", patched_records))
    assert result.patched.trials == 4
    assert "fixed in 0/4" in result.headline()


def test_bad_levels_are_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        counts((1, 2), (0, 2), alpha=1.5)
    with pytest.raises(ValueError, match="min_rate"):
        counts((1, 2), (0, 2), min_rate=0.0)


# --- render and write ---------------------------------------------------------------------------


def comparison(tmp_path: Path) -> Comparison:
    return compare(
        outcome_of(tmp_path, "unfixed", variant_records("unfixed", 10, 8)),
        outcome_of(tmp_path, "fixed", variant_records("fixed", 12, 0)),
    )


def test_render_is_a_table_of_both_variants(tmp_path: Path) -> None:
    result = comparison(tmp_path)
    text = render(result)
    lines = text.splitlines()
    assert lines[0].split() == ["unfixed", "fixed"]
    assert set(lines[1]) == {"-"}
    rows = {}
    for line in lines[2:]:
        if line.strip() and not line.startswith(("Fisher", "Rule", "REPRODUCED")):
            label, stock, patched = line.rsplit(maxsplit=2)  # values have no spaces
            rows[label.strip()] = [stock, patched]
    assert rows["nvme_core srcversion"] == ["6E052DFC06DA8E036E0639E", "1F49BEBD82E17B252F08608"]
    assert rows["iterations"] == ["10", "12"]
    assert rows["of them race bios seen, other path live"] == ["8", "0"]
    assert rows["seen by the kernel line"] == ["8", "0"]
    assert rows["seen by the BPF witness"] == ["8", "0"]
    assert rows["VM crashed"] == ["no", "no"]
    assert rows["time to first EIO (s)"] == ["93", "-"]
    assert (
        "one-sided (unfixed rate > fixed rate): p = "
        f"{result.fisher_p_one_sided:.3g}, alpha = 0.01" in text
    )
    assert lines[-2] == f"Rule: {compare_mod.single_comparison_rule(0.01)}"
    assert lines[-1].startswith("REPRODUCED AND FIXED")


def test_write_saves_json_and_table_in_the_shape_readers_expect(tmp_path: Path) -> None:
    result = comparison(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    text = write(result, out, extra={"sequential": {"looks": []}})
    assert (out / compare_mod.COMPARE_TABLE).read_text() == text + "\n"
    data = json.loads((out / compare_mod.COMPARE_JSON).read_text())
    # what scripts/test and report_html read
    for side, iterations in (("stock", 10), ("patched", 12)):
        assert data[side]["iterations"] == iterations
        for key in ("crashed", "infra_errors", "race_iterations", "hangs", "srcversion"):
            assert key in data[side]
    assert data["reproduced"] is True and data["fixed"] is True
    assert data["headline"] == result.headline()
    assert data["fisher_p"] == result.fisher_p
    # new
    assert data["verdict"] == "reproduced_and_fixed"
    assert data["fisher_p_one_sided"] == result.fisher_p_one_sided
    assert data["alpha"] == 0.01
    assert data["needed_iterations"] is None and data["needed_at_rates"] is None
    assert data["rule"] == result.rule
    assert data["sequential"] == {"looks": []}


def test_an_inconclusive_json_carries_the_needed_iterations(tmp_path: Path) -> None:
    write(counts((4, 20), (0, 20)), tmp_path)
    data = json.loads((tmp_path / compare_mod.COMPARE_JSON).read_text())
    assert data["verdict"] == "inconclusive"
    assert data["needed_iterations"] == 44
    assert data["needed_at_rates"] == {"stock": 0.2, "patched": 0.0}


# --- nvmf-harness compare, the VM faked ------------------------------------------------------


class FakeGuest:
    """Plays the VM for ``compare``: per boot, runs the plan's campaigns the way the guest's
    ``run-plan`` does (started marker, results.jsonl, exit status). An iteration of the
    unfixed variant is a race with probability ``rates["unfixed"]``, drawn from the run's
    seed and iteration, so batches with different seeds differ."""

    def __init__(self, rates: dict[str, float]) -> None:
        self.rates = rates
        self.boots: list[list[tuple[str, int, int]]] = []  # per boot: (variant, iters, seed)

    def __call__(self, spec: Any, vm_dir: Path, guest: list[str], **_: Any) -> VmResult:
        assert guest[-2] == "run-plan"
        runs = []
        for run in vm_batch.read_plan(Path(guest[-1])):
            args = list(run.args)
            variant = args[args.index("--variant") + 1]
            iterations = int(args[args.index("--iterations") + 1])
            seed = int(args[args.index("--seed") + 1]) if "--seed" in args else 11
            runs.append((variant, iterations, seed))
            vm_batch.mark_started(run.outdir)
            draw = random.Random(f"{variant}-{seed}")
            races = sum(draw.random() < self.rates.get(variant, 0.0) for _ in range(iterations))
            records = variant_records(variant, iterations, races)
            with JsonlWriter(run.outdir / RESULTS_FILE) as writer:
                for record in records:
                    writer.append(record)
            vm_batch.mark_done(run.outdir, 1 if races else 0)
        self.boots.append(runs)
        return VmResult(
            exit_status=0, boot_s=1.0, wall_s=2.0, crashed=False, timed_out=False, console_tail=[]
        )


@pytest.fixture
def fake_vm(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Install a FakeGuest (returned by the fixture's result with the wanted rates)."""
    from harness.kernels import kbuild
    from harness.vm import campaigns as vm_campaigns

    def build_variant(variant: str, **_: Any) -> SimpleNamespace:
        return SimpleNamespace(
            release="6.1.0-56-amd64",
            srcversion={"nvme-core": SRCVERSION[variant]},
            cached=True,
            build_seconds=0.0,
        )

    monkeypatch.setattr(kbuild, "build_variant", build_variant)

    def install(rates: dict[str, float]) -> FakeGuest:
        guest = FakeGuest(rates)
        monkeypatch.setattr(vm_campaigns, "run_in_vm", guest)
        return guest

    return install


def compare_cli(out: Path, *extra: str) -> int:
    # --kernel must name an existing file; a fake image beside out, not /boot's (a fresh
    # machine has another release there, or none).
    image = out.parent / "vmlinuz-6.1.0-56-amd64"
    image.write_bytes(b"")
    return cli.main(
        [
            "compare",
            "--config",
            str(CONFIG),
            "--out",
            str(out),
            "--kernel",
            str(image),
            "--accel",
            "tcg",
            *extra,
        ]
    )


def test_compare_cli_prints_the_verdict_and_its_rule(
    tmp_path: Path, fake_vm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    guest = fake_vm({"unfixed": 0.2})
    status = compare_cli(tmp_path / "out", "--iterations", "20")
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "out" / compare_mod.COMPARE_JSON).read_text())
    assert guest.boots == [[("unfixed", 20, 11), ("fixed", 20, 11)]]  # one boot, one seed
    assert data["stock"]["iterations"] == data["patched"]["iterations"] == 20
    assert data["rule"] == compare_mod.single_comparison_rule(0.01)
    assert f"\nRule: {data['rule']}\n" in out  # one line, with the table
    assert out.rstrip().endswith(data["headline"])
    # the seeded draw gives 5/20: p = C(20,5)/C(40,5) = 0.0236, not below 0.01
    assert data["stock"]["race_iterations"] == 5
    assert data["verdict"] == "inconclusive"
    assert data["needed_iterations"] == 35
    assert status == ExitCode.FAILED


def test_compare_cli_alpha_option(tmp_path: Path, fake_vm: Any) -> None:
    fake_vm({"unfixed": 0.9})
    assert compare_cli(tmp_path / "out", "--iterations", "10", "--alpha", "0.05") == ExitCode.OK
    data = json.loads((tmp_path / "out" / compare_mod.COMPARE_JSON).read_text())
    assert data["alpha"] == 0.05 and data["verdict"] == "reproduced_and_fixed"


def test_compare_cli_refuses_a_bad_alpha_in_one_line(
    tmp_path: Path, fake_vm: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_vm({})
    assert compare_cli(tmp_path / "out", "--alpha", "2") == ExitCode.INFRA
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--alpha 2: give a level in (0, 1)" in err


def dead_vm(spec: Any, rwdir: Path, guest_argv: list[str], **_: Any) -> VmResult:
    """A run_in_vm whose qemu aborted under KVM before the guest started (CI, 2026-12-01)."""
    with (rwdir / "console.log").open("a") as console:
        console.write("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n")
    return VmResult(
        exit_status=None, boot_s=None, wall_s=8.3, crashed=True, timed_out=False, console_tail=[]
    )


def test_compare_cli_says_when_the_vm_ended_before_any_campaign(
    tmp_path: Path,
    fake_vm: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CI failure of 2026-12-01: qemu aborted under KVM, no campaign started. One line
    says so with qemu's last words, and the exit status is an infrastructure failure."""
    from harness.vm import campaigns as vm_campaigns

    fake_vm({})
    monkeypatch.setattr(vm_campaigns, "run_in_vm", dead_vm)
    status = compare_cli(tmp_path / "out", "--iterations", "4")
    said = capsys.readouterr()
    assert status == ExitCode.INFRA
    lines = [x for x in said.out.splitlines() if "before its first campaign (unfixed) started" in x]
    assert len(lines) == 1 and "failed to set MSR 0x10a" in lines[0], said.out
    assert "console.log" in lines[0]
    assert "Traceback" not in said.err


def test_a_witness_that_dropped_events_or_fell_behind_cannot_say_fixed(tmp_path: Path) -> None:
    """On a kernel that fails the race's bios silently, 0 race iterations on the patched side
    is a claim only where the witness watched every iteration whole: an iteration in which
    bpftrace dropped events (or was behind when its window was taken) makes it
    INCONCLUSIVE."""
    silent = {"eod_race_lines": 0, "witness_events": 3}
    stock_records = [
        {**r, **silent} if r["app_eio"] else r for r in variant_records("unfixed", 10, 9)
    ]
    stock = outcome_of(tmp_path / "s", "unfixed", stock_records)
    whole = outcome_of(tmp_path / "p", "fixed", variant_records("fixed", 10, 0))
    verdict = compare_mod.compare(stock, whole, eod_shape="fail-silently").verdict
    assert verdict == compare_mod.ComparisonVerdict.REPRODUCED_AND_FIXED
    dropped = variant_records("fixed", 10, 0)
    dropped[3]["witness_lost"] = 7
    dropped[5]["witness_caught_up"] = False
    blind = outcome_of(tmp_path / "q", "fixed", dropped)
    assert blind.witness_iterations == 8 and not blind.witness_ran
    verdict = compare_mod.compare(stock, blind, eod_shape="fail-silently").verdict
    assert verdict == compare_mod.ComparisonVerdict.INCONCLUSIVE
    assert compare_mod.witness_complete({"witness_events": 0})
    assert not compare_mod.witness_complete({"witness_events": None})

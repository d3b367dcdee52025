"""harness.analysis.matrix and `nvmf-harness matrix`: per-release verdicts from compare's
result, the table in four formats, preparation errors, and the CLI with the VM replaced by written
results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.analysis import compare, experiments, matrix
from harness.bed import module_records
from harness.cli import app as cli
from harness.core.console import Say
from harness.core.errors import ToolError, UsageError
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE, JsonlWriter
from harness.kernels import debian_archive, kbuild, releases
from harness.kernels.tree_build import TreeBuild
from harness.report import matrix_page
from harness.vm.campaigns import PlannedCampaign
from harness.vm.options import RunOptions, VmOptions
from tests.test_compare import variant_records

REL = "6.1.0-47-amd64"
STOCK_FACTS = releases.SourceFacts(
    "t", "6.1.170", 170, False, "fail-with-line", "affected (with a line)"
)
FIX_FACTS = releases.SourceFacts("t", "6.1.192", 192, True, "fail-with-line", "fixed")
OLD_EOD_FACTS = releases.SourceFacts("t", "6.1.170", 170, False, "skip-zero-size", "not affected")
SRCVERSION = {"unfixed": "6E052DFC06DA8E036E0639E", "fixed": "1F49BEBD82E17B252F08608"}


def comparison(unfixed: tuple[int, int], fixed: tuple[int, int]) -> compare.Comparison:
    """compare(unfixed, fixed) from (iterations, race iterations) pairs."""
    return compare.compare(
        compare.VariantOutcome.of_counts("unfixed", *unfixed),
        compare.VariantOutcome.of_counts("fixed", *fixed),
    )


# --- verdicts ------------------------------------------------------------------------------


def test_stock_source_failing_significantly_is_affected() -> None:
    verdict, reason = matrix.release_verdict(STOCK_FACTS, comparison((20, 9), (20, 0)))
    assert verdict == matrix.ReleaseVerdict.AFFECTED
    assert "9/20" in reason and "the patch removes it" in reason


def test_source_with_the_fix_and_a_failing_toggle_is_fixed() -> None:
    verdict, reason = matrix.release_verdict(FIX_FACTS, comparison((20, 9), (20, 0)))
    assert verdict == matrix.ReleaseVerdict.FIXED
    assert "0/20" in reason


def test_shipped_fix_that_still_fails_is_affected() -> None:
    verdict, reason = matrix.release_verdict(FIX_FACTS, comparison((20, 9), (20, 1)))
    assert verdict == matrix.ReleaseVerdict.AFFECTED
    assert "counterexample" in reason


def test_no_zero_size_check_and_no_failure_is_not_affected() -> None:
    verdict, reason = matrix.release_verdict(OLD_EOD_FACTS, comparison((3, 0), (3, 0)))
    assert verdict == matrix.ReleaseVerdict.NOT_AFFECTED
    assert "zero-capacity" in reason


def test_a_stock_source_that_can_fail_but_did_not_is_inconclusive() -> None:
    verdict, reason = matrix.release_verdict(STOCK_FACTS, comparison((20, 0), (20, 0)))
    assert verdict == matrix.ReleaseVerdict.INCONCLUSIVE
    assert "unfixed 0/20" in reason


def test_too_few_iterations_is_inconclusive_with_compares_figure() -> None:
    result = comparison((3, 1), (3, 0))
    verdict, reason = matrix.release_verdict(FIX_FACTS, result)
    assert verdict == matrix.ReleaseVerdict.INCONCLUSIVE
    assert result.needed_iterations is not None
    assert f"about {result.needed_iterations} iterations per variant" in reason


def test_a_crashed_run_is_never_not_affected() -> None:
    crashed = compare.VariantOutcome.of_counts("fixed", 2, 0)
    crashed = compare.VariantOutcome(**{**crashed.__dict__, "crashed": True})
    result = compare.compare(compare.VariantOutcome.of_counts("unfixed", 3, 0), crashed)
    verdict, _ = matrix.release_verdict(OLD_EOD_FACTS, result)
    assert verdict == matrix.ReleaseVerdict.INCONCLUSIVE


# --- results directories, the table ------------------------------------------------------


def fake_build(
    variant: str, as_shipped: bool, srcversion: str | None = None
) -> module_records.VariantBuild:
    return module_records.VariantBuild(
        release=REL,
        variant=variant,
        module_dir=f"/cache/{REL}/{variant}",
        srcversion={"nvme-core": srcversion or SRCVERSION[variant]},
        ko_sha256={},
        vermagic=f"{REL} SMP",
        has_fix=variant == "fixed",
        patch_action="none" if as_shipped else ("applied" if variant == "fixed" else "reverted"),
        patch_sha256="0",
        source_tarball="/src/linux-source-6.1.tar.xz",
        source_size=1,
        source_mtime_ns=1,
        make_vars=[],
        built_at="2026-12-01T00:00:00+00:00",
        build_seconds=1.0,
        patch_method="none" if as_shipped else "patch",
    )


def fake_release(name: str = REL, version: str = "6.1.170-3") -> releases.Release:
    return releases.Release(
        name=name,
        debian_version=version,
        image_package=f"linux-image-{name}",
        image_installed=True,
        headers_package=f"linux-headers-{name}",
        headers_installed=True,
        source_package="linux-source-6.1",
        source_version=version,
        source_versions_in_apt=(version,),
    )


def prepared(facts: releases.SourceFacts = STOCK_FACTS, name: str = REL) -> matrix.PreparedRelease:
    shipped = "fixed" if facts.has_fix else "unfixed"
    builds = {v: fake_build(v, v == shipped) for v in matrix.MATRIX_VARIANTS}
    return matrix.PreparedRelease(fake_release(name), "/src/t.tar.xz", facts, builds)


def write_results(directory: Path, variant: str, iterations: int, races: int) -> None:
    (directory / variant).mkdir(parents=True, exist_ok=True)
    with JsonlWriter(directory / variant / RESULTS_FILE) as writer:
        for record in variant_records(variant, iterations, races):
            writer.append(record)


def test_release_result_reads_both_runs(tmp_path: Path) -> None:
    write_results(tmp_path, "unfixed", 20, 9)
    write_results(tmp_path, "fixed", 20, 0)
    result = matrix.release_result(prepared(STOCK_FACTS), tmp_path)
    assert result.verdict == matrix.ReleaseVerdict.AFFECTED
    unfixed, fixed = result.rows
    assert (unfixed.variant, unfixed.as_shipped, unfixed.race_iterations) == ("unfixed", True, 9)
    assert (fixed.variant, fixed.as_shipped, fixed.iterations) == ("fixed", False, 20)
    assert unfixed.srcversion == SRCVERSION["unfixed"]
    assert result.fisher_p == result.comparison["fisher_p_one_sided"] < 0.01
    assert result.source == "linux-source-6.1=6.1.170-3"


def test_release_result_refuses_runs_of_other_modules(tmp_path: Path) -> None:
    write_results(tmp_path, "unfixed", 3, 0)
    write_results(tmp_path, "fixed", 3, 0)
    ready = prepared(STOCK_FACTS)
    ready.builds["fixed"] = fake_build("fixed", False, srcversion="SOMETHINGELSE")
    with pytest.raises(ToolError, match="the guest ran nvme_core"):
        matrix.release_result(ready, tmp_path)


def test_a_release_whose_vm_ran_nothing_is_inconclusive(tmp_path: Path) -> None:
    result = matrix.release_result(prepared(OLD_EOD_FACTS), tmp_path)
    assert result.verdict == matrix.ReleaseVerdict.INCONCLUSIVE
    assert [row.iterations for row in result.rows] == [0, 0]


def two_results(tmp_path: Path) -> list[matrix.ReleaseResult]:
    first, second = tmp_path / "a", tmp_path / "b"
    write_results(first, "unfixed", 3, 0)
    write_results(first, "fixed", 3, 0)
    write_results(second, "unfixed", 20, 9)
    write_results(second, "fixed", 20, 0)
    return [
        matrix.release_result(prepared(OLD_EOD_FACTS), first),
        matrix.release_result(prepared(FIX_FACTS, "6.1.0-56-amd64"), second),
    ]


def test_the_table_in_four_formats(tmp_path: Path) -> None:
    results = two_results(tmp_path)
    text = matrix.write(results, tmp_path / "out")
    matrix_page.write(results, tmp_path / "out")
    lines = text.splitlines()
    assert lines[0].split("  ")[0] == "release"
    assert "p (vs the other variant)" in lines[0]
    rows = [line for line in lines[2:6]]
    assert len(rows) == 4 and all(line.startswith(("6.1.0-47", "6.1.0-56")) for line in rows)
    assert "not affected" in rows[0] and "fixed" in rows[3]
    assert f"{REL} (6.1.170-3): not affected:" in text
    markdown = (tmp_path / "out" / matrix.MATRIX_MARKDOWN).read_text()
    assert markdown.count("\n| 6.1.0-") == 4 and "| --- |" in markdown
    page = (tmp_path / "out" / matrix.MATRIX_HTML).read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr style=") == 4
    assert "<script" not in page and "http" not in page  # self-contained
    data = json.loads((tmp_path / "out" / matrix.MATRIX_JSON).read_text())
    assert [r["verdict"] for r in data["releases"]] == ["not affected", "fixed"]
    assert data["releases"][1]["rows"][1]["as_shipped"] is True
    assert (tmp_path / "out" / matrix.MATRIX_TEXT).read_text() == text + "\n"


def test_html_escapes_cells(tmp_path: Path) -> None:
    result = two_results(tmp_path)[0]
    odd = matrix.ReleaseResult(**{**result.__dict__, "reason": "<b>x</b> & y"})
    page = matrix_page.render_html([odd])
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page and "<b>x</b>" not in page


MATRIX_DATA = Path(__file__).parent / "data" / "matrix" / "matrix.json"  # a real 6-release run


def saved_results(path: Path = MATRIX_DATA) -> list[matrix.ReleaseResult]:
    """The ReleaseResults of a matrix.json (the to_dict() of each, read back)."""
    results = []
    for data in json.loads(path.read_text())["releases"]:
        results.append(matrix.ReleaseResult.from_dict(data))
    return results


def test_a_record_from_before_the_three_shapes_reads_back() -> None:
    """tests/data/matrix/matrix.json says zero_size_eod_check (a real run of 2026-11)."""
    by_release = {r.release: r for r in saved_results()}
    old = by_release["6.1.0-47-amd64"]
    assert (old.eod_shape, old.predicted) == ("skip-zero-size", "not affected")
    new = by_release["6.1.0-57-amd64"]
    assert (new.eod_shape, new.predicted) == ("fail-with-line", "fixed")
    assert matrix.ReleaseResult.from_dict(new.to_dict()) == new


def test_html_page_of_a_real_matrix_has_its_chart() -> None:
    from tests.test_report_html import parse

    page_text = matrix_page.render_html(saved_results())
    page = parse(page_text)
    assert page.tags["svg"] == 1 and page.scripts == 0 and page.external == []
    assert "http" not in page_text
    assert page.classes["hit-rate"] == 12  # 6 releases, 2 variants each
    tips = " ".join(page.titles)
    assert "6.1.0-53-amd64 unfixed: 15 race iterations of 20: 75 %" in tips
    assert "6.12.107+deb12-amd64 fixed (as shipped): 0 race iterations of 20: 0 %" in tips
    assert "fixed, p=3.85e-07" in page.text  # the verdict after the unfixed row's numbers
    assert "not affected" in page.text and "Race iterations per release and variant" in page.titles


# --- preparation ---------------------------------------------------------------------------


def test_prepare_release_builds_both_from_the_releases_own_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tarball = tmp_path / "linux-source-6.1.tar.xz"
    built: list[tuple[str, str, Path | None]] = []
    monkeypatch.setattr(releases, "lookup", fake_release)
    monkeypatch.setattr(releases, "require_installed", lambda release: None)
    monkeypatch.setattr(
        releases,
        "fetch_source",
        lambda release, cache=None: releases.FetchedSource("p", "v", tarball, False),
    )
    monkeypatch.setattr(releases, "source_facts", lambda path: STOCK_FACTS)

    def build_variant(variant: str, **kwargs: Any) -> module_records.VariantBuild:
        built.append((variant, kwargs["release"], kwargs["source_tarball"]))
        return fake_build(variant, variant == "unfixed")

    monkeypatch.setattr(kbuild, "build_variant", build_variant)
    ready = matrix.prepare_release(REL, modules_cache=tmp_path)
    assert built == [("unfixed", REL, tarball), ("fixed", REL, tarball)]
    assert ready.as_shipped_variant == "unfixed"

    monkeypatch.setattr(releases, "source_facts", lambda path: FIX_FACTS)
    with pytest.raises(ToolError, match="the source facts say fixed"):
        matrix.prepare_release(REL, modules_cache=tmp_path)


# --- the command ---------------------------------------------------------------------------


def test_matrix_of_a_missing_kernel_is_one_line_with_the_apt_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = releases.Release(
        **{**fake_release().__dict__, "image_installed": False, "headers_installed": False}
    )
    monkeypatch.setattr(releases, "lookup", lambda name: missing)
    status = cli.main(["matrix", "--release", REL, "--out", "/nonexistent/x"])
    err = capsys.readouterr().err.strip()
    assert status == ExitCode.INFRA
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"apt-get install linux-image-{REL} linux-headers-{REL}" in err


def test_matrix_without_a_release_says_how(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["matrix", "--out", "/nonexistent/x"]) == ExitCode.USAGE
    )  # nothing to run: bad input
    err = capsys.readouterr().err
    assert "--all-installed" in err and "--source" in err


def test_matrix_boots_each_release_once_with_both_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    facts = {REL: OLD_EOD_FACTS, "6.1.0-56-amd64": FIX_FACTS}
    races = {REL: (0, 0), "6.1.0-56-amd64": (9, 0)}
    monkeypatch.setattr(
        matrix, "prepare_release", lambda name, modules_cache=None: prepared(facts[name], name)
    )
    boots: list[tuple[str, list[str], str]] = []

    def campaigns_in_vm(
        vm: VmOptions, options: RunOptions, runs: list[PlannedCampaign], vm_dir: Path, say: Say
    ) -> dict[Path, int]:
        boots.append((str(vm.kernel), [str(r.variant) for r in runs], str(options.modules)))
        release = vm_dir.name
        for run in runs:
            iterations = 20 if release != REL else 3
            index = 0 if run.variant == "unfixed" else 1
            with JsonlWriter(run.outdir / RESULTS_FILE) as writer:
                for record in variant_records(str(run.variant), iterations, races[release][index]):
                    writer.append(record)
        return {run.outdir: 0 for run in runs}

    monkeypatch.setattr(experiments, "campaigns_in_vm", campaigns_in_vm)
    out = tmp_path / "mx"
    argv = ["matrix", "--release", REL, "--release", "6.1.0-56-amd64", "--release", REL]
    argv += ["--out", str(out), "--iterations", "3"]
    assert cli.main(argv) == ExitCode.OK
    assert [boot[0] for boot in boots] == [
        f"/boot/vmlinuz-{REL}",
        "/boot/vmlinuz-6.1.0-56-amd64",
    ]
    assert all(boot[1] == ["unfixed", "fixed"] for boot in boots)
    assert boots[0][2] == str(matrix.MODULES_CACHE.resolve())
    printed = capsys.readouterr().out
    assert "not affected" in printed and "fixed" in printed
    assert {p.name for p in out.iterdir()} >= {
        REL,
        "6.1.0-56-amd64",
        matrix.MATRIX_HTML,
        matrix.MATRIX_JSON,
    }
    # --report-only boots nothing and gives the same table
    boots.clear()
    assert cli.main([*argv, "--report-only"]) == ExitCode.OK
    assert boots == []
    assert "not affected" in capsys.readouterr().out


def test_matrix_default_config_is_the_ns_remove_race_when_present() -> None:
    assert matrix.default_config() in (matrix.DEFAULT_CONFIG, matrix.FALLBACK_CONFIG)
    assert matrix.default_config().is_file()


def test_inconclusive_release_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        matrix, "prepare_release", lambda name, modules_cache=None: prepared(STOCK_FACTS, name)
    )
    for variant in matrix.MATRIX_VARIANTS:
        write_results(tmp_path / REL, variant, 3, 0)
    argv = ["matrix", "--release", REL, "--out", str(tmp_path), "--report-only"]
    assert cli.main(argv) == ExitCode.FAILED
    assert "inconclusive" in capsys.readouterr().out


def test_campaign_label_names_the_mechanism(tmp_path: Path) -> None:
    from harness.analysis import matrix
    from harness.core.results import write_json_atomic

    run = tmp_path / "unfixed"
    run.mkdir()
    assert matrix.campaign_label(run) == ""
    config = {
        "campaign": {"name": "race-ns-remove-path", "faults": ["ns_remove_path"]},
        "ns_remove_path": {"mechanism": "identity_flip"},
    }
    write_json_atomic(run / "run.json", {"config": config})
    assert matrix.campaign_label(run) == "race-ns-remove-path (identity_flip)"
    config["campaign"] = {"name": "smoke", "faults": ["ctrl_delete"]}
    write_json_atomic(run / "run.json", {"config": config})
    assert matrix.campaign_label(run) == "smoke"


# --- kernels built from a tree -------------------------------------------------------------


def tree_build_record(tmp_path: Path, name: str, toggled: bool, fix: bool) -> TreeBuild:
    shape = "fail-silently"
    prediction = "fixed" if fix else "affected (silently)"
    return TreeBuild(
        source="/src/linux-source-7.3.tar.xz",
        source_kind="tarball",
        source_identity="abc",
        variant=name,
        patches=[],
        toggled_fix=toggled,
        release="7.3.4",
        kdir=str(tmp_path / name / "kdir"),  # no nvme-core.ko there: no built srcversion
        check={"fix": fix, "eod_shape": shape, "prediction": prediction, "version": "7.3.4"},
        fragment_sha256="f",
        config_seconds=0.0,
        build_seconds=1.0,
        built_at="2026-12-07T00:00:00+00:00",
    )


def test_a_7_x_tree_with_the_fix_reverted_that_fails_silently_is_fixed_as_shipped(
    tmp_path: Path,
) -> None:
    """7.3.4 ships the fix; the toggled build fails (seen by the BPF witness only: 0 kernel
    lines); as shipped never: FIXED, with the source's prediction beside it."""
    shipped = tree_build_record(tmp_path, "as-shipped", toggled=False, fix=True)
    toggled = tree_build_record(tmp_path, "fix-toggled", toggled=True, fix=False)
    assert matrix.tree_variants(shipped, toggled) == {"unfixed": toggled, "fixed": shipped}
    results = tmp_path / "out"
    silent = {"eod_race_lines": 0, "witness_events": 7}
    for variant, races in (("unfixed", 12), ("fixed", 0)):
        (results / variant).mkdir(parents=True)
        with JsonlWriter(results / variant / RESULTS_FILE) as writer:
            for record in variant_records(variant, 20, races):
                writer.append({**record, **silent} if record["app_eio"] else record)
    result = matrix.tree_release_result(
        "linux-source-7.3=7.3.4-1~bpo13+1", "7.3.4-1~bpo13+1", shipped, toggled, results
    )
    assert result.verdict == matrix.ReleaseVerdict.FIXED
    assert (result.eod_shape, result.predicted) == ("fail-silently", "fixed")
    unfixed, fixed = result.rows
    assert (unfixed.patch_action, unfixed.patch_method, unfixed.as_shipped) == (
        "reverted",
        "toggle",
        False,
    )
    assert (unfixed.race_iterations, unfixed.line_race_iterations) == (12, 0)
    assert unfixed.witness_race_iterations == 12 and fixed.as_shipped
    row = matrix.table_rows([result])[0]
    assert "0 / 12" in row and "fail-silently" in row


# --- Debian's images as shipped ------------------------------------------------------------

IMAGE_FACTS = releases.SourceFacts("t", "7.3.4", 4, True, "fail-silently", "fixed")
IMAGE_SOURCE = "linux-source-7.3=7.3.4-1~bpo13+1"


def fake_image(tmp_path: Path) -> debian_archive.FetchedImage:
    modules = tmp_path / "root" / "usr" / "lib" / "modules" / "7.3.4+deb13-amd64"
    modules.mkdir(parents=True)
    return debian_archive.FetchedImage(
        "7.3.4+deb13-amd64", "7.3.4-1~bpo13+1", modules / "vmlinuz", modules
    )


def silent_results(directory: Path, variant: str, iterations: int, races: int) -> None:
    """Records of a kernel that fails the race's bios without a line (the witness sees them)."""
    (directory / variant).mkdir(parents=True, exist_ok=True)
    silent = {"eod_race_lines": 0, "witness_events": 5}
    with JsonlWriter(directory / variant / RESULTS_FILE) as writer:
        for record in variant_records(variant, iterations, races):
            writer.append({**record, **silent} if record["app_eio"] else record)


def test_an_image_without_an_unfixed_reference_claims_nothing(tmp_path: Path) -> None:
    silent_results(tmp_path / "img", "distro", 10, 0)
    result = matrix.image_release_result(
        fake_image(tmp_path), IMAGE_FACTS, IMAGE_SOURCE, tmp_path / "img", None
    )
    assert result.verdict == matrix.ReleaseVerdict.INCONCLUSIVE
    assert f"--source debian:{IMAGE_SOURCE}" in result.reason
    (row,) = result.rows
    assert (row.variant, row.as_shipped, row.patch_method, row.iterations) == (
        "distro",
        True,
        "image",
        10,
    )
    assert "distro (Debian's image)" in matrix.table_rows([result])[0]


def test_an_image_clean_against_a_failing_unfixed_build_of_its_source_is_fixed(
    tmp_path: Path,
) -> None:
    silent_results(tmp_path / "img", "distro", 10, 0)
    silent_results(tmp_path / "tree", "unfixed", 10, 9)
    result = matrix.image_release_result(
        fake_image(tmp_path),
        IMAGE_FACTS,
        IMAGE_SOURCE,
        tmp_path / "img",
        tmp_path / "tree" / "unfixed",
    )
    assert result.verdict == matrix.ReleaseVerdict.FIXED, result.reason
    assert result.fisher_p < 0.01 and "9/10" in result.reason and "0/10" in result.reason
    # the same numbers, but a reference that never failed: no claim
    silent_results(tmp_path / "tree0", "unfixed", 10, 0)
    result = matrix.image_release_result(
        fake_image(tmp_path / "b"),
        IMAGE_FACTS,
        IMAGE_SOURCE,
        tmp_path / "img",
        tmp_path / "tree0" / "unfixed",
    )
    assert result.verdict == matrix.ReleaseVerdict.INCONCLUSIVE


def test_an_image_that_shows_the_race_is_affected_even_with_the_fix_in_source(
    tmp_path: Path,
) -> None:
    silent_results(tmp_path / "img", "distro", 10, 1)
    result = matrix.image_release_result(
        fake_image(tmp_path), IMAGE_FACTS, IMAGE_SOURCE, tmp_path / "img", None
    )
    assert result.verdict == matrix.ReleaseVerdict.AFFECTED
    assert "counterexample" in result.reason and "1/10" in result.reason
    assert matrix.table_rows([result])[0][-2] == "-"  # no comparison: no p


def test_an_image_whose_source_skips_zero_size_is_not_affected(tmp_path: Path) -> None:
    silent_results(tmp_path / "img", "distro", 6, 0)
    result = matrix.image_release_result(
        fake_image(tmp_path), OLD_EOD_FACTS, "linux-source-6.1=6.1.170-3", tmp_path / "img", None
    )
    assert result.verdict == matrix.ReleaseVerdict.NOT_AFFECTED


def test_image_specs_and_their_source(tmp_path: Path) -> None:
    assert debian_archive.parse_image_spec("debian:7.3.4+deb13-amd64") == (
        "7.3.4+deb13-amd64",
        None,
    )
    assert debian_archive.parse_image_spec("6.12.117+deb13-amd64=6.12.117-1") == (
        "6.12.117+deb13-amd64",
        "6.12.117-1",
    )
    for bad in ("linux-source-7.3", "7.3", "debian:", "7.3.4+deb13-amd64=a b"):
        with pytest.raises(UsageError):
            debian_archive.parse_image_spec(bad)
    assert debian_archive.image_source_spec(fake_image(tmp_path)) == IMAGE_SOURCE


def test_matrix_runs_an_image_as_shipped_against_the_unfixed_build_of_its_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--source and --image of one version: the tree's two builds and the image each get
    their own boot; the image is booted from its vmlinuz with the distro variant and judged
    against the tree's unfixed run."""
    shipped = tree_build_record(tmp_path, "as-shipped", toggled=False, fix=True)
    toggled = tree_build_record(tmp_path, "fix-toggled", toggled=True, fix=False)
    tree = experiments.TreeKernels(
        "7.3.4-linux-source-7.3", IMAGE_SOURCE, "7.3.4-1~bpo13+1", shipped, toggled
    )
    image = experiments.ImageKernel(
        "7.3.4_deb13-amd64-image", fake_image(tmp_path), IMAGE_SOURCE, IMAGE_FACTS
    )
    monkeypatch.setattr(experiments, "_tree_builds", lambda spec, say: tree)
    monkeypatch.setattr(experiments, "_image", lambda spec, say: image)
    boots: list[tuple[str, list[str]]] = []

    def campaigns_in_vm(
        vm: VmOptions, options: RunOptions, runs: list[PlannedCampaign], vm_dir: Path, say: Say
    ) -> dict[Path, int]:
        boots.append((str(vm.kernel), [str(r.variant) for r in runs]))
        for run in runs:
            races = 8 if run.outdir.name == "unfixed" else 0
            silent_results(run.outdir.parent, run.outdir.name, 10, races)
        return {run.outdir: 0 for run in runs}

    monkeypatch.setattr(experiments, "campaigns_in_vm", campaigns_in_vm)
    out = tmp_path / "mx"
    argv = ["matrix", "--source", "debian:linux-source-7.3", "--image", "debian:7.3.4+deb13-amd64"]
    assert cli.main([*argv, "--out", str(out), "--iterations", "10"]) == ExitCode.OK
    assert boots[-1] == (str(image.image.vmlinuz), ["distro"])
    assert len(boots) == 3
    printed = capsys.readouterr().out
    assert "distro (Debian's image)" in printed
    data = json.loads((out / matrix.MATRIX_JSON).read_text())
    assert [r["verdict"] for r in data["releases"]] == ["fixed", "fixed"]
    # the table again from the results: nothing boots, the tree's directory is no release
    boots.clear()
    (out / tree.label / "boot-unfixed").mkdir(exist_ok=True)
    assert cli.main([*argv, "--out", str(out), "--report-only"]) == ExitCode.OK
    assert boots == []
    data = json.loads((out / matrix.MATRIX_JSON).read_text())
    assert [r["verdict"] for r in data["releases"]] == ["fixed", "fixed"]
    with pytest.raises(UsageError):  # no release there: the tree's and the image's are not
        experiments._matrix_releases(out, experiments.MatrixOptions(report_only=True))

"""Real Debian kernel releases as a matrix: is a release affected, and does the patch fix it?

For each release (``harness.kernels.releases``): its own source is fetched, its source facts read
(fix in ``multipath.c``, zero-size check in ``bio_check_eod()``), and both module variants
built from that source (``harness.kernels.kbuild``): the one equal to the source is "as shipped"
(patch_action "none"), the other has the fix toggled. The CLI (``nvmf-harness matrix``) boots
each release once and runs the same campaign on both variants back to back; this module turns
the two results directories of each release into a verdict with
``harness.analysis.compare.compare(outcome(unfixed), outcome(fixed))`` and writes the table as text,
Markdown, JSON and a self-contained HTML page.

Verdicts per release (:func:`release_verdict`), from compare's result (one-sided Fisher
test of the unfixed race rate above the fixed one, at compare's alpha 0.01):

- ``affected``: a stock source (no fix): the as-shipped unfixed variant fails significantly
  more than the patched build; or a source with the fix whose as-shipped variant still shows
  the race (compare's NOT FIXED: one race iteration is a counterexample);
- ``fixed``: the source carries the fix; the toggled-unfixed variant fails significantly, the
  shipped fix never (compare's REPRODUCED AND FIXED);
- ``not affected``: neither variant fails, both runs were clean, and the source lacks the
  zero-size end-of-device check, so a zeroed per-path disk skips ``bio_check_eod()``
  (block/blk-core.c, built into the image: no module variant changes it) and the race cannot
  fail a bio;
- ``inconclusive``: anything else, with compare's iterations per variant that would decide it.

A Debian kernel image booted as shipped with its own modules (``matrix --image``) is a row of
its own, variant ``distro`` (:func:`image_release_result`): it is compared against the
unfixed build of the same source when the matrix built it (``--source`` of the same
linux-source-X.Y version), else its verdict says what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from harness.analysis import compare
from harness.bed.module_records import VariantBuild, modinfo_field
from harness.core.errors import ToolError
from harness.core.paths import BUILD_DIR, CONFIGS_DIR
from harness.core.results import RUN_FILE, format_cell, read_json_object, write_json_atomic
from harness.kernels import kbuild, releases
from harness.kernels.debian_archive import FetchedImage
from harness.kernels.source_check import EodShape, predict
from harness.kernels.tree_build import TreeBuild

DEFAULT_CONFIG = CONFIGS_DIR / "race-ns-remove-path.toml"
FALLBACK_CONFIG = CONFIGS_DIR / "race-ctrl-delete-widened.toml"
# Its own module cache: a release's own source can differ from the one compare builds from
# (/usr/src/linux-source-X.Y.tar.xz), and one cache would rebuild under a running compare.
MODULES_CACHE = BUILD_DIR / "matrix-modules"
MATRIX_JSON = "matrix.json"
MATRIX_TEXT = "matrix.txt"
MATRIX_MARKDOWN = "matrix.md"
MATRIX_HTML = "matrix.html"
# Variants in the order they run and are shown; compare() takes them as stock, patched.
UNFIXED, FIXED = kbuild.VARIANTS[1], kbuild.VARIANTS[0]
NVME_CORE_KO = "drivers/nvme/host/nvme-core.ko"  # in a tree build's kdir
MATRIX_VARIANTS: tuple[str, ...] = (UNFIXED, FIXED)
IMAGE_VARIANT = "distro"  # a Debian image with its own modules (harness.bed: the distro variant)
IMAGE_METHOD = "image"  # VariantRow.patch_method of such a row


class ReleaseVerdict(StrEnum):
    AFFECTED = "affected"
    NOT_AFFECTED = "not affected"
    FIXED = "fixed"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class PreparedRelease:
    """A release ready to boot: installed, its source fetched, both variants built."""

    release: releases.Release
    source_tarball: str
    facts: releases.SourceFacts
    builds: dict[str, VariantBuild]  # by variant name

    @property
    def as_shipped_variant(self) -> str:
        """The variant whose source is the release's own, unchanged."""
        return FIXED if self.facts.has_fix else UNFIXED


@dataclass(frozen=True)
class VariantRow:
    """One variant of one release in the table."""

    variant: str
    as_shipped: bool
    patch_action: str  # "none", "applied", "reverted"
    patch_method: str  # "none", "patch", "toggle"
    srcversion: str  # nvme_core's, as the guest recorded it ("" when the run recorded none)
    built_srcversion: str  # as kbuild recorded it
    iterations: int
    app_eio_iterations: int
    race_iterations: int
    crashed: bool
    campaign: str = ""  # the campaign that ran, from run.json (campaign_label)
    # which witness saw the race iterations (compare.VariantOutcome's counts); 0 in records
    # from before the block-layer witness
    line_race_iterations: int = 0
    witness_race_iterations: int = 0
    witness_iterations: int = 0


@dataclass(frozen=True)
class ReleaseResult:
    """The matrix line of one release: source facts, both variants, the verdict."""

    release: str
    debian_version: str
    source: str  # linux-source-X.Y=<version>
    source_kernel_version: str  # VERSION.PATCHLEVEL.SUBLEVEL of the top Makefile
    fix_in_source: bool
    eod_shape: str  # bio_check_eod() in source (harness.kernels.source_check.EodShape)
    predicted: str  # from the source alone (source_check.Prediction)
    rows: tuple[VariantRow, ...]
    fisher_p: float  # of compare(unfixed, fixed): one-sided, unfixed race rate > fixed
    needed_iterations: int | None  # per variant, compare's figure for an undecided one
    verdict: ReleaseVerdict
    reason: str
    comparison: dict[str, Any]  # compare's own record

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = str(self.verdict)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReleaseResult:
        """A result back from its :meth:`to_dict`. A record written before the three shapes
        of bio_check_eod() were told apart (``zero_size_eod_check``: true was "fail with a
        line", false "skip zero size": all sources then) gets ``eod_shape`` and
        ``predicted`` from it."""
        data = dict(data)
        if "zero_size_eod_check" in data:
            shape = (
                EodShape.FAIL_WITH_LINE
                if data.pop("zero_size_eod_check")
                else (EodShape.SKIP_ZERO_SIZE)
            )
            data["eod_shape"] = str(shape)
            data["predicted"] = str(predict(bool(data["fix_in_source"]), shape))
        rows = tuple(VariantRow(**row) for row in data["rows"])
        return cls(**{**data, "rows": rows, "verdict": ReleaseVerdict(data["verdict"])})


def prepare_release(
    name: str,
    modules_cache: Path | None = None,
    source_cache: Path | None = None,
    jobs: int = 2,
) -> PreparedRelease:
    """Check ``name`` is installed, fetch its own source, read its facts, build both variants.

    Raises HarnessError whose hint is the apt command when the image, headers or source is
    missing; ToolError when a build fails or the as-shipped build disagrees with the facts.
    """
    release = releases.lookup(name)
    releases.require_installed(release)
    fetched = releases.fetch_source(release, source_cache)
    facts = releases.source_facts(fetched.tarball)
    builds = {
        variant: kbuild.build_variant(
            variant,
            release=release.name,
            cache_dir=modules_cache,
            source_tarball=fetched.tarball,
            jobs=jobs,
        )
        for variant in MATRIX_VARIANTS
    }
    shipped = [variant for variant, build in builds.items() if build.as_shipped]
    expected = FIXED if facts.has_fix else UNFIXED
    if shipped != [expected]:
        raise ToolError(
            f"{release.name}: the builds say {shipped or 'no variant'} is as shipped, the "
            f"source facts say {expected}"
        )
    return PreparedRelease(release, str(fetched.tarball), facts, builds)


def release_verdict(
    facts: releases.SourceFacts, comparison: compare.Comparison
) -> tuple[ReleaseVerdict, str]:
    """The verdict for one release and a one-sentence reason.

    ``comparison`` is ``compare(outcome(unfixed), outcome(fixed))`` (harness.analysis.compare: its
    one-sided Fisher test at its alpha, its verdict); ``facts`` are of the release's own
    source: which variant is as shipped, and whether bio_check_eod() can fail a bio to a
    zero-capacity disk at all.
    """
    unfixed, fixed = comparison.stock, comparison.patched
    test = f"one-sided p={comparison.fisher_p_one_sided:.3g}, alpha={comparison.alpha:g}"
    cannot_fail = (
        facts.cannot_fail
        and not unfixed.failed
        and not fixed.failed
        and unfixed.clean
        and fixed.clean
    )
    if facts.has_fix:
        if comparison.verdict == compare.ComparisonVerdict.NOT_FIXED:
            return ReleaseVerdict.AFFECTED, (
                f"as shipped (with the fix) shows the race in {fixed.race_iterations}/"
                f"{fixed.trials} iterations: one is a counterexample"
            )
        if comparison.verdict == compare.ComparisonVerdict.REPRODUCED_AND_FIXED:
            return ReleaseVerdict.FIXED, (
                f"unfixed toggle fails in {unfixed.race_iterations}/{unfixed.trials}, as "
                f"shipped in 0/{fixed.trials} ({test})"
            )
    elif comparison.reproduced:  # a stock kernel: as shipped = unfixed
        tail = (
            "the patch removes it"
            if not fixed.failed
            else f"the patched build still fails in {fixed.race_iterations}/{fixed.trials}"
        )
        return ReleaseVerdict.AFFECTED, (
            f"as shipped fails in {unfixed.race_iterations}/{unfixed.trials} iterations "
            f"({test}); {tail}"
        )
    if cannot_fail:
        return ReleaseVerdict.NOT_AFFECTED, (
            f"no variant fails ({unfixed.trials} + {fixed.trials} iterations), and this "
            "source's bio_check_eod() skips zero-capacity disks: the race cannot fail a bio"
        )
    need = (
        f"; about {comparison.needed_iterations} iterations per variant would decide it"
        if comparison.needed_iterations is not None
        else ""
    )
    return ReleaseVerdict.INCONCLUSIVE, (
        f"unfixed {unfixed.race_iterations}/{unfixed.trials}, fixed "
        f"{fixed.race_iterations}/{fixed.trials} ({test}; compare: "
        f"{comparison.verdict.value}){need}"
    )


def _line(
    release: str,
    debian_version: str,
    source: str,
    facts: releases.SourceFacts,
    rows: tuple[VariantRow, ...],
    verdict: ReleaseVerdict,
    reason: str,
    comparison: compare.Comparison | None,
) -> ReleaseResult:
    """One matrix line from its source facts, rows, verdict and comparison (None: a row
    without a test, p shown as "-")."""
    return ReleaseResult(
        release=release,
        debian_version=debian_version,
        source=source,
        source_kernel_version=facts.version,
        fix_in_source=facts.has_fix,
        eod_shape=facts.eod_shape,
        predicted=facts.prediction,
        rows=rows,
        fisher_p=comparison.fisher_p_one_sided if comparison is not None else 1.0,
        needed_iterations=comparison.needed_iterations if comparison is not None else None,
        verdict=verdict,
        reason=reason,
        comparison=comparison.to_dict() if comparison is not None else {},
    )


def campaign_label(rundir: Path) -> str:
    """What ran in ``rundir``, from its run.json: the campaign's name and, for
    ns_remove_path, the mechanism, e.g. ``race-ns-remove-path (identity_flip)``; "" when the
    run recorded no run.json. Rows of one table must show the same campaign."""
    config = read_json_object(rundir / RUN_FILE).get("config")
    if not isinstance(config, dict):
        return ""
    name = str(config.get("campaign", {}).get("name", ""))
    if "ns_remove_path" in config.get("campaign", {}).get("faults", []):
        return f"{name} ({config.get('ns_remove_path', {}).get('mechanism', '?')})"
    return name


def _row(
    variant: str,
    outcome: compare.VariantOutcome,
    build: VariantBuild | None,
    campaign: str = "",
) -> VariantRow:
    return VariantRow(
        variant=variant,
        as_shipped=build.as_shipped if build is not None else False,
        patch_action=build.patch_action if build is not None else "",
        patch_method=build.patch_method if build is not None else "",
        srcversion=outcome.srcversion,
        built_srcversion=build.srcversion.get(kbuild.CORE_MODULE, "") if build else "",
        iterations=outcome.iterations,
        app_eio_iterations=outcome.iterations_with_app_eio,
        race_iterations=outcome.race_iterations,
        crashed=outcome.crashed,
        campaign=campaign,
        line_race_iterations=outcome.line_race_iterations,
        witness_race_iterations=outcome.witness_race_iterations,
        witness_iterations=outcome.witness_iterations,
    )


def release_result(
    prepared: PreparedRelease, results_dir: Path, alpha: float = compare.DEFAULT_ALPHA
) -> ReleaseResult:
    """The matrix line of a release from ``results_dir/<variant>/results.jsonl`` of both runs.

    A run whose guest recorded a srcversion other than its build's raises ToolError: the
    wrong modules were loaded and the line would be meaningless.
    """
    outcomes = {v: compare.outcome(v, results_dir / v) for v in MATRIX_VARIANTS}
    for variant, outcome in outcomes.items():
        built = prepared.builds[variant].srcversion.get(kbuild.CORE_MODULE, "")
        if outcome.srcversion and built and outcome.srcversion != built:
            raise ToolError(
                f"{prepared.release.name} {variant}: the guest ran nvme_core "
                f"{outcome.srcversion}, the build is {built}"
            )
    comparison = compare.compare(
        outcomes[UNFIXED], outcomes[FIXED], alpha=alpha, eod_shape=prepared.facts.eod_shape
    )
    verdict, reason = release_verdict(prepared.facts, comparison)
    rows = tuple(
        _row(v, outcomes[v], prepared.builds.get(v), campaign_label(results_dir / v))
        for v in MATRIX_VARIANTS
    )
    release = prepared.release
    return _line(
        release.name,
        release.debian_version,
        release.source_spec,
        prepared.facts,
        rows,
        verdict,
        reason,
        comparison,
    )


def image_verdict(
    facts: releases.SourceFacts,
    image: compare.VariantOutcome,
    reference: compare.VariantOutcome | None,
    source_spec: str,
    alpha: float = compare.DEFAULT_ALPHA,
) -> tuple[ReleaseVerdict, str, compare.Comparison | None]:
    """The verdict on a Debian image run as shipped, a one-sentence reason, and the
    comparison it rests on (None without a reference).

    ``image``: its outcome; ``reference``: the outcome of the unfixed build of the same source
    (None when the matrix has none); ``facts``: of that source. A race iteration on the image
    is AFFECTED (with the fix in its source: a counterexample); 0 of N is FIXED only against
    an unfixed reference that fails significantly (compare's REPRODUCED AND FIXED), and
    NOT AFFECTED only where the source's bio_check_eod() cannot fail the race's bios.
    """
    if image.failed:
        tail = ": its source has the fix, so one is a counterexample" if facts.has_fix else ""
        return (
            ReleaseVerdict.AFFECTED,
            f"Debian's image shows the race in {image.race_iterations}/{image.trials} "
            f"iterations{tail}",
            None,
        )
    if facts.cannot_fail and image.clean:
        return (
            ReleaseVerdict.NOT_AFFECTED,
            f"no race in {image.trials} iterations, and this source's bio_check_eod() skips "
            "zero-capacity disks: the race cannot fail a bio",
            None,
        )
    if reference is None:
        return (
            ReleaseVerdict.INCONCLUSIVE,
            f"0/{image.trials} race iterations on Debian's image, but no unfixed build of its "
            f"source to show the race was reachable: add --source debian:{source_spec}",
            None,
        )
    comparison = compare.compare(reference, image, alpha=alpha, eod_shape=facts.eod_shape)
    test = f"one-sided p={comparison.fisher_p_one_sided:.3g}, alpha={comparison.alpha:g}"
    if comparison.verdict == compare.ComparisonVerdict.REPRODUCED_AND_FIXED and facts.has_fix:
        return (
            ReleaseVerdict.FIXED,
            f"the unfixed build of its source fails in {reference.race_iterations}/"
            f"{reference.trials}, Debian's image in 0/{image.trials} ({test})",
            comparison,
        )
    return (
        ReleaseVerdict.INCONCLUSIVE,
        f"Debian's image 0/{image.trials}, the unfixed build of its source "
        f"{reference.race_iterations}/{reference.trials} ({test}; compare: "
        f"{comparison.verdict.value}; fix in source {facts.has_fix})",
        comparison,
    )


def image_release_result(
    image: FetchedImage,
    facts: releases.SourceFacts,
    source_spec: str,
    results_dir: Path,
    reference_dir: Path | None,
    alpha: float = compare.DEFAULT_ALPHA,
) -> ReleaseResult:
    """The matrix line of a Debian image run as shipped (``results_dir/distro``), compared
    with the unfixed build of the same source in ``reference_dir`` (a tree's
    ``<label>/unfixed``; None when the matrix has none). Raises ToolError when the guest ran
    an nvme_core other than the image's own."""
    outcome = compare.outcome(IMAGE_VARIANT, results_dir / IMAGE_VARIANT)
    shipped = image_module_srcversion(image)
    if outcome.srcversion and shipped and outcome.srcversion != shipped:
        raise ToolError(
            f"{image.release}: the guest ran nvme_core {outcome.srcversion}, the image's "
            f"is {shipped}"
        )
    reference = compare.outcome(UNFIXED, reference_dir) if reference_dir is not None else None
    verdict, reason, comparison = image_verdict(facts, outcome, reference, source_spec, alpha)
    row = replace(
        _row(IMAGE_VARIANT, outcome, None, campaign_label(results_dir / IMAGE_VARIANT)),
        as_shipped=True,
        patch_action="none",
        patch_method=IMAGE_METHOD,
        built_srcversion=shipped,
    )
    return _line(
        image.release, image.version, source_spec, facts, (row,), verdict, reason, comparison
    )


def image_module_srcversion(image: FetchedImage) -> str:
    """nvme_core's srcversion in the image's own modules ("" when modinfo cannot tell)."""
    found = sorted(image.modules_dir.glob("kernel/drivers/nvme/host/nvme-core.ko*"))
    if not found:
        return ""
    try:
        return modinfo_field(found[0], "srcversion")
    except ToolError:
        return ""


# --- the table ------------------------------------------------------------------------------

# What the table adds to a row's variant, by VariantRow.patch_method.
_VARIANT_NOTES = {"toggle": " (toggled by edit)", IMAGE_METHOD: " (Debian's image)"}

COLUMNS: tuple[str, ...] = (
    "release",
    "Debian version",
    "fix in source (as shipped)",
    "bio_check_eod() in source",
    "predicted from source",
    "variant",
    "campaign",
    "as shipped?",
    "nvme_core srcversion",
    "iterations",
    "app EIO iterations",
    "race iterations",
    "seen by (line / BPF)",
    "p (vs the other variant)",
    "verdict",
)


def table_rows(results: Sequence[ReleaseResult]) -> list[list[str]]:
    """One list of cells per variant row, in COLUMNS order."""
    rows: list[list[str]] = []
    for result in results:
        for row in result.rows:
            rows.append(
                [
                    result.release,
                    result.debian_version,
                    format_cell(result.fix_in_source),
                    result.eod_shape,
                    result.predicted,
                    row.variant + _VARIANT_NOTES.get(row.patch_method, ""),
                    row.campaign or "-",
                    format_cell(row.as_shipped),
                    row.srcversion or row.built_srcversion or "-",
                    str(row.iterations) + (" (VM died)" if row.crashed else ""),
                    str(row.app_eio_iterations),
                    str(row.race_iterations),
                    (
                        f"{row.line_race_iterations} / {row.witness_race_iterations}"
                        if row.witness_iterations
                        else f"{row.line_race_iterations} / -"
                    ),
                    format_cell(result.fisher_p) if result.comparison else "-",  # no test
                    str(result.verdict),
                ]
            )
    return rows


def render_text(results: Sequence[ReleaseResult]) -> str:
    """The table for a terminal (aligned columns), then one reason line per release."""
    rows = [list(COLUMNS), *table_rows(results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines += [f"{r.release} ({r.debian_version}): {r.verdict}: {r.reason}" for r in results]
    return "\n".join(lines)


def render_markdown(results: Sequence[ReleaseResult]) -> str:
    """A Markdown table with the same cells, then the reasons as a list."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [line(COLUMNS), line(["---"] * len(COLUMNS))]
    lines += [line(row) for row in table_rows(results)]
    lines.append("")
    lines += [f"- **{r.release}** ({r.debian_version}): {r.verdict}: {r.reason}" for r in results]
    return "\n".join(lines) + "\n"


def write(results: Sequence[ReleaseResult], outdir: Path) -> str:
    """Write matrix.json, matrix.txt and matrix.md to ``outdir``; return the text. The page,
    matrix.html, is harness.report.matrix_page's."""
    text = render_text(results)
    outdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(outdir / MATRIX_JSON, {"releases": [r.to_dict() for r in results]})
    (outdir / MATRIX_TEXT).write_text(text + "\n")
    (outdir / MATRIX_MARKDOWN).write_text(render_markdown(results))
    return text


def default_config() -> Path:
    """configs/race-ns-remove-path.toml, or the widened controller-delete race until it exists."""
    return DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else FALLBACK_CONFIG


def tree_facts(shipped: TreeBuild) -> releases.SourceFacts:
    """A tree's source facts from its as-shipped build's source check."""
    check = shipped.check
    version = str(check.get("version", ""))
    sublevel = int(m.group(1)) if (m := re.match(r"\d+\.\d+\.(\d+)", version)) else 0
    return releases.SourceFacts(
        tarball=shipped.source,
        version=version,
        sublevel=sublevel,
        has_fix=bool(check.get("fix")),
        eod_shape=str(check.get("eod_shape", "")),
        prediction=str(check.get("prediction", "")),
    )


def tree_variants(shipped: TreeBuild, toggled: TreeBuild) -> dict[str, TreeBuild]:
    """{"unfixed": ..., "fixed": ...} of a tree's two builds: as shipped is "fixed" where
    the source has the fix."""
    if shipped.check.get("fix"):
        return {UNFIXED: toggled, FIXED: shipped}
    return {UNFIXED: shipped, FIXED: toggled}


def _tree_row(
    variant: str, outcome: compare.VariantOutcome, build: TreeBuild, shipped_fix: bool, label: str
) -> VariantRow:
    action = "none" if not build.toggled_fix else ("reverted" if shipped_fix else "applied")
    try:
        built = modinfo_field(Path(build.kdir) / NVME_CORE_KO, "srcversion")
    except ToolError:
        built = ""
    return replace(
        _row(variant, outcome, None, label),
        as_shipped=not build.toggled_fix,
        patch_action=action,
        patch_method="toggle" if build.toggled_fix else "none",
        built_srcversion=built,
    )


def tree_release_result(
    source: str,
    package_version: str,
    shipped: TreeBuild,
    toggled: TreeBuild,
    results_dir: Path,
    alpha: float = compare.DEFAULT_ALPHA,
) -> ReleaseResult:
    """The matrix line of a kernel built from a tree (nvmf-harness build-kernel): its
    as-shipped and fix-toggled builds, each run with its own modules in its own boot
    (``results_dir/{unfixed,fixed}``); the verdict as for a Debian release."""
    facts = tree_facts(shipped)
    builds = tree_variants(shipped, toggled)
    outcomes = {v: compare.outcome(v, results_dir / v) for v in MATRIX_VARIANTS}
    comparison = compare.compare(
        outcomes[UNFIXED], outcomes[FIXED], alpha=alpha, eod_shape=facts.eod_shape
    )
    verdict, reason = release_verdict(facts, comparison)
    rows = tuple(
        _tree_row(v, outcomes[v], builds[v], facts.has_fix, campaign_label(results_dir / v))
        for v in MATRIX_VARIANTS
    )
    return _line(shipped.release, package_version, source, facts, rows, verdict, reason, comparison)

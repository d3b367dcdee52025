"""The experiments of the host commands ``compare``, ``prove-fixed``, ``matrix`` and
``scenarios``, from options to exit status.

Each builds the module variants it needs, plans its campaigns, runs them in the VM
(harness/vm/campaigns.py) and reads their results with the pure modules beside this one
(compare and stopping, prove, matrix, scenarios). Messages go through ``say`` (the
``nvmf-harness: ...`` lines), tables and verdicts are printed on stdout. Errors a person can
fix are raised as HarnessError (ConfigError for a broken config) before anything boots.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from harness.analysis import compare, matrix, prove, scenarios, stopping
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.console import Say
from harness.core.errors import HarnessError, UsageError
from harness.core.exits import ExitCode
from harness.core.results import RESULTS_FILE
from harness.kernels import debian_archive, kbuild, releases, tree_build
from harness.kernels.prepared import default_kernel, kernel_release
from harness.kernels.tree_build import TreeBuild, TreeVariant
from harness.vm.campaigns import PlannedCampaign, campaign_in_vm, campaigns_in_vm, fresh_outdir
from harness.vm.options import RunOptions, VmOptions

DISTRO = "distro"  # the variant of the kernel's own modules: nothing to build


@dataclass(frozen=True)
class CompareOptions:
    """``compare``'s own options.

    ``stock``, ``patched``: the module variants compared (stock expected to race);
    ``alpha``: level of the one-sided Fisher test (over all looks with ``sequential``);
    ``sequential``: batches until the verdict is decided or a cap is hit; ``batch``:
    iterations per variant per batch; ``max_iterations``: the cap of iterations per
    variant; ``max_minutes``: no batch starts that would end later (None: no deadline).
    """

    stock: str = "unfixed"
    patched: str = "fixed"
    alpha: float = compare.DEFAULT_ALPHA
    sequential: bool = False
    batch: int = stopping.DEFAULT_BATCH
    max_iterations: int = stopping.DEFAULT_MAX_ITERATIONS
    max_minutes: float | None = None
    # Two kernels instead of two module variants of one (a stock and a patched build of a
    # tree, nvmf-harness build-kernel): each runs with its own modules, in its own boot;
    # ``stock`` and ``patched`` then only name their results.
    stock_kernel: str | None = None
    patched_kernel: str | None = None

    @property
    def two_kernels(self) -> bool:
        return self.stock_kernel is not None or self.patched_kernel is not None


@dataclass(frozen=True)
class MatrixOptions:
    """``matrix``'s own options.

    ``releases``: kernel releases (``6.1.0-47-amd64``), repeats dropped; ``all_installed``:
    every installed linux-image-* release too; ``report_only``: boot nothing, rebuild the
    table from the results already there (every release there when none is named);
    ``config``: the campaign file (None: matrix.default_config()).
    """

    releases: tuple[str, ...] = ()
    all_installed: bool = False
    report_only: bool = False
    config: Path | None = None
    # Kernel sources built here, each as shipped and with the fix toggled (the kernels a
    # Debian 12 host cannot install: trixie's 6.12, 7.x): git trees, directories, tarballs or
    # debian:linux-source-X.Y[=V] (harness.kernels.debian_archive).
    sources: tuple[str, ...] = ()
    # Debian kernel images booted as shipped with their own modules (debian:7.3.4+deb13-amd64
    # [=version]): downloaded and unpacked under build/, never installed.
    images: tuple[str, ...] = ()


def _build_variant(variant: str, release: str | None, cache: Path | None, say: Say) -> None:
    build = kbuild.build_variant(variant, release=release, cache_dir=cache)
    say(
        f"{variant} modules for {build.release}: nvme_core srcversion "
        f"{build.srcversion.get('nvme-core', '?')}"
        f" ({'cached' if build.cached else f'built in {build.build_seconds:.0f} s'})"
    )


def comparison_status(result: compare.Comparison) -> int:
    """compare's exit status: OK for REPRODUCED AND FIXED, INFRA when neither variant ran an
    iteration (the VM failed: no verdict to exit with), else FAILED."""
    if result.stock.iterations == 0 and result.patched.iterations == 0:
        return ExitCode.INFRA
    return ExitCode.OK if result.fixed else ExitCode.FAILED


def compare_variants(
    config_path: Path,
    outdir: Path,
    options: CompareOptions,
    vm: VmOptions,
    run: RunOptions,
    say: Say,
) -> int:
    """The same campaign on the stock and the patched module variant, back to back in one
    boot (a run the guest died in costs the other nothing: it gets its own boot); results in
    ``outdir``/{stock,patched}, the comparison in ``outdir``/compare.{json,txt}.

    With ``options.sequential``, batches of ``options.batch`` iterations per variant run
    (one boot each, a new seed each) until the verdict is decided or a cap is hit
    (harness/analysis/stopping.py); each batch goes to ``outdir``/batch-NN/{stock,patched}
    and the comparison pools them all. Returns comparison_status of the verdict. Raises
    HarnessError for options that do not go together or are out of range.
    """
    if options.sequential and run.iterations:
        raise HarnessError(
            "--iterations and --sequential do not go together",
            hint="give --batch and --max-iterations (per variant) instead",
        )
    if not 0.0 < options.alpha < 1.0:
        raise HarnessError(f"--alpha {options.alpha:g}: give a level in (0, 1), e.g. 0.01")
    plan = (
        stopping.make_plan(
            options.alpha, options.batch, options.max_iterations, options.max_minutes
        )
        if options.sequential
        else None
    )
    config = run.load(config_path)
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    variants = [options.stock, options.patched]
    if options.two_kernels:
        if options.stock_kernel is None or options.patched_kernel is None:
            raise UsageError("give both --stock-kernel and --patched-kernel")
        kernels = {options.stock: options.stock_kernel, options.patched: options.patched_kernel}
        module_variant = {variant: DISTRO for variant in variants}  # each kernel's own
    else:
        kernel = vm.kernel or default_kernel()
        release = kernel_release(kernel) or None
        for variant in variants:
            if variant != DISTRO:
                _build_variant(variant, release, run.modules, say)
        kernels = dict.fromkeys(variants, kernel)
        module_variant = {variant: variant for variant in variants}
    eod_shape = releases.eod_shape_of(kernels[options.stock])
    say(
        f"{kernels[options.stock]}: bio_check_eod() {eod_shape or 'of unknown shape'} (its "
        "source); a race iteration needs app EIO and the kernel line or the BPF witness's "
        "failed bios"
    )

    def run_variants(where: Path, batch_run: RunOptions, batch_config: CampaignConfig) -> None:
        """Both variants' campaigns: one boot per kernel (one for both on one kernel)."""
        by_kernel: dict[str, list[PlannedCampaign]] = {}
        for variant in variants:
            planned = PlannedCampaign(
                config_path, batch_config, fresh_outdir(where / variant), module_variant[variant]
            )
            by_kernel.setdefault(kernels[variant], []).append(planned)
        for kernel, runs in by_kernel.items():
            boot_dir = where if len(by_kernel) == 1 else where / f"boot-{runs[0].outdir.name}"
            boot_dir.mkdir(parents=True, exist_ok=True)
            campaigns_in_vm(replace(vm, kernel=kernel), batch_run, runs, boot_dir, say)

    if plan is None:
        run_variants(outdir, run, config)
        result = compare.compare(
            compare.outcome(options.stock, outdir / options.stock),
            compare.outcome(options.patched, outdir / options.patched),
            alpha=options.alpha,
            eod_shape=eod_shape,
        )
        print(compare.write(result, outdir), flush=True)  # its "Rule:" line says which rule
        return comparison_status(result)

    looks = plan.looks
    say(f"rule: {plan.describe()}")
    batch_dirs: list[Path] = []
    first_seed = config.campaign.seed

    def run_batch(number: int, size: int) -> tuple[compare.VariantOutcome, compare.VariantOutcome]:
        batch_dir = outdir / f"batch-{number:02d}"
        seed = first_seed + number - 1
        batch_run = replace(run, iterations=size, seed=seed)
        batch_config = config_mod.override(config, "campaign", iterations=size, seed=seed)
        say(f"=== batch {number}/{looks}: {size} iterations per variant, seed {seed}")
        run_variants(batch_dir, batch_run, batch_config)
        batch_dirs.append(batch_dir)
        return (
            compare.outcome(options.stock, *(d / options.stock for d in batch_dirs)),
            compare.outcome(options.patched, *(d / options.patched for d in batch_dirs)),
        )

    def show(look: stopping.Look, decision: stopping.Decision) -> None:
        say(
            f"look {look.number}/{looks}: {options.stock} {look.stock_race_iterations}/"
            f"{look.stock_trials} vs {options.patched} {look.patched_race_iterations}/"
            f"{look.patched_trials} race iterations, one-sided p={look.p_one_sided:.3g} "
            f"(alpha per look {look.alpha:.3g}): {look.verdict}; {decision.detail}"
        )

    sequence = stopping.run_sequence(plan, run_batch, on_look=show, eod_shape=eod_shape)
    say(f"stopped: {sequence.detail}")
    text = compare.write(sequence.comparison, outdir, extra={"sequential": sequence.to_dict()})
    print(text, flush=True)
    return comparison_status(sequence.comparison)


def prove_fixed(
    config_path: Path, outdir: Path, variant: str, vm: VmOptions, run: RunOptions, say: Say
) -> int:
    """Run ``variant`` until ``run.iterations`` clean iterations (None: prove.DEFAULT_TARGET)
    or the first failure, in parts of one boot each that resume (harness/analysis/prove.py).
    Each part stops at its first failing verdict. Returns ExitCode.OK (proven), FAILED (a
    failure was found) or INFRA; ConfigError for a broken config, before any boot."""
    config = run.load(config_path)  # a broken config fails here, before any boot
    outdir = outdir.resolve()
    target = run.iterations or prove.DEFAULT_TARGET
    if variant != DISTRO:  # built (or found cached) before the first boot
        release = kernel_release(vm.kernel or default_kernel()) or None
        build = kbuild.build_variant(variant, release=release, cache_dir=run.modules)
        core = build.srcversion.get("nvme-core", "?")
        say(f"{variant} modules for {build.release}: nvme_core srcversion {core}")

    def run_part(part: Path, iterations: int) -> int:
        part_run = replace(run, iterations=iterations, stop_on_failure=True)
        part_config = part_run.load(config_path)
        return campaign_in_vm(
            vm, part_run, PlannedCampaign(config_path, part_config, part, variant), say
        )

    return prove.prove(outdir, config.campaign.name, variant, target, run_part, say)


def _matrix_releases(outdir: Path, options: MatrixOptions) -> list[str]:
    """The releases a matrix covers, in order; HarnessError when there are none."""
    names = list(dict.fromkeys(options.releases))
    if options.all_installed:
        names += [name for name in releases.installed_releases() if name not in names]
    if options.report_only and not (names or options.sources or options.images):
        # every release already in outdir: none is dropped (trees' and images' directories
        # hold results too: with --source or --image only those are read)
        names = sorted(
            d.name
            for d in outdir.glob("*")
            if all((d / v / RESULTS_FILE).is_file() for v in matrix.MATRIX_VARIANTS)
            and not (d / f"boot-{matrix.UNFIXED}").is_dir()  # a tree's, not a release's
        )
    if not names and not options.sources and not options.images:
        raise UsageError(
            "no kernel release, source or image given",
            hint="--release 6.1.0-47-amd64, --all-installed, --source debian:linux-source-7.3 "
            "or --image debian:7.3.4+deb13-amd64",
        )
    return names


def run_matrix(
    outdir: Path, options: MatrixOptions, vm: VmOptions, run: RunOptions, say: Say
) -> list[matrix.ReleaseResult]:
    """Per Debian kernel release: both variants from its own source, one boot, a verdict.

    Every release is checked (installed, source fetched, variants built) before anything
    boots. Writes ``outdir``/<release>/{unfixed,fixed}/ and ``outdir``/matrix.{txt,md,json}
    (the page is the caller's: harness.report.matrix_page); returns the results in order.
    ``run.modules`` None means matrix.MODULES_CACHE.
    """
    names = _matrix_releases(outdir, options)
    config_path = options.config or matrix.default_config()
    config = run.load(config_path)
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    run = replace(run, modules=(run.modules or matrix.MODULES_CACHE).resolve())  # the guest's too
    prepared = []
    for name in names:
        ready = matrix.prepare_release(name, modules_cache=run.modules)
        built = ", ".join(
            f"{variant} {build.srcversion.get('nvme-core', '?')}"
            f"{' (as shipped)' if build.as_shipped else ''}"
            for variant, build in ready.builds.items()
        )
        say(
            f"{name}: {ready.release.source_spec}, fix in source {ready.facts.has_fix}, "
            f"bio_check_eod() {ready.facts.eod_shape}, predicted {ready.facts.prediction}; "
            f"nvme_core {built}"
        )
        prepared.append(ready)
    trees = [_tree_builds(spec, say) for spec in options.sources]  # built before any boot
    images = [_image(spec, say) for spec in options.images]
    results = []
    for ready in prepared:
        release_dir = outdir / ready.release.name
        if not options.report_only:
            runs = [
                PlannedCampaign(config_path, config, fresh_outdir(release_dir / v), v)
                for v in matrix.MATRIX_VARIANTS
            ]
            release_vm = replace(vm, kernel=str(ready.release.kernel_image))
            campaigns_in_vm(release_vm, run, runs, release_dir, say)
        results.append(matrix.release_result(ready, release_dir))
    for tree in trees:
        tree_dir = outdir / tree.label
        builds = matrix.tree_variants(tree.shipped, tree.toggled)
        for variant in matrix.MATRIX_VARIANTS if not options.report_only else ():
            planned = PlannedCampaign(config_path, config, fresh_outdir(tree_dir / variant), DISTRO)
            boot_dir = tree_dir / f"boot-{variant}"
            boot_dir.mkdir(parents=True, exist_ok=True)
            kernel_vm = replace(vm, kernel=builds[variant].kdir)
            campaigns_in_vm(kernel_vm, run, [planned], boot_dir, say)
        results.append(
            matrix.tree_release_result(
                tree.source, tree.version, tree.shipped, tree.toggled, tree_dir
            )
        )
    for image in images:
        image_dir = outdir / image.label
        if not options.report_only:
            planned = PlannedCampaign(
                config_path, config, fresh_outdir(image_dir / matrix.IMAGE_VARIANT), DISTRO
            )
            boot_dir = image_dir / "boot"
            boot_dir.mkdir(parents=True, exist_ok=True)
            image_vm = replace(vm, kernel=str(image.image.vmlinuz))
            campaigns_in_vm(image_vm, run, [planned], boot_dir, say)
        reference = next((t for t in trees if t.source == image.source_spec), None)
        results.append(
            matrix.image_release_result(
                image.image,
                image.facts,
                image.source_spec,
                image_dir,
                outdir / reference.label / matrix.UNFIXED if reference is not None else None,
            )
        )
    print(matrix.write(results, outdir), flush=True)
    return results


@dataclass(frozen=True)
class TreeKernels:
    """A source of the matrix built both ways: its label (results directory), the source
    and package version it names, the as-shipped and the fix-toggled build."""

    label: str
    source: str
    version: str
    shipped: TreeBuild
    toggled: TreeBuild


def _tree_builds(spec: str, say: Say) -> TreeKernels:
    """Both builds of ``spec`` (a tree, directory, tarball or debian:linux-source-X.Y[=V])."""
    version = ""
    if spec.startswith("debian:"):
        fetched = debian_archive.fetch_source(spec.removeprefix("debian:"))
        source = tree_build.tarball_source(fetched.tarball, f"{fetched.package}_{fetched.version}")
        shown, version = f"{fetched.package}={fetched.version}", fetched.version
    else:
        source = tree_build.resolve_source(spec)
        shown = source.describe()
    shipped = tree_build.build_tree(source, TreeVariant("as-shipped"), say=say)
    toggled = tree_build.build_tree(source, TreeVariant("fix-toggled", (), True), say=say)
    say(
        f"{shown}: {shipped.release}, fix in source {shipped.check.get('fix')}, "
        f"bio_check_eod() {shipped.check.get('eod_shape')}, predicted {shipped.prediction}"
    )
    label = re.sub(r"[^\w.+-]", "_", f"{shipped.release}-{source.name}")
    return TreeKernels(label, shown, version or shipped.release, shipped, toggled)


@dataclass(frozen=True)
class ImageKernel:
    """A Debian image of the matrix: its label (results directory), the image unpacked under
    build/, the linux-source spec of the same version and that source's facts."""

    label: str
    image: debian_archive.FetchedImage
    source_spec: str
    facts: releases.SourceFacts


def _image(spec: str, say: Say) -> ImageKernel:
    """Debian's image ``spec`` (debian:RELEASE[=VERSION]) unpacked, and the facts of its own
    source (linux-source-X.Y of the same version, fetched for the source check)."""
    release, version = debian_archive.parse_image_spec(spec)
    image = debian_archive.fetch_image(release, version)
    source_spec = debian_archive.image_source_spec(image)
    fetched = debian_archive.fetch_source(source_spec)
    facts = releases.source_facts(fetched.tarball)
    say(
        f"Debian's image {image.release} {image.version}: {source_spec}, fix in source "
        f"{facts.has_fix}, bio_check_eod() {facts.eod_shape}, predicted {facts.prediction}"
    )
    label = re.sub(r"[^\w.+-]", "_", f"{image.release}-image")
    return ImageKernel(label, image, f"{fetched.package}={fetched.version}", facts)


def run_scenarios(
    config_paths: Sequence[Path],
    outdir: Path,
    variant: str,
    vm: VmOptions,
    run: RunOptions,
    say: Say,
) -> int:
    """Each config in ``config_paths`` in the VM on ``variant`` (results in
    ``outdir``/<config name>/); the hit-rate table (Markdown + JSON) in ``outdir``. Every
    config is checked before anything boots. Returns ExitCode.OK."""
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    kernel = vm.kernel or default_kernel()
    vm = replace(vm, kernel=kernel)
    if variant != DISTRO:
        kbuild.build_variant(variant, release=kernel_release(kernel) or None, cache_dir=run.modules)
    runs = []
    for config_path in config_paths:
        config = run.load(config_path)  # every config is checked before anything boots
        rundir = fresh_outdir(outdir / config_path.stem)
        runs.append(PlannedCampaign(config_path, config, rundir, variant))
    campaigns_in_vm(vm, run, runs, outdir, say)
    results = [scenarios.scenario_result(r.outdir.name, r.outdir) for r in runs]
    print(scenarios.write(results, outdir), flush=True)
    return ExitCode.OK

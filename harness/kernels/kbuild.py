"""Build the NVMe host modules out of tree, with and without the fix under test.

For one kernel release (its headers installed under /lib/modules/REL/build), this extracts
``drivers/nvme/host`` from the distribution's kernel source tarball into
``<cache>/<release>/<variant>/``, makes the source "fixed" or "unfixed" with the project's patch
(applied or reverted, depending on whether the source already carries the fix), builds
nvme-core.ko, nvme-fabrics.ko and nvme-tcp.ko with the release's kbuild, checks their
vermagic, and writes ``variant.json`` beside them. A later call with the same inputs (release,
variant, patch, source tarball) finds ``variant.json`` and does not build again.

Each release should be built from its own source: pass that release's tarball
(harness.kernels.releases.fetch_source, or ``--own-source`` on the command line). When ``patch``
cannot apply or revert the project's patch on a release's multipath.c (different context),
the one statement is toggled inside ``nvme_ns_head_submit_bio()`` instead, and the record
says so (``patch_method`` "toggle").

``nvmf-harness build-variants`` runs it (scripts/build-variants too).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from harness.bed.module_records import (
    FORMAT_VERSION,
    HOST_CORE_MODULE,
    HOST_MODULES,
    HOST_VARIANTS,
    VARIANT_FILE,
    BuildInputs,
    VariantBuild,
    default_cache_dir,
    variant_dir,
)
from harness.core.errors import HarnessError, ToolError
from harness.core.paths import PATCHES_DIR
from harness.core.procs import run
from harness.kernels import module_build, source_check
from harness.kernels.module_build import ModuleConfig

VARIANTS = HOST_VARIANTS
MODULES = HOST_MODULES
CORE_MODULE = HOST_CORE_MODULE
PATCH_NAME = "0001-nvme-multipath-set-BIO_REMAPPED-on-remapped-bios.patch"
FIX_STATEMENT = source_check.FIX_STATEMENT
SUBMIT_FUNCTION = source_check.SUBMIT_FUNCTION
# Path components before "multipath.c" in the patch ("a/drivers/nvme/host/multipath.c").
PATCH_STRIP = 4
FIX_COMMENT: tuple[str, ...] = (
    "/*",
    " * Use BIO_REMAPPED to skip bio_check_eod() when this bio",
    " * enters submit_bio_noacct() for the per-path device. The EOD",
    " * check already passed on the multipath head.",
    " */",
)
SET_DEV_STATEMENT = source_check.SET_DEV_STATEMENT

TOOL_TIMEOUT_S = 30.0

# The options of drivers/nvme/host's Makefile: the three modules we swap in (the release must
# build them as modules, with multipath); those that must agree with the release's autoconf.h;
# drivers of the same directory that we do not need (and do not build).
HOST_CONFIG = ModuleConfig(
    what="nvme modules",
    required={
        "CONFIG_NVME_CORE": "m",
        "CONFIG_NVME_FABRICS": "m",
        "CONFIG_NVME_TCP": "m",
        "CONFIG_NVME_MULTIPATH": "y",
    },
    from_kernel=("CONFIG_NVME_HWMON", "CONFIG_NVME_VERBOSE_ERRORS", "CONFIG_NVME_AUTH"),
    off=("CONFIG_BLK_DEV_NVME", "CONFIG_NVME_FC", "CONFIG_NVME_RDMA", "CONFIG_NVME_APPLE"),
)


def default_patch() -> Path:
    """The project's patch (patches/): the fix under test."""
    return PATCHES_DIR / PATCH_NAME


def submit_function_body(source: str) -> str:
    """The text of nvme_ns_head_submit_bio() in multipath.c (up to its closing brace)."""
    return source_check.function_body(source, SUBMIT_FUNCTION, "multipath.c")


def has_fix(multipath_c: Path) -> bool:
    """Whether nvme_ns_head_submit_bio() sets BIO_REMAPPED (the fix under test;
    harness.kernels.source_check.has_fix on the file's text). Raises ToolError."""
    try:
        text = multipath_c.read_text(errors="replace")
    except OSError as exc:
        raise ToolError(f"cannot read {multipath_c}: {exc.strerror}") from exc
    return source_check.has_fix(text, str(multipath_c))


@dataclass(frozen=True)
class SourceChange:
    """What make_variant_source() did: ``action`` "none", "applied" or "reverted";
    ``method`` "none", "patch" (patch(1)) or "toggle" (the statement edited directly)."""

    action: str
    method: str


def toggle_fix(multipath_c: Path, want_fix: bool) -> None:
    """Insert or remove the fix statement inside ``nvme_ns_head_submit_bio()`` directly.

    For a multipath.c whose context differs from the patch's. Inserting puts the patch's
    comment and ``bio_set_flag(bio, BIO_REMAPPED);`` right after the one
    ``bio_set_dev(bio, ns->disk->part0);`` line of the function, at its indentation; removing
    deletes the statement and the comment block right above it. Raises ToolError when the
    function does not have exactly one such line.
    """
    text = multipath_c.read_text()
    body = submit_function_body(text)
    start = text.index(body)
    lines = body.split("\n")
    if want_fix:
        anchors = [i for i, line in enumerate(lines) if line.strip() == SET_DEV_STATEMENT]
        if len(anchors) != 1:
            raise ToolError(
                f"cannot toggle the fix: nvme_ns_head_submit_bio() has {len(anchors)} "
                f"'{SET_DEV_STATEMENT}' lines, not one"
            )
        at = anchors[0]
        indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
        added = [indent + part for part in (*FIX_COMMENT, FIX_STATEMENT)]
        lines[at + 1 : at + 1] = added
    else:
        found = [i for i, line in enumerate(lines) if line.strip() == FIX_STATEMENT]
        if len(found) != 1:
            raise ToolError(
                f"cannot toggle the fix: nvme_ns_head_submit_bio() has {len(found)} "
                f"'{FIX_STATEMENT}' lines, not one"
            )
        first = last = found[0]
        if first > 0 and lines[first - 1].strip() == "*/":
            opening = first - 1
            while opening > 0 and not lines[opening].strip().startswith("/*"):
                opening -= 1
            if lines[opening].strip().startswith("/*"):
                first = opening
        del lines[first : last + 1]
    multipath_c.write_text(text[:start] + "\n".join(lines) + text[start + len(body) :])


def make_variant_source(host_dir: Path, variant: str, patch: Path) -> SourceChange:
    """Turn the extracted ``drivers/nvme/host`` copy into ``variant``.

    Tries ``patch`` (forward or reverse) first; when it does not fit, toggles the statement
    with :func:`toggle_fix`. Raises HarnessError for an unknown variant, ToolError when
    neither way gives the wanted source.
    """
    if variant not in VARIANTS:
        raise HarnessError(f"unknown variant '{variant}'", hint=f"one of {', '.join(VARIANTS)}")
    multipath_c = host_dir / "multipath.c"
    want_fix = variant == "fixed"
    if has_fix(multipath_c) == want_fix:
        return SourceChange("none", "none")
    action = "applied" if want_fix else "reverted"
    argv = ["patch", "--batch", "--forward", "--no-backup-if-mismatch", "--reject-file=-"]
    argv.append(f"-p{PATCH_STRIP}")
    if not want_fix:
        argv.append("--reverse")
    original = multipath_c.read_text()
    result = run([*argv, "-d", str(host_dir), "-i", str(patch)], timeout_s=TOOL_TIMEOUT_S)
    if result.ok and has_fix(multipath_c) == want_fix:
        return SourceChange(action, "patch")
    multipath_c.write_text(original)  # a partial patch must not stay
    why = result.one_line_error() if not result.ok else "patch left the source unchanged"
    try:
        toggle_fix(multipath_c, want_fix)
    except ToolError as exc:
        multipath_c.write_text(original)
        raise ToolError(
            f"patch could not be {action} to {multipath_c} ({why}), nor the statement "
            f"toggled: {exc.message}",
            hint="the source differs from the one the patch was made for",
        ) from exc
    if has_fix(multipath_c) != want_fix:
        raise ToolError(f"the fix was toggled but {multipath_c} is still not '{variant}'")
    return SourceChange(action, "toggle")


def cached_build(module_dir: Path, inputs: BuildInputs) -> VariantBuild | None:
    """The recorded build in ``module_dir`` when it was made from ``inputs`` and is intact."""
    record_path = module_dir / VARIANT_FILE
    if not record_path.is_file():
        return None
    try:
        record = VariantBuild.from_json(record_path.read_text(), cached=True)
    except ToolError:
        return None
    if record.format_version != FORMAT_VERSION or record.inputs() != inputs:
        return None
    if Path(record.module_dir) != module_dir:
        return None
    if CORE_MODULE not in record.srcversion:
        return None
    return record if module_build.intact(module_dir, MODULES, record.ko_sha256) else None


def build_variant(
    variant: str,
    release: str | None = None,
    cache_dir: Path | None = None,
    source_tarball: Path | None = None,
    patch: Path | None = None,
    jobs: int = 2,
    force: bool = False,
    modules_root: Path | None = None,
) -> VariantBuild:
    """Build (or find cached) nvme-core/fabrics/tcp for ``variant`` of ``release``."""
    if variant not in VARIANTS:
        raise HarnessError(f"unknown variant '{variant}'", hint=f"one of {', '.join(VARIANTS)}")
    rel = release or module_build.default_release(modules_root)
    cache = (cache_dir or default_cache_dir()).resolve()
    patch_path = patch or default_patch()
    if not patch_path.is_file():
        raise ToolError(f"patch {patch_path} not found")
    tarball = module_build.find_source_tarball(source_tarball, rel)
    inputs = module_build.build_inputs(rel, variant, patch_path, tarball)
    module_dir = variant_dir(cache, rel, variant)
    if not force:
        found = cached_build(module_dir, inputs)
        if found is not None:
            return found

    headers = module_build.headers_dir(rel, modules_root)
    config = module_build.read_kernel_config(rel, modules_root)
    assignments = module_build.make_vars(config, rel, HOST_CONFIG)
    started = time.monotonic()
    (module_dir / VARIANT_FILE).unlink(missing_ok=True)
    shutil.rmtree(module_dir, ignore_errors=True)
    shutil.copytree(module_build.pristine_sources(tarball, inputs, cache) / "host", module_dir)
    change = make_variant_source(module_dir, variant, patch_path)
    module_build.make_modules(
        headers, module_dir, assignments, jobs, f"the '{variant}' modules for {rel}"
    )
    built = module_build.check_modules(module_dir, MODULES, rel)
    srcversion = built.srcversion
    if CORE_MODULE not in srcversion:
        raise ToolError(f"{CORE_MODULE}.ko has no srcversion: cannot tell the variants apart")
    record = VariantBuild(
        release=rel,
        variant=variant,
        module_dir=str(module_dir),
        srcversion=srcversion,
        ko_sha256=built.ko_sha256,
        vermagic=built.vermagic,
        has_fix=has_fix(module_dir / "multipath.c"),
        patch_action=change.action,
        patch_sha256=inputs.patch_sha256,
        source_tarball=inputs.source_tarball,
        source_size=inputs.source_size,
        source_mtime_ns=inputs.source_mtime_ns,
        make_vars=assignments,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - started, 2),
        patch_method=change.method,
    )
    module_build.write_record(module_dir / VARIANT_FILE, record.to_json())
    return record

"""Build the nvmet target with the project's test-only namespace-visibility patch (host).

The patch (``patches/nvmet-ns-visibility/``) adds ``ports/<id>/ana_groups/<grpid>/ns_visibility``
to nvmet's configfs, so one port (one path of the multipath host) can lose the namespaces of
one ANA group while its controllers stay live (harness/bed/ns_visibility.py). Only the target
changes; the host modules under test stay exactly as built.

For one kernel release this copies ``drivers/nvme/target`` (and ``drivers/nvme/host``, whose
``nvme.h`` the passthru code includes) of the distribution's kernel source tarball into
``<cache>/<release>/nvmet-ns-visibility/``, applies the patch, builds nvmet.ko and nvmet-tcp.ko
the one way every out-of-tree build goes (harness.kernels.module_build: both modules, since the
patch changes ``struct nvmet_port``, which nvmet-tcp uses), and writes ``nvmet-variant.json``
beside them. A later call with the same inputs (release, tarball, patch) finds the record and
does not build again. Loading it in the VM is harness.bed.nvmet_modules.

``nvmf-harness build-nvmet --release REL`` runs it.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness.bed.module_records import (
    FORMAT_VERSION,
    NVMET_CORE_MODULE,
    NVMET_MODULES,
    NVMET_RECORD_FILE,
    NVMET_VARIANT,
    BuildInputs,
    NvmetBuild,
    default_cache_dir,
    nvmet_build_dir,
    nvmet_module_dir,
)
from harness.core.errors import HarnessError, ToolError
from harness.core.paths import PATCHES_DIR
from harness.core.procs import run
from harness.kernels import module_build
from harness.kernels.module_build import ModuleConfig
from harness.kernels.prepared import kernel_release

if TYPE_CHECKING:
    from harness.config.campaign import CampaignConfig

VARIANT = NVMET_VARIANT
PATCH_DIR = "nvmet-ns-visibility"
PATCH_NAME = "0001-nvmet-per-port-namespace-visibility-for-tests.patch"
# Path components before "core.c" in the patch ("a/drivers/nvme/target/core.c").
PATCH_STRIP = 4
# What the patch adds to configfs.c: how a patched source is recognised.
PATCH_MARK = "nvmet_ana_group_attr_ns_visibility"
TOOL_TIMEOUT_S = 30.0

# The options of drivers/nvme/target's Makefile: the two modules we swap in (the release must
# build them as modules); those nvmet.h has #ifdefs on (they must agree with the release's
# autoconf.h); target drivers of the same directory that we do not need.
NVMET_CONFIG = ModuleConfig(
    what="nvmet modules",
    required={"CONFIG_NVME_TARGET": "m", "CONFIG_NVME_TARGET_TCP": "m"},
    from_kernel=(
        "CONFIG_NVME_TARGET_PASSTHRU",
        "CONFIG_NVME_TARGET_AUTH",
        "CONFIG_BLK_DEV_ZONED",
        "CONFIG_TRACING",
        "CONFIG_NVME_TARGET_DEBUGFS",  # 6.12
        "CONFIG_NVME_TARGET_TCP_TLS",  # 6.12
    ),
    off=(
        "CONFIG_NVME_TARGET_LOOP",
        "CONFIG_NVME_TARGET_RDMA",
        "CONFIG_NVME_TARGET_FC",
        "CONFIG_NVME_TARGET_FCLOOP",
    ),
)


def kernel_line(release: str) -> str:
    """``6.1`` for ``6.1.0-56-amd64``, ``6.12`` for ``6.12.107+deb12-amd64``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def default_patch(release: str | None = None) -> Path:
    """The patch for ``release``'s kernel line: ``patches/nvmet-ns-visibility/<line>/`` when
    that line has its own copy (6.12), else the top one (made for Debian's 6.1.192; applies
    to 6.1.170 too)."""
    top = PATCHES_DIR / PATCH_DIR
    own = top / kernel_line(release or "") / PATCH_NAME
    return own if release and own.is_file() else top / PATCH_NAME


def is_patched_source(target_dir: Path) -> bool:
    """Whether ``target_dir``'s configfs.c carries the patch (its ns_visibility attribute)."""
    try:
        return PATCH_MARK in (target_dir / "configfs.c").read_text(errors="replace")
    except OSError as exc:
        raise ToolError(f"cannot read {target_dir / 'configfs.c'}: {exc.strerror}") from exc


def apply_patch(target_dir: Path, patch: Path) -> None:
    """Apply the visibility patch to an extracted ``drivers/nvme/target`` copy.

    Raises ToolError when it does not apply (a source the patch was not made for).
    """
    result = run(
        [
            "patch",
            "--batch",
            "--forward",
            "--no-backup-if-mismatch",
            "--fuzz=0",  # offsets are fine, changed context is not
            f"-p{PATCH_STRIP}",
            "-d",
            str(target_dir),
            "-i",
            str(patch),
        ],
        timeout_s=TOOL_TIMEOUT_S,
    )
    if not result.ok:
        raise ToolError(
            f"{patch.name} does not apply to {target_dir}: {result.one_line_error()}",
            hint="the source differs from Debian's 6.1.192 the patch was made for",
        )
    if not is_patched_source(target_dir):
        raise ToolError(f"{patch.name} applied but {target_dir}/configfs.c lacks {PATCH_MARK}")


def cached_build(module_dir: Path, inputs: BuildInputs) -> NvmetBuild | None:
    """The recorded build in ``module_dir`` when it was made from ``inputs`` and is intact."""
    path = module_dir / NVMET_RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = NvmetBuild.from_json(path.read_text(), cached=True)
    except ToolError:
        return None
    if record.format_version != FORMAT_VERSION or record.inputs() != inputs:
        return None
    if Path(record.module_dir) != module_dir or not record.srcversion:
        return None
    return record if module_build.intact(module_dir, NVMET_MODULES, record.ko_sha256) else None


def build_for_configs(kernel: str, configs: Sequence[CampaignConfig]) -> NvmetBuild | None:
    """Before a VM boot of ``kernel`` (a /boot image path): build (or find cached) the patched
    nvmet for its release when one of ``configs`` needs it (``ns_remove_path`` with a
    ``hidden*`` mechanism, CampaignConfig.needs_patched_nvmet), from the release's own fetched
    source when there is one (matrix), else /usr/src's tarball. None when no config needs it. Raises
    like ``build_nvmet``."""
    from harness.kernels import releases  # releases imports this module

    if not any(config.needs_patched_nvmet() for config in configs):
        return None
    release = kernel_release(kernel) or None
    own = None
    if release is not None:
        try:
            own = releases.cached_source(releases.lookup(release))
        except HarnessError:
            own = None
    return build_nvmet(release=release, source_tarball=own.tarball if own is not None else None)


def build_nvmet(
    release: str | None = None,
    cache_dir: Path | None = None,
    source_tarball: Path | None = None,
    patch: Path | None = None,
    jobs: int = 2,
    force: bool = False,
    modules_root: Path | None = None,
) -> NvmetBuild:
    """Build (or find cached) the patched nvmet.ko and nvmet-tcp.ko for ``release``.

    ``release`` defaults to the newest release with headers (module_build.default_release). Takes
    about 20 s the first time per tarball (extraction), 6 s per build after. Raises ToolError
    when headers, tarball or patch are missing, the patch does not apply, make fails (log in
    ``build.log``), or a module's vermagic does not fit the release.
    """
    rel = release or module_build.default_release(modules_root)
    cache = (cache_dir or default_cache_dir()).resolve()
    patch_path = patch or default_patch(rel)
    if not patch_path.is_file():
        raise ToolError(f"patch {patch_path} not found")
    tarball = module_build.find_source_tarball(source_tarball, rel)
    inputs = module_build.build_inputs(rel, VARIANT, patch_path, tarball)
    module_dir = nvmet_module_dir(cache, rel)
    if not force:
        found = cached_build(module_dir, inputs)
        if found is not None:
            return found

    headers = module_build.headers_dir(rel, modules_root)
    config = module_build.read_kernel_config(rel, modules_root)
    assignments = module_build.make_vars(config, rel, NVMET_CONFIG)
    started = time.monotonic()
    top = nvmet_build_dir(cache, rel)
    shutil.rmtree(top, ignore_errors=True)
    pristine = module_build.pristine_sources(tarball, inputs, cache)
    shutil.copytree(pristine / "target", module_dir)
    shutil.copytree(pristine / "host", top / "host")
    apply_patch(module_dir, patch_path)
    module_build.make_modules(
        headers, module_dir, assignments, jobs, f"the patched nvmet for {rel}"
    )
    built = module_build.check_modules(module_dir, NVMET_MODULES, rel)
    srcversion = built.srcversion.get(NVMET_CORE_MODULE, "")
    if not srcversion:
        raise ToolError(
            f"{NVMET_CORE_MODULE}.ko has no srcversion: the patch's MODULE_VERSION is missing"
        )
    record = NvmetBuild(
        release=rel,
        module_dir=str(module_dir),
        srcversion=srcversion,
        ko_sha256=built.ko_sha256,
        vermagic=built.vermagic,
        patch_file=str(patch_path),
        patch_sha256=inputs.patch_sha256,
        source_tarball=inputs.source_tarball,
        source_size=inputs.source_size,
        source_mtime_ns=inputs.source_mtime_ns,
        make_vars=assignments,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - started, 2),
    )
    module_build.write_record(module_dir / NVMET_RECORD_FILE, record.to_json())
    return record

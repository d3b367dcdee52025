"""Build and load the nvmet target with the project's test-only namespace-visibility patch.

The patch (``patches/nvmet-ns-visibility/``) adds ``ports/<id>/ana_groups/<grpid>/ns_visibility``
to nvmet's configfs, so one port (one path of the multipath host) can lose the namespaces of
one ANA group while its controllers stay live (see harness/ns_visibility.py). Only the target
changes; the host modules under test stay exactly as built.

For one kernel release this extracts ``drivers/nvme/target`` (and ``drivers/nvme/host``, whose
``nvme.h`` the passthru code includes) from the distribution's kernel source tarball into
``<cache>/<release>/nvmet-ns-visibility/``, applies the patch, builds nvmet.ko and nvmet-tcp.ko
with the release's kbuild (both: the patch changes ``struct nvmet_port``, which nvmet-tcp
uses), checks their vermagic, and writes ``nvmet-variant.json`` beside them. A later call with
the same inputs (release, tarball, patch) finds the record and does not build again.

Loading (inside the VM, as root) uses ``insmod``, never ``modprobe nvmet-tcp``, which would load
the distribution's copies. The patch gives nvmet ``MODULE_VERSION("ns-visibility-test")``, so
``/sys/module/nvmet/version`` and ``srcversion`` tell the patched build from the distribution's,
which has neither.

Run ``python -m harness.kernels.nvmet_variant build --release REL``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from harness.core.errors import HarnessError, SafetyError, ToolError
from harness.core.kernelfs import KernelFs
from harness.core.procs import run
from harness.kernels import kbuild

if TYPE_CHECKING:
    from harness.config.campaign import CampaignConfig

VARIANT = "nvmet-ns-visibility"
PATCH_DIR = "nvmet-ns-visibility"
PATCH_NAME = "0001-nvmet-per-port-namespace-visibility-for-tests.patch"
TARGET_SUBDIR = "drivers/nvme/target"
HOST_SUBDIR = "drivers/nvme/host"
# Path components before "core.c" in the patch ("a/drivers/nvme/target/core.c").
PATCH_STRIP = 4
MODULES: tuple[str, ...] = ("nvmet", "nvmet-tcp")  # file names, in load order
CORE_MODULE = "nvmet"
# What the patch puts in MODULE_VERSION (core.c); the distribution's nvmet has no version.
MODULE_VERSION = "ns-visibility-test"
# What the patch adds to configfs.c: how a patched source is recognised.
PATCH_MARK = "nvmet_ana_group_attr_ns_visibility"
RECORD_FILE = "nvmet-variant.json"
FORMAT_VERSION = 1
SYS_MODULE = "/sys/module"
NVMET_CONFIGFS = "/sys/kernel/config/nvmet"
MODULE_TIMEOUT_S = 60.0

# Options the Makefile of drivers/nvme/target reads; they must agree with the release's
# autoconf.h (nvmet.h has #ifdefs on them), so their values come from the release's config.
CONFIG_FROM_KERNEL: tuple[str, ...] = (
    "CONFIG_NVME_TARGET_PASSTHRU",
    "CONFIG_NVME_TARGET_AUTH",
    "CONFIG_BLK_DEV_ZONED",
    "CONFIG_TRACING",
    "CONFIG_NVME_TARGET_DEBUGFS",  # 6.12
    "CONFIG_NVME_TARGET_TCP_TLS",  # 6.12
)
# The two modules we swap in: the release must build them as modules.
CONFIG_REQUIRED: dict[str, str] = {"CONFIG_NVME_TARGET": "m", "CONFIG_NVME_TARGET_TCP": "m"}
# Target drivers in the same directory that we do not need (and do not build).
CONFIG_OFF: tuple[str, ...] = (
    "CONFIG_NVME_TARGET_LOOP",
    "CONFIG_NVME_TARGET_RDMA",
    "CONFIG_NVME_TARGET_FC",
    "CONFIG_NVME_TARGET_FCLOOP",
)
# Other users of nvmet: loaded, they keep it from being unloaded.
OTHER_TRANSPORTS: tuple[str, ...] = ("nvmet_rdma", "nvmet_fc", "nvme_loop", "nvme_fcloop")


@dataclass(frozen=True)
class NvmetBuild:
    """One build of the patched nvmet, as recorded in ``nvmet-variant.json`` beside it."""

    release: str
    module_dir: str
    srcversion: str  # of nvmet.ko (MODULE_VERSION from the patch gives it one)
    ko_sha256: dict[str, str]  # file name without .ko -> sha256 hex
    vermagic: str
    patch_file: str
    patch_sha256: str
    source_tarball: str
    source_size: int
    source_mtime_ns: int
    make_vars: list[str]
    built_at: str  # ISO 8601, UTC
    build_seconds: float
    format_version: int = FORMAT_VERSION
    cached: bool = field(default=False, compare=False)

    def ko(self, module: str) -> Path:
        """The path of ``module`` (a file name from MODULES, e.g. ``nvmet-tcp``)."""
        return Path(self.module_dir) / f"{module}.ko"

    def to_json(self) -> str:
        return kbuild.build_record_json(self)

    @classmethod
    def from_json(cls, text: str, cached: bool = False) -> NvmetBuild:
        """Parse a record; raises ToolError when it is not one."""
        return kbuild.parse_build_record(cls, text, RECORD_FILE, cached)

    def inputs(self) -> kbuild.BuildInputs:
        return kbuild.BuildInputs(
            release=self.release,
            variant=VARIANT,
            patch_sha256=self.patch_sha256,
            source_tarball=self.source_tarball,
            source_size=self.source_size,
            source_mtime_ns=self.source_mtime_ns,
        )


@dataclass(frozen=True)
class LoadedNvmet:
    """Which nvmet is loaded, from /sys/module/nvmet (and the build records)."""

    loaded: bool
    tcp_loaded: bool  # nvmet_tcp
    out_of_tree: bool  # taint flag O
    version: str  # /sys/module/nvmet/version; "" for the distribution's module
    srcversion: str  # /sys/module/nvmet/srcversion; "" when the module has no version
    patched: bool  # the ns-visibility test build (version == MODULE_VERSION)
    module_dir: str | None  # the build whose srcversion matches, when one is recorded

    def describe(self) -> str:
        """One line for run.json and doctor, e.g. ``nvmet ns-visibility-test 1A2B... (out
        of tree)``, ``nvmet distro (in tree)``, ``nvmet not loaded``."""
        if not self.loaded:
            return "nvmet not loaded"
        where = "out of tree" if self.out_of_tree else "in tree"
        if self.patched:
            return f"nvmet {MODULE_VERSION} {self.srcversion} ({where})"
        name = "distro" if not self.out_of_tree else f"unknown build {self.srcversion}".strip()
        return f"nvmet {name} ({where})"


def kernel_line(release: str) -> str:
    """``6.1`` for ``6.1.0-56-amd64``, ``6.12`` for ``6.12.107+deb12-amd64``."""
    match = re.match(r"(\d+)\.(\d+)", release)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def default_patch(release: str | None = None) -> Path:
    """The patch for ``release``'s kernel line: ``patches/nvmet-ns-visibility/<line>/`` when
    that line has its own copy (6.12), else the top one (made for Debian's 6.1.192; applies
    to 6.1.170 too)."""
    top = kbuild.repo_root() / "patches" / PATCH_DIR
    own = top / kernel_line(release or "") / PATCH_NAME
    return own if release and own.is_file() else top / PATCH_NAME


def build_dir(cache_dir: Path, release: str) -> Path:
    """``<cache>/<release>/nvmet-ns-visibility``: holds ``target/`` (the modules) and ``host/``."""
    return cache_dir / release / VARIANT


def module_dir_of(cache_dir: Path, release: str) -> Path:
    return build_dir(cache_dir, release) / "target"


def is_patched_source(target_dir: Path) -> bool:
    """Whether ``target_dir``'s configfs.c carries the patch (its ns_visibility attribute)."""
    try:
        return PATCH_MARK in (target_dir / "configfs.c").read_text(errors="replace")
    except OSError as exc:
        raise ToolError(f"cannot read {target_dir / 'configfs.c'}: {exc.strerror}") from exc


def make_vars(config: dict[str, str], release: str) -> list[str]:
    """The CONFIG_* assignments for make, checked against the release's config.

    Raises ToolError when the release does not build nvmet and nvmet-tcp as modules.
    """
    return kbuild.make_vars(
        config, release, CONFIG_REQUIRED, CONFIG_FROM_KERNEL, CONFIG_OFF, "nvmet modules"
    )


def extract_nvme_sources(
    tarball: Path, dest: Path, timeout_s: float = kbuild.EXTRACT_TIMEOUT_S
) -> None:
    """Extract ``drivers/nvme/target`` and ``drivers/nvme/host`` into ``dest/target``,
    ``dest/host`` (one pass: xz decompresses the whole archive either way, ~13 s here)."""
    staging = dest.with_name(dest.name + ".extract")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        result = run(
            [
                "tar",
                "-xf",
                str(tarball),
                "-C",
                str(staging),
                "--wildcards",
                f"*/{TARGET_SUBDIR}/*",
                f"*/{HOST_SUBDIR}/*",
            ],
            timeout_s=timeout_s,
        )
        if not result.ok:
            raise ToolError(
                f"cannot extract {TARGET_SUBDIR} from {tarball}: {result.one_line_error()}"
            )
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for subdir, name in ((TARGET_SUBDIR, "target"), (HOST_SUBDIR, "host")):
            found = sorted(staging.glob(f"*/{subdir}"))
            if len(found) != 1:
                raise ToolError(f"{tarball} has no single {subdir} directory")
            found[0].rename(dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def pristine_sources(tarball: Path, inputs: kbuild.BuildInputs, cache_dir: Path) -> Path:
    """Unmodified ``target/`` and ``host/`` from ``tarball``, extracted once per tarball."""
    key = f"{tarball.name}-{inputs.source_size}-{inputs.source_mtime_ns}"
    pristine = cache_dir / "sources" / key / "nvme"
    if not (pristine / "target" / "core.c").is_file() or not (pristine / "host").is_dir():
        extract_nvme_sources(tarball, pristine)
    return pristine


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
        timeout_s=kbuild.TOOL_TIMEOUT_S,
    )
    if not result.ok:
        raise ToolError(
            f"{patch.name} does not apply to {target_dir}: {result.one_line_error()}",
            hint="the source differs from Debian's 6.1.192 the patch was made for",
        )
    if not is_patched_source(target_dir):
        raise ToolError(f"{patch.name} applied but {target_dir}/configfs.c lacks {PATCH_MARK}")


def cached_build(module_dir: Path, inputs: kbuild.BuildInputs) -> NvmetBuild | None:
    """The recorded build in ``module_dir`` when it was made from ``inputs`` and is intact."""
    path = module_dir / RECORD_FILE
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
    for module in MODULES:
        ko = record.ko(module)
        if not ko.is_file() or kbuild.sha256_of(ko) != record.ko_sha256.get(module):
            return None
    return record


def load_record(cache_dir: Path, release: str) -> NvmetBuild | None:
    """The record of the build for ``release``, or None when it was never built.

    Raises ToolError when a record exists but cannot be read.
    """
    path = module_dir_of(cache_dir, release) / RECORD_FILE
    if not path.is_file():
        return None
    return NvmetBuild.from_json(path.read_text(), cached=True)


def build_for_configs(kernel: str, configs: Sequence[CampaignConfig]) -> NvmetBuild | None:
    """Before a VM boot of ``kernel`` (a /boot image path): build (or find cached) the patched
    nvmet for its release when one of ``configs`` needs it (``ns_remove_path`` with a
    ``hidden*`` mechanism, CampaignConfig.needs_patched_nvmet), from the release's own fetched
    source when there is one (matrix), else /usr/src's tarball. None when no config needs it. Raises
    like ``build_nvmet``."""
    from harness.kernels import releases
    from harness.vm.boot import kernel_release

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

    ``release`` defaults to the newest release with headers (kbuild.default_release). Takes
    about 20 s the first time per tarball (extraction), 6 s per build after. Raises ToolError
    when headers, tarball or patch are missing, the patch does not apply, make fails (log in
    ``build.log``), or a module's vermagic does not fit the release.
    """
    rel = release or kbuild.default_release(modules_root)
    cache = (cache_dir or kbuild.default_cache_dir()).resolve()
    patch_path = patch or default_patch(rel)
    if not patch_path.is_file():
        raise ToolError(f"patch {patch_path} not found")
    tarball = kbuild.find_source_tarball(source_tarball)
    inputs = kbuild.build_inputs(rel, VARIANT, patch_path, tarball)
    module_dir = module_dir_of(cache, rel)
    if not force:
        found = cached_build(module_dir, inputs)
        if found is not None:
            return found

    headers = kbuild.headers_dir(rel, modules_root)
    assignments = make_vars(kbuild.read_kernel_config(rel, modules_root), rel)
    started = time.monotonic()
    top = build_dir(cache, rel)
    shutil.rmtree(top, ignore_errors=True)
    pristine = pristine_sources(tarball, inputs, cache)
    shutil.copytree(pristine / "target", module_dir)
    shutil.copytree(pristine / "host", top / "host")
    apply_patch(module_dir, patch_path)
    result = run(
        ["make", "-C", str(headers), f"M={module_dir}", *assignments, "modules", f"-j{jobs}"],
        timeout_s=kbuild.MAKE_TIMEOUT_S,
    )
    if not result.ok:
        (module_dir / "build.log").write_text(result.stdout + result.stderr)
        raise ToolError(
            f"building the patched nvmet for {rel} failed: {result.one_line_error()}",
            hint=f"full log in {module_dir / 'build.log'}",
        )
    expected = kbuild.distro_vermagic(rel)
    ko_sha256: dict[str, str] = {}
    vermagic = ""
    for module in MODULES:
        ko = module_dir / f"{module}.ko"
        if not ko.is_file():
            raise ToolError(f"the build made no {ko.name}", hint=f"see make output in {module_dir}")
        vermagic = kbuild.modinfo_field(ko, "vermagic")
        kbuild.check_vermagic(ko, vermagic, rel, expected)
        ko_sha256[module] = kbuild.sha256_of(ko)
    srcversion = kbuild.modinfo_field(module_dir / f"{CORE_MODULE}.ko", "srcversion")
    if not srcversion:
        raise ToolError(
            f"{CORE_MODULE}.ko has no srcversion: the patch's MODULE_VERSION is missing"
        )
    record = NvmetBuild(
        release=rel,
        module_dir=str(module_dir),
        srcversion=srcversion,
        ko_sha256=ko_sha256,
        vermagic=vermagic,
        patch_file=str(patch_path),
        patch_sha256=inputs.patch_sha256,
        source_tarball=inputs.source_tarball,
        source_size=inputs.source_size,
        source_mtime_ns=inputs.source_mtime_ns,
        make_vars=assignments,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - started, 2),
    )
    tmp = module_dir / (RECORD_FILE + ".tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, module_dir / RECORD_FILE)
    return record


# --- what is loaded, loading, unloading (inside the VM, as root) ----------------------------


def _is_loaded(fs: KernelFs, name: str) -> bool:
    return fs.exists(f"{SYS_MODULE}/{name}/initstate")


def loaded_nvmet(
    fs: KernelFs | None = None, release: str | None = None, cache_dir: Path | None = None
) -> LoadedNvmet:
    """Which nvmet is loaded now (from /sys/module/nvmet: version, srcversion, taint), and
    the recorded build of ``release`` (default: the running one) that has its srcversion."""
    kfs = fs or KernelFs()
    if not _is_loaded(kfs, "nvmet"):
        return LoadedNvmet(False, _is_loaded(kfs, "nvmet_tcp"), False, "", "", False, None)
    version = kfs.read(f"{SYS_MODULE}/nvmet/version", default="")
    srcversion = kfs.read(f"{SYS_MODULE}/nvmet/srcversion", default="")
    out_of_tree = "O" in kfs.read(f"{SYS_MODULE}/nvmet/taint", default="")
    module_dir = None
    try:
        record = load_record(cache_dir or kbuild.default_cache_dir(), release or platform.release())
    except ToolError:
        record = None
    if record is not None and srcversion and record.srcversion == srcversion:
        module_dir = record.module_dir
    return LoadedNvmet(
        loaded=True,
        tcp_loaded=_is_loaded(kfs, "nvmet_tcp"),
        out_of_tree=out_of_tree,
        version=version,
        srcversion=srcversion,
        patched=version == MODULE_VERSION,
        module_dir=module_dir,
    )


def patched_nvmet_loaded(fs: KernelFs | None = None) -> bool:
    """Whether the loaded nvmet is the ns-visibility test build (/sys/module/nvmet/version)."""
    kfs = fs or KernelFs()
    return kfs.read(f"{SYS_MODULE}/nvmet/version", default="") == MODULE_VERSION


def nvmet_entries(fs: KernelFs) -> list[str]:
    """Everything nvmet holds in configfs (``ports/6000``, ``subsystems/NQN``, ``hosts/NQN``)."""
    if not fs.exists(NVMET_CONFIGFS):
        return []
    return [
        f"{group}/{name}"
        for group in ("ports", "subsystems", "hosts")
        for name in fs.listdir(f"{NVMET_CONFIGFS}/{group}")
    ]


def unload_nvmet(fs: KernelFs | None = None, timeout_s: float = MODULE_TIMEOUT_S) -> None:
    """rmmod nvmet_tcp and nvmet (whichever build they are).

    Raises SafetyError while nvmet holds configfs entries (ports, subsystems, hosts: someone's
    target) or another transport (nvmet_rdma, nvme_loop, ...) uses nvmet; ToolError when
    rmmod fails.
    """
    kfs = fs or KernelFs()
    held = nvmet_entries(kfs)
    if held:
        shown = ", ".join(held[:4]) + (" ..." if len(held) > 4 else "")
        raise SafetyError(
            f"nvmet holds configfs entries ({shown}): refusing to unload it",
            hint="remove that target first (nvmf-harness clean removes the harness's own)",
        )
    users = [name for name in OTHER_TRANSPORTS if _is_loaded(kfs, name)]
    if users:
        raise SafetyError(
            f"nvmet is also used by {', '.join(users)}: refusing to unload it",
            hint=f"rmmod {' '.join(users)} first",
        )
    for name in ("nvmet_tcp", "nvmet"):
        if _is_loaded(kfs, name):
            result = run(["rmmod", name], timeout_s=timeout_s)
            if not result.ok:
                raise ToolError(f"cannot unload {name}: {result.one_line_error()}")


def load_patched_nvmet(
    release: str | None = None,
    cache_dir: Path | None = None,
    fs: KernelFs | None = None,
    timeout_s: float = MODULE_TIMEOUT_S,
) -> LoadedNvmet:
    """Make the patched nvmet.ko and nvmet-tcp.ko the loaded ones (insmod), and verify.

    Already loaded (same srcversion, nvmet_tcp too) means nothing to do; any other nvmet is
    unloaded first, which unload_nvmet refuses (SafetyError) while it holds configfs entries.
    Dependencies (configfs, t10-pi) come from modprobe. Raises ToolError when the build is
    missing or damaged, insmod fails, or the loaded module is not the build afterwards.
    """
    kfs = fs or KernelFs()
    rel = release or platform.release()
    cache = cache_dir or kbuild.default_cache_dir()
    record = load_record(cache, rel)
    if record is None:
        raise ToolError(
            f"the patched nvmet for {rel} is not built",
            hint=f"python -m harness.kernels.nvmet_variant build --release {rel}",
        )
    now = loaded_nvmet(kfs, rel, cache)
    if now.loaded and now.tcp_loaded and now.patched and now.srcversion == record.srcversion:
        return now
    for module in MODULES:
        ko = record.ko(module)
        if not ko.is_file() or kbuild.sha256_of(ko) != record.ko_sha256.get(module):
            raise ToolError(
                f"{ko} is missing or differs from its build record",
                hint=f"python -m harness.kernels.nvmet_variant build --release {rel} --force",
            )
    if now.loaded or now.tcp_loaded:
        unload_nvmet(kfs, timeout_s)
    deps: list[str] = []
    for module in MODULES:
        for dep in kbuild.modinfo_field(record.ko(module), "depends").split(","):
            if dep and dep not in MODULES and dep not in deps:
                deps.append(dep)
    for dep in deps:
        result = run(["modprobe", dep], timeout_s=timeout_s)
        if not result.ok:
            raise ToolError(f"modprobe {dep} failed: {result.one_line_error()}")
    for module in MODULES:
        result = run(["insmod", str(record.ko(module))], timeout_s=timeout_s)
        if not result.ok:
            raise ToolError(
                f"insmod {module}.ko failed: {result.one_line_error()}",
                hint="see dmesg; the modules must match the running kernel",
            )
    after = loaded_nvmet(kfs, rel, cache)
    if not (after.loaded and after.tcp_loaded and after.srcversion == record.srcversion):
        raise ToolError(
            f"after insmod, nvmet is '{after.describe()}', expected srcversion "
            f"{record.srcversion} with nvmet_tcp"
        )
    return after


def load_distro_nvmet(
    fs: KernelFs | None = None, timeout_s: float = MODULE_TIMEOUT_S
) -> LoadedNvmet:
    """Make the release's own nvmet and nvmet-tcp the loaded ones (unloading an out-of-tree
    nvmet first, which unload_nvmet may refuse) with ``modprobe nvmet-tcp``."""
    kfs = fs or KernelFs()
    now = loaded_nvmet(kfs)
    if now.out_of_tree:
        unload_nvmet(kfs, timeout_s)
    result = run(["modprobe", "nvmet-tcp"], timeout_s=timeout_s)
    if not result.ok:
        raise ToolError(
            f"cannot load nvmet-tcp: {result.one_line_error()}",
            hint="the kernel needs CONFIG_NVME_TARGET_TCP (m or y)",
        )
    after = loaded_nvmet(kfs)
    if after.out_of_tree or not after.loaded:
        raise ToolError(f"after modprobe nvmet-tcp, nvmet is '{after.describe()}'")
    return after


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.kernels.nvmet_variant",
        description="Build nvmet/nvmet-tcp with the test-only namespace visibility patch.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build (or find cached) the patched modules")
    build.add_argument("--release", help="kernel release (default: newest with headers)")
    build.add_argument("--cache-dir", type=Path, help=f"default: {kbuild.default_cache_dir()}")
    build.add_argument("--source-tarball", type=Path, help=f"default: {kbuild.DEFAULT_TARBALL}")
    build.add_argument(
        "--patch", type=Path, help=f"default: {default_patch()} (or <kernel line>/ beside it)"
    )
    build.add_argument("--jobs", type=int, default=2)
    build.add_argument("--force", action="store_true", help="rebuild even when cached")
    commands.add_parser("status", help="which nvmet is loaded")
    args = parser.parse_args(argv)
    try:
        if args.command == "status":
            print(loaded_nvmet().describe())
            return 0
        built = build_nvmet(
            release=args.release,
            cache_dir=args.cache_dir,
            source_tarball=args.source_tarball,
            patch=args.patch,
            jobs=args.jobs,
            force=args.force,
        )
    except HarnessError as exc:
        print(f"nvmet_variant: {exc}", file=sys.stderr)
        return 1
    how = "cached" if built.cached else f"built in {built.build_seconds:g} s"
    print(f"{VARIANT} {built.release} nvmet srcversion {built.srcversion} ({how})")
    print(built.module_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

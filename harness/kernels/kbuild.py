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

Run ``python -m harness.kernels.kbuild --help`` (or scripts/build-variants).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from harness.core.errors import HarnessError, ToolError
from harness.core.paths import REPO_ROOT
from harness.core.procs import run
from harness.kernels.prepared import prepared_release

VARIANTS: tuple[str, ...] = ("fixed", "unfixed")
MODULES: tuple[str, ...] = ("nvme-core", "nvme-fabrics", "nvme-tcp")
# Only nvme-core has a srcversion (MODULE_VERSION); it is what /sys/module shows.
CORE_MODULE = "nvme-core"
PATCH_NAME = "0001-nvme-multipath-set-BIO_REMAPPED-on-remapped-bios.patch"
FIX_STATEMENT = "bio_set_flag(bio, BIO_REMAPPED);"
SUBMIT_FUNCTION = "static void nvme_ns_head_submit_bio(struct bio *bio)"
HOST_SUBDIR = "drivers/nvme/host"
# Path components before "multipath.c" in the patch ("a/drivers/nvme/host/multipath.c").
PATCH_STRIP = 4
DEFAULT_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
MODULES_ROOT = Path("/lib/modules")
VARIANT_FILE = "variant.json"
FORMAT_VERSION = 1
FIX_COMMENT: tuple[str, ...] = (
    "/*",
    " * Use BIO_REMAPPED to skip bio_check_eod() when this bio",
    " * enters submit_bio_noacct() for the per-path device. The EOD",
    " * check already passed on the multipath head.",
    " */",
)
SET_DEV_STATEMENT = "bio_set_dev(bio, ns->disk->part0);"

EXTRACT_TIMEOUT_S = 300.0
MAKE_TIMEOUT_S = 1200.0
TOOL_TIMEOUT_S = 30.0

# Options the Makefile of drivers/nvme/host reads; they must agree with the release's
# autoconf.h, so their values come from the release's config, never from us.
CONFIG_FROM_KERNEL: tuple[str, ...] = (
    "CONFIG_NVME_HWMON",
    "CONFIG_NVME_VERBOSE_ERRORS",
    "CONFIG_NVME_AUTH",
)
# The three modules we swap in; the release must build them as modules, with multipath.
CONFIG_REQUIRED: dict[str, str] = {
    "CONFIG_NVME_CORE": "m",
    "CONFIG_NVME_FABRICS": "m",
    "CONFIG_NVME_TCP": "m",
    "CONFIG_NVME_MULTIPATH": "y",
}
# Drivers in the same directory that we do not need (and do not build).
CONFIG_OFF: tuple[str, ...] = (
    "CONFIG_BLK_DEV_NVME",
    "CONFIG_NVME_FC",
    "CONFIG_NVME_RDMA",
    "CONFIG_NVME_APPLE",
)


@dataclass(frozen=True)
class VariantBuild:
    """One built variant, as recorded in ``variant.json`` beside its modules."""

    release: str
    variant: str
    module_dir: str
    srcversion: dict[str, str]  # only modules that carry one (nvme-core does)
    ko_sha256: dict[str, str]
    vermagic: str
    has_fix: bool
    patch_action: str  # "applied", "reverted" or "none" (the source already was this variant)
    patch_sha256: str
    source_tarball: str
    source_size: int
    source_mtime_ns: int
    make_vars: list[str]
    built_at: str
    build_seconds: float
    # How the source was changed: "patch" (patch(1) with the project's patch), "toggle" (the
    # statement inserted or removed in nvme_ns_head_submit_bio()), "none" (as shipped).
    patch_method: str = "patch"
    format_version: int = FORMAT_VERSION
    cached: bool = field(default=False, compare=False)

    @property
    def as_shipped(self) -> bool:
        """Whether this variant is the release's source unchanged (patch_action "none")."""
        return self.patch_action == "none"

    def ko(self, module: str) -> Path:
        return Path(self.module_dir) / f"{module}.ko"

    def to_json(self) -> str:
        return build_record_json(self)

    @classmethod
    def from_json(cls, text: str, cached: bool = False) -> VariantBuild:
        return parse_build_record(cls, text, VARIANT_FILE, cached)


RecordT = TypeVar("RecordT")


def build_record_json(record: Any) -> str:
    """A build record (a dataclass with a ``cached`` field) as the JSON written beside its
    modules: every field but ``cached``, keys sorted."""
    data = asdict(record)
    del data["cached"]
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse_build_record(
    record_class: Callable[..., RecordT], text: str, name: str, cached: bool
) -> RecordT:
    """The build record of ``record_class`` from the JSON of file ``name``; ToolError when
    it is not one."""
    try:
        data: dict[str, Any] = json.loads(text)
        data.pop("cached", None)
        return record_class(**data, cached=cached)
    except (ValueError, TypeError) as exc:
        raise ToolError(f"unreadable {name}: {exc}") from exc


@dataclass(frozen=True)
class BuildInputs:
    """What a build depends on; a cached build is reused only when all of these match."""

    release: str
    variant: str
    patch_sha256: str
    source_tarball: str
    source_size: int
    source_mtime_ns: int


def repo_root() -> Path:
    return REPO_ROOT


def default_cache_dir() -> Path:
    return repo_root() / "build" / "modules"


def default_patch() -> Path:
    return repo_root() / "patches" / PATCH_NAME


def _version_key(release: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"[.\-]", release)]


def default_release(modules_root: Path | None = None) -> str:
    """The release scripts/setup prepared (build/prepared-kernel.json, harness/prepared.py);
    else the newest release under ``modules_root`` that has headers (``build``), else uname -r.

    Releases ending in ``-amd64`` (Debian's generic kernel) are preferred.
    """
    if modules_root is None and (prepared := prepared_release()) is not None:
        return prepared
    root = modules_root or MODULES_ROOT
    try:
        with_headers = [d.name for d in root.iterdir() if (d / "build").is_dir()]
    except OSError:
        with_headers = []
    amd64 = [r for r in with_headers if r.endswith("-amd64")]
    candidates = amd64 or with_headers
    if candidates:
        return max(candidates, key=_version_key)
    return platform.release()


def headers_dir(release: str, modules_root: Path | None = None) -> Path:
    build = (modules_root or MODULES_ROOT) / release / "build"
    if not (build / "Makefile").is_file():
        raise ToolError(
            f"no kernel headers for {release} ({build} is missing)",
            hint=f"apt-get install linux-headers-{release}",
        )
    return build


def find_source_tarball(path: Path | None = None) -> Path:
    """The kernel source tarball to take drivers/nvme/host from."""
    tarball = path if path is not None else DEFAULT_TARBALL
    if not tarball.is_file():
        raise ToolError(
            f"kernel source tarball {tarball} not found",
            hint=(
                "apt-get install linux-source-6.1 (or: apt-get download linux-source-6.1 && "
                "dpkg -x linux-source-6.1_*.deb DIR, then pass --source-tarball "
                "DIR/usr/src/linux-source-6.1.tar.xz)"
            ),
        )
    return tarball


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def submit_function_body(source: str) -> str:
    """The text of nvme_ns_head_submit_bio() in multipath.c (up to its closing brace)."""
    start = source.find(SUBMIT_FUNCTION)
    if start < 0:
        raise ToolError("multipath.c has no nvme_ns_head_submit_bio(): not a source we know")
    end = source.find("\n}\n", start)
    return source[start : end + 3 if end >= 0 else len(source)]


def has_fix(multipath_c: Path) -> bool:
    """Whether nvme_ns_head_submit_bio() sets BIO_REMAPPED (the fix under test)."""
    try:
        text = multipath_c.read_text(errors="replace")
    except OSError as exc:
        raise ToolError(f"cannot read {multipath_c}: {exc.strerror}") from exc
    return FIX_STATEMENT in submit_function_body(text)


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


def read_kernel_config(release: str, modules_root: Path | None = None) -> dict[str, str]:
    """The release's kernel config (/boot/config-REL, else the headers' .config/auto.conf)."""
    build = (modules_root or MODULES_ROOT) / release / "build"
    candidates = [
        Path("/boot") / f"config-{release}",
        build / ".config",
        build / "include" / "config" / "auto.conf",
    ]
    for candidate in candidates:
        if candidate.is_file():
            return parse_kernel_config(candidate.read_text(errors="replace"))
    raise ToolError(
        f"no kernel config found for {release}",
        hint=f"apt-get install linux-headers-{release}",
    )


def parse_kernel_config(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2:].split()[0]] = "n"
    return values


def make_vars(
    config: dict[str, str],
    release: str,
    required: dict[str, str] = CONFIG_REQUIRED,
    from_kernel: tuple[str, ...] = CONFIG_FROM_KERNEL,
    off: tuple[str, ...] = CONFIG_OFF,
    what: str = "nvme modules",
) -> list[str]:
    """The CONFIG_* assignments for make, checked against the release's config: ``required``
    as given (ToolError when the release builds one otherwise), ``from_kernel`` as the
    release has them, ``off`` never built. Defaults: the nvme host modules."""
    for key, want in required.items():
        have = config.get(key, "n")
        if have != want:
            raise ToolError(
                f"kernel {release} has {key}={have}, not {want}: its {what} cannot be "
                "swapped for out-of-tree builds",
                hint="use a kernel built with scripts/build-kernel-tree instead",
            )
    assignments = [f"{key}={want}" for key, want in required.items()]
    assignments += [f"{key}={config.get(key, 'n')}" for key in from_kernel]
    assignments += [f"{key}=n" for key in off]
    return assignments


def extract_host_sources(tarball: Path, dest: Path, timeout_s: float = EXTRACT_TIMEOUT_S) -> None:
    """Extract only ``*/drivers/nvme/host`` from ``tarball`` and move it to ``dest``."""
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
                f"*/{HOST_SUBDIR}/*",
            ],
            timeout_s=timeout_s,
        )
        if not result.ok:
            raise ToolError(
                f"cannot extract {HOST_SUBDIR} from {tarball}: {result.one_line_error()}"
            )
        found = sorted(staging.glob(f"*/{HOST_SUBDIR}"))
        if len(found) != 1:
            raise ToolError(f"{tarball} has no single {HOST_SUBDIR} directory")
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        found[0].rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def pristine_host_sources(tarball: Path, inputs: BuildInputs, cache_dir: Path) -> Path:
    """An unmodified ``drivers/nvme/host`` from ``tarball``, extracted once per tarball.

    xz has to decompress the whole archive to find the directory (~8 s here), so both
    variants copy from this one extraction. Keyed by the tarball's full path, size and mtime:
    every release's source package unpacks to a tarball of the same name.
    """
    where = hashlib.sha256(inputs.source_tarball.encode()).hexdigest()[:12]
    key = f"{tarball.name}-{where}-{inputs.source_size}-{inputs.source_mtime_ns}"
    pristine = cache_dir / "sources" / key / "host"
    if not (pristine / "multipath.c").is_file():
        extract_host_sources(tarball, pristine)
    return pristine


def modinfo_field(module: str | Path, name: str, release: str | None = None) -> str:
    """One field of ``modinfo`` for a .ko path or (with ``release``) an installed module."""
    argv = ["modinfo", "-F", name]
    if release is not None:
        argv += ["-k", release]
    result = run([*argv, str(module)], timeout_s=TOOL_TIMEOUT_S)
    if not result.ok:
        raise ToolError(f"modinfo {module}: {result.one_line_error()}")
    return result.stdout.strip()


def check_vermagic(ko: Path, vermagic: str, release: str, expected: str | None) -> None:
    """Raise when a module's vermagic does not fit the release (or the distro module's)."""
    words = vermagic.split()
    if not words or words[0] != release:
        raise ToolError(
            f"{ko.name} has vermagic '{vermagic}', not for kernel {release}",
            hint=f"build against /lib/modules/{release}/build",
        )
    if expected is not None and vermagic.strip() != expected.strip():
        raise ToolError(
            f"{ko.name} has vermagic '{vermagic}', the kernel's modules have '{expected}'",
            hint="the headers do not match the running kernel's build",
        )


def distro_vermagic(release: str) -> str | None:
    """The vermagic of the release's own nvme-core module, when installed."""
    try:
        return modinfo_field("nvme-core", "vermagic", release=release) or None
    except ToolError:
        return None


def build_inputs(release: str, variant: str, patch: Path, tarball: Path) -> BuildInputs:
    stat = tarball.stat()
    return BuildInputs(
        release=release,
        variant=variant,
        patch_sha256=sha256_of(patch),
        source_tarball=str(tarball.resolve()),
        source_size=stat.st_size,
        source_mtime_ns=stat.st_mtime_ns,
    )


def cached_build(module_dir: Path, inputs: BuildInputs) -> VariantBuild | None:
    """The recorded build in ``module_dir`` when it was made from ``inputs`` and is intact."""
    record_path = module_dir / VARIANT_FILE
    if not record_path.is_file():
        return None
    try:
        record = VariantBuild.from_json(record_path.read_text(), cached=True)
    except ToolError:
        return None
    recorded = BuildInputs(
        release=record.release,
        variant=record.variant,
        patch_sha256=record.patch_sha256,
        source_tarball=record.source_tarball,
        source_size=record.source_size,
        source_mtime_ns=record.source_mtime_ns,
    )
    if record.format_version != FORMAT_VERSION or recorded != inputs:
        return None
    if Path(record.module_dir) != module_dir:
        return None
    if CORE_MODULE not in record.srcversion:
        return None
    for module in MODULES:
        ko = record.ko(module)
        if not ko.is_file() or sha256_of(ko) != record.ko_sha256.get(module):
            return None
    return record


def variant_dir(cache_dir: Path, release: str, variant: str) -> Path:
    return cache_dir / release / variant


def load_record(cache_dir: Path, release: str, variant: str) -> VariantBuild | None:
    """The ``variant.json`` of a built variant, or None when it was never built."""
    path = variant_dir(cache_dir, release, variant) / VARIANT_FILE
    if not path.is_file():
        return None
    return VariantBuild.from_json(path.read_text(), cached=True)


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
    rel = release or default_release(modules_root)
    cache = (cache_dir or default_cache_dir()).resolve()
    patch_path = patch or default_patch()
    if not patch_path.is_file():
        raise ToolError(f"patch {patch_path} not found")
    tarball = find_source_tarball(source_tarball)
    inputs = build_inputs(rel, variant, patch_path, tarball)
    module_dir = variant_dir(cache, rel, variant)
    if not force:
        found = cached_build(module_dir, inputs)
        if found is not None:
            return found

    kbuild = headers_dir(rel, modules_root)
    assignments = make_vars(read_kernel_config(rel, modules_root), rel)
    started = time.monotonic()
    (module_dir / VARIANT_FILE).unlink(missing_ok=True)
    shutil.rmtree(module_dir, ignore_errors=True)
    shutil.copytree(pristine_host_sources(tarball, inputs, cache), module_dir)
    change = make_variant_source(module_dir, variant, patch_path)
    result = run(
        [
            "make",
            "-C",
            str(kbuild),
            f"M={module_dir}",
            *assignments,
            "modules",
            f"-j{jobs}",
        ],
        timeout_s=MAKE_TIMEOUT_S,
    )
    if not result.ok:
        (module_dir / "build.log").write_text(result.stdout + result.stderr)
        raise ToolError(
            f"building the '{variant}' modules for {rel} failed: {result.one_line_error()}",
            hint=f"full log in {module_dir / 'build.log'}",
        )
    expected = distro_vermagic(rel)
    srcversion: dict[str, str] = {}
    ko_sha256: dict[str, str] = {}
    vermagic = ""
    for module in MODULES:
        ko = module_dir / f"{module}.ko"
        if not ko.is_file():
            raise ToolError(f"the build made no {ko.name}", hint=f"see make output in {module_dir}")
        vermagic = modinfo_field(ko, "vermagic")
        check_vermagic(ko, vermagic, rel, expected)
        version = modinfo_field(ko, "srcversion")
        if version:
            srcversion[module] = version
        ko_sha256[module] = sha256_of(ko)
    if CORE_MODULE not in srcversion:
        raise ToolError(f"{CORE_MODULE}.ko has no srcversion: cannot tell the variants apart")
    record = VariantBuild(
        release=rel,
        variant=variant,
        module_dir=str(module_dir),
        srcversion=srcversion,
        ko_sha256=ko_sha256,
        vermagic=vermagic,
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
    tmp = module_dir / (VARIANT_FILE + ".tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, module_dir / VARIANT_FILE)
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.kernels.kbuild",
        description="Build nvme-core/nvme-fabrics/nvme-tcp out of tree, fixed and unfixed.",
    )
    parser.add_argument("--release", help="kernel release (default: newest with headers)")
    parser.add_argument("--cache-dir", type=Path, help=f"default: {default_cache_dir()}")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--source-tarball", type=Path, help=f"default: {DEFAULT_TARBALL}")
    source.add_argument(
        "--own-source",
        action="store_true",
        help="the release's own Debian source (linux-source-X.Y=<its version>, downloaded "
        "once into build/kernel-sources)",
    )
    parser.add_argument("--patch", type=Path, help=f"default: {default_patch()}")
    parser.add_argument("--variant", choices=[*VARIANTS, "both"], default="both")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    variants = VARIANTS if args.variant == "both" else (args.variant,)
    try:
        tarball: Path | None = args.source_tarball
        if args.own_source:
            from harness.kernels import releases

            release = releases.lookup(args.release or default_release())
            tarball = releases.fetch_source(release).tarball
            print(f"source of {release.name}: {release.source_spec} ({tarball})")
        for variant in variants:
            built = build_variant(
                variant,
                release=args.release,
                cache_dir=args.cache_dir,
                source_tarball=tarball,
                patch=args.patch,
                jobs=args.jobs,
                force=args.force,
            )
            how = "cached" if built.cached else f"built in {built.build_seconds:g} s"
            print(
                f"{built.variant} {built.release} nvme-core srcversion "
                f"{built.srcversion[CORE_MODULE]} ({how}, patch {built.patch_action}"
                f"{' by toggle' if built.patch_method == 'toggle' else ''}"
                f"{', as shipped' if built.as_shipped else ''}) {built.module_dir}"
            )
    except HarnessError as exc:
        print(f"kbuild: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

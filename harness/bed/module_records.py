"""The module build cache: where out-of-tree nvme modules live and what their records say.

The host builds (harness.kernels) write, the guest loads (harness.bed.variants,
harness.bed.nvmet_modules) read; both sides see the same files because the VM shares the
host's root filesystem. Layout under the cache (default ``build/modules``):

- ``<release>/<variant>/`` for the nvme host modules of ``fixed`` and ``unfixed``: nvme-core,
  nvme-fabrics and nvme-tcp ``.ko`` files and ``variant.json`` (:class:`VariantBuild`).
- ``<release>/nvmet-ns-visibility/target/`` for our patched nvmet and nvmet-tcp and
  ``nvmet-variant.json`` (:class:`NvmetBuild`); ``host/`` beside it holds the sources its
  build includes.

A record is JSON of every field but ``cached``, keys sorted. ``sha256_of`` and
``modinfo_field`` are the checks both sides run on a ``.ko``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from harness.core.errors import ToolError
from harness.core.paths import BUILD_DIR
from harness.core.procs import run

HOST_VARIANTS: tuple[str, ...] = ("fixed", "unfixed")
# nvme host module files, in load order; only nvme-core has a srcversion (MODULE_VERSION).
HOST_MODULES: tuple[str, ...] = ("nvme-core", "nvme-fabrics", "nvme-tcp")
HOST_CORE_MODULE = "nvme-core"
VARIANT_FILE = "variant.json"
NVMET_VARIANT = "nvmet-ns-visibility"
# Patched nvmet module files, in load order.
NVMET_MODULES: tuple[str, ...] = ("nvmet", "nvmet-tcp")
NVMET_CORE_MODULE = "nvmet"
NVMET_RECORD_FILE = "nvmet-variant.json"
# What our nvmet patch puts in MODULE_VERSION (core.c); the distribution's nvmet has none.
NVMET_MODULE_VERSION = "ns-visibility-test"
FORMAT_VERSION = 1
TOOL_TIMEOUT_S = 30.0

RecordT = TypeVar("RecordT")


def default_cache_dir() -> Path:
    """``build/modules`` of the checkout."""
    return BUILD_DIR / "modules"


def variant_dir(cache_dir: Path, release: str, variant: str) -> Path:
    """Where ``variant`` (``fixed``/``unfixed``) of ``release`` has its modules."""
    return cache_dir / release / variant


def nvmet_build_dir(cache_dir: Path, release: str) -> Path:
    """``<cache>/<release>/nvmet-ns-visibility``: holds ``target/`` (the modules) and ``host/``."""
    return cache_dir / release / NVMET_VARIANT


def nvmet_module_dir(cache_dir: Path, release: str) -> Path:
    """Where the patched nvmet of ``release`` has its modules and record."""
    return nvmet_build_dir(cache_dir, release) / "target"


def sha256_of(path: Path) -> str:
    """The sha256 of a file, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def modinfo_field(module: str | Path, name: str, release: str | None = None) -> str:
    """One field of ``modinfo`` for a .ko path or (with ``release``) an installed module.
    Raises ToolError when modinfo fails."""
    argv = ["modinfo", "-F", name]
    if release is not None:
        argv += ["-k", release]
    result = run([*argv, str(module)], timeout_s=TOOL_TIMEOUT_S)
    if not result.ok:
        raise ToolError(f"modinfo {module}: {result.one_line_error()}")
    return result.stdout.strip()


def record_json(record: Any) -> str:
    """A build record (a dataclass with a ``cached`` field) as the JSON written beside its
    modules: every field but ``cached``, keys sorted."""
    data = asdict(record)
    del data["cached"]
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def parse_record(
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


@dataclass(frozen=True)
class VariantBuild:
    """One built nvme host variant, as recorded in ``variant.json`` beside its modules."""

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
        """The path of ``module`` (a file name of HOST_MODULES)."""
        return Path(self.module_dir) / f"{module}.ko"

    def to_json(self) -> str:
        return record_json(self)

    @classmethod
    def from_json(cls, text: str, cached: bool = False) -> VariantBuild:
        """Parse a record; raises ToolError when it is not one."""
        return parse_record(cls, text, VARIANT_FILE, cached)

    def inputs(self) -> BuildInputs:
        return BuildInputs(
            release=self.release,
            variant=self.variant,
            patch_sha256=self.patch_sha256,
            source_tarball=self.source_tarball,
            source_size=self.source_size,
            source_mtime_ns=self.source_mtime_ns,
        )


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
        """The path of ``module`` (a file name from NVMET_MODULES, e.g. ``nvmet-tcp``)."""
        return Path(self.module_dir) / f"{module}.ko"

    def to_json(self) -> str:
        return record_json(self)

    @classmethod
    def from_json(cls, text: str, cached: bool = False) -> NvmetBuild:
        """Parse a record; raises ToolError when it is not one."""
        return parse_record(cls, text, NVMET_RECORD_FILE, cached)

    def inputs(self) -> BuildInputs:
        return BuildInputs(
            release=self.release,
            variant=NVMET_VARIANT,
            patch_sha256=self.patch_sha256,
            source_tarball=self.source_tarball,
            source_size=self.source_size,
            source_mtime_ns=self.source_mtime_ns,
        )


def load_variant_record(cache_dir: Path, release: str, variant: str) -> VariantBuild | None:
    """The ``variant.json`` of a built variant, or None when it was never built. Raises
    ToolError when a record exists but cannot be read."""
    path = variant_dir(cache_dir, release, variant) / VARIANT_FILE
    if not path.is_file():
        return None
    return VariantBuild.from_json(path.read_text(), cached=True)


def load_nvmet_record(cache_dir: Path, release: str) -> NvmetBuild | None:
    """The record of the patched nvmet built for ``release``, or None when it was never
    built. Raises ToolError when a record exists but cannot be read."""
    path = nvmet_module_dir(cache_dir, release) / NVMET_RECORD_FILE
    if not path.is_file():
        return None
    return NvmetBuild.from_json(path.read_text(), cached=True)

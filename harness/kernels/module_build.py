"""One way to build nvme modules out of tree against a release's headers (on the host).

Both out-of-tree builds use it: the nvme host module variants (harness.kernels.kbuild: the fix
applied or reverted in ``drivers/nvme/host``) and our patched nvmet
(harness.kernels.nvmet_variant: the visibility patch in ``drivers/nvme/target``). The steps:

1. :func:`pristine_sources`: ``drivers/nvme/host`` and ``drivers/nvme/target`` of a source
   tarball, extracted once per tarball (xz decompresses the whole archive to find them,
   8-13 s here) and copied by every build;
2. :func:`make_vars`: the ``CONFIG_*`` assignments for ``make``, checked against the
   release's own config (a module the release builds in cannot be swapped);
3. :func:`make_modules`: ``make -C /lib/modules/REL/build M=DIR modules`` (log in
   ``build.log`` when it fails);
4. :func:`check_modules`: every ``.ko`` made, its vermagic the release's (and the installed
   modules'), its sha256 and srcversion for the record;
5. :func:`write_record`: the record written atomically beside the modules.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.bed.module_records import BuildInputs, modinfo_field, sha256_of
from harness.core.errors import ToolError
from harness.core.procs import run
from harness.kernels import hosts
from harness.kernels.prepared import prepared_release

HOST_SUBDIR = "drivers/nvme/host"
TARGET_SUBDIR = "drivers/nvme/target"
MODULES_ROOT = Path("/lib/modules")
EXTRACT_TIMEOUT_S = 300.0
MAKE_TIMEOUT_S = 1200.0


def _version_key(release: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"[.\-]", release)]


def default_release(modules_root: Path | None = None) -> str:
    """The release scripts/setup prepared (build/prepared-kernel.json, harness.kernels.prepared);
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
    """``/lib/modules/REL/build``; ToolError (with the apt command) when it is missing."""
    build = (modules_root or MODULES_ROOT) / release / "build"
    if not (build / "Makefile").is_file():
        raise ToolError(
            f"no kernel headers for {release} ({build} is missing)",
            hint=f"apt-get install linux-headers-{release}",
        )
    return build


def find_source_tarball(path: Path | None = None, release: str = "") -> Path:
    """The kernel source tarball to take ``drivers/nvme`` from: ``path``, else the one the
    source package of ``release``'s kernel line installs (``/usr/src/linux-source-6.12.tar.xz``
    for ``6.12.117+deb13-amd64``; harness.kernels.hosts). ToolError saying how to get it when
    it is missing."""
    line = hosts.kernel_line(release)
    if path is None and not line:
        raise ToolError(
            f"no default kernel source tarball for release {release!r}",
            hint="pass --source-tarball (a linux-source-X.Y tarball of that kernel)",
        )
    tarball = path if path is not None else hosts.source_tarball_of(line)
    if not tarball.is_file():
        package = f"linux-source-{line}" if line else "linux-source-X.Y"
        raise ToolError(
            f"kernel source tarball {tarball} not found",
            hint=(
                f"apt-get install {package} (or: apt-get download {package} && "
                f"dpkg -x {package}_*.deb DIR, then pass --source-tarball "
                f"DIR/usr/src/{package}.tar.xz)"
            ),
        )
    return tarball


def build_inputs(release: str, variant: str, patch: Path, tarball: Path) -> BuildInputs:
    """What a build of ``variant`` depends on (the cache key of its record)."""
    stat = tarball.stat()
    return BuildInputs(
        release=release,
        variant=variant,
        patch_sha256=sha256_of(patch),
        source_tarball=str(tarball.resolve()),
        source_size=stat.st_size,
        source_mtime_ns=stat.st_mtime_ns,
    )


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
    """``CONFIG_X`` -> value (quotes stripped; ``n`` for "is not set") of a .config text."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("CONFIG_") and "=" in line:
            key, value = line.split("=", 1)
            values[key] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[2:].split()[0]] = "n"
    return values


@dataclass(frozen=True)
class ModuleConfig:
    """The ``CONFIG_*`` options one out-of-tree build sets: ``required`` as given (the release
    must build them that way), ``from_kernel`` as the release has them (they must agree with
    its autoconf.h), ``off`` never built (other drivers of the same directory)."""

    what: str  # for messages: "nvme modules", "nvmet modules"
    required: dict[str, str]
    from_kernel: tuple[str, ...]
    off: tuple[str, ...]


def make_vars(config: dict[str, str], release: str, options: ModuleConfig) -> list[str]:
    """The CONFIG_* assignments for make, checked against the release's ``config``. Raises
    ToolError when the release builds a required option otherwise (built in, or not at all)."""
    for key, want in options.required.items():
        have = config.get(key, "n")
        if have != want:
            raise ToolError(
                f"kernel {release} has {key}={have}, not {want}: its {options.what} cannot be "
                "swapped for out-of-tree builds",
                hint="build that kernel from its source tree instead (nvmf-harness build-kernel)",
            )
    assignments = [f"{key}={want}" for key, want in options.required.items()]
    assignments += [f"{key}={config.get(key, 'n')}" for key in options.from_kernel]
    assignments += [f"{key}=n" for key in options.off]
    return assignments


def extract_nvme_sources(tarball: Path, dest: Path, timeout_s: float = EXTRACT_TIMEOUT_S) -> None:
    """Extract ``drivers/nvme/host`` and ``drivers/nvme/target`` of ``tarball`` into
    ``dest/host`` and ``dest/target`` (one pass). Raises ToolError when tar fails or the
    tarball has not exactly one of each."""
    staging = dest.with_name(dest.name + ".extract")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        argv = ["tar", "-xf", str(tarball), "-C", str(staging), "--wildcards"]
        argv += [f"*/{HOST_SUBDIR}/*", f"*/{TARGET_SUBDIR}/*"]
        result = run(argv, timeout_s=timeout_s)
        if not result.ok:
            why = result.one_line_error()
            raise ToolError(f"cannot extract drivers/nvme from {tarball}: {why}")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for subdir, name in ((HOST_SUBDIR, "host"), (TARGET_SUBDIR, "target")):
            found = sorted(staging.glob(f"*/{subdir}"))
            if len(found) != 1:
                raise ToolError(f"{tarball} has no single {subdir} directory")
            found[0].rename(dest / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def pristine_sources(tarball: Path, inputs: BuildInputs, cache_dir: Path) -> Path:
    """A directory with unmodified ``host/`` and ``target/`` from ``tarball``, extracted once
    per tarball: keyed by its full path, size and mtime (every release's source package
    unpacks to a tarball of the same name)."""
    where = hashlib.sha256(inputs.source_tarball.encode()).hexdigest()[:12]
    key = f"{tarball.name}-{where}-{inputs.source_size}-{inputs.source_mtime_ns}"
    pristine = cache_dir / "sources" / key
    if (
        not (pristine / "host" / "multipath.c").is_file()
        or not (pristine / "target" / "core.c").is_file()
    ):
        extract_nvme_sources(tarball, pristine)
    return pristine


def make_modules(
    headers: Path, module_dir: Path, assignments: Sequence[str], jobs: int, what: str
) -> None:
    """``make -C headers M=module_dir <assignments> modules -jN``. Raises ToolError naming
    ``what`` when make fails, with its whole output in ``module_dir/build.log``."""
    argv = ["make", "-C", str(headers), f"M={module_dir}", *assignments, "modules", f"-j{jobs}"]
    result = run(argv, timeout_s=MAKE_TIMEOUT_S)
    if not result.ok:
        (module_dir / "build.log").write_text(result.stdout + result.stderr)
        raise ToolError(
            f"building {what} failed: {result.one_line_error()}",
            hint=f"full log in {module_dir / 'build.log'}",
        )


def check_vermagic(ko: Path, vermagic: str, release: str, expected: str | None) -> None:
    """Raise ToolError when a module's vermagic does not fit the release (or, when given,
    the installed modules' ``expected`` one)."""
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


@dataclass(frozen=True)
class BuiltModules:
    """What :func:`check_modules` found: the common vermagic, and per module file name
    (without ``.ko``) its sha256 and, where it has one, its srcversion."""

    vermagic: str
    ko_sha256: dict[str, str]
    srcversion: dict[str, str]


def check_modules(module_dir: Path, modules: Sequence[str], release: str) -> BuiltModules:
    """Check the ``.ko`` of every name in ``modules`` in ``module_dir``: made, and with the
    release's vermagic. Raises ToolError otherwise."""
    expected = distro_vermagic(release)
    ko_sha256: dict[str, str] = {}
    srcversion: dict[str, str] = {}
    vermagic = ""
    for module in modules:
        ko = module_dir / f"{module}.ko"
        if not ko.is_file():
            raise ToolError(f"the build made no {ko.name}", hint=f"see make output in {module_dir}")
        vermagic = modinfo_field(ko, "vermagic")
        check_vermagic(ko, vermagic, release, expected)
        version = modinfo_field(ko, "srcversion")
        if version:
            srcversion[module] = version
        ko_sha256[module] = sha256_of(ko)
    return BuiltModules(vermagic, ko_sha256, srcversion)


def intact(module_dir: Path, modules: Sequence[str], ko_sha256: dict[str, str]) -> bool:
    """Whether every module's ``.ko`` is in ``module_dir`` with its recorded sha256."""
    for module in modules:
        ko = module_dir / f"{module}.ko"
        if not ko.is_file() or sha256_of(ko) != ko_sha256.get(module):
            return False
    return True


def write_record(path: Path, text: str) -> None:
    """Write a build record atomically (a reader never sees half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

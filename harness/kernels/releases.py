"""Debian kernel releases: their packages, their exact source, and what that source says.

A *release* is a kernel ABI name as in ``/boot/vmlinuz-<release>`` (``6.1.0-47-amd64``,
``6.12.107+deb12-amd64``). For one release this module finds, from apt and dpkg (never from a
list in the code):

- the image package (``linux-image-<release>``, or ``linux-image-<release>-unsigned``) and the
  headers package (``linux-headers-<release>``), installed or not;
- the Debian package version (``6.1.170-3``): ``dpkg-query`` when installed, else
  ``apt-cache madison``, else the image's own changelog in ``/usr/share/doc``;
- the source package holding that exact version (``linux-source-6.1=6.1.170-3``;
  ``linux-source-6.12`` for 6.12.x).

:func:`fetch_source` downloads that source package once into a cache under ``build/`` and
unpacks its tarball; :func:`source_facts` reads from the tarball only the three files it needs
(top Makefile, ``block/blk-core.c``, ``drivers/nvme/host/multipath.c``) and says what
harness.kernels.source_check says of them: the fix, the shape of ``bio_check_eod()``, the
prediction.

``nvmf-harness releases`` runs it (scripts/install-kernels uses it).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from harness.core.errors import HarnessError, ToolError
from harness.core.paths import BUILD_DIR
from harness.core.procs import ProcResult, run
from harness.kernels import prepared, source_check, tree_build
from harness.kernels.prepared import kernel_release

APT_TIMEOUT_S = 60.0
DOWNLOAD_TIMEOUT_S = 1800.0
UNPACK_TIMEOUT_S = 600.0
FACTS_EXTRACT_TIMEOUT_S = 300.0
DOC_ROOT = Path("/usr/share/doc")
BOOT = Path("/boot")
SOURCE_RECORD = "source.json"
FACTS_FILE = "facts.json"
FACTS_FORMAT = 2  # 2: eod_shape and prediction (harness.kernels.source_check)
BLK_CORE = source_check.BLK_CORE
MULTIPATH_C = source_check.MULTIPATH_C
TOP_MAKEFILE = source_check.TOP_MAKEFILE
RELEASE_PATTERN = re.compile(r"^\d+\.\d+\.\d+[-+][\w.+-]*$")
# Binary package names whose suffix is a release: linux-image-REL, linux-image-REL-unsigned.
IMAGE_PACKAGE = re.compile(r"^linux-image-(\d+\.\d+\.\d+[-+][\w.+-]*?)(-unsigned)?$")

Runner = Callable[[Sequence[str], float], ProcResult]


def _run(argv: Sequence[str], timeout_s: float) -> ProcResult:
    return run(argv, timeout_s=timeout_s)


@dataclass(frozen=True)
class Release:
    """One Debian kernel release as apt and dpkg know it.

    ``debian_version`` is the binary package version (``6.1.170-3``); ``source_package`` is
    ``linux-source-<major>.<minor>``; ``source_version`` is the version of it that holds this
    release's source (the same as ``debian_version``; "" when apt has no such version).
    """

    name: str
    debian_version: str
    image_package: str
    image_installed: bool
    headers_package: str
    headers_installed: bool
    source_package: str
    source_version: str
    source_versions_in_apt: tuple[str, ...]

    @property
    def upstream_version(self) -> str:
        """``6.1.170`` of ``6.1.170-3``; ``6.12.107`` of ``6.12.107-1~deb12u1``."""
        return self.debian_version.split("-", 1)[0]

    @property
    def source_spec(self) -> str:
        """What ``apt-get download`` takes: ``linux-source-6.1=6.1.170-3``."""
        return f"{self.source_package}={self.source_version}"

    @property
    def kernel_image(self) -> Path:
        return BOOT / f"vmlinuz-{self.name}"

    def install_command(self) -> str | None:
        """The one apt command that installs what is missing of image and headers, or None."""
        missing = [
            package
            for package, installed in (
                (self.image_package, self.image_installed),
                (self.headers_package, self.headers_installed),
            )
            if not installed
        ]
        return f"apt-get install {' '.join(missing)}" if missing else None


@dataclass(frozen=True)
class SourceFacts:
    """What one release's source says, read from its own tarball.

    ``has_fix``: ``nvme_ns_head_submit_bio()`` sets BIO_REMAPPED (drivers/nvme/host/multipath.c).
    ``eod_shape``: the shape of block/blk-core.c ``bio_check_eod()`` (skip-zero-size,
    fail-with-line, fail-silently); that code is in the kernel image (block/), so no module
    variant changes it. ``prediction``: what the source does as shipped (not affected,
    affected (with a line), affected (silently), fixed). Both from
    harness.kernels.source_check. ``version`` is VERSION.PATCHLEVEL.SUBLEVEL of the top
    Makefile.
    """

    tarball: str
    version: str
    sublevel: int
    has_fix: bool
    eod_shape: str
    prediction: str

    @property
    def cannot_fail(self) -> bool:
        """Whether this source's bio_check_eod() lets a bio to a zero-capacity disk pass,
        so the race cannot fail a bio whatever the nvme modules do."""
        return self.eod_shape == source_check.EodShape.SKIP_ZERO_SIZE


@dataclass(frozen=True)
class FetchedSource:
    """A release's source tarball in the cache (``build/kernel-sources/<pkg>_<version>/``)."""

    package: str
    version: str
    tarball: Path
    downloaded: bool  # False when it was in the cache already


def default_cache_dir() -> Path:
    return BUILD_DIR / "kernel-sources"


def series_of(version: str) -> str:
    """``6.1`` of ``6.1.170-3``, ``6.12`` of ``6.12.107-1~deb12u1`` (or of a release name)."""
    match = re.match(r"^(\d+)\.(\d+)", version)
    if not match:
        raise HarnessError(f"'{version}' is not a kernel version")
    return f"{match.group(1)}.{match.group(2)}"


def check_release_name(release: str) -> str:
    """``release`` itself when it looks like an ABI release name, else HarnessError."""
    if not RELEASE_PATTERN.match(release):
        raise HarnessError(
            f"'{release}' is not a kernel release name",
            hint="give one like 6.1.0-47-amd64 (as in /boot/vmlinuz-<release>)",
        )
    return release


def installed_version(package: str, runner: Runner = _run) -> str | None:
    """The installed version of ``package`` (dpkg-query), or None when it is not installed."""
    result = runner(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}\n", package], APT_TIMEOUT_S
    )
    if not result.ok:
        return None
    for line in result.stdout.splitlines():
        if line.startswith("ii"):
            return line[3:].strip() or None
    return None


def apt_versions(package: str, runner: Runner = _run) -> list[str]:
    """The versions of ``package`` in apt's index, newest first (``apt-cache madison``)."""
    result = runner(["apt-cache", "madison", package], APT_TIMEOUT_S)
    if not result.ok:
        return []
    versions: list[str] = []
    for line in result.stdout.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) >= 2 and fields[0] == package and fields[1] not in versions:
            versions.append(fields[1])
    return versions


def changelog_version(release: str, doc_root: Path = DOC_ROOT) -> str | None:
    """The Debian version from ``/usr/share/doc/linux-image-<release>/changelog*.gz``.

    The signed image's first entry says "Sign kernel from linux 6.1.192-2"; an unsigned one
    starts with "linux (6.1.192-2)".
    """
    for package in (f"linux-image-{release}", f"linux-image-{release}-unsigned"):
        for name in ("changelog.Debian.gz", "changelog.gz"):
            path = doc_root / package / name
            if not path.is_file():
                continue
            try:
                with gzip.open(path, "rt", errors="replace") as stream:
                    head = stream.read(4096)
            except OSError:
                continue
            match = re.search(r"Sign kernel from linux (\S+)", head) or re.search(
                r"^linux \((\S+)\)", head, re.MULTILINE
            )
            if match:
                return match.group(1)
    return None


def lookup(release: str, runner: Runner = _run, doc_root: Path = DOC_ROOT) -> Release:
    """What apt and dpkg know of ``release``.

    Raises HarnessError when neither knows an image package of that name (hint: apt-get
    update, or the name is wrong).
    """
    check_release_name(release)
    signed = f"linux-image-{release}"
    unsigned = f"{signed}-unsigned"
    image_package = signed
    version = installed_version(signed, runner)
    if version is None:
        version = installed_version(unsigned, runner)
        if version is not None:
            image_package = unsigned
    image_installed = version is not None
    if version is None:
        for candidate in (signed, unsigned):
            available = apt_versions(candidate, runner)
            if available:
                image_package, version = candidate, available[0]
                break
    if version is None:
        version = changelog_version(release, doc_root)
    if version is None:
        raise HarnessError(
            f"no Debian kernel package for release {release} (neither installed nor in apt)",
            hint="apt-get update; and check the name with apt-cache search linux-image-",
        )
    headers_package = f"linux-headers-{release}"
    headers_installed = installed_version(headers_package, runner) is not None
    source_package = f"linux-source-{series_of(version)}"
    source_versions = tuple(apt_versions(source_package, runner))
    return Release(
        name=release,
        debian_version=version,
        image_package=image_package,
        image_installed=image_installed,
        headers_package=headers_package,
        headers_installed=headers_installed,
        source_package=source_package,
        source_version=version if version in source_versions else "",
        source_versions_in_apt=source_versions,
    )


def installed_releases(runner: Runner = _run, boot: Path = BOOT) -> list[str]:
    """Releases whose image package is installed (dpkg) and whose image is in /boot.

    Returns release names, oldest first (by version).
    """
    result = runner(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\n", "linux-image-*"],
        APT_TIMEOUT_S,
    )
    found: set[str] = set()
    for line in result.stdout.splitlines():
        status, _, package = line.strip().partition(" ")
        match = IMAGE_PACKAGE.match(package.strip())
        if status.startswith("ii") and match and (boot / f"vmlinuz-{match.group(1)}").is_file():
            found.add(match.group(1))
    return sorted(found, key=version_key)


def version_key(text: str) -> list[int]:
    """Numbers of a release or version, for sorting (``6.1.0-47-amd64`` -> [6, 1, 0, 47, 64])."""
    return [int(part) for part in re.findall(r"\d+", text)]


def require_installed(release: Release) -> None:
    """Raise HarnessError (hint: the one apt-get install command) unless image and headers
    are installed and the image is in /boot."""
    command = release.install_command()
    if command is not None:
        missing = [
            what
            for what, ok in (
                ("image", release.image_installed),
                ("headers", release.headers_installed),
            )
            if not ok
        ]
        raise HarnessError(
            f"kernel {release.name} ({release.debian_version}): {' and '.join(missing)} not "
            "installed",
            hint=command,
        )
    if not release.kernel_image.is_file():
        raise HarnessError(
            f"kernel {release.name}: {release.kernel_image} is missing although "
            f"{release.image_package} is installed",
            hint=f"apt-get install --reinstall {release.image_package}",
        )


def with_source_version(release: Release, version: str) -> Release:
    """``release`` with another version of its source package (the nearest one, when apt
    has no source of the release's own version). Raises HarnessError when apt has not got
    that version either."""
    if version not in release.source_versions_in_apt:
        have = ", ".join(release.source_versions_in_apt) or "none"
        raise HarnessError(
            f"apt has no {release.source_package} {version} (versions in apt: {have})",
            hint="apt-get update",
        )
    return replace(release, source_version=version)


def download_command(release: Release) -> str:
    """The apt command that fetches the release's source package (for hints)."""
    version = release.source_version or release.debian_version
    return f"apt-get download {release.source_package}={version}"


def source_dir(release: Release, cache_dir: Path | None = None) -> Path:
    version = release.source_version or release.debian_version
    safe = re.sub(r"[^\w.+-]", "_", f"{release.source_package}_{version}")
    return (cache_dir or default_cache_dir()) / safe


def cached_source(release: Release, cache_dir: Path | None = None) -> FetchedSource | None:
    """The release's source tarball when :func:`fetch_source` has fetched it before."""
    directory = source_dir(release, cache_dir)
    record_path = directory / SOURCE_RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        tarball = Path(record["tarball"])
        size = int(record["size"])
    except (ValueError, KeyError, TypeError, OSError):
        return None
    if not tarball.is_file() or tarball.stat().st_size != size:
        return None
    return FetchedSource(str(record["package"]), str(record["version"]), tarball, False)


def fetch_source(
    release: Release, cache_dir: Path | None = None, runner: Runner = _run
) -> FetchedSource:
    """The release's own source tarball, downloaded and unpacked once.

    ``apt-get download <source_spec>`` into ``build/kernel-sources/<pkg>_<version>/``, then
    ``dpkg-deb -x``; the .deb is deleted after a good unpack and ``source.json`` records the
    tarball. A second call finds ``source.json`` and does nothing. Raises HarnessError whose
    hint is the apt command when apt has no such source version or the download fails.
    """
    found = cached_source(release, cache_dir)
    if found is not None:
        return found
    if not release.source_version:
        have = ", ".join(release.source_versions_in_apt) or "none"
        raise HarnessError(
            f"apt has no {release.source_package} {release.debian_version} (the source of "
            f"{release.name}; versions in apt: {have})",
            hint=download_command(release) + " after apt-get update, if the archive has it",
        )
    directory = source_dir(release, cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.deb"):
        stale.unlink()
    result = runner(
        ["env", "-C", str(directory), "apt-get", "download", release.source_spec],
        DOWNLOAD_TIMEOUT_S,
    )
    debs = sorted(directory.glob(f"{release.source_package}_*.deb"))
    if not result.ok or len(debs) != 1:
        raise HarnessError(
            f"could not download {release.source_spec}: {result.one_line_error()}",
            hint=download_command(release),
        )
    unpacked = directory / "root"
    shutil.rmtree(unpacked, ignore_errors=True)
    result = runner(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], UNPACK_TIMEOUT_S)
    tarballs = sorted((unpacked / "usr" / "src").glob("linux-source-*.tar.*"))
    if not result.ok or len(tarballs) != 1:
        raise ToolError(
            f"{debs[0].name} did not unpack to one usr/src/linux-source-*.tar.*: "
            f"{result.one_line_error() if not result.ok else 'found ' + str(len(tarballs))}"
        )
    tarball = tarballs[0]
    record = {
        "package": release.source_package,
        "version": release.source_version,
        "deb": debs[0].name,
        "tarball": str(tarball),
        "size": tarball.stat().st_size,
    }
    tmp = directory / (SOURCE_RECORD + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / SOURCE_RECORD)
    debs[0].unlink()
    return FetchedSource(release.source_package, release.source_version, tarball, True)


# --- what the source says -------------------------------------------------------------------


def makefile_version(makefile: str) -> tuple[str, int]:
    """``("6.1.170", 170)`` from the top Makefile's VERSION, PATCHLEVEL and SUBLEVEL."""
    values: dict[str, int] = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        match = re.search(rf"^{key}\s*=\s*(\d+)\s*$", makefile, re.MULTILINE)
        if not match:
            raise ToolError(f"the top Makefile has no {key}: not a kernel source")
        values[key] = int(match.group(1))
    version = f"{values['VERSION']}.{values['PATCHLEVEL']}.{values['SUBLEVEL']}"
    return version, values["SUBLEVEL"]


def facts_of_tree(tree: Path, tarball: str = "") -> SourceFacts:
    """The facts of an extracted source tree (only its three files are read). Raises
    ToolError when one is missing, source_check.UnknownSource for a shape it does not know."""
    try:
        makefile = (tree / TOP_MAKEFILE).read_text(errors="replace")
        blk_core = (tree / BLK_CORE).read_text(errors="replace")
        multipath = (tree / MULTIPATH_C).read_text(errors="replace")
    except OSError as exc:
        raise ToolError(f"{tree} is not a kernel source tree: {exc}") from exc
    version, sublevel = makefile_version(makefile)
    check = source_check.check_texts(str(tree), makefile, blk_core, multipath)
    return SourceFacts(
        tarball=tarball,
        version=version,
        sublevel=sublevel,
        has_fix=check.fix,
        eod_shape=str(check.eod_shape),
        prediction=str(check.prediction),
    )


def extract_fact_files(tarball: Path, dest: Path, runner: Runner = _run) -> Path:
    """Extract only the top Makefile, block/blk-core.c and multipath.c; returns the tree."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    result = runner(
        [
            "tar",
            "-xf",
            str(tarball),
            "-C",
            str(dest),
            "--wildcards",
            "--no-wildcards-match-slash",
            f"*/{TOP_MAKEFILE}",
            f"*/{BLK_CORE}",
            f"*/{MULTIPATH_C}",
        ],
        FACTS_EXTRACT_TIMEOUT_S,
    )
    if not result.ok:
        raise ToolError(
            f"cannot extract the source files from {tarball}: {result.one_line_error()}"
        )
    trees = [p.parent for p in dest.glob(f"*/{TOP_MAKEFILE}")]
    if len(trees) != 1:
        raise ToolError(f"{tarball} has no single top directory with a Makefile")
    return trees[0]


def source_facts(
    tarball: Path, cache_dir: Path | None = None, runner: Runner = _run
) -> SourceFacts:
    """The :class:`SourceFacts` of a source tarball, cached in ``facts.json`` beside it
    (or under ``cache_dir``) and reused while the tarball's size and mtime are the same."""
    stat = tarball.stat()
    where = cache_dir or tarball.parent
    facts_path = where / FACTS_FILE
    key = {"tarball": str(tarball.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if facts_path.is_file():
        try:
            saved = json.loads(facts_path.read_text())
            if saved.get("key") == key and saved.get("format") == FACTS_FORMAT:
                return SourceFacts(**saved["facts"])
        except (ValueError, TypeError, KeyError):
            pass
    staging = where / "facts-extract"
    try:
        tree = extract_fact_files(tarball, staging, runner)
        facts = facts_of_tree(tree, str(tarball.resolve()))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    where.mkdir(parents=True, exist_ok=True)
    tmp = facts_path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"format": FACTS_FORMAT, "key": key, "facts": asdict(facts)}, indent=2)
    )
    os.replace(tmp, facts_path)
    return facts


# --- command line ---------------------------------------------------------------------------


def describe(release: Release) -> str:
    """One line: release, version, what is installed, the source to fetch."""
    image = "installed" if release.image_installed else "not installed"
    headers = "installed" if release.headers_installed else "not installed"
    source = release.source_spec if release.source_version else f"{release.source_package}: none"
    return (
        f"{release.name} {release.debian_version}: image {release.image_package} {image}, "
        f"headers {headers}, source {source}"
    )


def eod_shape_of(image: str) -> str | None:
    """The bio_check_eod() shape (source_check.EodShape value) of the kernel ``image`` boots,
    read from its source: a tree kernel's build record, the prepared kernel's source tarball
    (scripts/setup matched their Debian versions), else the release's own source when
    :func:`fetch_source` fetched it.
    None when neither is known or readable: then only the block-layer witness makes "no race
    seen" a claim (harness.analysis.compare)."""
    if Path(image).is_dir():  # a kernel built from a tree: its record has the source check
        built = tree_build.kdir_record(Path(image))
        return None if built is None else str(built.check.get("eod_shape")) or None
    release = kernel_release(image)
    tarballs: list[Path] = []
    with contextlib.suppress(HarnessError):
        record = prepared.load()
        if record.image == image or (release and record.release == release):
            tarballs.append(Path(record.source_tarball))
    if release:
        with contextlib.suppress(HarnessError):
            own = cached_source(lookup(release))
            if own is not None:
                tarballs.append(own.tarball)
    for tarball in tarballs:
        if not tarball.is_file():
            continue
        where = hashlib.sha256(str(tarball.resolve()).encode()).hexdigest()[:12]
        with contextlib.suppress(HarnessError):
            return source_facts(tarball, default_cache_dir() / "facts" / where).eod_shape
    return None

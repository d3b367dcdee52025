"""Debian's archive beyond the host's own suite, without touching the host's apt.

Today's kernels are not in Debian 12's suites: trixie has linux-source-6.12 (6.12.117),
trixie-backports linux-source-7.2 and -7.3, sid 7.2.13. This module reaches them through a
private apt configuration under ``build/apt/`` (its own sources.list, lists and cache; the
host's /etc/apt and package database are never changed) and only downloads: source packages
to build from (harness.kernels.tree_build), and the binary packages of a kernel image to boot
as shipped. Nothing is installed into the host.

Each download lands in ``build/kernel-sources/<package>_<version>/`` (the layout of
harness.kernels.releases), unpacked once, with a record (``source.json`` or ``image.json``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import ToolError, UsageError
from harness.core.paths import BUILD_DIR
from harness.core.procs import run
from harness.kernels.releases import SOURCE_RECORD, FetchedSource, default_cache_dir

MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# (mirror, suite) pairs of the private sources.list: the suites with kernels of interest.
SUITES: tuple[tuple[str, str], ...] = (
    (MIRROR, "bookworm"),
    (SECURITY_MIRROR, "bookworm-security"),
    (MIRROR, "trixie"),
    (SECURITY_MIRROR, "trixie-security"),
    (MIRROR, "trixie-backports"),
    (MIRROR, "sid"),
)
LISTS_MAX_AGE_S = 24 * 3600.0
APT_TIMEOUT_S = 300.0
DOWNLOAD_TIMEOUT_S = 1800.0
UNPACK_TIMEOUT_S = 600.0
DOWNLOAD_STALL_S = 60.0  # a pool download that sends nothing for this long fails
IMAGE_RECORD = "image.json"
SPEC_RE = re.compile(r"^[a-z0-9][a-z0-9.+-]*(=[A-Za-z0-9.+~:-]+)?$")


def sources_list(suites: Sequence[tuple[str, str]] = SUITES) -> str:
    """The private sources.list (one ``deb`` line per suite, signed by Debian's keyring)."""
    return "".join(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n" for mirror, suite in suites)


class PrivateApt:
    """apt-get and apt-cache with their own sources, lists and cache under ``root``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or BUILD_DIR / "apt"

    def options(self) -> list[str]:
        """The ``-o`` options that point apt at the private configuration."""
        return [
            "-o",
            f"Dir::Etc::SourceList={self.root / 'sources.list'}",
            "-o",
            "Dir::Etc::SourceParts=/dev/null",
            "-o",
            f"Dir::State::Lists={self.root / 'lists'}",
            "-o",
            f"Dir::Cache={self.root / 'cache'}",
            "-o",
            "Acquire::Languages=none",
            "-o",
            "APT::Architecture=amd64",
            "-o",
            "APT::Sandbox::User=root",
        ]

    def ensure_lists(self, max_age_s: float = LISTS_MAX_AGE_S) -> None:
        """``apt-get update`` of the private lists when they are missing or older than
        ``max_age_s``. Raises ToolError when it fails (the mirror cannot be reached)."""
        (self.root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (self.root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
        listing = self.root / "sources.list"
        wanted = sources_list()
        if not listing.is_file() or listing.read_text() != wanted:
            listing.write_text(wanted)
        stamp = self.root / "updated"
        if stamp.is_file() and time.time() - stamp.stat().st_mtime < max_age_s:
            return
        result = run(["apt-get", *self.options(), "-q", "update"], timeout_s=APT_TIMEOUT_S)
        if not result.ok:
            raise ToolError(
                f"apt-get update of the private lists failed: {result.one_line_error()}",
                hint=f"is {MIRROR} reachable? (lists in {self.root})",
            )
        stamp.touch()

    def versions(self, package: str) -> list[str]:
        """The versions of ``package`` the private suites offer, newest first."""
        self.ensure_lists()
        result = run(["apt-cache", *self.options(), "madison", package], timeout_s=APT_TIMEOUT_S)
        versions: list[str] = []
        for line in result.stdout.splitlines():
            parts = [part.strip() for part in line.split("|")]
            if len(parts) >= 2 and parts[0] == package and parts[1] not in versions:
                versions.append(parts[1])
        return versions

    def download_from_pool(
        self, package: str, version: str, directory: Path, pool: str = "linux", arch: str = "amd64"
    ) -> Path:
        """``package`` at ``version`` straight from the mirror's pool
        (``pool/main/l/<pool>/<package>_<version>_<arch>.deb``), for a version no suite's
        index lists any more (Debian keeps the file while another suite's package of the same
        source refers to it). Not verified by a signed index: the caller records that. The
        .deb's own control fields must name ``package`` and ``version``. Raises ToolError
        when the mirror does not have it."""
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{package}_{version.partition(':')[2] or version}_{arch}.deb"
        url = f"{MIRROR}/pool/main/{pool[0]}/{pool}/{urllib.parse.quote(name)}"
        target = directory / name
        partial = directory / (name + ".partial")
        try:
            with (
                urllib.request.urlopen(url, timeout=DOWNLOAD_STALL_S) as response,
                partial.open("wb") as out,
            ):
                shutil.copyfileobj(response, out)
        except (OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise ToolError(
                f"{package}={version} is in no suite's index and not in the pool ({url}): {exc}"
            ) from exc
        fields = run(
            ["dpkg-deb", "-f", str(partial), "Package", "Version"], timeout_s=UNPACK_TIMEOUT_S
        )
        if not fields.ok or fields.stdout.split() != ["Package:", package, "Version:", version]:
            partial.unlink(missing_ok=True)
            raise ToolError(f"{url} is not {package} {version}: {fields.stdout.strip()!r}")
        os.replace(partial, target)
        return target

    def download(self, package: str, version: str, directory: Path) -> Path:
        """``apt-get download package=version`` into ``directory``; the .deb's path.
        Raises ToolError when apt refuses or fails."""
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob(f"{package}_*.deb"):
            stale.unlink()
        argv = ["env", "-C", str(directory), "apt-get", *self.options(), "-q", "download"]
        result = run([*argv, f"{package}={version}"], timeout_s=DOWNLOAD_TIMEOUT_S)
        debs = sorted(directory.glob(f"{package}_*.deb"))
        if not result.ok or len(debs) != 1:
            raise ToolError(
                f"could not download {package}={version}: {result.one_line_error()}",
                hint=f"nvmf-harness fetch-source --list {package}",
            )
        return debs[0]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``linux-source-7.3=7.3.4-1~bpo13+1`` -> (package, version); no ``=``: version None.
    Raises UsageError for anything else."""
    if not SPEC_RE.match(spec):
        raise UsageError(
            f"{spec!r} is not a Debian package spec",
            hint="e.g. linux-source-7.3 or linux-source-7.3=7.3.4-1~bpo13+1",
        )
    package, _, version = spec.partition("=")
    return package, version or None


def choose_version(package: str, version: str | None, offered: Sequence[str]) -> str:
    """``version`` when the suites offer it, else (None) the newest they offer. Raises
    UsageError naming what is offered."""
    if not offered:
        raise UsageError(
            f"no Debian suite here offers {package}",
            hint="suites: " + ", ".join(suite for _, suite in SUITES),
        )
    if version is None:
        return offered[0]
    if version not in offered:
        raise UsageError(
            f"{package} {version} is not offered (offered: {', '.join(offered)})",
            hint=f"nvmf-harness fetch-source {package}={offered[0]}",
        )
    return version


def _record(directory: Path, name: str, data: Mapping[str, object]) -> None:
    tmp = directory / (name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, directory / name)


def fetch_source(
    spec: str, apt: PrivateApt | None = None, cache_dir: Path | None = None
) -> FetchedSource:
    """The tarball of a Debian ``linux-source-X.Y[=version]`` package from any suite of
    SUITES, downloaded and unpacked once into ``build/kernel-sources/<pkg>_<version>/``.
    Raises UsageError for a spec or version not offered, ToolError when a download or the
    unpack fails."""
    package, version = parse_spec(spec)
    apt = apt or PrivateApt()
    offered = apt.versions(package)
    from_pool = version is not None and version not in offered
    chosen = version if from_pool and version else choose_version(package, version, offered)
    directory = (cache_dir or default_cache_dir()) / re.sub(r"[^\w.+-]", "_", f"{package}_{chosen}")
    record = directory / SOURCE_RECORD
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            tarball = Path(data["tarball"])
            if tarball.is_file() and tarball.stat().st_size == int(data["size"]):
                return FetchedSource(package, chosen, tarball, False)
        except (ValueError, KeyError, TypeError):
            pass
    deb = (
        apt.download_from_pool(package, chosen, directory, arch="all")
        if from_pool
        else apt.download(package, chosen, directory)
    )
    unpacked = directory / "root"
    shutil.rmtree(unpacked, ignore_errors=True)
    result = run(["dpkg-deb", "-x", str(deb), str(unpacked)], timeout_s=UNPACK_TIMEOUT_S)
    tarballs = sorted((unpacked / "usr" / "src").glob("linux-source-*.tar.*"))
    if not result.ok or len(tarballs) != 1:
        raise ToolError(
            f"{deb.name} did not unpack to one usr/src/linux-source-*.tar.*: "
            f"{result.one_line_error() if not result.ok else 'found ' + str(len(tarballs))}"
        )
    tarball = tarballs[0]
    _record(
        directory,
        SOURCE_RECORD,
        {
            "package": package,
            "version": chosen,
            "deb": deb.name,
            "verified_by_index": not from_pool,
            "tarball": str(tarball),
            "size": tarball.stat().st_size,
        },
    )
    deb.unlink()
    return FetchedSource(package, chosen, tarball, True)


@dataclass(frozen=True)
class FetchedImage:
    """A Debian kernel image unpacked under build/ (never installed): its vmlinuz, its
    modules directory (``.../lib/modules/<release>`` with modules.dep made by depmod), release
    and Debian version, and the packages that came from the pool without a signed index
    (:meth:`PrivateApt.download_from_pool`)."""

    release: str
    version: str
    vmlinuz: Path
    modules_dir: Path
    unverified: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {
            "release": self.release,
            "version": self.version,
            "vmlinuz": str(self.vmlinuz),
            "modules_dir": str(self.modules_dir),
            "unverified": list(self.unverified),
        }


def image_packages(release: str, apt: PrivateApt) -> tuple[tuple[str, ...], list[str]]:
    """The packages that hold Debian's image of ``release`` and the versions the suites offer
    of the first. Debian 13's 7.x kernels split it: ``linux-binary-<release>`` (vmlinuz),
    ``linux-modules-<release>`` and ``linux-base-<release>`` (``linux-image-<release>`` is a
    meta package there); 6.12 and older ship one ``linux-image-<release>``. Raises
    UsageError when no suite offers either."""
    binary = f"linux-binary-{release}"
    offered = apt.versions(binary)
    if offered:
        return (binary, f"linux-modules-{release}", f"linux-base-{release}"), offered
    image = f"linux-image-{release}"
    offered = apt.versions(image)
    if offered:
        return (image,), offered
    raise UsageError(
        f"no Debian suite here offers {binary} or {image}",
        hint="suites: " + ", ".join(suite for _, suite in SUITES),
    )


def _unpacked_image(root: Path, release: str) -> tuple[Path, Path]:
    """(vmlinuz, modules directory) of an image unpacked in ``root``. Raises ToolError."""
    modules = [
        d for d in (root / "usr/lib/modules", root / "lib/modules") if (d / release).is_dir()
    ]
    if not modules:
        raise ToolError(f"the packages of {release} hold no lib/modules/{release}")
    modules_dir = modules[0] / release
    if (modules_dir / "vmlinuz").is_file():
        return modules_dir / "vmlinuz", modules_dir
    found = sorted(root.glob(f"boot/vmlinuz-{release}"))
    if len(found) != 1:
        raise ToolError(f"the packages of {release} hold no single vmlinuz")
    return found[0], modules_dir


def fetch_image(
    release: str,
    version: str | None = None,
    apt: PrivateApt | None = None,
    cache_dir: Path | None = None,
) -> FetchedImage:
    """Debian's own image of ``release`` (``7.3.4+deb13-amd64``), downloaded and unpacked
    under ``build/kernel-sources/linux-image-<release>_<version>/`` (vmlinuz and
    lib/modules/<release>, then ``depmod -b``): to boot as shipped with its own modules.
    A package of that version that no index lists any more (7.1.13's modules once 7.2
    replaced it) comes from the pool, and FetchedImage.unverified names it.
    Raises UsageError when no suite offers the image, ToolError when a step fails."""
    apt = apt or PrivateApt()
    packages, offered = image_packages(release, apt)
    chosen = choose_version(packages[0], version, offered)
    directory = (cache_dir or default_cache_dir()) / re.sub(
        r"[^\w.+-]", "_", f"linux-image-{release}_{chosen}"
    )
    root = directory / "root"
    record = directory / IMAGE_RECORD
    if record.is_file():
        try:
            data = json.loads(record.read_text())
            found = FetchedImage(
                data["release"],
                data["version"],
                Path(data["vmlinuz"]),
                Path(data["modules_dir"]),
                tuple(data.get("unverified", ())),
            )
            if found.vmlinuz.is_file() and (found.modules_dir / "modules.dep").is_file():
                return found
        except (ValueError, KeyError, TypeError):
            pass
    shutil.rmtree(root, ignore_errors=True)
    unverified = []
    for package in packages:
        if package == packages[0] or chosen in apt.versions(package):
            deb = apt.download(package, chosen, directory)
        else:
            deb = apt.download_from_pool(package, chosen, directory)
            unverified.append(package)
        result = run(["dpkg-deb", "-x", str(deb), str(root)], timeout_s=UNPACK_TIMEOUT_S)
        if not result.ok:
            raise ToolError(f"cannot unpack {deb.name}: {result.one_line_error()}")
        deb.unlink()
    vmlinuz, modules_dir = _unpacked_image(root, release)
    result = run(
        ["depmod", "-b", str(modules_dir.parent.parent.parent), release], timeout_s=UNPACK_TIMEOUT_S
    )
    if not result.ok:
        raise ToolError(f"depmod for {release}: {result.one_line_error()}")
    image = FetchedImage(release, chosen, vmlinuz, modules_dir, tuple(unverified))
    _record(directory, IMAGE_RECORD, image.to_dict())
    return image


IMAGE_SPEC_RE = re.compile(r"^(\d+\.\d+)\.\d+[^=\s/]*-[a-z0-9]+(=[A-Za-z0-9.+~:-]+)?$")


def parse_image_spec(spec: str) -> tuple[str, str | None]:
    """``7.3.4+deb13-amd64`` or ``7.3.4+deb13-amd64=7.3.4-1~bpo13+1`` (a ``debian:``
    prefix allowed) -> (release, version or None). Raises UsageError for anything else."""
    bare = spec.removeprefix("debian:")
    if not IMAGE_SPEC_RE.match(bare):
        raise UsageError(
            f"{spec!r} is not a Debian kernel release",
            hint="e.g. debian:7.3.4+deb13-amd64 (the release `uname -r` prints on it)",
        )
    release, _, version = bare.partition("=")
    return release, version or None


def image_source_spec(image: FetchedImage) -> str:
    """The ``linux-source-X.Y=<version>`` spec of the source ``image`` was built from:
    Debian builds the image and linux-source-X.Y from one source package, so they carry the
    same version (``7.3.4+deb13-amd64`` 7.3.4-1~bpo13+1 -> linux-source-7.3=7.3.4-1~bpo13+1)."""
    match = IMAGE_SPEC_RE.match(image.release)
    if match is None:
        raise ToolError(f"cannot tell X.Y of the kernel release {image.release!r}")
    return f"linux-source-{match.group(1)}={image.version}"

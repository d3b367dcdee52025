"""The kernel under test that scripts/setup prepared, and how setup chooses it.

Module variants are built from Debian's ``linux-source-X.Y`` against
``linux-headers-<release>`` and loaded into ``linux-image-<release>``: the three packages
must come from the same Debian version (6.1.0-57-amd64 and linux-source-6.1 6.1.192-3 on
Debian 12, 6.12.117+deb13-amd64 and linux-source-6.12 6.12.117-1 on Debian 13), or the
unfixed/fixed modules would not be the kernel's own source. Which packages those are depends
on the host's Debian release (harness.kernels.hosts, from /etc/os-release). So the kernel
under test is not "the newest image in /boot" but the release scripts/setup chose and
installed, which it records in ``build/prepared-kernel.json``::

    {"release": "6.1.0-57-amd64", "image": "/boot/vmlinuz-6.1.0-57-amd64",
     "packages": {"linux-image-6.1.0-57-amd64": "6.1.192-3",
                  "linux-headers-6.1.0-57-amd64": "6.1.192-3", "linux-source-6.1": "6.1.192-3"},
     "source_tarball": "/usr/src/linux-source-6.1.tar.xz", "chosen_by": "...", ...}

scripts/setup runs it through ``nvmf-harness kernel`` (harness/cli/kernels.py):

    nvmf-harness kernel choose [RELEASE]    print "RELEASE<TAB>VERSION<TAB>HOW"
    nvmf-harness kernel record RELEASE HOW  check the packages, write the record
    nvmf-harness kernel current             the recorded release while its packages are there
    nvmf-harness kernel show                the record, or what is missing
    nvmf-harness kernel packages RELEASE    its image, headers and source packages
    nvmf-harness kernel host                the host's Debian release (or why unsupported)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from harness.core.errors import HarnessError, UsageError
from harness.core.paths import BUILD_DIR
from harness.core.procs import run
from harness.kernels import hosts
from harness.kernels.hosts import DebianRelease

RECORD_FILE = BUILD_DIR / "prepared-kernel.json"
BOOT_DIR = Path("/boot")
RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$")
APT_TIMEOUT_S = 60.0
ORIGIN_PREPARED = "prepared by scripts/setup"
ORIGIN_ARGUMENT = "--kernel"
ORIGIN_TREE = "built from a tree: nvmf-harness build-kernel"


@dataclass(frozen=True)
class PreparedKernel:
    """What scripts/setup installed for the kernel under test (``build/prepared-kernel.json``).

    ``packages`` maps Debian package name to its installed version; ``chosen_by`` says how
    the release was picked (matching linux-source-X.Y, NVMF_HARNESS_RELEASE, argument).
    """

    release: str
    image: str
    packages: dict[str, str]
    source_tarball: str
    chosen_by: str
    prepared_at: str

    @property
    def source_version(self) -> str:
        """The version of the record's ``linux-source-X.Y`` package ("" when it has none)."""
        for package, version in self.packages.items():
            if package.startswith("linux-source-"):
                return version
        return ""


def packages_of(release: str) -> list[str]:
    """The Debian packages a release under test needs: image, headers, and the source of its
    kernel line (``linux-source-6.12`` for ``6.12.117+deb13-amd64``)."""
    return [
        f"linux-image-{release}",
        f"linux-headers-{release}",
        hosts.source_package_of(release),
    ]


def load(path: Path = RECORD_FILE) -> PreparedKernel:
    """The record scripts/setup wrote.

    Raises HarnessError (with the command that fixes it) when there is none, it is unreadable,
    or its kernel image is gone from /boot.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        record = PreparedKernel(
            release=str(data["release"]),
            image=str(data["image"]),
            packages={str(k): str(v) for k, v in dict(data["packages"]).items()},
            source_tarball=str(data["source_tarball"]),
            chosen_by=str(data.get("chosen_by", "")),
            prepared_at=str(data.get("prepared_at", "")),
        )
    except FileNotFoundError as exc:
        raise HarnessError(
            f"no kernel under test prepared ({path} is missing)",
            hint="run: sudo scripts/setup, or pass --kernel /boot/vmlinuz-<release>",
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(
            f"cannot read {path}: {exc}", hint="run sudo scripts/setup again to rewrite it"
        ) from exc
    if not Path(record.image).is_file():
        raise HarnessError(
            f"the prepared kernel {record.release}: {record.image} is missing",
            hint=f"apt-get install linux-image-{record.release}, or run sudo scripts/setup",
        )
    return record


def prepared_release(path: Path = RECORD_FILE) -> str | None:
    """The prepared release, or None when scripts/setup recorded none (no error raised)."""
    try:
        return load(path).release
    except HarnessError:
        return None


def kernel_origin(image: str, path: Path = RECORD_FILE) -> str:
    """How ``image`` came to be the kernel under test, for the lines a person reads:
    ``"prepared by scripts/setup"`` when it is the recorded image, ``"built from a tree"``
    for a kernel build directory, else ``"--kernel"``."""
    if Path(image).is_dir():
        return ORIGIN_TREE
    try:
        record = load(path)
    except HarnessError:
        return ORIGIN_ARGUMENT
    same = Path(image).resolve() == Path(record.image).resolve()
    return ORIGIN_PREPARED if same else ORIGIN_ARGUMENT


def write(record: PreparedKernel, path: Path = RECORD_FILE) -> None:
    """Write the record atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(asdict(record), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


# --- choosing a release (scripts/setup) ----------------------------------------------------------


def parse_policy(text: str) -> dict[str, tuple[str, str]]:
    """``apt-cache policy PKG...`` output -> {package: (installed, candidate)}.

    A version of ``(none)`` becomes ``""``.
    """
    found: dict[str, tuple[str, str]] = {}
    package = ""
    installed = candidate = ""
    for line in text.splitlines():
        if line and not line[0].isspace() and line.rstrip().endswith(":"):
            if package:
                found[package] = (installed, candidate)
            package, installed, candidate = line.rstrip()[:-1], "", ""
            continue
        key, _, value = line.strip().partition(":")
        value = value.strip()
        value = "" if value == "(none)" else value
        if key == "Installed":
            installed = value
        elif key == "Candidate":
            candidate = value
    if package:
        found[package] = (installed, candidate)
    return found


def parse_madison(text: str) -> list[str]:
    """``apt-cache madison PKG`` output -> the versions the apt sources offer."""
    versions = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split("|")]
        if len(parts) >= 3 and parts[1] and parts[1] not in versions:
            versions.append(parts[1])
    return versions


def match_release(source_version: str, image_versions: Mapping[str, str]) -> str | None:
    """The release whose image package has ``source_version`` ({release: version} given);
    of several, the newest (hosts.release_key)."""
    matching = [rel for rel, version in image_versions.items() if version == source_version]
    return max(matching, key=hosts.release_key) if matching else None


@dataclass(frozen=True)
class Choice:
    """The release setup installs: its Debian version (image = headers = source), and why."""

    release: str
    version: str
    chosen_by: str


Runner = Callable[[list[str]], str]


def _apt_cache(argv: list[str]) -> str:
    result = run(["apt-cache", *argv], timeout_s=APT_TIMEOUT_S)
    return result.stdout


def choose(
    requested: str = "", apt_cache: Runner = _apt_cache, host: DebianRelease | None = None
) -> Choice:
    """Pick the release under test for ``host`` (default: hosts.detect(), /etc/os-release).

    With ``requested`` (a release such as ``6.1.0-56-amd64`` or ``6.12.117+deb13-amd64``):
    that one, at its installed version or else the apt candidate; the source package of its
    kernel line must be offered at that version. Without: the host's generic image
    (``linux-image-6.1.0-NN-amd64`` on Debian 12, ``linux-image-6.12.NN+deb13-amd64`` on
    Debian 13) whose candidate version equals the host's source package's candidate (the
    newest such release). ``apt_cache(argv)`` returns the output of ``apt-cache ARGV``.
    Raises HarnessError with the fix when no release fits, UnsupportedHost (one line naming
    the supported Debian releases) on another host.
    """
    if requested and not RELEASE_RE.match(requested):
        examples = " or ".join(release.example_release for release in hosts.SUPPORTED)
        raise UsageError(f"{requested!r} is not a kernel release (e.g. {examples})")
    debian = host or hosts.detect()
    if requested:
        source_package = hosts.source_package_of(requested)
        source_offered = parse_madison(apt_cache(["madison", source_package]))
        image = f"linux-image-{requested}"
        installed, candidate = parse_policy(apt_cache(["policy", image])).get(image, ("", ""))
        version = installed or candidate
        if not version:
            raise HarnessError(
                f"no package {image} in the apt sources",
                hint="apt-get update, or choose a release listed by: "
                f"apt-cache search --names-only '{debian.search_regex}'",
            )
        if version not in source_offered:
            raise HarnessError(
                f"{source_package} {version} (the source of {requested}) is not in the apt "
                f"sources (offered: {', '.join(source_offered) or 'none'})",
                hint="choose the release of one of those versions, or unset "
                "NVMF_HARNESS_RELEASE to take the one matching the newest source",
            )
        return Choice(requested, version, "requested (NVMF_HARNESS_RELEASE or argument)")
    source_package = debian.source_package
    policy = parse_policy(apt_cache(["policy", source_package]))
    source_candidate = policy.get(source_package, ("", ""))[1]
    if not source_candidate:
        raise HarnessError(
            f"{source_package} is not in the apt sources",
            hint=f"apt-get update ({debian.name}'s main suite has it)",
        )
    names = apt_cache(["search", "--names-only", debian.search_regex])
    images = sorted(
        {
            line.split()[0]
            for line in names.splitlines()
            if line.split() and debian.image_release(line.split()[0])
        }
    )
    versions: dict[str, str] = {}
    if images:
        for package, (_installed, candidate) in parse_policy(
            apt_cache(["policy", *images])
        ).items():
            release = debian.image_release(package)
            if release and candidate:
                versions[release] = candidate
    chosen = match_release(source_candidate, versions)
    if chosen is None:
        raise HarnessError(
            f"no linux-image-{debian.release_shape} in the apt sources has {source_package}'s "
            f"version {source_candidate}",
            hint="apt-get update, or name one: "
            f"NVMF_HARNESS_RELEASE={debian.release_shape} scripts/setup",
        )
    return Choice(chosen, source_candidate, f"matches {source_package} {source_candidate}")


def installed_versions(packages: list[str]) -> dict[str, str]:
    """{package: installed version} from dpkg-query; a package not installed is left out."""
    found: dict[str, str] = {}
    for package in packages:
        result = run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", package], timeout_s=APT_TIMEOUT_S
        )
        status, _, version = result.stdout.partition("\t")
        if result.ok and status.endswith("install ok installed") and version:
            found[package] = version
    return found


def check_installed(release: str, versions: Mapping[str, str], boot: Path = BOOT_DIR) -> None:
    """Raise HarnessError (one line, with the apt command) unless the image, headers and
    source of ``release`` are installed at one and the same version and the image is there."""
    wanted = packages_of(release)
    missing = [package for package in wanted if package not in versions]
    if missing:
        raise HarnessError(
            f"{release}: not installed: {', '.join(missing)}",
            hint=f"apt-get install {' '.join(missing)}",
        )
    image_version = versions[wanted[0]]
    differ = [p for p in wanted[1:] if versions[p] != image_version]
    if differ:
        found = ", ".join(f"{p} {versions[p]}" for p in differ)
        raise HarnessError(
            f"{release} is {image_version} but {found}",
            hint="apt-get install --allow-downgrades "
            + " ".join(f"{p}={image_version}" for p in differ),
        )
    if not (boot / f"vmlinuz-{release}").is_file():
        raise HarnessError(
            f"{boot}/vmlinuz-{release} is missing",
            hint=f"apt-get install --reinstall linux-image-{release}",
        )


def record_installed(
    release: str, chosen_by: str, path: Path = RECORD_FILE, boot: Path = BOOT_DIR
) -> PreparedKernel:
    """Check what dpkg says is installed for ``release`` and write the record."""
    versions = installed_versions(packages_of(release))
    check_installed(release, versions, boot)
    record = PreparedKernel(
        release=release,
        image=str(boot / f"vmlinuz-{release}"),
        packages={package: versions[package] for package in packages_of(release)},
        source_tarball=str(hosts.source_tarball_of(release)),
        chosen_by=chosen_by,
        prepared_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    try:
        existing = load(path)
    except HarnessError:
        existing = None
    if existing is not None and _same_kernel(existing, record):
        return existing  # idempotent: a provisioned machine (or a read-only tree) is left as is
    try:
        write(record, path)
    except OSError as exc:
        raise HarnessError(
            f"cannot write {path}: {exc.strerror or exc}",
            hint="run scripts/setup where the checkout is writable (as root)",
        ) from exc
    return record


def _same_kernel(a: PreparedKernel, b: PreparedKernel) -> bool:
    """Whether two records name the same release, image, package versions and source."""
    return (a.release, a.image, a.packages, a.source_tarball, a.chosen_by) == (
        b.release,
        b.image,
        b.packages,
        b.source_tarball,
        b.chosen_by,
    )


def still_installed(record: PreparedKernel) -> bool:
    """Whether every package of the record is installed at the recorded version."""
    return installed_versions(list(record.packages)) == record.packages


def describe(record: PreparedKernel) -> str:
    """One line: the release, its image and the package versions."""
    return (
        f"{record.release} ({record.image}; image/headers/source "
        f"{record.packages.get(f'linux-image-{record.release}', '?')}/"
        f"{record.packages.get(f'linux-headers-{record.release}', '?')}/"
        f"{record.source_version or '?'}; {record.chosen_by})"
    )


def default_kernel(record: Path | None = None) -> str:
    """The kernel image scripts/setup prepared (``build/prepared-kernel.json``).

    Never merely the newest image in /boot: the module variants are built for the prepared
    release. Raises HarnessError (with the command to run) when nothing was prepared or its
    image is gone.
    """
    return load(record or RECORD_FILE).image


KDIR_RELEASE = "include/config/kernel.release"


def kernel_release(image: str) -> str:
    """``6.1.0-57-amd64`` for ``/boot/vmlinuz-6.1.0-57-amd64``; for a kernel build
    directory (``nvmf-harness build-kernel``'s kdir) its ``include/config/kernel.release``;
    for ``.../lib/modules/<release>/vmlinuz`` (Debian 13's layout, an image unpacked by
    harness.kernels.debian_archive) ``<release>``; ``""`` for other images."""
    path = Path(image)
    if path.is_dir():
        try:
            return (path / KDIR_RELEASE).read_text().strip()
        except OSError:
            return ""
    name = path.name
    if name == "vmlinuz" and path.parent.parent.name == "modules":  # lib/modules/<rel>/vmlinuz
        return path.parent.name
    return name.removeprefix("vmlinuz-") if name.startswith("vmlinuz-") else ""

"""Which Debian the host runs, and what its kernel under test is made of.

scripts/setup prepares one kernel release whose image, headers and ``linux-source-X.Y`` are
the same Debian version (harness.kernels.prepared). Which packages those are depends on the
host's Debian release, read from ``/etc/os-release`` (``ID``, ``VERSION_ID``,
``VERSION_CODENAME``; os-release(5)), never assumed:

============  =========  ==================  ====================================
Debian        codename   source package      image (release)
============  =========  ==================  ====================================
12            bookworm   linux-source-6.1    linux-image-6.1.0-<abi>-amd64
13            trixie     linux-source-6.12   linux-image-6.12.<sub>+deb13-amd64
============  =========  ==================  ====================================

Bookworm's ABI number (``6.1.0-57``) grows with each ABI change; trixie names each upload by
its upstream sublevel (``6.12.117+deb13``). Both sort by their numbers
(:func:`release_key`). Another distribution or another Debian is one line naming the
supported ones (:class:`UnsupportedHost`). scripts/setup checks the same table in bash before
its first apt-get (tests/test_hosts.py keeps the two equal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import UsageError

OS_RELEASE = Path("/etc/os-release")
USR_SRC = Path("/usr/src")


@dataclass(frozen=True)
class DebianRelease:
    """One supported Debian release and the kernel packages it ships (amd64, generic flavour).

    ``image_pattern`` matches a whole ``linux-image-<release>`` package name and captures the
    release (``-unsigned``, ``-dbg``, ``cloud``/``rt`` flavours and backports do not match);
    ``search_regex`` is the same for ``apt-cache search --names-only``; ``release_shape``
    (``6.12.NN+deb13-amd64``) and ``example_release`` are for messages.
    """

    version_id: str
    codename: str
    kernel_line: str
    image_pattern: re.Pattern[str]
    search_regex: str
    release_shape: str
    example_release: str

    @property
    def source_package(self) -> str:
        """``linux-source-6.1`` (bookworm), ``linux-source-6.12`` (trixie)."""
        return f"linux-source-{self.kernel_line}"

    @property
    def source_tarball(self) -> Path:
        """Where the source package puts its tarball: ``/usr/src/linux-source-6.12.tar.xz``."""
        return source_tarball_of(self.kernel_line)

    @property
    def name(self) -> str:
        """``Debian 13 (trixie)``."""
        return f"Debian {self.version_id} ({self.codename})"

    def image_release(self, package: str) -> str | None:
        """The release of an image package name of this Debian's generic kernel, else None."""
        match = self.image_pattern.match(package)
        return match.group(1) if match else None


BOOKWORM = DebianRelease(
    version_id="12",
    codename="bookworm",
    kernel_line="6.1",
    image_pattern=re.compile(r"^linux-image-(6\.1\.0-\d+-amd64)$"),
    search_regex=r"^linux-image-6\.1\.0-[0-9]+-amd64$",
    release_shape="6.1.0-NN-amd64",
    example_release="6.1.0-57-amd64",
)
TRIXIE = DebianRelease(
    version_id="13",
    codename="trixie",
    kernel_line="6.12",
    image_pattern=re.compile(r"^linux-image-(6\.12\.\d+\+deb13-amd64)$"),
    search_regex=r"^linux-image-6\.12\.[0-9]+\+deb13-amd64$",
    release_shape="6.12.NN+deb13-amd64",
    example_release="6.12.117+deb13-amd64",
)
SUPPORTED: tuple[DebianRelease, ...] = (BOOKWORM, TRIXIE)


def supported_names() -> str:
    """``Debian 12 (bookworm) or Debian 13 (trixie)``."""
    return " or ".join(release.name for release in SUPPORTED)


class UnsupportedHost(UsageError):
    """The host is not a Debian release the harness supports (the message names them)."""


def parse_os_release(text: str) -> dict[str, str]:
    """``KEY=value`` lines of os-release(5) -> {KEY: value} (quotes removed, comments left)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def identify(values: dict[str, str]) -> DebianRelease:
    """The supported Debian release these os-release values describe.

    Debian when ``ID`` is ``debian``; the release by ``VERSION_CODENAME``, else by
    ``VERSION_ID`` (testing and sid have no VERSION_ID). Raises UnsupportedHost naming what
    the host is and what is supported.
    """
    if values.get("ID") == "debian":
        codename = values.get("VERSION_CODENAME", "")
        version_id = values.get("VERSION_ID", "")
        for release in SUPPORTED:
            if codename == release.codename or (not codename and version_id == release.version_id):
                return release
    what = values.get("PRETTY_NAME") or " ".join(
        part for part in (values.get("ID", ""), values.get("VERSION_ID", "")) if part
    )
    raise UnsupportedHost(
        f"this host is {what or 'not an os-release(5) system'}: the harness supports "
        f"{supported_names()}, amd64",
        hint="run it on one of those (a VM or a debootstrap chroot will do)",
    )


def detect(os_release: Path | None = None) -> DebianRelease:
    """The host's Debian release, from ``os_release`` (default ``/etc/os-release``). Raises
    UnsupportedHost."""
    os_release = os_release or OS_RELEASE
    try:
        text = os_release.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UnsupportedHost(
            f"cannot read {os_release} ({exc.strerror or exc}): the harness supports "
            f"{supported_names()}, amd64"
        ) from exc
    return identify(parse_os_release(text))


def kernel_line(release: str) -> str:
    """``6.1`` of ``6.1.0-57-amd64`` (or of ``6.1.192-3``), ``6.12`` of
    ``6.12.117+deb13-amd64``; ``""`` when it does not start with two numbers."""
    match = re.match(r"^(\d+)\.(\d+)", release)
    return f"{match.group(1)}.{match.group(2)}" if match else ""


def source_package_of(release: str) -> str:
    """The Debian source package of a release's kernel line: ``linux-source-6.12`` of
    ``6.12.117+deb13-amd64``. Raises UsageError for a name without a kernel line."""
    line = kernel_line(release)
    if not line:
        raise UsageError(
            f"{release!r} is not a kernel release",
            hint=f"e.g. {BOOKWORM.example_release} or {TRIXIE.example_release}",
        )
    return f"linux-source-{line}"


def source_tarball_of(line_or_release: str) -> Path:
    """``/usr/src/linux-source-6.12.tar.xz`` for ``6.12`` or any 6.12 release name."""
    return USR_SRC / f"linux-source-{kernel_line(line_or_release)}.tar.xz"


def release_key(release: str) -> tuple[int, ...]:
    """How releases of one Debian sort, newest last: by their numbers (``6.1.0-57-amd64``
    -> (6, 1, 0, 57, 64); ``6.12.117+deb13-amd64`` -> (6, 12, 117, 13, 64))."""
    return tuple(int(part) for part in re.findall(r"\d+", release))

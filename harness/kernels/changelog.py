"""When did the commits that decide the race reach Debian's kernels? From the changelog.

Every Debian kernel image ships the whole package history in
``/usr/share/doc/linux-image-<release>/changelog.gz`` (newest entry first); stable updates
list each upstream commit by its subject. Two subjects decide whether a release can fail an
application's IO in this race (docs/ns-remove-path.md):

- the fix, "nvme-multipath: set BIO_REMAPPED on bios remapped to per-path namespace ...":
  with it, a bio remapped to a per-path disk skips bio_check_eod();
- "block: make bio_check_eod work for zero sized devices": before it, bio_check_eod() skips a
  disk whose capacity is 0 (``maxsector &&``), so a bio sent to a per-path disk that
  nvme_ns_remove() zeroed is not failed there: the race cannot fail it at all.

A release is affected exactly when it has the second commit and not the fix. A third,
"block: fix EOD return for device with nr_sectors == 0" (ab073abf6d97, v6.17), does not
change that but makes the failure silent: bio_check_eod() returns -EIO for a zero-capacity
disk before it prints "attempt to access beyond end of device", so an affected release from
it on prints nothing (docs/kernels.md). This module finds the first Debian version that lists
each (and any later revert), which answers "which Debian releases were ever affected, and
which of them silently" in milliseconds, without downloading any source. The source of one
release tells the same for that release (harness/kernels/source_check.py).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import HarnessError

DOC_ROOT = Path("/usr/share/doc")
FIX_SUBJECT = "nvme-multipath: set BIO_REMAPPED on bios remapped to per-path namespace"
ZERO_SIZE_SUBJECT = "block: make bio_check_eod work for zero sized devices"
SILENT_EOD_SUBJECT = "block: fix EOD return for device with nr_sectors == 0"
# "linux (6.1.170-3) bookworm-security; ..." (the signed packages' own "linux-signed-amd64
# (6.1.170+3)" entries are not kernel versions).
ENTRY_RE = re.compile(r"^linux \((?P<version>[^)]+)\) ")
# A commit already in the upstream release a Debian version is based on is never listed as
# a backport. Upstream commit 3eb96946f0be ("block: make bio_check_eod work for zero sized
# devices", 2023-05-24) went in through block-6.4 (v6.4-rc4): every 6.4+ kernel has it
# (6.12 does). ab073abf6d97 ("block: fix EOD return for device with nr_sectors == 0") is in
# v6.17.
UPSTREAM_SINCE: dict[str, tuple[int, int]] = {
    ZERO_SIZE_SUBJECT: (6, 4),
    SILENT_EOD_SUBJECT: (6, 17),
}


@dataclass(frozen=True)
class CommitHistory:
    """Where one commit subject appears in a Debian changelog: the first (oldest) version
    that lists it and the first version that lists a revert of it (None when none)."""

    subject: str
    first_version: str | None
    reverted_in: str | None

    def present_in(self, version: str) -> bool:
        """Whether Debian ``version`` carries the commit: from upstream (UPSTREAM_SINCE) or
        from the first Debian version that lists it on (Debian version ordering)."""
        upstream = UPSTREAM_SINCE.get(self.subject)
        from_upstream = upstream is not None and debian_version_key(version)[0][:2] >= upstream
        if not from_upstream and (
            self.first_version is None
            or debian_version_key(version) < debian_version_key(self.first_version)
        ):
            return False
        return self.reverted_in is None or debian_version_key(version) < debian_version_key(
            self.reverted_in
        )


@dataclass(frozen=True)
class RaceHistory:
    """The three commits' history in one changelog, and the versions it lists."""

    changelog: str
    fix: CommitHistory
    zero_size_eod: CommitHistory
    silent_eod: CommitHistory
    versions: tuple[str, ...]  # every version the changelog lists, newest first

    def affected_versions(self) -> list[str]:
        """Listed versions with the zero-size EOD check and without the fix."""
        return [
            v
            for v in self.versions
            if self.zero_size_eod.present_in(v) and not self.fix.present_in(v)
        ]

    def silent_versions(self) -> list[str]:
        """Affected versions whose bio_check_eod() fails the race's bios without the kernel
        line (newest first): only a witness that does not wait for the line sees them."""
        return [v for v in self.affected_versions() if self.silent_eod.present_in(v)]

    def summary(self) -> str:
        """One paragraph a person reads, with the versions."""
        fix = _first(self.fix, self.versions)
        zero = _first(self.zero_size_eod, self.versions)
        affected = self.affected_versions()
        if not affected:
            verdict = "so no Debian version it lists was ever affected as shipped"
        elif len(affected) <= 4:
            verdict = f"so these Debian versions were affected as shipped: {', '.join(affected)}"
        else:
            verdict = (
                f"so {len(affected)} Debian versions it lists were affected as shipped, "
                f"{affected[-1]} to {affected[0]}"
            )
        silent = self.silent_versions()
        if silent:
            verdict += (
                f"; {len(silent)} of them fail without the kernel line "
                f"(silent bio_check_eod(), {_span(silent)})"
            )
        reverts = [
            f"{c.subject!r} reverted in {c.reverted_in}"
            for c in (self.fix, self.zero_size_eod, self.silent_eod)
            if c.reverted_in
        ]
        tail = f" ({'; '.join(reverts)})" if reverts else ""
        return (
            f"Debian changelog ({self.changelog}): the fix first in {fix}; the zero-size "
            f"bio_check_eod commit (without which the race cannot fail a bio) first in {zero}; "
            f"{verdict}{tail}."
        )


def _span(versions: list[str]) -> str:
    """``versions`` (newest first) as a person reads them: all of them up to four, else the
    oldest to the newest."""
    if len(versions) <= 4:
        return ", ".join(versions)
    return f"{versions[-1]} to {versions[0]}"


def _first(commit: CommitHistory, versions: tuple[str, ...]) -> str:
    """How a person reads where a commit starts: a Debian version, upstream, or never."""
    if commit.first_version is not None:
        return commit.first_version
    if versions and commit.present_in(versions[-1]):
        return "every listed version (upstream before them)"
    if any(commit.present_in(v) for v in versions):
        major, minor = UPSTREAM_SINCE[commit.subject]
        return f"upstream v{major}.{minor}"
    return "no listed version"


def debian_version_key(version: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Order Debian kernel versions such as ``6.1.170-3``, ``6.12.107-1~deb12u1`` and
    ``6.5~rc4-1~exp1``: the upstream part, then the Debian revision; in each, a ``~`` suffix
    sorts before the bare one (Debian policy). The first element's first two numbers are
    the upstream major and minor."""
    upstream, _, revision = version.partition("-")
    return _tilde_key(upstream), _tilde_key(revision)


def _tilde_key(part: str) -> tuple[int, ...]:
    base, tilde, suffix = part.partition("~")
    numbers = [int(n) for n in re.findall(r"\d+", base)]
    # pad so "6.5" and "6.5.0" compare equal before the tilde flag decides
    numbers += [0] * (4 - len(numbers))
    return (*numbers, 0 if tilde else 1, *(int(n) for n in re.findall(r"\d+", suffix)))


def parse(text: str, name: str = "changelog") -> RaceHistory:
    """The three commits' history in a Debian changelog's text (newest entry first)."""
    versions: list[str] = []
    subjects = (FIX_SUBJECT, ZERO_SIZE_SUBJECT, SILENT_EOD_SUBJECT)
    first: dict[str, str | None] = dict.fromkeys(subjects)
    reverted: dict[str, str | None] = dict.fromkeys(subjects)
    current = ""
    for line in text.splitlines():
        entry = ENTRY_RE.match(line)
        if entry:
            current = entry.group("version")
            versions.append(current)
            continue
        if not current:
            continue
        for subject in first:
            if subject not in line:
                continue
            if "revert" in line.lower():
                reverted[subject] = current  # newest first: ends at the oldest revert
            else:
                first[subject] = current  # newest first: ends at the oldest listing
    if not versions:
        raise HarnessError(f"{name} lists no Debian kernel version", hint="not a kernel changelog")
    return RaceHistory(
        changelog=name,
        fix=CommitHistory(FIX_SUBJECT, first[FIX_SUBJECT], reverted[FIX_SUBJECT]),
        zero_size_eod=CommitHistory(
            ZERO_SIZE_SUBJECT, first[ZERO_SIZE_SUBJECT], reverted[ZERO_SIZE_SUBJECT]
        ),
        silent_eod=CommitHistory(
            SILENT_EOD_SUBJECT, first[SILENT_EOD_SUBJECT], reverted[SILENT_EOD_SUBJECT]
        ),
        versions=tuple(versions),
    )


def changelog_path(release: str, doc_root: Path = DOC_ROOT) -> Path:
    """The changelog of installed ``linux-image-<release>`` or of its ``-unsigned`` build
    (Debian's backports kernels, e.g. linux-image-6.12.107+deb12-amd64-unsigned, keep it in
    their own doc directory); HarnessError (with the apt command) when neither is
    installed."""
    for package in (f"linux-image-{release}", f"linux-image-{release}-unsigned"):
        for name in ("changelog.Debian.gz", "changelog.gz"):
            path = doc_root / package / name
            if path.is_file():
                return path
    raise HarnessError(
        f"no changelog of linux-image-{release} in {doc_root}",
        hint=f"apt-get install linux-image-{release}",
    )


def release_history(release: str, doc_root: Path = DOC_ROOT) -> RaceHistory:
    """The three commits' history as the installed ``linux-image-<release>`` tells it."""
    path = changelog_path(release, doc_root)
    try:
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as stream:
            text = stream.read()
    except (OSError, EOFError) as exc:
        raise HarnessError(f"cannot read {path}: {exc}") from exc
    return parse(text, str(path))

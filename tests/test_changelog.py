"""harness.kernels.changelog on changelogs shaped like Debian's (newest entry first)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.kernels import changelog

FIX = "    - nvme-multipath: set BIO_REMAPPED on bios remapped to per-path namespace disks"
ZERO = "    - block: make bio_check_eod work for zero sized devices"


def entry(version: str, *lines: str) -> str:
    body = "\n".join(["  * New upstream stable update:", *lines])
    return (
        f"linux ({version}) bookworm-security; urgency=high\n\n{body}\n\n"
        f" -- Ben Hutchings <benh@debian.org>  Sat, 01 Nov 2026 12:00:00 +0100\n\n"
    )


def signed(version: str) -> str:
    return f"linux-signed-amd64 ({version}) bookworm-security; urgency=high\n\n  * Sign\n\n"


# Debian 6.1's shape: the fix came first (6.1.180-1), the zero-size commit later (6.1.187-1).
DEBIAN_61 = (
    signed("6.1.192+3")
    + entry("6.1.192-3")
    + entry("6.1.187-1", ZERO)
    + entry("6.1.180-1", FIX)
    + entry("6.1.176-1")
    + entry("6.1.170-3")
)


def test_debian_61_was_never_affected() -> None:
    history = changelog.parse(DEBIAN_61)
    assert history.versions == ("6.1.192-3", "6.1.187-1", "6.1.180-1", "6.1.176-1", "6.1.170-3")
    assert history.fix.first_version == "6.1.180-1"
    assert history.zero_size_eod.first_version == "6.1.187-1"
    assert history.affected_versions() == []
    assert "fix first in 6.1.180-1" in history.summary()
    assert "first in 6.1.187-1" in history.summary()
    assert "no Debian version it lists was ever affected" in history.summary()


def test_the_other_order_leaves_a_window_of_affected_versions() -> None:
    text = entry("6.1.200-1", FIX) + entry("6.1.195-1") + entry("6.1.190-1", ZERO)
    text += entry("6.1.185-1")
    history = changelog.parse(text)
    assert history.affected_versions() == ["6.1.195-1", "6.1.190-1"]
    assert "6.1.195-1, 6.1.190-1" in history.summary()


def test_upstream_commit_counts_from_its_release_on() -> None:
    """6.12 never lists the zero-size commit: it came with upstream v6.4 (block-6.4)."""
    text = entry("6.12.107-1", "    - other") + entry("6.12.96-1", FIX) + entry("6.12.95-1")
    text += entry("6.4.4-1~exp1") + entry("6.3.13-1")
    history = changelog.parse(text)
    assert history.zero_size_eod.first_version is None
    assert history.zero_size_eod.present_in("6.12.95-1")
    assert not history.zero_size_eod.present_in("6.3.13-1")
    assert history.affected_versions() == ["6.12.95-1", "6.4.4-1~exp1"]
    assert "upstream v6.4" in history.summary()
    assert history.silent_versions() == []
    assert "without the kernel line" not in history.summary()


SILENT = "    - block: fix EOD return for device with nr_sectors == 0"


def test_silent_versions_from_upstream_v6_17_or_a_backport() -> None:
    """From v6.17 (ab073abf6d97) an affected kernel fails the race's bios with no line; a
    6.12 that backported it is silent from that version on."""
    text = entry("7.2.1-1", FIX) + entry("7.1.9-1") + entry("6.17.3-1") + entry("6.16.12-1")
    history = changelog.parse(text)
    assert history.affected_versions() == ["7.1.9-1", "6.17.3-1", "6.16.12-1"]
    assert history.silent_versions() == ["7.1.9-1", "6.17.3-1"]
    assert "2 of them fail without the kernel line" in history.summary()
    backport = entry("6.12.96-1", FIX) + entry("6.12.90-1", SILENT) + entry("6.12.80-1")
    history = changelog.parse(backport)
    assert history.silent_eod.first_version == "6.12.90-1"
    assert history.silent_versions() == ["6.12.90-1"]


def test_a_revert_ends_the_commit() -> None:
    revert = (
        '    - Revert "nvme-multipath: set BIO_REMAPPED on bios remapped to per-path namespace"'
    )
    text = entry("6.1.199-1", revert) + entry("6.1.190-1", ZERO) + entry("6.1.180-1", FIX)
    history = changelog.parse(text)
    assert history.fix.reverted_in == "6.1.199-1"
    assert history.affected_versions() == ["6.1.199-1"]
    assert "reverted in 6.1.199-1" in history.summary()


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("6.1.170-3", "6.1.176-1"),
        ("6.1.9-1", "6.1.10-1"),
        ("6.12.107-1~deb12u1", "6.12.107-1"),
        ("6.5~rc4-1~exp1", "6.5.1-1~exp1"),
        ("6.1.192-2", "6.1.192-3"),
    ],
)
def test_debian_version_order(older: str, newer: str) -> None:
    assert changelog.debian_version_key(older) < changelog.debian_version_key(newer)


def test_not_a_changelog() -> None:
    with pytest.raises(HarnessError, match="lists no Debian kernel version"):
        changelog.parse("hello\n")


def test_release_history_reads_the_installed_package(tmp_path: Path) -> None:
    doc = tmp_path / "linux-image-6.1.0-57-amd64"
    doc.mkdir()
    with gzip.open(doc / "changelog.gz", "wt") as stream:
        stream.write(DEBIAN_61)
    history = changelog.release_history("6.1.0-57-amd64", doc_root=tmp_path)
    assert history.fix.first_version == "6.1.180-1"
    with pytest.raises(HarnessError, match=r"apt-get install linux-image-6\.1\.0-1-amd64"):
        changelog.release_history("6.1.0-1-amd64", doc_root=tmp_path)


def test_release_history_reads_an_unsigned_image(tmp_path: Path) -> None:
    """Debian's backports images come as linux-image-<release>-unsigned too (found with a
    6.12.107+deb12 image installed next to 6.1: `nvmf-harness history` said it had none)."""
    doc = tmp_path / "linux-image-6.12.107+deb12-amd64-unsigned"
    doc.mkdir()
    with gzip.open(doc / "changelog.Debian.gz", "wt") as stream:
        stream.write(DEBIAN_61)
    history = changelog.release_history("6.12.107+deb12-amd64", doc_root=tmp_path)
    assert history.changelog == str(doc / "changelog.Debian.gz")

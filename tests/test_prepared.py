"""The prepared kernel: how scripts/setup chooses it from apt's answers, the record it writes,
and what reading it says when something is missing (no apt, no root: apt-cache is a fake)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

import pytest

from harness.cli import main
from harness.core.errors import HarnessError
from harness.kernels import prepared

SECURITY = "http://deb.debian.org/debian-security bookworm-security/main amd64 Packages"
SOURCE_MADISON = f"""\
linux-source-6.1 |  6.1.192-3 | {SECURITY}
linux-source-6.1 |  6.1.192-2 | {SECURITY}
linux-source-6.1 |  6.1.170-3 | http://deb.debian.org/debian bookworm/main amd64 Packages
"""

SOURCE_POLICY = """\
linux-source-6.1:
  Installed: 6.1.192-2
  Candidate: 6.1.192-3
  Version table:
     6.1.192-3 500
        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
 *** 6.1.192-2 500
        100 /var/lib/dpkg/status
"""


def image_policy(versions: Mapping[str, tuple[str, str]]) -> str:
    return "".join(
        f"linux-image-{release}:\n  Installed: {installed or '(none)'}\n"
        f"  Candidate: {candidate or '(none)'}\n  Version table:\n     {candidate} 500\n"
        for release, (installed, candidate) in versions.items()
    )


TODAY = {
    "6.1.0-53-amd64": ("", "6.1.190-1"),
    "6.1.0-56-amd64": ("6.1.192-2", "6.1.192-2"),
    "6.1.0-57-amd64": ("", "6.1.192-3"),
}


class FakeAptCache:
    """Answers ``apt-cache ARGS`` from canned text and remembers what was asked."""

    def __init__(
        self,
        images: Mapping[str, tuple[str, str]] = TODAY,
        source_policy: str = SOURCE_POLICY,
        source_madison: str = SOURCE_MADISON,
    ) -> None:
        self.images = dict(images)
        self.source_policy = source_policy
        self.source_madison = source_madison
        self.asked: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str:
        self.asked.append(argv)
        if argv == ["madison", prepared.SOURCE_PACKAGE]:
            return self.source_madison
        if argv == ["policy", prepared.SOURCE_PACKAGE]:
            return self.source_policy
        if argv[0] == "search":
            return "".join(
                f"linux-image-{release} - Linux 6.1 for 64-bit PCs (signed)\n"
                for release in self.images
            )
        if argv[0] == "policy":
            wanted = {name.removeprefix("linux-image-") for name in argv[1:]}
            return image_policy({r: v for r, v in self.images.items() if r in wanted})
        raise AssertionError(f"unexpected apt-cache {argv}")


# --- parsing apt-cache ---------------------------------------------------------------------------


def test_parse_policy() -> None:
    text = SOURCE_POLICY + image_policy(TODAY)
    found = prepared.parse_policy(text)
    assert found["linux-source-6.1"] == ("6.1.192-2", "6.1.192-3")
    assert found["linux-image-6.1.0-57-amd64"] == ("", "6.1.192-3")
    assert found["linux-image-6.1.0-56-amd64"] == ("6.1.192-2", "6.1.192-2")


def test_parse_madison() -> None:
    assert prepared.parse_madison(SOURCE_MADISON) == ["6.1.192-3", "6.1.192-2", "6.1.170-3"]
    assert prepared.parse_madison("") == []


def test_match_release_takes_the_image_of_the_source_version() -> None:
    versions = {"6.1.0-56-amd64": "6.1.192-2", "6.1.0-57-amd64": "6.1.192-3"}
    assert prepared.match_release("6.1.192-3", versions) == "6.1.0-57-amd64"
    assert prepared.match_release("6.1.192-2", versions) == "6.1.0-56-amd64"
    assert prepared.match_release("6.1.170-3", versions) is None


# --- choosing ------------------------------------------------------------------------------------


def test_choose_the_release_matching_the_source_candidate() -> None:
    apt = FakeAptCache()
    choice = prepared.choose("", apt)
    assert (choice.release, choice.version) == ("6.1.0-57-amd64", "6.1.192-3")
    assert "linux-source-6.1 6.1.192-3" in choice.chosen_by


def test_choose_ignores_images_of_other_series_and_unsigned_ones() -> None:
    images = {
        **TODAY,
        "6.1.0-57-amd64-unsigned": ("", "6.1.192-3"),
        "6.12.107+deb12-amd64": ("", "6.1.192-3"),  # absurd version: must still not match
    }
    assert prepared.choose("", FakeAptCache(images)).release == "6.1.0-57-amd64"


def test_choose_a_requested_release_at_its_installed_version() -> None:
    choice = prepared.choose("6.1.0-56-amd64", FakeAptCache())
    assert (choice.release, choice.version) == ("6.1.0-56-amd64", "6.1.192-2")
    assert "requested" in choice.chosen_by


def test_choose_a_requested_release_whose_source_is_gone() -> None:
    with pytest.raises(HarnessError) as info:
        prepared.choose("6.1.0-53-amd64", FakeAptCache())  # 6.1.190-1: not offered
    message = str(info.value)
    assert "linux-source-6.1 6.1.190-1" in message
    assert "6.1.192-3, 6.1.192-2, 6.1.170-3" in message


def test_choose_an_unknown_release() -> None:
    with pytest.raises(HarnessError, match=re.escape("no package linux-image-6.1.0-99-amd64")):
        prepared.choose("6.1.0-99-amd64", FakeAptCache())


def test_choose_refuses_a_release_that_is_not_a_name() -> None:
    with pytest.raises(HarnessError, match="not a kernel release"):
        prepared.choose("6.1; reboot", FakeAptCache())


def test_choose_with_no_matching_image_names_the_way_out() -> None:
    apt = FakeAptCache(images={"6.1.0-56-amd64": ("6.1.192-2", "6.1.192-2")})
    with pytest.raises(HarnessError) as info:
        prepared.choose("", apt)
    assert "6.1.192-3" in str(info.value)
    assert "NVMF_HARNESS_RELEASE=" in str(info.value)


def test_choose_without_package_lists() -> None:
    apt = FakeAptCache(source_policy="", source_madison="")
    with pytest.raises(HarnessError, match="apt-get update"):
        prepared.choose("", apt)


# --- checking what is installed ------------------------------------------------------------------


def installed(release: str, version: str) -> dict[str, str]:
    return {package: version for package in prepared.packages_of(release)}


def boot_with(tmp_path: Path, release: str) -> Path:
    boot = tmp_path / "boot"
    boot.mkdir(exist_ok=True)
    (boot / f"vmlinuz-{release}").write_text("")
    return boot


def test_check_installed_accepts_one_version(tmp_path: Path) -> None:
    boot = boot_with(tmp_path, "6.1.0-57-amd64")
    prepared.check_installed("6.1.0-57-amd64", installed("6.1.0-57-amd64", "6.1.192-3"), boot)


def test_check_installed_names_the_missing_packages(tmp_path: Path) -> None:
    versions = {"linux-image-6.1.0-57-amd64": "6.1.192-3"}
    with pytest.raises(HarnessError) as info:
        prepared.check_installed("6.1.0-57-amd64", versions, boot_with(tmp_path, "6.1.0-57-amd64"))
    assert "apt-get install linux-headers-6.1.0-57-amd64 linux-source-6.1" in str(info.value)


def test_check_installed_refuses_a_source_of_another_version(tmp_path: Path) -> None:
    """The situation of a machine set up before: image 6.1.192-2, source 6.1.192-3."""
    versions = installed("6.1.0-56-amd64", "6.1.192-2") | {"linux-source-6.1": "6.1.192-3"}
    with pytest.raises(HarnessError) as info:
        prepared.check_installed("6.1.0-56-amd64", versions, boot_with(tmp_path, "6.1.0-56-amd64"))
    assert "linux-source-6.1 6.1.192-3" in str(info.value)
    assert "linux-source-6.1=6.1.192-2" in str(info.value)


def test_check_installed_without_the_image_file(tmp_path: Path) -> None:
    boot = boot_with(tmp_path, "6.1.0-56-amd64")
    with pytest.raises(HarnessError, match=re.escape("vmlinuz-6.1.0-57-amd64 is missing")):
        prepared.check_installed("6.1.0-57-amd64", installed("6.1.0-57-amd64", "6.1.192-3"), boot)


# --- the record ----------------------------------------------------------------------------------


def test_record_round_trip_and_origin(tmp_path: Path) -> None:
    boot = boot_with(tmp_path, "6.1.0-57-amd64")
    (boot / "vmlinuz-6.12.107+deb12-amd64").write_text("")
    record = prepared.PreparedKernel(
        release="6.1.0-57-amd64",
        image=str(boot / "vmlinuz-6.1.0-57-amd64"),
        packages=installed("6.1.0-57-amd64", "6.1.192-3"),
        source_tarball="/usr/src/linux-source-6.1.tar.xz",
        chosen_by="matches linux-source-6.1 6.1.192-3",
        prepared_at="2026-12-01T02:00:00+0000",
    )
    path = tmp_path / "build" / "prepared-kernel.json"
    prepared.write(record, path)
    assert json.loads(path.read_text())["release"] == "6.1.0-57-amd64"
    assert prepared.load(path) == record
    assert record.source_version == "6.1.192-3"
    assert prepared.prepared_release(path) == "6.1.0-57-amd64"
    assert prepared.kernel_origin(record.image, path) == prepared.ORIGIN_PREPARED
    other = str(boot / "vmlinuz-6.12.107+deb12-amd64")
    assert prepared.kernel_origin(other, path) == prepared.ORIGIN_ARGUMENT
    line = prepared.describe(record)
    assert "6.1.0-57-amd64" in line and "6.1.192-3/6.1.192-3/6.1.192-3" in line


def test_load_without_a_record(tmp_path: Path) -> None:
    path = tmp_path / "prepared-kernel.json"
    with pytest.raises(HarnessError, match="sudo scripts/setup"):
        prepared.load(path)
    assert prepared.prepared_release(path) is None
    assert prepared.kernel_origin("/boot/vmlinuz-6.1.0-57-amd64", path) == "--kernel"


def test_load_a_broken_record(tmp_path: Path) -> None:
    path = tmp_path / "prepared-kernel.json"
    path.write_text('{"release": "6.1.0-57-amd64"}')
    with pytest.raises(HarnessError, match="cannot read"):
        prepared.load(path)


def test_kernel_cli_says_one_line_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernel", "choose", "6.1; reboot"]) == 2  # refused before apt is asked
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a kernel release" in err[0]


def test_record_installed_leaves_a_same_record_alone_on_a_read_only_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/setup run again in the VM (the checkout is mounted read-only there) must find
    the record it wrote on the host and change nothing; another kernel is refused in one line."""
    boot = boot_with(tmp_path, "6.1.0-57-amd64")
    boot_with(tmp_path, "6.1.0-56-amd64")
    monkeypatch.setattr(
        prepared, "installed_versions", lambda packages: installed("6.1.0-57-amd64", "6.1.192-3")
    )
    path = tmp_path / "build" / "prepared-kernel.json"
    first = prepared.record_installed("6.1.0-57-amd64", "matches", path, boot)
    path.parent.chmod(0o555)
    monkeypatch.setattr(prepared, "write", _refuse_write)
    try:
        again = prepared.record_installed("6.1.0-57-amd64", "matches", path, boot)
        assert again == first
        monkeypatch.setattr(
            prepared,
            "installed_versions",
            lambda packages: installed("6.1.0-56-amd64", "6.1.192-2"),
        )
        with pytest.raises(HarnessError, match=r"cannot write .*Read-only file system"):
            prepared.record_installed("6.1.0-56-amd64", "matches", path, boot)
    finally:
        path.parent.chmod(0o755)


def _refuse_write(record: prepared.PreparedKernel, path: Path) -> None:
    raise OSError(30, "Read-only file system", str(path))

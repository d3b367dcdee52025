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
from harness.kernels import hosts, prepared

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
    """Answers ``apt-cache ARGS`` from canned text and remembers what was asked. ``search``
    answers every image it has (the real one filters by the regex; choose() must not rely
    on it)."""

    def __init__(
        self,
        images: Mapping[str, tuple[str, str]] = TODAY,
        source_policy: str = SOURCE_POLICY,
        source_madison: str = SOURCE_MADISON,
        source_package: str = "linux-source-6.1",
    ) -> None:
        self.images = dict(images)
        self.source_policy = source_policy
        self.source_madison = source_madison
        self.source_package = source_package
        self.asked: list[list[str]] = []

    def __call__(self, argv: list[str]) -> str:
        self.asked.append(argv)
        if argv == ["madison", self.source_package]:
            return self.source_madison
        if argv == ["policy", self.source_package]:
            return self.source_policy
        if argv[0] in ("madison", "policy") and argv[1].startswith("linux-source-"):
            return ""  # another kernel line's source: not in these apt sources
        if argv[0] == "search":
            return "".join(
                f"linux-image-{release} - Linux for 64-bit PCs (signed)\n"
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
    choice = prepared.choose("", apt, hosts.BOOKWORM)
    assert (choice.release, choice.version) == ("6.1.0-57-amd64", "6.1.192-3")
    assert "linux-source-6.1 6.1.192-3" in choice.chosen_by


def test_choose_ignores_images_of_other_series_and_unsigned_ones() -> None:
    images = {
        **TODAY,
        "6.1.0-57-amd64-unsigned": ("", "6.1.192-3"),
        "6.12.107+deb12-amd64": ("", "6.1.192-3"),  # absurd version: must still not match
    }
    assert prepared.choose("", FakeAptCache(images), hosts.BOOKWORM).release == "6.1.0-57-amd64"


def test_choose_a_requested_release_at_its_installed_version() -> None:
    choice = prepared.choose("6.1.0-56-amd64", FakeAptCache(), hosts.BOOKWORM)
    assert (choice.release, choice.version) == ("6.1.0-56-amd64", "6.1.192-2")
    assert "requested" in choice.chosen_by


def test_choose_a_requested_release_whose_source_is_gone() -> None:
    with pytest.raises(HarnessError) as info:
        prepared.choose("6.1.0-53-amd64", FakeAptCache(), hosts.BOOKWORM)  # 6.1.190-1: not offered
    message = str(info.value)
    assert "linux-source-6.1 6.1.190-1" in message
    assert "6.1.192-3, 6.1.192-2, 6.1.170-3" in message


def test_choose_an_unknown_release() -> None:
    with pytest.raises(HarnessError, match=re.escape("no package linux-image-6.1.0-99-amd64")):
        prepared.choose("6.1.0-99-amd64", FakeAptCache(), hosts.BOOKWORM)


def test_choose_refuses_a_release_that_is_not_a_name() -> None:
    with pytest.raises(HarnessError, match="not a kernel release"):
        prepared.choose("6.1; reboot", FakeAptCache(), hosts.BOOKWORM)


def test_choose_with_no_matching_image_names_the_way_out() -> None:
    apt = FakeAptCache(images={"6.1.0-56-amd64": ("6.1.192-2", "6.1.192-2")})
    with pytest.raises(HarnessError) as info:
        prepared.choose("", apt, hosts.BOOKWORM)
    assert "6.1.192-3" in str(info.value)
    assert "NVMF_HARNESS_RELEASE=" in str(info.value)


def test_choose_without_package_lists() -> None:
    apt = FakeAptCache(source_policy="", source_madison="")
    with pytest.raises(HarnessError, match="apt-get update"):
        prepared.choose("", apt, hosts.BOOKWORM)


# --- Debian 13 (trixie): linux-image-6.12.NN+deb13-amd64 and linux-source-6.12 ------------------

TRIXIE_SECURITY = "http://deb.debian.org/debian-security trixie-security/main amd64 Packages"
TRIXIE_SOURCE_MADISON = f"""\
linux-source-6.12 | 6.12.117-1 | {TRIXIE_SECURITY}
linux-source-6.12 | 6.12.115-1 | http://deb.debian.org/debian trixie/main amd64 Packages
"""
TRIXIE_SOURCE_POLICY = """\
linux-source-6.12:
  Installed: (none)
  Candidate: 6.12.117-1
  Version table:
     6.12.117-1 500
        500 http://deb.debian.org/debian-security trixie-security/main amd64 Packages
     6.12.115-1 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
"""
TRIXIE_IMAGES = {
    "6.12.115+deb13-amd64": ("", "6.12.115-1"),
    "6.12.117+deb13-amd64": ("", "6.12.117-1"),
    # Not the generic kernel, or not trixie's own: must never be chosen.
    "6.12.117+deb13-amd64-unsigned": ("", "6.12.117-1"),
    "6.12.117+deb13-cloud-amd64": ("", "6.12.117-1"),
    "6.12.117+deb13-rt-amd64": ("", "6.12.117-1"),
    "6.12.117+deb13-amd64-dbg": ("", "6.12.117-1"),
    "7.3.4+bpo-amd64": ("", "6.12.117-1"),  # absurd version: must still not match
    "6.1.0-57-amd64": ("", "6.12.117-1"),
}


def trixie_apt(images: Mapping[str, tuple[str, str]] = TRIXIE_IMAGES) -> FakeAptCache:
    return FakeAptCache(
        images,
        source_policy=TRIXIE_SOURCE_POLICY,
        source_madison=TRIXIE_SOURCE_MADISON,
        source_package="linux-source-6.12",
    )


def test_choose_on_trixie_the_image_of_linux_source_6_12s_candidate() -> None:
    apt = trixie_apt()
    choice = prepared.choose("", apt, hosts.TRIXIE)
    assert (choice.release, choice.version) == ("6.12.117+deb13-amd64", "6.12.117-1")
    assert choice.chosen_by == "matches linux-source-6.12 6.12.117-1"
    assert ["search", "--names-only", hosts.TRIXIE.search_regex] in apt.asked
    assert ["policy", "linux-source-6.1"] not in apt.asked


def test_choose_on_trixie_a_requested_older_release() -> None:
    choice = prepared.choose("6.12.115+deb13-amd64", trixie_apt(), hosts.TRIXIE)
    assert (choice.release, choice.version) == ("6.12.115+deb13-amd64", "6.12.115-1")


def test_choose_on_trixie_a_requested_6_1_release_has_no_source() -> None:
    """Debian 13 has no linux-source-6.1: a bookworm release is refused in one line."""
    with pytest.raises(HarnessError) as info:
        prepared.choose("6.1.0-57-amd64", trixie_apt(), hosts.TRIXIE)
    assert "linux-source-6.1 6.12.117-1 (the source of 6.1.0-57-amd64)" in str(info.value)
    assert "offered: none" in str(info.value)


def test_choose_on_trixie_without_a_matching_image() -> None:
    images = {"6.12.115+deb13-amd64": ("", "6.12.115-1")}
    with pytest.raises(HarnessError) as info:
        prepared.choose("", trixie_apt(images), hosts.TRIXIE)
    message = str(info.value)
    assert "no linux-image-6.12.NN+deb13-amd64 in the apt sources" in message
    assert "linux-source-6.12's version 6.12.117-1" in message
    assert "NVMF_HARNESS_RELEASE=6.12.NN+deb13-amd64" in message


def test_choose_on_trixie_without_package_lists() -> None:
    apt = FakeAptCache({}, source_policy="", source_madison="", source_package="linux-source-6.12")
    with pytest.raises(HarnessError, match=r"linux-source-6\.12 is not in .*apt-get update"):
        prepared.choose("", apt, hosts.TRIXIE)


def test_choose_on_bookworm_ignores_trixie_images() -> None:
    images = {**TODAY, "6.12.117+deb13-amd64": ("", "6.1.192-3")}
    assert prepared.choose("", FakeAptCache(images), hosts.BOOKWORM).release == "6.1.0-57-amd64"


def test_packages_and_tarball_of_a_trixie_release(tmp_path: Path) -> None:
    release = "6.12.117+deb13-amd64"
    assert prepared.packages_of(release) == [
        "linux-image-6.12.117+deb13-amd64",
        "linux-headers-6.12.117+deb13-amd64",
        "linux-source-6.12",
    ]
    boot = boot_with(tmp_path, release)
    prepared.check_installed(release, installed(release, "6.12.117-1"), boot)
    versions = installed(release, "6.12.117-1") | {"linux-source-6.12": "6.12.115-1"}
    with pytest.raises(HarnessError, match=re.escape("linux-source-6.12=6.12.117-1")):
        prepared.check_installed(release, versions, boot)


def test_record_installed_on_trixie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release = "6.12.117+deb13-amd64"
    boot = boot_with(tmp_path, release)
    monkeypatch.setattr(
        prepared, "installed_versions", lambda packages: installed(release, "6.12.117-1")
    )
    record = prepared.record_installed(release, "matches", tmp_path / "rec.json", boot)
    assert record.source_tarball == "/usr/src/linux-source-6.12.tar.xz"
    assert record.source_version == "6.12.117-1"
    assert record.packages["linux-source-6.12"] == "6.12.117-1"
    assert "6.12.117-1/6.12.117-1/6.12.117-1" in prepared.describe(record)


def test_kernel_packages_cli(capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/setup installs what this prints (one package a line)."""
    assert main(["kernel", "packages", "6.12.117+deb13-amd64"]) == 0
    assert capsys.readouterr().out.split() == [
        "linux-image-6.12.117+deb13-amd64",
        "linux-headers-6.12.117+deb13-amd64",
        "linux-source-6.12",
    ]


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

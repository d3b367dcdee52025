"""harness.kernels.releases: packages from apt/dpkg (faked), changelog versions, the source cache,
and the source facts read from small trees with the real text of both bio_check_eod()s."""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.core.errors import HarnessError, ToolError
from harness.core.procs import ProcResult
from harness.kernels import releases, source_check
from tests.test_kbuild import FIXED_SOURCE, UNFIXED_SOURCE

# block/blk-core.c bio_check_eod() of Debian 6.1.170-3 (linux-source-6.1), before the commit
# "block: make bio_check_eod work for zero sized devices".
EOD_6_1_170 = """\
static inline int bio_check_eod(struct bio *bio)
{
\tsector_t maxsector = bdev_nr_sectors(bio->bi_bdev);
\tunsigned int nr_sectors = bio_sectors(bio);

\tif (nr_sectors && maxsector &&
\t    (nr_sectors > maxsector ||
\t     bio->bi_iter.bi_sector > maxsector - nr_sectors)) {
\t\tpr_info_ratelimited("%s: attempt to access beyond end of device\\n"
\t\t\t\t    "%pg: rw=%d, sector=%llu, nr_sectors = %u limit=%llu\\n",
\t\t\t\t    current->comm, bio->bi_bdev, bio->bi_opf,
\t\t\t\t    bio->bi_iter.bi_sector, nr_sectors, maxsector);
\t\treturn -EIO;
\t}
\treturn 0;
}
"""
# The same function in Debian 6.1.192-3 (and 6.12.107), with that commit.
EOD_6_1_192 = EOD_6_1_170.replace("if (nr_sectors && maxsector &&\n", "if (nr_sectors &&\n")
BLK_CORE_HEAD = "// SPDX-License-Identifier: GPL-2.0\n#include <linux/bio.h>\n\n"
BLK_CORE_TAIL = "\n/*\n * Remap block n of partition p to block n+start(p) of the disk.\n */\n"
MAKEFILE = (
    "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = {sub}\n"
    "EXTRAVERSION =\nNAME = Curry Ramen\n"
)
REL = "6.1.0-47-amd64"


def ok(stdout: str = "") -> ProcResult:
    return ProcResult(("x",), 0, stdout, "")


def failed(stderr: str = "not found") -> ProcResult:
    return ProcResult(("x",), 1, "", stderr)


class FakeApt:
    """dpkg-query and apt-cache madison answers from dictionaries; records every call."""

    def __init__(
        self, installed: dict[str, str], available: dict[str, list[str]] | None = None
    ) -> None:
        self.installed = installed
        self.available = available or {}
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> ProcResult:
        args = list(argv)
        self.calls.append(args)
        assert timeout_s > 0
        if args[0] == "dpkg-query":
            pattern = args[-1]
            if pattern.endswith("*"):
                lines = [f"ii  {name}" for name in self.installed if name.startswith(pattern[:-1])]
                return ok("\n".join(lines) + "\n")
            if pattern in self.installed:
                return ok(f"ii {self.installed[pattern]}\n")
            return failed(f"dpkg-query: no packages found matching {pattern}")
        if args[:2] == ["apt-cache", "madison"]:
            package = args[2]
            lines = [
                f"{package} | {v} | http://deb.debian.org/debian bookworm/main amd64 Packages"
                for v in self.available.get(package, [])
            ]
            return ok("\n".join(lines) + ("\n" if lines else ""))
        raise AssertionError(f"unexpected command {args}")


def write_tree(root: Path, eod: str, multipath: str, sublevel: int = 170) -> Path:
    tree = root / "linux-source-6.1"
    (tree / "block").mkdir(parents=True)
    (tree / "drivers" / "nvme" / "host").mkdir(parents=True)
    (tree / "Makefile").write_text(MAKEFILE.format(sub=sublevel))
    (tree / releases.BLK_CORE).write_text(BLK_CORE_HEAD + eod + BLK_CORE_TAIL)
    (tree / releases.MULTIPATH_C).write_text(multipath)
    (tree / "block" / "Makefile").write_text("obj-y += blk-core.o\n")  # not the top one
    return tree


# --- the end-of-device check (harness.kernels.source_check, as releases reads it) ------------


def test_6_1_170_skips_zero_size() -> None:
    shape = source_check.eod_shape(BLK_CORE_HEAD + EOD_6_1_170 + BLK_CORE_TAIL)
    assert shape == source_check.EodShape.SKIP_ZERO_SIZE


def test_6_1_192_fails_with_a_line() -> None:
    shape = source_check.eod_shape(BLK_CORE_HEAD + EOD_6_1_192 + BLK_CORE_TAIL)
    assert shape == source_check.EodShape.FAIL_WITH_LINE


def test_eod_shape_reads_only_bio_check_eod() -> None:
    other = "static int other(void)\n{\n\tif (nr_sectors && maxsector && x)\n\t\treturn 1;\n}\n"
    assert source_check.eod_shape(other + EOD_6_1_192) == source_check.EodShape.FAIL_WITH_LINE


@pytest.mark.parametrize(
    "text",
    [
        "int main(void) { return 0; }\n",
        EOD_6_1_192.replace("if (nr_sectors &&\n\t    (nr_sectors > maxsector", "if (1"),
    ],
)
def test_unknown_bio_check_eod_shape_is_an_error(text: str) -> None:
    with pytest.raises(ToolError):
        source_check.eod_shape(text)


def test_makefile_version() -> None:
    assert releases.makefile_version(MAKEFILE.format(sub=192)) == ("6.1.192", 192)
    with pytest.raises(ToolError, match="SUBLEVEL"):
        releases.makefile_version("VERSION = 6\nPATCHLEVEL = 1\n")


@pytest.mark.parametrize(
    ("eod", "multipath", "sublevel", "fix", "shape", "prediction"),
    [
        (EOD_6_1_170, UNFIXED_SOURCE, 170, False, "skip-zero-size", "not affected"),
        (EOD_6_1_192, FIXED_SOURCE, 192, True, "fail-with-line", "fixed"),
        (EOD_6_1_192, UNFIXED_SOURCE, 192, False, "fail-with-line", "affected (with a line)"),
    ],
)
def test_facts_of_tree(
    tmp_path: Path,
    eod: str,
    multipath: str,
    sublevel: int,
    fix: bool,
    shape: str,
    prediction: str,
) -> None:
    tree = write_tree(tmp_path, eod, multipath, sublevel)
    facts = releases.facts_of_tree(tree, "t.tar.xz")
    assert facts == releases.SourceFacts(
        "t.tar.xz", f"6.1.{sublevel}", sublevel, fix, shape, prediction
    )
    assert facts.cannot_fail == (shape == "skip-zero-size")


def test_source_facts_from_a_tarball_extracts_three_files_and_caches(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", EOD_6_1_170, UNFIXED_SOURCE)
    tarball = tmp_path / "pkg" / "linux-source-6.1.tar.xz"
    tarball.parent.mkdir()
    subprocess.run(
        ["tar", "-cJf", str(tarball), "-C", str(tmp_path / "src"), "linux-source-6.1"],
        check=True,
        timeout=60,
    )
    facts = releases.source_facts(tarball)
    assert (facts.version, facts.has_fix, facts.eod_shape) == ("6.1.170", False, "skip-zero-size")
    assert (tarball.parent / releases.FACTS_FILE).is_file()
    assert not (tarball.parent / "facts-extract").exists()

    def no_tar(argv: Sequence[str], timeout_s: float) -> ProcResult:
        raise AssertionError("a cached fact must not extract again")

    assert releases.source_facts(tarball, runner=no_tar) == facts


def test_extract_takes_only_the_top_makefile(tmp_path: Path) -> None:
    write_tree(tmp_path / "src", EOD_6_1_192, FIXED_SOURCE)
    tarball = tmp_path / "s.tar.xz"
    subprocess.run(
        ["tar", "-cJf", str(tarball), "-C", str(tmp_path / "src"), "linux-source-6.1"],
        check=True,
        timeout=60,
    )
    tree = releases.extract_fact_files(tarball, tmp_path / "out")
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert files == ["Makefile", releases.BLK_CORE, releases.MULTIPATH_C]


# --- packages ------------------------------------------------------------------------------


def test_lookup_of_an_installed_release() -> None:
    apt = FakeApt(
        installed={f"linux-image-{REL}": "6.1.170-3", f"linux-headers-{REL}": "6.1.170-3"},
        available={"linux-source-6.1": ["6.1.192-3", "6.1.176-1", "6.1.170-3"]},
    )
    release = releases.lookup(REL, runner=apt)
    assert release.debian_version == "6.1.170-3"
    assert release.image_installed and release.headers_installed
    assert release.source_spec == "linux-source-6.1=6.1.170-3"
    assert release.upstream_version == "6.1.170"
    assert release.install_command() is None
    assert release.kernel_image == Path(f"/boot/vmlinuz-{REL}")


def test_lookup_of_a_6_12_release_in_apt_only(tmp_path: Path) -> None:
    rel = "6.12.107+deb12-amd64"
    apt = FakeApt(
        installed={},
        available={
            f"linux-image-{rel}": ["6.12.107-1~deb12u1"],
            "linux-source-6.12": ["6.12.117-1~deb12u1", "6.12.111-1~deb12u1"],
        },
    )
    release = releases.lookup(rel, runner=apt)
    assert release.source_package == "linux-source-6.12"
    assert release.source_version == ""  # apt has no 6.12.107 source
    assert release.install_command() == (f"apt-get install linux-image-{rel} linux-headers-{rel}")
    with pytest.raises(HarnessError, match=r"versions in apt: 6\.12\.117") as caught:
        releases.fetch_source(release, tmp_path, runner=apt)
    assert caught.value.hint is not None
    assert caught.value.hint.startswith("apt-get download linux-source-6.12=6.12.107-1~deb12u1")


def test_lookup_finds_the_unsigned_image() -> None:
    apt = FakeApt(installed={f"linux-image-{REL}-unsigned": "6.1.170-3"})
    release = releases.lookup(REL, runner=apt)
    assert release.image_package == f"linux-image-{REL}-unsigned" and release.image_installed
    assert not release.headers_installed
    assert release.install_command() == f"apt-get install linux-headers-{REL}"


def test_lookup_of_an_unknown_release_says_apt_get_update() -> None:
    with pytest.raises(HarnessError, match="neither installed nor in apt") as caught:
        releases.lookup("6.1.0-99-amd64", runner=FakeApt({}), doc_root=Path("/nonexistent"))
    assert caught.value.hint is not None and "apt-get update" in caught.value.hint


def test_a_bad_release_name_is_refused() -> None:
    with pytest.raises(HarnessError, match="not a kernel release name"):
        releases.lookup("linux-image-amd64", runner=FakeApt({}))


@pytest.mark.parametrize(
    ("first_line", "version"),
    [
        (
            "linux-signed-amd64 (6.1.192+2) bookworm-security; urgency=high\n\n"
            "  * Sign kernel from linux 6.1.192-2\n",
            "6.1.192-2",
        ),
        ("linux (6.1.170-3) bookworm; urgency=medium\n", "6.1.170-3"),
    ],
)
def test_changelog_version(tmp_path: Path, first_line: str, version: str) -> None:
    doc = tmp_path / f"linux-image-{REL}"
    doc.mkdir()
    with gzip.open(doc / "changelog.gz", "wt") as stream:
        stream.write(first_line + "\n -- someone  Mon, 16 Nov 2026 11:17:40 +0100\n")
    assert releases.changelog_version(REL, tmp_path) == version
    release = releases.lookup(REL, runner=FakeApt({}), doc_root=tmp_path)
    assert release.debian_version == version and not release.image_installed


def test_installed_releases_need_the_image_in_boot(tmp_path: Path) -> None:
    apt = FakeApt(
        installed={
            "linux-image-6.1.0-56-amd64": "6.1.192-2",
            "linux-image-6.1.0-47-amd64": "6.1.170-3",
            "linux-image-6.12.107+deb12-amd64": "6.12.107-1~deb12u1",
            "linux-image-amd64": "6.1.192-2",  # the meta package
            "linux-image-6.1.0-9-amd64": "6.1.27-1",  # removed from /boot
        }
    )
    for rel in ("6.1.0-56-amd64", "6.1.0-47-amd64", "6.12.107+deb12-amd64"):
        (tmp_path / f"vmlinuz-{rel}").write_text("")
    found = releases.installed_releases(runner=apt, boot=tmp_path)
    assert found == ["6.1.0-47-amd64", "6.1.0-56-amd64", "6.12.107+deb12-amd64"]


def test_require_installed_hint_is_one_apt_command() -> None:
    release = releases.lookup(REL, runner=FakeApt({}, {f"linux-image-{REL}": ["6.1.170-3"]}))
    with pytest.raises(HarnessError, match="image and headers not installed") as caught:
        releases.require_installed(release)
    assert caught.value.hint == f"apt-get install linux-image-{REL} linux-headers-{REL}"


def test_series_of() -> None:
    assert releases.series_of("6.12.107-1~deb12u1") == "6.12"
    assert releases.series_of("6.1.0-47-amd64") == "6.1"
    with pytest.raises(HarnessError):
        releases.series_of("amd64")


# --- the source cache ----------------------------------------------------------------------


class FakeDownloads(FakeApt):
    """apt-get download writes a .deb where env -C says; dpkg-deb -x unpacks a tarball."""

    def __init__(self, fail_download: bool = False) -> None:
        super().__init__(
            installed={f"linux-image-{REL}": "6.1.170-3", f"linux-headers-{REL}": "6.1.170-3"},
            available={"linux-source-6.1": ["6.1.170-3"]},
        )
        self.fail_download = fail_download

    def __call__(self, argv: Sequence[str], timeout_s: float) -> ProcResult:
        args = list(argv)
        if args[0] == "env":
            self.calls.append(args)
            assert args[1] == "-C" and args[3:5] == ["apt-get", "download"]
            if self.fail_download:
                return failed("E: Can't find a source to download version '6.1.170-3'")
            package, version = args[5].split("=")
            (Path(args[2]) / f"{package}_{version}_all.deb").write_text("deb")
            return ok()
        if args[0] == "dpkg-deb":
            self.calls.append(args)
            src = Path(args[3]) / "usr" / "src"
            src.mkdir(parents=True)
            (src / "linux-source-6.1.tar.xz").write_text("tarball")
            return ok()
        return super().__call__(argv, timeout_s)


def test_fetch_source_downloads_once(tmp_path: Path) -> None:
    apt = FakeDownloads()
    release = releases.lookup(REL, runner=apt)
    fetched = releases.fetch_source(release, tmp_path, runner=apt)
    assert fetched.downloaded and fetched.version == "6.1.170-3"
    assert fetched.tarball.read_text() == "tarball"
    assert fetched.tarball.is_relative_to(tmp_path / "linux-source-6.1_6.1.170-3")
    assert not list(tmp_path.rglob("*.deb"))  # removed after the unpack
    before = len(apt.calls)
    again = releases.fetch_source(release, tmp_path, runner=apt)
    assert not again.downloaded and again.tarball == fetched.tarball
    assert len(apt.calls) == before


def test_fetch_source_failure_hint_is_the_apt_command(tmp_path: Path) -> None:
    apt = FakeDownloads(fail_download=True)
    release = releases.lookup(REL, runner=apt)
    with pytest.raises(HarnessError, match="could not download") as caught:
        releases.fetch_source(release, tmp_path, runner=apt)
    assert caught.value.hint == "apt-get download linux-source-6.1=6.1.170-3"
    assert releases.cached_source(release, tmp_path) is None


def test_a_damaged_cached_tarball_is_fetched_again(tmp_path: Path) -> None:
    apt = FakeDownloads()
    release = releases.lookup(REL, runner=apt)
    fetched = releases.fetch_source(release, tmp_path, runner=apt)
    fetched.tarball.write_text("trunc")
    assert releases.cached_source(release, tmp_path) is None
    assert releases.fetch_source(release, tmp_path, runner=apt).downloaded


def test_another_source_version_only_when_apt_has_it() -> None:
    apt = FakeApt(
        installed={f"linux-image-{REL}": "6.1.170-3"},
        available={"linux-source-6.1": ["6.1.176-1"]},
    )
    release = releases.lookup(REL, runner=apt)
    assert release.source_version == ""
    nearest = releases.with_source_version(release, "6.1.176-1")
    assert nearest.source_spec == "linux-source-6.1=6.1.176-1"
    assert nearest.debian_version == "6.1.170-3"
    with pytest.raises(HarnessError, match=r"no linux-source-6\.1 6\.1\.999-1"):
        releases.with_source_version(release, "6.1.999-1")

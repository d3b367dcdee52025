"""Debian's archive without the host's apt: image layouts, the pool fallback, source specs.

The archive is faked (a PrivateApt whose index and pool are dicts of .deb files built here
with the real dpkg-deb); unpacking and depmod are the real tools.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.core.errors import ToolError, UsageError
from harness.kernels import debian_archive
from harness.kernels.debian_archive import PrivateApt

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None or shutil.which("depmod") is None,
    reason="needs dpkg-deb and depmod (Debian)",
)

REL_7X = "7.1.3+deb13-amd64"
REL_612 = "6.12.117+deb13-amd64"


def build_deb(workdir: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A real .deb of ``package`` ``version`` holding ``files`` (path -> content)."""
    tree = workdir / f"tree-{package}"
    for name, content in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_bytes(content)
    (tree / "DEBIAN").mkdir(parents=True, exist_ok=True)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: {version}\nArchitecture: amd64\n"
        "Maintainer: t <t@example.org>\nDescription: t\n"
    )
    deb = workdir / f"{package}.deb"
    subprocess.run(["dpkg-deb", "--build", str(tree), str(deb)], check=True, capture_output=True)
    return deb


class FakeApt(PrivateApt):
    """The index offers ``indexed`` (package -> version -> .deb); the pool ``pooled``."""

    def __init__(
        self, indexed: dict[str, dict[str, Path]], pooled: dict[str, dict[str, Path]]
    ) -> None:
        super().__init__(Path("/nonexistent"))
        self.indexed, self.pooled = indexed, pooled
        self.from_pool: list[str] = []

    def versions(self, package: str) -> list[str]:
        return sorted(self.indexed.get(package, {}), reverse=True)

    def download(self, package: str, version: str, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.indexed[package][version], directory))

    def download_from_pool(
        self, package: str, version: str, directory: Path, pool: str = "linux", arch: str = "amd64"
    ) -> Path:
        if version not in self.pooled.get(package, {}):
            raise ToolError(f"{package}={version} is in no suite's index and not in the pool")
        self.from_pool.append(package)
        directory.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.pooled[package][version], directory))


def split_image(tmp_path: Path, modules_indexed: bool) -> FakeApt:
    """Debian 13's 7.x layout: binary (vmlinuz in /boot), modules, base."""
    version = "7.1.3-1~bpo13+1"
    binary = build_deb(
        tmp_path, f"linux-binary-{REL_7X}", version, {f"boot/vmlinuz-{REL_7X}": b"kernel"}
    )
    mods = f"usr/lib/modules/{REL_7X}/kernel/drivers/nvme/host/nvme-core.ko.xz"
    modules = build_deb(tmp_path, f"linux-modules-{REL_7X}", version, {mods: b"ko"})
    base = build_deb(
        tmp_path, f"linux-base-{REL_7X}", version, {f"usr/lib/modules/{REL_7X}/modules.order": b""}
    )
    indexed = {f"linux-binary-{REL_7X}": {version: binary}}
    pooled = {
        f"linux-modules-{REL_7X}": {version: modules},
        f"linux-base-{REL_7X}": {version: base},
    }
    if modules_indexed:
        indexed.update(pooled)
        pooled = {}
    return FakeApt(indexed, pooled)


def test_a_split_7_x_image_takes_the_packages_no_index_lists_from_the_pool(
    tmp_path: Path,
) -> None:
    apt = split_image(tmp_path / "debs", modules_indexed=False)
    image = debian_archive.fetch_image(REL_7X, apt=apt, cache_dir=tmp_path / "cache")
    assert image.vmlinuz.read_bytes() == b"kernel" and image.vmlinuz.name == f"vmlinuz-{REL_7X}"
    assert image.modules_dir.name == REL_7X and (image.modules_dir / "modules.dep").is_file()
    assert image.unverified == (f"linux-modules-{REL_7X}", f"linux-base-{REL_7X}")
    assert debian_archive.image_source_spec(image) == "linux-source-7.1=7.1.3-1~bpo13+1"
    # the second call is the cache's, with the record of what was unverified
    again = debian_archive.fetch_image(REL_7X, apt=apt, cache_dir=tmp_path / "cache")
    assert again == image and apt.from_pool == [f"linux-modules-{REL_7X}", f"linux-base-{REL_7X}"]


def test_an_indexed_split_image_is_all_verified(tmp_path: Path) -> None:
    apt = split_image(tmp_path / "debs", modules_indexed=True)
    image = debian_archive.fetch_image(REL_7X, apt=apt, cache_dir=tmp_path / "cache")
    assert image.unverified == () and apt.from_pool == []


def test_a_6_12_image_is_one_package(tmp_path: Path) -> None:
    version = "6.12.117-1"
    deb = build_deb(
        tmp_path,
        f"linux-image-{REL_612}",
        version,
        {f"boot/vmlinuz-{REL_612}": b"k", f"lib/modules/{REL_612}/modules.order": b""},
    )
    apt = FakeApt({f"linux-image-{REL_612}": {version: deb}}, {})
    image = debian_archive.fetch_image(REL_612, apt=apt, cache_dir=tmp_path / "cache")
    assert image.modules_dir.parent.parent.name == "lib"  # root/lib/modules/<release>
    assert (image.modules_dir / "modules.dep").is_file()
    assert debian_archive.image_source_spec(image) == "linux-source-6.12=6.12.117-1"


def test_an_image_no_suite_offers_is_one_usage_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        debian_archive.fetch_image(REL_7X, apt=FakeApt({}, {}), cache_dir=tmp_path)
    assert "linux-binary-" in str(caught.value) and "linux-image-" in str(caught.value)


def test_a_source_version_no_index_lists_comes_from_the_pool(tmp_path: Path) -> None:
    version = "7.1.3-1~bpo13+1"
    deb = build_deb(
        tmp_path, "linux-source-7.1", version, {"usr/src/linux-source-7.1.tar.xz": b"tarball"}
    )
    apt = FakeApt({"linux-source-7.1": {}}, {"linux-source-7.1": {version: deb}})
    fetched = debian_archive.fetch_source(
        f"linux-source-7.1={version}", apt=apt, cache_dir=tmp_path / "cache"
    )
    assert fetched.tarball.read_bytes() == b"tarball" and apt.from_pool == ["linux-source-7.1"]
    record = (fetched.tarball.parents[3] / "source.json").read_text()
    assert '"verified_by_index": false' in record
    # without a version the index decides, and it offers nothing: one line naming the suites
    with pytest.raises(UsageError):
        debian_archive.fetch_source("linux-source-7.1", apt=apt, cache_dir=tmp_path / "c2")


def test_the_pool_download_checks_the_debs_own_name_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """download_from_pool against a file:// 'mirror': the right .deb is taken, another
    package under the expected name is refused, a missing one is one line."""
    version = "7.1.3-1~bpo13+1"
    mirror = tmp_path / "mirror"
    pool = mirror / "pool" / "main" / "l" / "linux"
    pool.mkdir(parents=True)
    good = build_deb(tmp_path, f"linux-base-{REL_7X}", version, {"x": b"1"})
    shutil.copy(good, pool / f"linux-base-{REL_7X}_{version}_amd64.deb")
    wrong = build_deb(tmp_path, "something-else", version, {"y": b"2"})
    shutil.copy(wrong, pool / f"linux-modules-{REL_7X}_{version}_amd64.deb")
    monkeypatch.setattr(debian_archive, "MIRROR", mirror.as_uri())
    apt = PrivateApt(tmp_path / "apt")
    deb = apt.download_from_pool(f"linux-base-{REL_7X}", version, tmp_path / "d")
    assert deb.name == f"linux-base-{REL_7X}_{version}_amd64.deb"
    with pytest.raises(ToolError, match="is not linux-modules"):
        apt.download_from_pool(f"linux-modules-{REL_7X}", version, tmp_path / "d")
    with pytest.raises(ToolError, match="not in the pool"):
        apt.download_from_pool("linux-source-7.1", version, tmp_path / "d", arch="all")
    assert not list((tmp_path / "d").glob("*.partial"))

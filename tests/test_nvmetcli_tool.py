"""Debian's nvmetcli fetched from sid and unpacked under build/tools/ (never installed): the
wrapper, the one-time unpack, and one line when it cannot run. The private apt is a fake; the
.deb is built here with dpkg-deb (no network)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.bed.module_records import sha256_of
from harness.core import procs
from harness.core.errors import ToolError, UsageError
from harness.kernels import nvmetcli_tool

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


def build_deb(tmp_path: Path, version: str = "0.9-1") -> Path:
    """A .deb laid out as Debian's nvmetcli 0.9-1: usr/bin/nvmetcli and the nvmet package."""
    tree = tmp_path / "pkg"
    site = tree / "usr" / "lib" / "python3" / "dist-packages"
    (site / "nvmet").mkdir(parents=True)
    (site / "nvmet" / "__init__.py").write_text("")
    (site / "nvmet" / "nvme.py").write_text("")
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "bin" / "nvmetcli").write_text("#! /usr/bin/python3\nimport configshell\n")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        f"Package: nvmetcli\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: x <x@example.org>\nDescription: test\n"
    )
    deb = tmp_path / f"nvmetcli_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return deb


class FakeApt:
    """The private apt: offers ``versions`` of nvmetcli and 'downloads' a built .deb; the
    pool has ``pool_deb`` (None: not found)."""

    def __init__(self, deb: Path | None, versions: list[str], pool_deb: Path | None = None) -> None:
        self.deb = deb
        self.offered = versions
        self.pool_deb = pool_deb
        self.downloads = 0

    def download_from_pool(
        self, package: str, version: str, directory: Path, pool: str, arch: str
    ) -> Path:
        assert (package, version, pool, arch) == ("nvmetcli", "0.9-1", "nvmetcli", "all")
        if self.pool_deb is None:
            raise ToolError("nvmetcli=0.9-1 is in no suite's index and not in the pool")
        self.downloads += 1
        directory.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.pool_deb, directory / self.pool_deb.name))

    def versions(self, package: str) -> list[str]:
        assert package == "nvmetcli"
        return self.offered

    def download(self, package: str, version: str, directory: Path) -> Path:
        assert self.deb is not None
        self.downloads += 1
        directory.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.deb, directory / self.deb.name))


def test_wrapper_runs_the_unpacked_script_with_the_system_python(tmp_path: Path) -> None:
    text = nvmetcli_tool.wrapper_text(tmp_path / "root", "0.9-1")
    assert text.startswith("#!/bin/sh\n")
    assert f"{tmp_path}/root/usr/lib/python3/dist-packages" in text
    assert f'exec /usr/bin/python3 "{tmp_path}/root/usr/bin/nvmetcli" "$@"' in text


def test_fetch_unpacks_once_and_writes_the_wrapper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[Path] = []
    monkeypatch.setattr(nvmetcli_tool, "check_runs", checked.append)
    apt = FakeApt(build_deb(tmp_path), ["0.9-1"])  # pool: none; the signed index has it
    tools_bin = tmp_path / "build" / "tools" / "bin"
    first = nvmetcli_tool.fetch_nvmetcli(apt, tools_bin)  # type: ignore[arg-type]
    assert first.downloaded and first.version == "0.9-1"
    assert first.verified_by == "signed index"
    assert (first.root / "usr" / "bin" / "nvmetcli").is_file()
    assert first.wrapper == tools_bin / "nvmetcli" and first.wrapper.stat().st_mode & 0o111
    assert not list(first.root.parent.glob("*.deb"))  # the .deb is not kept
    again = nvmetcli_tool.fetch_nvmetcli(apt, tools_bin)  # type: ignore[arg-type]
    assert not again.downloaded and apt.downloads == 1
    assert checked == [first.wrapper, first.wrapper]
    monkeypatch.setattr(procs, "TOOLS_BIN_DIR", tools_bin)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert procs.find_tool("nvmetcli") == str(tools_bin / "nvmetcli")


def test_the_pinned_pool_package_needs_no_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool's .deb with the pinned SHA-256 is taken without asking the (expired) index."""
    monkeypatch.setattr(nvmetcli_tool, "check_runs", lambda wrapper: None)
    deb = build_deb(tmp_path)
    monkeypatch.setattr(nvmetcli_tool, "PINNED_SHA256", sha256_of(deb))
    apt = FakeApt(None, [], pool_deb=deb)
    fetched = nvmetcli_tool.fetch_nvmetcli(apt, tmp_path / "tools" / "bin")  # type: ignore[arg-type]
    assert (fetched.version, fetched.verified_by) == ("0.9-1", "pinned sha256")


def test_a_pool_package_of_another_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apt = FakeApt(None, [], pool_deb=build_deb(tmp_path))  # its hash is not the pinned one
    with pytest.raises(UsageError) as info:
        nvmetcli_tool.fetch_nvmetcli(apt, tmp_path / "tools" / "bin")  # type: ignore[arg-type]
    message = str(info.value)
    assert "no Debian suite here offers nvmetcli" in message
    assert f"not the pinned {nvmetcli_tool.PINNED_SHA256}" in message
    assert "\n" not in message
    assert not list((tmp_path / "tools").glob("*/*.deb"))  # the wrong .deb is not kept


def test_no_suite_offers_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no Debian suite here offers nvmetcli.*not in the pool"):
        nvmetcli_tool.fetch_nvmetcli(FakeApt(None, []), tmp_path / "bin")  # type: ignore[arg-type]


def test_check_runs_names_the_missing_dependency(tmp_path: Path) -> None:
    """Without configshell (python3-configshell-fb) the fetched nvmetcli cannot start."""
    root = tmp_path / "root"
    site = root / "usr" / "lib" / "python3" / "dist-packages"
    (site / "nvmet").mkdir(parents=True)
    (site / "nvmet" / "__init__.py").write_text("")
    (site / "nvmet" / "nvme.py").write_text("")
    wrapper = tmp_path / "nvmetcli"
    wrapper.write_text(nvmetcli_tool.wrapper_text(root, "0.9-1"))
    has_configshell = (
        subprocess.run(
            ["/usr/bin/python3", "-c", "import configshell"],
            check=False,
            capture_output=True,
            timeout=30,
        ).returncode
        == 0
    )
    if has_configshell:
        nvmetcli_tool.check_runs(wrapper)
    else:
        with pytest.raises(ToolError, match="apt-get install python3-configshell-fb"):
            nvmetcli_tool.check_runs(wrapper)
    (site / "configshell.py").write_text("")  # a stand-in: now both imports work
    nvmetcli_tool.check_runs(wrapper)

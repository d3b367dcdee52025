"""harness.kernels.tree_build: sources, the config check, variants' changes and their undoing,
the bootable copy; and the real config step on Debian's 6.1 source (where it is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.core.errors import MissingToolError, ToolError, UsageError
from harness.kernels import source_check, tree_build
from harness.kernels.tree_build import SourceChanges, TreeVariant

DATA = Path(__file__).resolve().parent / "data" / "kernel-source" / "debian-7.3.4"


def kernel_tree(path: Path) -> Path:
    shutil.copytree(DATA, path)
    return path


def test_unmet_options_names_what_did_not_stick(tmp_path: Path) -> None:
    fragment = tmp_path / "f.config"
    fragment.write_text(
        "# comment\nCONFIG_NVME_CORE=m\nCONFIG_DEBUG_INFO_BTF=y\n# CONFIG_DRM is not set\n"
        "# CONFIG_SOUND is not set\n"
    )
    config = (
        "CONFIG_NVME_CORE=y\nCONFIG_DEBUG_INFO_BTF=y\nCONFIG_DRM=m\n# CONFIG_SOUND is not set\n"
    )
    assert tree_build.unmet_options(fragment, config) == [
        "CONFIG_NVME_CORE=m (got y)",
        "# CONFIG_DRM is not set (got CONFIG_DRM=m)",
    ]


def test_the_shipped_fragment_has_what_the_harness_needs() -> None:
    lines = tree_build.fragment_lines(tree_build.FRAGMENT)
    for needed in (
        "CONFIG_NVME_MULTIPATH=y",
        "CONFIG_NVME_CORE=m",
        "CONFIG_NVME_TARGET_TCP=m",
        "CONFIG_DEBUG_INFO_BTF=y",
        "CONFIG_KPROBES=y",
        "CONFIG_NET_SCH_NETEM=m",
    ):
        assert needed in lines


def test_touched_files_of_a_patch(tmp_path: Path) -> None:
    patch = tmp_path / "p.patch"
    patch.write_text(
        "--- a/drivers/nvme/host/multipath.c\n+++ b/drivers/nvme/host/multipath.c\n@@ -1 +1 @@\n"
        "--- /dev/null\n+++ b/new.c\t2026-01-01\n@@ -0,0 +1 @@\n"
    )
    assert tree_build.touched_files(patch) == ["drivers/nvme/host/multipath.c", "new.c"]


def test_a_toggle_is_undone_and_rebuilds_the_file(tmp_path: Path) -> None:
    src = kernel_tree(tmp_path / "src")
    original = (src / tree_build.MULTIPATH_C).read_text()
    changes = SourceChanges(src, tmp_path / "backup")
    changes.apply(TreeVariant("fix-toggled", (), True))
    assert source_check.check_tree(src).prediction == source_check.Prediction.AFFECTED_SILENTLY
    changes.restore()
    assert (src / tree_build.MULTIPATH_C).read_text() == original
    assert not (tmp_path / "backup").exists()


def test_a_patch_that_does_not_apply_leaves_the_source_as_it_was(tmp_path: Path) -> None:
    src = kernel_tree(tmp_path / "src")
    before = (src / tree_build.MULTIPATH_C).read_text()
    good = tmp_path / "1.patch"
    subprocess.run(["cp", "-a", str(src), str(tmp_path / "edited")], check=True, timeout=30)
    edited = tmp_path / "edited" / tree_build.MULTIPATH_C
    edited.write_text(edited.read_text().replace("likely(ns)", "ns != NULL"))
    diff = subprocess.run(
        [
            "diff",
            "-u",
            "--label",
            "a/" + tree_build.MULTIPATH_C,
            "--label",
            "b/" + tree_build.MULTIPATH_C,
            str(src / tree_build.MULTIPATH_C),
            str(edited),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    good.write_text(diff.stdout)
    bad = tmp_path / "2.patch"
    bad.write_text(diff.stdout.replace("likely(ns)", "unlikely(ns)"))
    changes = SourceChanges(src, tmp_path / "backup")
    with pytest.raises(ToolError, match=r"2\.patch does not apply"):
        changes.apply(TreeVariant("x", (good, bad), False))
    assert (src / tree_build.MULTIPATH_C).read_text() == before


def test_sources_are_told_apart(tmp_path: Path) -> None:
    tree = kernel_tree(tmp_path / "linux")
    assert tree_build.resolve_source(str(tree)).kind == "dir"
    with pytest.raises(UsageError, match="not a git tree"):
        tree_build.resolve_source(str(tree), ref="v7.3")
    tarball = tmp_path / "linux-7.3.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(tmp_path), "linux"], check=True)
    found = tree_build.resolve_source(str(tarball))
    assert (found.kind, found.name) == ("tarball", "linux-7.3")
    subprocess.run(["git", "init", "-q", str(tree)], check=True, timeout=30)
    subprocess.run(
        [
            "git",
            "-C",
            str(tree),
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
        timeout=30,
    )
    git = tree_build.resolve_source(str(tree))
    assert git.kind == "git" and git.ref == "HEAD" and len(git.identity) == 40
    with pytest.raises(UsageError, match="no such tree"):
        tree_build.resolve_source(str(tmp_path / "nothing"))
    with pytest.raises(UsageError, match="not a kernel source tree"):
        tree_build.resolve_source(str(tmp_path))


def test_a_missing_build_tool_is_one_apt_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        "harness.kernels.tree_build.shutil.which", lambda name: None if name == "pahole" else "/x"
    )
    monkeypatch.setattr(tree_build, "BUILD_TOOLS", (("pahole", "dwarves"), ("gcc", "gcc")))
    with pytest.raises(MissingToolError) as info:
        tree_build.check_build_tools()
    assert info.value.hint == "apt-get install dwarves"


def test_the_bootable_copy_holds_the_image_modules_and_headers(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in (".config", "arch/x86/boot/bzImage", "System.map", "include/config/kernel.release"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(name)
    (out / "modules.order").write_text("drivers/nvme/host/nvme-core.o\n")
    (out / "drivers/nvme/host").mkdir(parents=True)
    (out / "drivers/nvme/host/nvme-core.ko").write_text("ko")
    (out / "include/generated").mkdir(parents=True)
    (out / "include/generated/autoconf.h").write_text("h")
    kdir = tmp_path / "variant" / "kdir"
    tree_build.snapshot_kdir(out, kdir, tmp_path / "src")
    assert (kdir / "drivers/nvme/host/nvme-core.ko").read_text() == "ko"
    assert (kdir / "include/generated/autoconf.h").is_file()
    assert tree_build.is_kdir(kdir) and (kdir / "source").resolve() == tmp_path / "src"


DEBIAN_61 = Path("/usr/src/linux-source-6.1.tar.xz")


@pytest.mark.skipif(
    not DEBIAN_61.is_file(),
    reason="needs Debian's linux-source-6.1 (scripts/setup installs it)",
)
def test_the_config_step_on_a_real_source(tmp_path: Path) -> None:
    """The real thing, short of compiling: extract 6.1, vng --kconfig, merge the fragment,
    olddefconfig, and every line of it survives (about a minute)."""
    tree_build.check_build_tools()
    source = tree_build.tarball_source(DEBIAN_61, "linux-source-6.1")
    src = tmp_path / "src"
    said: list[str] = []
    tree_build.prepare_source(source, src, said.append)
    seconds = tree_build.configure(src, tmp_path / "out", tree_build.FRAGMENT, said.append)
    assert seconds > 0 and (tmp_path / "out/.config").is_file()
    config = (tmp_path / "out/.config").read_text()
    assert tree_build.unmet_options(tree_build.FRAGMENT, config) == []
    assert tree_build.configure(src, tmp_path / "out", tree_build.FRAGMENT, said.append) == 0

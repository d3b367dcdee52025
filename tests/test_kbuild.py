"""harness.kernels.kbuild: patch detection and revert, the variant.json cache, vermagic checks.

The end-to-end tests use the real tar and patch, with fake make and modinfo on PATH.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from harness.bed import module_records
from harness.cli import main
from harness.core.errors import HarnessError, ToolError
from harness.kernels import hosts, kbuild, module_build

RELEASE = "6.1.0-99-amd64"
VERMAGIC = f"{RELEASE} SMP preempt mod_unload modversions"

HEAD = (
    "// SPDX-License-Identifier: GPL-2.0\n"
    '#include "nvme.h"\n'
    "\n"
    "static void nvme_ns_head_submit_bio(struct bio *bio)\n"
    "{\n"
    "\tstruct nvme_ns_head *head = bio->bi_bdev->bd_disk->private_data;\n"
    "\tstruct nvme_ns *ns;\n"
    "\tint srcu_idx;\n"
    "\n"
    "\tsrcu_idx = srcu_read_lock(&head->srcu);\n"
    "\tns = nvme_find_path(head);\n"
    "\tif (likely(ns)) {\n"
    "\t\tbio_set_dev(bio, ns->disk->part0);\n"
)
FIX = (
    "\t\t/*\n"
    "\t\t * Use BIO_REMAPPED to skip bio_check_eod() when this bio\n"
    "\t\t * enters submit_bio_noacct() for the per-path device. The EOD\n"
    "\t\t * check already passed on the multipath head.\n"
    "\t\t */\n"
    "\t\tbio_set_flag(bio, BIO_REMAPPED);\n"
)
TAIL = (
    "\t\tbio->bi_opf |= REQ_NVME_MPATH;\n"
    "\t\ttrace_block_bio_remap(bio, disk_devt(ns->head->disk),\n"
    "\t\t\t\t      bio->bi_iter.bi_sector);\n"
    "\t\tsubmit_bio_noacct(bio);\n"
    "\t}\n"
    "\tsrcu_read_unlock(&head->srcu, srcu_idx);\n"
    "}\n"
    "\n"
    "static void other(struct bio *bio)\n"
    "{\n"
    "\tbio_set_flag(bio, BIO_REMAPPED);\n"
    "}\n"
)
FIXED_SOURCE = HEAD + FIX + TAIL
UNFIXED_SOURCE = HEAD + TAIL

FAKE_MAKE = """#!/bin/sh
for a in "$@"; do case "$a" in M=*) dir="${a#M=}";; esac; done
[ -n "$FAKE_MAKE_FAIL" ] && { echo "make: *** boom" >&2; exit 2; }
echo "$@" > "$dir/make.args"
for m in nvme-core nvme-fabrics nvme-tcp; do cat "$dir/multipath.c" > "$dir/$m.ko"; done
"""
FAKE_MODINFO = """#!/bin/sh
field=""; rel=""; mod=""
while [ $# -gt 0 ]; do
  case "$1" in -F) field="$2"; shift;; -k) rel="$2"; shift;; *) mod="$1";; esac; shift
done
case "$field" in
vermagic) if [ -n "$rel" ]; then echo "$FAKE_DISTRO_VERMAGIC"; else echo "$FAKE_VERMAGIC"; fi;;
srcversion)
  case "$mod" in
  */nvme-core.ko) if grep -q 'bio_set_flag(bio, BIO_REMAPPED);' "$mod" && \
        [ "$(grep -c BIO_REMAPPED "$mod")" -gt 2 ]; then echo FIXEDSRCVERSION; \
        else echo UNFIXEDSRCVERSION; fi;;
  *) echo "";;
  esac;;
esac
"""


def write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def patch_file() -> Path:
    path = kbuild.default_patch()
    assert path.is_file()
    return path


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A fake kernel source tarball, headers, config, and fake make/modinfo on PATH."""
    src = tmp_path / "src" / "linux-source-6.1"
    host = src / module_build.HOST_SUBDIR
    host.mkdir(parents=True)
    (host / "multipath.c").write_text(FIXED_SOURCE)
    (host / "Makefile").write_text("obj-m += nvme-core.o\n")
    target = src / module_build.TARGET_SUBDIR  # every kernel tarball has it; nvmet builds use it
    target.mkdir(parents=True)
    (target / "core.c").write_text("/* nvmet */\n")
    (src / "drivers" / "other.c").write_text("not wanted\n")
    tarball = tmp_path / "linux-source-6.1.tar.xz"
    subprocess.run(
        ["tar", "-cJf", str(tarball), "-C", str(tmp_path / "src"), "linux-source-6.1"],
        check=True,
        timeout=60,
    )
    modules_root = tmp_path / "lib-modules"
    build = modules_root / RELEASE / "build"
    (build / "include" / "config").mkdir(parents=True)
    (build / "Makefile").write_text("# headers\n")
    (build / ".config").write_text(
        "CONFIG_NVME_CORE=m\nCONFIG_NVME_FABRICS=m\nCONFIG_NVME_TCP=m\n"
        "CONFIG_NVME_MULTIPATH=y\nCONFIG_NVME_HWMON=y\n# CONFIG_NVME_AUTH is not set\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    write_script(bindir / "make", FAKE_MAKE)
    write_script(bindir / "modinfo", FAKE_MODINFO)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VERMAGIC", VERMAGIC)
    monkeypatch.setenv("FAKE_DISTRO_VERMAGIC", VERMAGIC)
    monkeypatch.delenv("FAKE_MAKE_FAIL", raising=False)
    return {"tarball": tarball, "modules_root": modules_root, "cache": tmp_path / "cache"}


def build(world: dict[str, Path], variant: str, **kwargs: object) -> module_records.VariantBuild:
    options: dict[str, object] = {"source_tarball": world["tarball"], **kwargs}
    return kbuild.build_variant(
        variant,
        release=RELEASE,
        cache_dir=world["cache"],
        modules_root=world["modules_root"],
        **options,  # type: ignore[arg-type]
    )


# --- detection and patching -------------------------------------------------------------


def test_has_fix_looks_only_inside_the_submit_function(tmp_path: Path) -> None:
    path = tmp_path / "multipath.c"
    path.write_text(FIXED_SOURCE)
    assert kbuild.has_fix(path)
    path.write_text(UNFIXED_SOURCE)  # other() still sets the flag: must not count
    assert not kbuild.has_fix(path)


def test_has_fix_refuses_an_unknown_source(tmp_path: Path) -> None:
    path = tmp_path / "multipath.c"
    path.write_text("int main(void) { return 0; }\n")
    with pytest.raises(ToolError, match="nvme_ns_head_submit_bio"):
        kbuild.has_fix(path)


def test_revert_on_a_source_that_has_the_fix(tmp_path: Path, patch_file: Path) -> None:
    (tmp_path / "multipath.c").write_text(FIXED_SOURCE)
    change = kbuild.make_variant_source(tmp_path, "unfixed", patch_file)
    assert change == kbuild.SourceChange("reverted", "patch")
    assert (tmp_path / "multipath.c").read_text() == UNFIXED_SOURCE
    assert not list(tmp_path.glob("*.orig")) and not list(tmp_path.glob("*.rej"))


def test_apply_on_a_source_that_lacks_the_fix(tmp_path: Path, patch_file: Path) -> None:
    (tmp_path / "multipath.c").write_text(UNFIXED_SOURCE)
    change = kbuild.make_variant_source(tmp_path, "fixed", patch_file)
    assert change == kbuild.SourceChange("applied", "patch")
    assert (tmp_path / "multipath.c").read_text() == FIXED_SOURCE


@pytest.mark.parametrize(
    ("source", "variant"), [(FIXED_SOURCE, "fixed"), (UNFIXED_SOURCE, "unfixed")]
)
def test_source_already_the_variant_is_left_alone(
    tmp_path: Path, patch_file: Path, source: str, variant: str
) -> None:
    (tmp_path / "multipath.c").write_text(source)
    change = kbuild.make_variant_source(tmp_path, variant, patch_file)
    assert change == kbuild.SourceChange("none", "none")
    assert (tmp_path / "multipath.c").read_text() == source


def test_patch_that_does_not_fit_falls_back_to_the_toggle(tmp_path: Path, patch_file: Path) -> None:
    other = FIXED_SOURCE.replace("The EOD\n", "An EOD\n")  # a different comment
    (tmp_path / "multipath.c").write_text(other)
    change = kbuild.make_variant_source(tmp_path, "unfixed", patch_file)
    assert change == kbuild.SourceChange("reverted", "toggle")
    assert (tmp_path / "multipath.c").read_text() == UNFIXED_SOURCE  # comment went too
    assert not list(tmp_path.glob("*.orig")) and not list(tmp_path.glob("*.rej"))


def test_apply_falls_back_to_the_toggle_on_other_context(tmp_path: Path, patch_file: Path) -> None:
    # 6.12-like context: a line between bio_set_dev() and the next one, other indentation
    # after it; patch(1) refuses (fuzz 0 is not enough), the toggle inserts after the anchor.
    source = UNFIXED_SOURCE.replace(
        "\t\tbio->bi_opf |= REQ_NVME_MPATH;\n",
        "\t\tbio->bi_opf |= REQ_NVME_MPATH | REQ_OTHER;\n\t\tcount_it(ns);\n",
    ).replace(
        "\t\ttrace_block_bio_remap(bio, disk_devt(ns->head->disk),\n"
        "\t\t\t\t      bio->bi_iter.bi_sector);",
        "\t\ttrace_it(bio);",
    )
    (tmp_path / "multipath.c").write_text(source)
    change = kbuild.make_variant_source(tmp_path, "fixed", patch_file)
    text = (tmp_path / "multipath.c").read_text()
    assert change == kbuild.SourceChange("applied", "toggle")
    assert text == source.replace(
        "\t\tbio_set_dev(bio, ns->disk->part0);\n",
        "\t\tbio_set_dev(bio, ns->disk->part0);\n" + FIX,
    )


def test_toggle_both_ways_gives_back_the_source(tmp_path: Path) -> None:
    path = tmp_path / "multipath.c"
    path.write_text(UNFIXED_SOURCE)
    kbuild.toggle_fix(path, want_fix=True)
    assert path.read_text() == FIXED_SOURCE
    kbuild.toggle_fix(path, want_fix=False)
    assert path.read_text() == UNFIXED_SOURCE  # other()'s flag outside the function stays


def test_toggle_refuses_a_function_without_one_anchor(tmp_path: Path) -> None:
    path = tmp_path / "multipath.c"
    path.write_text(UNFIXED_SOURCE.replace("bio_set_dev(bio, ns->disk->part0);", "x();"))
    with pytest.raises(ToolError, match="0 'bio_set_dev"):
        kbuild.toggle_fix(path, want_fix=True)


def test_neither_patch_nor_toggle_is_an_error_and_leaves_the_file(
    tmp_path: Path, patch_file: Path
) -> None:
    source = FIXED_SOURCE.replace("The EOD\n", "An EOD\n").replace(
        "\t\tbio_set_flag(bio, BIO_REMAPPED);\n",
        "\t\tbio_set_flag(bio, BIO_REMAPPED);\n\t\tbio_set_flag(bio, BIO_REMAPPED);\n",
    )
    (tmp_path / "multipath.c").write_text(source)
    with pytest.raises(ToolError, match="could not be reverted"):
        kbuild.make_variant_source(tmp_path, "unfixed", patch_file)
    assert (tmp_path / "multipath.c").read_text() == source


def test_unknown_variant(tmp_path: Path, patch_file: Path) -> None:
    with pytest.raises(HarnessError, match="unknown variant"):
        kbuild.make_variant_source(tmp_path, "stock", patch_file)


def test_patch_file_is_against_multipath_c(patch_file: Path) -> None:
    text = patch_file.read_text()
    assert "+++ b/drivers/nvme/host/multipath.c" in text
    added = [line for line in text.splitlines() if line.startswith("+") and "+++" not in line]
    assert "+\t\tbio_set_flag(bio, BIO_REMAPPED);" in added
    assert "Achkinazi" in text


# --- config ---------------------------------------------------------------------------


def test_make_vars_take_options_from_the_kernel_config() -> None:
    config = module_build.parse_kernel_config(
        "CONFIG_NVME_CORE=m\nCONFIG_NVME_FABRICS=m\nCONFIG_NVME_TCP=m\n"
        "CONFIG_NVME_MULTIPATH=y\nCONFIG_NVME_AUTH=y\n# CONFIG_NVME_HWMON is not set\n"
    )
    assignments = module_build.make_vars(config, RELEASE, kbuild.HOST_CONFIG)
    assert "CONFIG_NVME_AUTH=y" in assignments
    assert "CONFIG_NVME_HWMON=n" in assignments
    assert "CONFIG_BLK_DEV_NVME=n" in assignments
    assert "CONFIG_NVME_MULTIPATH=y" in assignments


def test_make_vars_refuse_a_builtin_core() -> None:
    config = {"CONFIG_NVME_CORE": "y", "CONFIG_NVME_MULTIPATH": "y"}
    with pytest.raises(ToolError, match="CONFIG_NVME_CORE=y"):
        module_build.make_vars(config, RELEASE, kbuild.HOST_CONFIG)


def test_default_release_prefers_the_newest_amd64_with_headers(tmp_path: Path) -> None:
    for release, headers in [
        ("6.1.0-9-amd64", True),
        ("6.1.0-56-amd64", True),
        ("6.1.0-60-amd64", False),
        ("6.12.0-1-cloud", True),
    ]:
        (tmp_path / release).mkdir()
        if headers:
            (tmp_path / release / "build").mkdir()
    assert module_build.default_release(tmp_path) == "6.1.0-56-amd64"


def test_missing_tarball_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=r"apt-get install linux-source-6\.1 "):
        module_build.find_source_tarball(tmp_path / "nope.tar.xz", "6.1.0-57-amd64")


def test_default_tarball_is_the_release_lines_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian 13's 6.12 release builds from linux-source-6.12's tarball, not 6.1's."""
    monkeypatch.setattr(hosts, "USR_SRC", tmp_path)
    with pytest.raises(ToolError, match=r"apt-get install linux-source-6\.12 "):
        module_build.find_source_tarball(None, "6.12.117+deb13-amd64")
    (tmp_path / "linux-source-6.12.tar.xz").write_bytes(b"")
    found = module_build.find_source_tarball(None, "6.12.117+deb13-amd64")
    assert found == tmp_path / "linux-source-6.12.tar.xz"


def test_no_default_tarball_for_a_release_without_a_kernel_line() -> None:
    with pytest.raises(ToolError, match="--source-tarball"):
        module_build.find_source_tarball(None, "")


def test_missing_headers_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match=f"linux-headers-{RELEASE}"):
        module_build.headers_dir(RELEASE, tmp_path)


# --- vermagic -----------------------------------------------------------------------------


def test_vermagic_for_another_release_is_an_error() -> None:
    with pytest.raises(ToolError, match="not for kernel"):
        module_build.check_vermagic(Path("nvme-core.ko"), "6.1.0-55-amd64 SMP", RELEASE, None)


def test_vermagic_unlike_the_distro_module_is_an_error() -> None:
    with pytest.raises(ToolError, match="the kernel's modules have"):
        module_build.check_vermagic(
            Path("nvme-core.ko"), f"{RELEASE} SMP mod_unload", RELEASE, VERMAGIC
        )
    module_build.check_vermagic(Path("nvme-core.ko"), VERMAGIC + " ", RELEASE, VERMAGIC)


def test_build_with_wrong_vermagic_fails_and_writes_no_record(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VERMAGIC", "6.1.0-1-amd64 SMP preempt mod_unload modversions")
    with pytest.raises(ToolError, match="vermagic"):
        build(world, "fixed")
    assert not (world["cache"] / RELEASE / "fixed" / module_records.VARIANT_FILE).exists()


# --- end to end with fake make, and the cache -------------------------------------------


def test_build_both_variants(world: dict[str, Path]) -> None:
    fixed = build(world, "fixed")
    unfixed = build(world, "unfixed")
    assert (fixed.patch_action, unfixed.patch_action) == ("none", "reverted")
    assert (fixed.patch_method, unfixed.patch_method) == ("none", "patch")
    assert fixed.as_shipped and not unfixed.as_shipped
    assert fixed.has_fix and not unfixed.has_fix
    assert fixed.srcversion == {"nvme-core": "FIXEDSRCVERSION"}
    assert unfixed.srcversion == {"nvme-core": "UNFIXEDSRCVERSION"}
    assert not fixed.cached
    unfixed_dir = world["cache"] / RELEASE / "unfixed"
    assert Path(unfixed.module_dir) == unfixed_dir.resolve()
    assert not (unfixed_dir / "other.c").exists()  # only drivers/nvme/host was extracted
    # one pristine extraction serves both variants, and stays unpatched
    (pristine,) = (world["cache"] / "sources").glob("*/host")
    assert kbuild.has_fix(pristine / "multipath.c")
    args = (unfixed_dir / "make.args").read_text().split()
    assert f"M={unfixed_dir.resolve()}" in args and "modules" in args
    assert "CONFIG_NVME_HWMON=y" in args and "CONFIG_NVME_AUTH=n" in args
    record = json.loads((unfixed_dir / module_records.VARIANT_FILE).read_text())
    assert record["variant"] == "unfixed" and record["release"] == RELEASE
    assert record["patch_sha256"] == module_records.sha256_of(kbuild.default_patch())
    assert set(record["ko_sha256"]) == set(kbuild.MODULES)
    assert record["build_seconds"] >= 0 and record["built_at"]


def test_second_build_comes_from_the_cache(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build(world, "unfixed")
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")  # a rebuild would fail
    again = build(world, "unfixed")
    assert again.cached and again == first


def test_cache_is_invalid_when_an_input_or_a_module_changes(
    world: dict[str, Path], tmp_path: Path
) -> None:
    record = build(world, "unfixed")
    module_dir = Path(record.module_dir)
    inputs = module_build.build_inputs(RELEASE, "unfixed", kbuild.default_patch(), world["tarball"])
    assert kbuild.cached_build(module_dir, inputs) is not None
    other_patch = tmp_path / "other.patch"
    other_patch.write_text("different\n")
    changed = module_build.build_inputs(RELEASE, "unfixed", other_patch, world["tarball"])
    assert kbuild.cached_build(module_dir, changed) is None
    (module_dir / "nvme-tcp.ko").write_text("tampered\n")
    assert kbuild.cached_build(module_dir, inputs) is None
    (module_dir / "nvme-tcp.ko").unlink()
    assert kbuild.cached_build(module_dir, inputs) is None


def test_force_rebuilds(world: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    build(world, "fixed")
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")
    with pytest.raises(ToolError, match="failed"):
        build(world, "fixed", force=True)
    assert (world["cache"] / RELEASE / "fixed" / "build.log").is_file()


def test_main_prints_one_line_per_variant(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(module_build, "MODULES_ROOT", world["modules_root"])
    argv = ["build-variants", "--release", RELEASE, "--cache-dir", str(world["cache"])]
    argv += ["--source-tarball", str(world["tarball"])]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("fixed ") and "FIXEDSRCVERSION" in lines[0]
    assert lines[1].startswith("unfixed ") and "UNFIXEDSRCVERSION" in lines[1]


def test_main_reports_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build-variants", "--release", RELEASE]
    argv += ["--source-tarball", str(tmp_path / "none.tar.xz")]
    assert main([*argv, "--variant", "fixed"]) == 3
    err = capsys.readouterr().err.strip()
    assert err.startswith("nvmf-harness: error: ") and "\n" not in err


def test_each_release_builds_from_its_own_tarball(world: dict[str, Path], tmp_path: Path) -> None:
    """Two source packages unpack to tarballs of the same name; each gets its own pristine
    extraction, and a release's build follows the tarball it is given."""
    shipped = build(world, "fixed")
    other_src = tmp_path / "src2" / "linux-source-6.1"
    (other_src / module_build.HOST_SUBDIR).mkdir(parents=True)
    (other_src / module_build.HOST_SUBDIR / "multipath.c").write_text(UNFIXED_SOURCE)
    (other_src / module_build.TARGET_SUBDIR).mkdir(parents=True)
    (other_src / module_build.TARGET_SUBDIR / "core.c").write_text("/* nvmet */\n")
    other = tmp_path / "other-version" / "linux-source-6.1.tar.xz"
    other.parent.mkdir()
    subprocess.run(
        ["tar", "-cJf", str(other), "-C", str(tmp_path / "src2"), "linux-source-6.1"],
        check=True,
        timeout=60,
    )
    rebuilt = build(world, "fixed", source_tarball=other)
    assert not rebuilt.cached and rebuilt.patch_action == "applied"
    assert rebuilt.source_tarball == str(other.resolve()) != shipped.source_tarball
    assert len(list((world["cache"] / "sources").glob("*/host"))) == 2

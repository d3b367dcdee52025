"""harness.kernels.nvmet_variant (build, cache, load) and harness.bed.target.load_modules
keeping it.

The build tests use the real tar and patch on a fake source tarball, with fake make and
modinfo on PATH and a small stand-in patch (the real one needs Debian's sources). The load
tests use fake insmod/rmmod/modprobe/modinfo that change a fake /sys/module the way the
kernel would: insmod of nvmet.ko makes /sys/module/nvmet with taint OE, version
``ns-visibility-test`` and srcversion = the .ko's text; ``modprobe nvmet-tcp`` loads the
"distro" pair (no taint, no version).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from harness.bed import module_records, ns_visibility, nvmet_modules, target
from harness.cli import main
from harness.core.errors import HarnessError, SafetyError, ToolError
from harness.core.kernelfs import KernelFs
from harness.core.paths import REPO_ROOT
from harness.kernels import module_build, nvmet_variant
from tests.fakes import RecordingRun

RELEASE = "6.1.0-99-amd64"
VERMAGIC = f"{RELEASE} SMP preempt mod_unload modversions"
PATCHED_SRC = "A034F0BCB531A8EEF081425"

CONFIGFS_C = "static struct configfs_attribute *nvmet_ana_group_attrs[] = {\n\tNULL,\n};\n"
STAND_IN_PATCH = """--- a/drivers/nvme/target/configfs.c
+++ b/drivers/nvme/target/configfs.c
@@ -1,3 +1,4 @@
 static struct configfs_attribute *nvmet_ana_group_attrs[] = {
+\t&nvmet_ana_group_attr_ns_visibility,
 \tNULL,
 };
"""
FAKE_MAKE = """#!/bin/sh
for a in "$@"; do case "$a" in M=*) dir="${a#M=}";; esac; done
[ -n "$FAKE_MAKE_FAIL" ] && { echo "make: *** boom" >&2; exit 2; }
echo "$@" > "$dir/make.args"
[ -f "$dir/../host/nvme.h" ] || { echo "no ../host/nvme.h" >&2; exit 2; }
cat "$dir/configfs.c" > "$dir/nvmet.ko"; echo tcp > "$dir/nvmet-tcp.ko"
"""
FAKE_BUILD_MODINFO = """#!/bin/sh
field=""; rel=""; mod=""
while [ $# -gt 0 ]; do
  case "$1" in -F) field="$2"; shift;; -k) rel="$2"; shift;; *) mod="$1";; esac; shift
done
case "$field" in
vermagic) if [ -n "$rel" ]; then echo "$FAKE_DISTRO_VERMAGIC"; else echo "$FAKE_VERMAGIC"; fi;;
srcversion) case "$mod" in */nvmet.ko) grep -q ns_visibility "$mod" && echo PATCHEDSRC;; esac;;
esac
"""

FAKE_INSMOD = """#!/bin/sh
echo "insmod $(basename "$1")" >> "$FAKE_LOG"
name=$(basename "$1" .ko | tr - _)
d="$FAKE_ROOT/sys/module/$name"
mkdir -p "$d"; echo live > "$d/initstate"; echo OE > "$d/taint"
if [ "$name" = nvmet ]; then cat "$1" > "$d/srcversion"; echo ns-visibility-test > "$d/version"; fi
"""
FAKE_RMMOD = """#!/bin/sh
echo "rmmod $1" >> "$FAKE_LOG"
rm -rf "$FAKE_ROOT/sys/module/$1"
"""
FAKE_MODPROBE = """#!/bin/sh
echo "modprobe $1" >> "$FAKE_LOG"
if [ "$1" = nvmet-tcp ]; then
  for name in nvmet nvmet_tcp; do
    d="$FAKE_ROOT/sys/module/$name"; mkdir -p "$d"; echo live > "$d/initstate"; : > "$d/taint"
  done
fi
"""
FAKE_LOAD_MODINFO = """#!/bin/sh
case "$*" in
  *"-F depends "*/nvmet.ko) echo configfs,t10-pi;;
  *"-F depends "*/nvmet-tcp.ko) echo nvmet;;
esac
"""


def write_script(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


# --- the patch file itself ------------------------------------------------------------------


@pytest.mark.parametrize("release", ["6.1.0-56-amd64", "6.12.107+deb12-amd64"])
def test_patch_file_matches_the_python_side(release: str) -> None:
    """The values, the attribute name and MODULE_VERSION agree with ns_visibility and
    nvmet_variant; the patch touches only drivers/nvme/target."""
    text = nvmet_variant.default_patch(release).read_text()
    touched = set(re.findall(r"^\+\+\+ b/(\S+)", text, re.M))
    assert touched == {
        f"drivers/nvme/target/{name}" for name in ("nvmet.h", "core.c", "admin-cmd.c", "configfs.c")
    }
    added = "\n".join(line for line in text.splitlines() if line.startswith("+"))
    for value in ns_visibility.VISIBILITIES:
        assert f'"{value}"' in added
    assert f'MODULE_VERSION("{module_records.NVMET_MODULE_VERSION}")' in added
    assert nvmet_variant.PATCH_MARK in added
    assert f"CONFIGFS_ATTR(nvmet_ana_group_, {ns_visibility.ATTRIBUTE})" in added


def test_each_kernel_line_gets_its_patch() -> None:
    top = REPO_ROOT / "patches" / "nvmet-ns-visibility"
    assert nvmet_variant.default_patch() == top / nvmet_variant.PATCH_NAME
    assert nvmet_variant.default_patch("6.1.0-47-amd64") == top / nvmet_variant.PATCH_NAME
    assert nvmet_variant.default_patch("6.12.107+deb12-amd64") == (
        top / "6.12" / nvmet_variant.PATCH_NAME
    )
    assert nvmet_variant.kernel_line("6.12.107+deb12-amd64") == "6.12"
    assert nvmet_variant.kernel_line("6.1.0-56-amd64") == "6.1"
    assert nvmet_variant.kernel_line("custom") == ""


# --- pure helpers -----------------------------------------------------------------------------


def test_make_vars_take_options_from_the_kernel_config() -> None:
    config = {
        "CONFIG_NVME_TARGET": "m",
        "CONFIG_NVME_TARGET_TCP": "m",
        "CONFIG_NVME_TARGET_RDMA": "m",
        "CONFIG_BLK_DEV_ZONED": "y",
        "CONFIG_TRACING": "y",
    }
    assignments = module_build.make_vars(config, RELEASE, nvmet_variant.NVMET_CONFIG)
    assert assignments[:2] == ["CONFIG_NVME_TARGET=m", "CONFIG_NVME_TARGET_TCP=m"]
    assert "CONFIG_BLK_DEV_ZONED=y" in assignments
    assert "CONFIG_NVME_TARGET_PASSTHRU=n" in assignments  # not set in the config
    assert "CONFIG_NVME_TARGET_RDMA=n" in assignments  # never built, whatever the config


def test_make_vars_refuse_a_builtin_nvmet() -> None:
    with pytest.raises(ToolError) as info:
        module_build.make_vars({"CONFIG_NVME_TARGET": "y"}, RELEASE, nvmet_variant.NVMET_CONFIG)
    assert "CONFIG_NVME_TARGET=y" in info.value.message


def test_patched_source_is_recognised(tmp_path: Path) -> None:
    (tmp_path / "configfs.c").write_text(CONFIGFS_C)
    assert not nvmet_variant.is_patched_source(tmp_path)
    (tmp_path / "configfs.c").write_text(CONFIGFS_C + "&nvmet_ana_group_attr_ns_visibility\n")
    assert nvmet_variant.is_patched_source(tmp_path)
    with pytest.raises(ToolError):
        nvmet_variant.is_patched_source(tmp_path / "missing")


# --- building, with fake make and modinfo -----------------------------------------------------


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A fake source tarball (target + host), headers, config, make/modinfo on PATH."""
    src = tmp_path / "src" / "linux-source-6.1"
    target_dir = src / module_build.TARGET_SUBDIR
    target_dir.mkdir(parents=True)
    (target_dir / "configfs.c").write_text(CONFIGFS_C)
    (target_dir / "core.c").write_text("/* core */\n")
    host_dir = src / module_build.HOST_SUBDIR
    host_dir.mkdir(parents=True)
    (host_dir / "nvme.h").write_text("/* host */\n")
    tarball = tmp_path / "linux-source-6.1.tar.xz"
    subprocess.run(
        ["tar", "-cJf", str(tarball), "-C", str(tmp_path / "src"), "linux-source-6.1"],
        check=True,
        timeout=60,
    )
    patch = tmp_path / "stand-in.patch"
    patch.write_text(STAND_IN_PATCH)
    modules_root = tmp_path / "lib-modules"
    build = modules_root / RELEASE / "build"
    build.mkdir(parents=True)
    (build / "Makefile").write_text("# headers\n")
    (build / ".config").write_text(
        "CONFIG_NVME_TARGET=m\nCONFIG_NVME_TARGET_TCP=m\nCONFIG_TRACING=y\n"
        "# CONFIG_NVME_TARGET_PASSTHRU is not set\n"
    )
    bindir = tmp_path / "bin"
    bindir.mkdir()
    write_script(bindir / "make", FAKE_MAKE)
    write_script(bindir / "modinfo", FAKE_BUILD_MODINFO)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_VERMAGIC", VERMAGIC)
    monkeypatch.setenv("FAKE_DISTRO_VERMAGIC", VERMAGIC)
    monkeypatch.delenv("FAKE_MAKE_FAIL", raising=False)
    return {
        "tarball": tarball,
        "patch": patch,
        "modules_root": modules_root,
        "cache": tmp_path / "cache",
    }


def build(world: dict[str, Path], **kwargs: object) -> module_records.NvmetBuild:
    return nvmet_variant.build_nvmet(
        release=RELEASE,
        cache_dir=world["cache"],
        source_tarball=world["tarball"],
        patch=world["patch"],
        modules_root=world["modules_root"],
        **kwargs,  # type: ignore[arg-type]
    )


def test_build_patches_builds_and_records(world: dict[str, Path]) -> None:
    built = build(world)
    module_dir = Path(built.module_dir)
    assert module_dir == world["cache"].resolve() / RELEASE / "nvmet-ns-visibility" / "target"
    assert not built.cached
    assert built.srcversion == "PATCHEDSRC"
    assert built.vermagic == VERMAGIC
    assert set(built.ko_sha256) == {"nvmet", "nvmet-tcp"}
    assert nvmet_variant.is_patched_source(module_dir)
    args = (module_dir / "make.args").read_text().split()
    assert f"M={module_dir}" in args and "CONFIG_NVME_TARGET_LOOP=n" in args
    assert "CONFIG_NVME_TARGET_PASSTHRU=n" in args and "CONFIG_TRACING=y" in args
    record = module_records.load_nvmet_record(world["cache"].resolve(), RELEASE)
    assert record is not None and record.srcversion == built.srcversion
    assert record.patch_sha256 == module_records.sha256_of(world["patch"])


def test_second_build_comes_from_the_cache(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build(world)
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")  # a rebuild would fail
    again = build(world)
    assert again.cached and again.srcversion == first.srcversion
    with pytest.raises(ToolError):
        build(world, force=True)


def test_cache_is_invalid_when_the_patch_or_a_module_changes(world: dict[str, Path]) -> None:
    first = build(world)
    Path(first.ko("nvmet-tcp")).write_text("tampered\n")
    assert not build(world).cached
    world["patch"].write_text(STAND_IN_PATCH + "\n")
    assert not build(world).cached


def test_patch_that_does_not_apply_is_an_error(world: dict[str, Path]) -> None:
    other = STAND_IN_PATCH.replace("nvmet_ana_group_attrs", "other_attrs")
    world["patch"].write_text(other.replace("NULL", "END").replace(" };", " } x;"))
    with pytest.raises(ToolError) as info:
        build(world)
    assert "does not apply" in info.value.message
    assert module_records.load_nvmet_record(world["cache"].resolve(), RELEASE) is None


def test_make_failure_keeps_the_log(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MAKE_FAIL", "1")
    with pytest.raises(ToolError) as info:
        build(world)
    assert info.value.hint is not None and "build.log" in info.value.hint
    log = world["cache"].resolve() / RELEASE / "nvmet-ns-visibility" / "target" / "build.log"
    assert "boom" in log.read_text()


def test_wrong_vermagic_fails_and_writes_no_record(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VERMAGIC", "6.1.0-1-amd64 SMP preempt mod_unload modversions")
    with pytest.raises(ToolError):
        build(world)
    assert module_records.load_nvmet_record(world["cache"].resolve(), RELEASE) is None


def test_main_prints_the_build_and_errors_in_one_line(
    world: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(module_build, "MODULES_ROOT", world["modules_root"])
    argv = [
        "build-nvmet",
        "--release",
        RELEASE,
        "--cache-dir",
        str(world["cache"]),
        "--source-tarball",
        str(world["tarball"]),
        "--patch",
        str(world["patch"]),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"nvmet-ns-visibility {RELEASE} nvmet srcversion PATCHEDSRC (built in" in out
    assert main([*argv[:-1], str(world["patch"]) + ".missing"]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nvmf-harness: error: patch ")


# --- loading, with fake module tools ----------------------------------------------------------


def make_record(cache: Path) -> module_records.NvmetBuild:
    module_dir = module_records.nvmet_module_dir(cache, RELEASE)
    module_dir.mkdir(parents=True)
    (module_dir / "nvmet.ko").write_text(PATCHED_SRC)
    (module_dir / "nvmet-tcp.ko").write_text("tcp")
    record = module_records.NvmetBuild(
        release=RELEASE,
        module_dir=str(module_dir),
        srcversion=PATCHED_SRC,
        ko_sha256={
            m: module_records.sha256_of(module_dir / f"{m}.ko")
            for m in module_records.NVMET_MODULES
        },
        vermagic=VERMAGIC,
        patch_file="/x.patch",
        patch_sha256="0" * 64,
        source_tarball="/usr/src/linux-source-6.1.tar.xz",
        source_size=1,
        source_mtime_ns=1,
        make_vars=[],
        built_at="2026-12-01T00:00:00+00:00",
        build_seconds=1.0,
    )
    (module_dir / module_records.NVMET_RECORD_FILE).write_text(record.to_json())
    return record


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "sys" / "module").mkdir(parents=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in [
        ("insmod", FAKE_INSMOD),
        ("rmmod", FAKE_RMMOD),
        ("modprobe", FAKE_MODPROBE),
        ("modinfo", FAKE_LOAD_MODINFO),
    ]:
        write_script(bindir / name, text)
    log = tmp_path / "calls.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ROOT", str(root))
    monkeypatch.setenv("FAKE_LOG", str(log))
    cache = tmp_path / "cache"
    make_record(cache)
    return {"root": root, "log": log, "cache": cache}


def calls(env: dict[str, Path]) -> list[str]:
    return env["log"].read_text().splitlines()


def load(env: dict[str, Path]) -> nvmet_modules.LoadedNvmet:
    return nvmet_modules.load_patched_nvmet(
        release=RELEASE, cache_dir=env["cache"], fs=KernelFs(env["root"])
    )


def now(env: dict[str, Path]) -> nvmet_modules.LoadedNvmet:
    return nvmet_modules.loaded_nvmet(KernelFs(env["root"]), RELEASE, env["cache"])


def test_nothing_loaded(env: dict[str, Path]) -> None:
    state = now(env)
    assert not state.loaded and not state.patched
    assert state.describe() == "nvmet not loaded"


def test_load_from_nothing(env: dict[str, Path]) -> None:
    loaded = load(env)
    assert calls(env) == [
        "modprobe configfs",
        "modprobe t10-pi",
        "insmod nvmet.ko",
        "insmod nvmet-tcp.ko",
    ]
    assert loaded.patched and loaded.tcp_loaded and loaded.out_of_tree
    assert loaded.srcversion == PATCHED_SRC
    assert loaded.module_dir == str(module_records.nvmet_module_dir(env["cache"], RELEASE))
    assert loaded.describe() == f"nvmet ns-visibility-test {PATCHED_SRC} (out of tree)"
    assert nvmet_modules.patched_nvmet_loaded(KernelFs(env["root"]))


def test_loaded_build_is_not_reloaded(env: dict[str, Path]) -> None:
    load(env)
    env["log"].write_text("")
    assert load(env).patched
    assert calls(env) == []


def test_distro_nvmet_is_replaced(env: dict[str, Path]) -> None:
    nvmet_modules.load_distro_nvmet(KernelFs(env["root"]))
    assert now(env).describe() == "nvmet distro (in tree)"
    env["log"].write_text("")
    load(env)
    assert calls(env)[:2] == ["rmmod nvmet_tcp", "rmmod nvmet"]
    assert calls(env)[-1] == "insmod nvmet-tcp.ko"


def test_back_to_the_distro_nvmet(env: dict[str, Path]) -> None:
    load(env)
    env["log"].write_text("")
    state = nvmet_modules.load_distro_nvmet(KernelFs(env["root"]))
    assert calls(env) == ["rmmod nvmet_tcp", "rmmod nvmet", "modprobe nvmet-tcp"]
    assert state.loaded and not state.patched and not state.out_of_tree


def test_refuses_to_unload_while_nvmet_holds_entries(env: dict[str, Path]) -> None:
    nvmet_modules.load_distro_nvmet(KernelFs(env["root"]))
    (env["root"] / "sys/kernel/config/nvmet/ports/6000").mkdir(parents=True)
    (env["root"] / "sys/kernel/config/nvmet/subsystems").mkdir()
    (env["root"] / "sys/kernel/config/nvmet/hosts").mkdir()
    env["log"].write_text("")
    with pytest.raises(SafetyError) as info:
        load(env)
    assert "ports/6000" in info.value.message
    assert calls(env) == []


def test_refuses_to_unload_while_another_transport_uses_nvmet(env: dict[str, Path]) -> None:
    nvmet_modules.load_distro_nvmet(KernelFs(env["root"]))
    (env["root"] / "sys/module/nvmet_rdma").mkdir()
    (env["root"] / "sys/module/nvmet_rdma/initstate").write_text("live\n")
    with pytest.raises(SafetyError) as info:
        nvmet_modules.unload_nvmet(KernelFs(env["root"]))
    assert "nvmet_rdma" in info.value.message


def test_unbuilt_says_how_to_build(env: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ToolError) as info:
        nvmet_modules.load_patched_nvmet(
            release=RELEASE, cache_dir=tmp_path / "empty", fs=KernelFs(env["root"])
        )
    assert info.value.hint == f"nvmf-harness build-nvmet --release {RELEASE}"


def test_a_changed_module_file_is_refused_before_anything_is_unloaded(
    env: dict[str, Path],
) -> None:
    nvmet_modules.load_distro_nvmet(KernelFs(env["root"]))
    env["log"].write_text("")
    ko = module_records.nvmet_module_dir(env["cache"], RELEASE) / "nvmet.ko"
    ko.write_text("something else")
    with pytest.raises(ToolError) as info:
        load(env)
    assert "differs from its build record" in info.value.message
    assert calls(env) == []


def test_unknown_out_of_tree_nvmet(env: dict[str, Path]) -> None:
    module = env["root"] / "sys/module/nvmet"
    module.mkdir()
    (module / "initstate").write_text("live\n")
    (module / "taint").write_text("OE\n")
    (module / "srcversion").write_text("FFFF\n")
    state = now(env)
    assert not state.patched and state.module_dir is None
    assert state.describe() == "nvmet unknown build FFFF (out of tree)"


# --- target.load_modules keeps a loaded nvmet ---------------------------------------------------


@pytest.fixture
def modprobes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """target.run replaced by a recorder that succeeds; configfs counted as mounted."""
    recorder = RecordingRun()
    monkeypatch.setattr(target, "run", recorder)
    monkeypatch.setattr(target, "_configfs_mounted", lambda: True)
    return recorder.calls


def loaded(sys_module: Path, name: str, taint: str = "") -> None:
    (sys_module / name).mkdir(parents=True)
    (sys_module / name / "taint").write_text(taint + "\n")


def test_load_modules_modprobes_what_is_missing(tmp_path: Path, modprobes: list[list[str]]) -> None:
    target.load_modules(sys_module=str(tmp_path))
    assert modprobes == [["modprobe", "nvmet-tcp"], ["modprobe", "nvme-tcp"]]


def test_load_modules_keeps_a_loaded_patched_nvmet(
    tmp_path: Path, modprobes: list[list[str]]
) -> None:
    loaded(tmp_path, "nvmet", "OE")
    loaded(tmp_path, "nvmet_tcp", "OE")
    loaded(tmp_path, "nvme_tcp")
    target.load_modules(sys_module=str(tmp_path))
    assert modprobes == []


def test_load_modules_refuses_a_patched_nvmet_without_its_tcp(
    tmp_path: Path, modprobes: list[list[str]]
) -> None:
    loaded(tmp_path, "nvmet", "OE")
    with pytest.raises(HarnessError) as info:
        target.load_modules(sys_module=str(tmp_path))
    assert "out-of-tree nvmet" in info.value.message
    assert modprobes == []


def test_load_modules_completes_a_distro_nvmet(tmp_path: Path, modprobes: list[list[str]]) -> None:
    loaded(tmp_path, "nvmet")
    loaded(tmp_path, "nvme_tcp")
    target.load_modules(sys_module=str(tmp_path))
    assert modprobes == [["modprobe", "nvmet-tcp"]]


def test_load_modules_for_rdma(tmp_path: Path, modprobes: list[list[str]]) -> None:
    loaded(tmp_path, "nvme_tcp")  # what tcp uses is not rdma's business
    target.load_modules(sys_module=str(tmp_path), transport="rdma")
    assert modprobes == [["modprobe", "nvmet-rdma"], ["modprobe", "nvme-rdma"]]


def test_load_modules_refuses_a_patched_nvmet_without_its_rdma(
    tmp_path: Path, modprobes: list[list[str]]
) -> None:
    loaded(tmp_path, "nvmet", "OE")
    with pytest.raises(HarnessError, match="out-of-tree nvmet is loaded without its nvmet-rdma"):
        target.load_modules(sys_module=str(tmp_path), transport="rdma")
    with pytest.raises(HarnessError, match="unknown transport 'fc'"):
        target.load_modules(sys_module=str(tmp_path), transport="fc")

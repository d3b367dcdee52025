"""harness.bed.variants against a fake /sys tree, with fake insmod/rmmod/modprobe/modinfo on PATH.

The fake tools change the fake tree the way the kernel would: insmod makes
/sys/module/<name>/{initstate,srcversion,taint} (srcversion = the .ko file's text, taint OE),
modprobe nvme-tcp loads the "distro" modules (taint empty), rmmod removes the directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.bed import module_records, variants
from harness.core.errors import SafetyError, ToolError
from harness.core.kernelfs import KernelFs

RELEASE = "6.1.0-99-amd64"
DISTRO_SRC = "1F49BEBD82E17B252F08608"
UNFIXED_SRC = "6E052DFC06DA8E036E0639E"

FAKE_INSMOD = """#!/bin/sh
echo "insmod $1" >> "$FAKE_LOG"
name=$(basename "$1" .ko | tr - _)
d="$FAKE_ROOT/sys/module/$name"
mkdir -p "$d/holders"
echo live > "$d/initstate"; echo OE > "$d/taint"
[ -s "$1" ] && cat "$1" > "$d/srcversion"
case "$name" in
  nvme_fabrics) touch "$FAKE_ROOT/sys/module/nvme_core/holders/nvme_fabrics";;
  nvme_tcp) touch "$FAKE_ROOT/sys/module/nvme_core/holders/nvme_tcp";;
esac
exit 0
"""
FAKE_RMMOD = """#!/bin/sh
echo "rmmod $1" >> "$FAKE_LOG"
rm -rf "$FAKE_ROOT/sys/module/$1"
rm -f "$FAKE_ROOT/sys/module/nvme_core/holders/$1"
"""
FAKE_MODPROBE = """#!/bin/sh
echo "modprobe $1" >> "$FAKE_LOG"
if [ "$1" = nvme-tcp ]; then
  for name in nvme_core nvme_fabrics nvme_tcp; do
    d="$FAKE_ROOT/sys/module/$name"; mkdir -p "$d/holders"
    echo live > "$d/initstate"; : > "$d/taint"
  done
  echo "$FAKE_DISTRO_SRC" > "$FAKE_ROOT/sys/module/nvme_core/srcversion"
fi
"""
FAKE_MODINFO = """#!/bin/sh
case "$*" in
  *"-F srcversion nvme-core") echo "$FAKE_DISTRO_SRC";;
  *"-F depends "*nvme-core.ko) echo t10-pi;;
  *"-F depends "*nvme-fabrics.ko) echo nvme-core;;
  *"-F depends "*nvme-tcp.ko) echo nvme-core,nvme-fabrics;;
esac
"""


def record(cache: Path, variant: str, srcversion: str, has_fix: bool) -> Path:
    module_dir = cache / RELEASE / variant
    module_dir.mkdir(parents=True)
    (module_dir / "nvme-core.ko").write_text(srcversion)
    (module_dir / "nvme-fabrics.ko").write_text("")
    (module_dir / "nvme-tcp.ko").write_text("")
    build = module_records.VariantBuild(
        release=RELEASE,
        variant=variant,
        module_dir=str(module_dir),
        srcversion={"nvme-core": srcversion},
        ko_sha256={},
        vermagic=f"{RELEASE} SMP",
        has_fix=has_fix,
        patch_action="none" if has_fix else "reverted",
        patch_sha256="0" * 64,
        source_tarball="/usr/src/linux-source-6.1.tar.xz",
        source_size=1,
        source_mtime_ns=1,
        make_vars=[],
        built_at="2026-11-28T00:00:00+00:00",
        build_seconds=1.0,
    )
    (module_dir / module_records.VARIANT_FILE).write_text(build.to_json())
    return module_dir


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    root = tmp_path / "root"
    (root / "sys" / "module").mkdir(parents=True)
    (root / "sys" / "class" / "nvme").mkdir(parents=True)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in [
        ("insmod", FAKE_INSMOD),
        ("rmmod", FAKE_RMMOD),
        ("modprobe", FAKE_MODPROBE),
        ("modinfo", FAKE_MODINFO),
    ]:
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ROOT", str(root))
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_DISTRO_SRC", DISTRO_SRC)
    cache = tmp_path / "cache"
    record(cache, "fixed", DISTRO_SRC, True)
    record(cache, "unfixed", UNFIXED_SRC, False)
    return {"root": root, "log": log, "cache": cache}


def calls(env: dict[str, Path]) -> list[str]:
    return env["log"].read_text().splitlines()


def load(env: dict[str, Path], variant: str) -> variants.LoadedVariant:
    return variants.load_variant(
        variant, release=RELEASE, cache_dir=env["cache"], fs=KernelFs(env["root"])
    )


def state(env: dict[str, Path]) -> variants.LoadedState:
    return variants.current_state(KernelFs(env["root"]), RELEASE, env["cache"])


def test_nothing_loaded(env: dict[str, Path]) -> None:
    now = state(env)
    assert not now.loaded and now.srcversion is None and now.variant is None


def test_load_unfixed_from_nothing(env: dict[str, Path]) -> None:
    loaded = load(env, "unfixed")
    assert loaded.srcversion == UNFIXED_SRC
    assert loaded.module_dir == env["cache"] / RELEASE / "unfixed"
    module_dir = env["cache"] / RELEASE / "unfixed"
    assert calls(env) == [
        "modprobe t10-pi",
        f"insmod {module_dir}/nvme-core.ko",
        f"insmod {module_dir}/nvme-fabrics.ko",
        f"insmod {module_dir}/nvme-tcp.ko",
    ]
    now = state(env)
    assert (now.variant, now.has_fix, now.out_of_tree) == ("unfixed", False, True)


def test_switch_from_distro_to_unfixed_to_fixed(env: dict[str, Path]) -> None:
    load(env, "distro")
    now = state(env)
    # the distro module has the same source as the fixed build: the fix is known present
    assert (now.variant, now.has_fix, now.out_of_tree) == ("distro", True, False)
    load(env, "unfixed")
    assert calls(env)[1:4] == ["rmmod nvme_tcp", "rmmod nvme_fabrics", "rmmod nvme_core"]
    loaded = load(env, "fixed")
    assert loaded.srcversion == DISTRO_SRC
    now = state(env)
    assert (now.variant, now.has_fix, now.out_of_tree) == ("fixed", True, True)


def test_loaded_variant_is_not_reloaded(env: dict[str, Path]) -> None:
    load(env, "unfixed")
    before = calls(env)
    load(env, "unfixed")
    assert calls(env) == before


def test_distro_unloads_out_of_tree_modules_first(env: dict[str, Path]) -> None:
    load(env, "unfixed")
    env["log"].write_text("")
    loaded = load(env, "distro")
    assert loaded.srcversion == DISTRO_SRC and loaded.module_dir is None
    assert calls(env) == [
        "rmmod nvme_tcp",
        "rmmod nvme_fabrics",
        "rmmod nvme_core",
        "modprobe nvme-tcp",
    ]


def test_refuses_to_unload_with_controllers(env: dict[str, Path]) -> None:
    load(env, "distro")
    (env["root"] / "sys" / "class" / "nvme" / "nvme0").mkdir()
    with pytest.raises(SafetyError, match="nvme0"):
        load(env, "unfixed")
    assert not any(c.startswith("rmmod") for c in calls(env))


def test_refuses_to_unload_with_other_users(env: dict[str, Path]) -> None:
    load(env, "distro")
    (env["root"] / "sys" / "module" / "nvme_core" / "holders" / "nvme").touch()
    with pytest.raises(SafetyError, match="used by nvme"):
        load(env, "unfixed")


def _idle_nvmet_holds_nvme_core(env: dict[str, Path]) -> None:
    """6.12: nvmet uses nvme_core (and nvmet_tcp uses nvmet)."""
    modules = env["root"] / "sys" / "module"
    for name in ("nvmet", "nvmet_tcp"):
        (modules / name / "holders").mkdir(parents=True)
        (modules / name / "initstate").write_text("live\n")
        (modules / "nvme_core" / "holders" / name).touch()


def test_an_idle_nvmet_holding_nvme_core_is_unloaded_first(env: dict[str, Path]) -> None:
    load(env, "distro")
    _idle_nvmet_holds_nvme_core(env)
    load(env, "unfixed")
    log = calls(env)
    assert log.index("rmmod nvmet_tcp") < log.index("rmmod nvmet") < log.index("rmmod nvme_core")


def test_an_nvmet_with_a_target_is_not_unloaded(env: dict[str, Path]) -> None:
    load(env, "distro")
    _idle_nvmet_holds_nvme_core(env)
    (env["root"] / "sys" / "kernel" / "config" / "nvmet" / "subsystems" / "nqn.x").mkdir(
        parents=True
    )
    with pytest.raises(SafetyError, match="configfs entries"):
        load(env, "unfixed")
    assert not any(c.startswith("rmmod") for c in calls(env))


def test_unbuilt_variant_says_how_to_build(env: dict[str, Path]) -> None:
    with pytest.raises(ToolError, match="build-variants"):
        variants.load_variant(
            "unfixed", release="6.1.0-1-amd64", cache_dir=env["cache"], fs=KernelFs(env["root"])
        )


def test_srcversion_mismatch_after_insmod_is_an_error(env: dict[str, Path]) -> None:
    (env["cache"] / RELEASE / "unfixed" / "nvme-core.ko").write_text("SOMETHINGELSE")
    with pytest.raises(ToolError, match="SOMETHINGELSE"):
        load(env, "unfixed")


def test_unknown_out_of_tree_module(env: dict[str, Path]) -> None:
    core = env["root"] / "sys" / "module" / "nvme_core"
    core.mkdir()
    (core / "initstate").write_text("live\n")
    (core / "taint").write_text("OE\n")
    (core / "srcversion").write_text("ABCDEF\n")
    now = state(env)
    assert now.loaded and now.srcversion == "ABCDEF"
    assert now.variant is None and now.has_fix is None


def test_unknown_variant(env: dict[str, Path]) -> None:
    with pytest.raises(Exception, match="unknown kernel variant"):
        load(env, "stock")

"""Load one kernel variant's NVMe host modules (inside the VM, as root), and tell what is loaded.

Variants:

- ``distro``: the release's own modules (``modprobe nvme-tcp``).
- ``fixed`` / ``unfixed``: the out-of-tree builds made by harness.kernels.kbuild, found through
  their ``variant.json`` (harness.bed.module_records); loaded with ``insmod`` after the
  release's own copies are unloaded.

``/sys/module/nvme_core/srcversion`` says which source the loaded nvme-core was built from;
the taint letter ``O`` says it was built out of tree. Note that Debian's 6.1.192 source already
has the fix, so its "fixed" build has the same srcversion as the distro module.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from harness.bed import nvmet_modules
from harness.bed.module_records import (
    HOST_CORE_MODULE,
    HOST_MODULES,
    HOST_VARIANTS,
    VariantBuild,
    default_cache_dir,
    load_variant_record,
)
from harness.core.errors import HarnessError, SafetyError, ToolError
from harness.core.kernelfs import KernelFs
from harness.core.procs import run

DISTRO = "distro"
KERNEL_VARIANTS: tuple[str, ...] = (DISTRO, *HOST_VARIANTS)
SYS_MODULE = "/sys/module"
CTRL_CLASS = "/sys/class/nvme"
# Module names as the kernel spells them, in load order.
LOAD_ORDER: tuple[str, ...] = tuple(m.replace("-", "_") for m in HOST_MODULES)
CORE = "nvme_core"
NVMET_MODULES = frozenset({"nvmet", "nvmet_tcp"})  # the target, a user of nvme_core on 6.12
MODULE_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class LoadedVariant:
    """What load_variant() loaded and verified."""

    variant: str
    release: str
    srcversion: str
    module_dir: Path | None  # None for the distro's own modules


@dataclass(frozen=True)
class LoadedState:
    """What is loaded now, as far as /sys/module and the built variants tell."""

    loaded: bool
    srcversion: str | None
    out_of_tree: bool
    variant: str | None  # distro, fixed, unfixed; None when not loaded or not recognised
    has_fix: bool | None  # None when unknown
    module_dir: Path | None


def module_name(file_stem: str) -> str:
    """``nvme-core`` (file) -> ``nvme_core`` (kernel)."""
    return file_stem.replace("-", "_")


def is_loaded(fs: KernelFs, name: str) -> bool:
    """Whether loadable module ``name`` is loaded (built-in ones have no ``initstate``)."""
    return fs.exists(f"{SYS_MODULE}/{name}/initstate")


def _out_of_tree(fs: KernelFs, name: str) -> bool:
    return "O" in fs.read(f"{SYS_MODULE}/{name}/taint", default="")


def loaded_nvme_modules(fs: KernelFs) -> list[str]:
    return [name for name in LOAD_ORDER if is_loaded(fs, name)]


def controllers(fs: KernelFs) -> list[str]:
    return fs.listdir(CTRL_CLASS)


def _records(cache_dir: Path | None, release: str) -> list[VariantBuild]:
    cache = cache_dir or default_cache_dir()
    found = []
    for variant in HOST_VARIANTS:
        try:
            record = load_variant_record(cache, release, variant)
        except ToolError:
            record = None
        if record is not None:
            found.append(record)
    return found


def current_state(
    fs: KernelFs | None = None,
    release: str | None = None,
    cache_dir: Path | None = None,
) -> LoadedState:
    """What nvme-core is loaded now and, when a built variant matches it, whether it has the fix."""
    kfs = fs or KernelFs()
    if not is_loaded(kfs, CORE):
        return LoadedState(False, None, False, None, None, None)
    srcversion = kfs.read(f"{SYS_MODULE}/{CORE}/srcversion", default="")
    out_of_tree = _out_of_tree(kfs, CORE)
    rel = release or platform.release()
    same_source = [
        r for r in _records(cache_dir, rel) if r.srcversion.get("nvme-core") == srcversion
    ]
    has_fix = same_source[0].has_fix if same_source else None
    if not out_of_tree:
        return LoadedState(True, srcversion, False, DISTRO, has_fix, None)
    if same_source:
        record = same_source[0]
        return LoadedState(
            True, srcversion, True, record.variant, record.has_fix, Path(record.module_dir)
        )
    return LoadedState(True, srcversion, True, None, None, None)


def unload_nvme_modules(fs: KernelFs | None = None, timeout_s: float = MODULE_TIMEOUT_S) -> None:
    """rmmod nvme_tcp, nvme_fabrics, nvme_core; refuses while controllers or other users
    exist. An idle nvmet (6.12's uses nvme_core) is unloaded first; one that holds configfs
    entries is a user like any other (SafetyError)."""
    kfs = fs or KernelFs()
    ctrls = controllers(kfs)
    if ctrls:
        raise SafetyError(
            f"NVMe controllers exist ({', '.join(ctrls)}): refusing to unload the nvme modules",
            hint="disconnect them first (nvme disconnect-all)",
        )
    users = [h for h in kfs.listdir(f"{SYS_MODULE}/{CORE}/holders") if h not in LOAD_ORDER]
    if users and set(users) <= NVMET_MODULES:
        # On 6.12 nvmet uses nvme_core (shared helpers): take an idle target down first;
        # unload_nvmet refuses while nvmet holds configfs entries (someone's target).
        nvmet_modules.unload_nvmet(kfs, timeout_s)
        users = [h for h in kfs.listdir(f"{SYS_MODULE}/{CORE}/holders") if h not in LOAD_ORDER]
    if users:
        raise SafetyError(
            f"nvme_core is also used by {', '.join(users)}: refusing to unload it",
            hint=f"rmmod {' '.join(users)} first",
        )
    for name in reversed(LOAD_ORDER):
        if is_loaded(kfs, name):
            result = run(["rmmod", name], timeout_s=timeout_s)
            if not result.ok:
                raise ToolError(f"cannot unload {name}: {result.one_line_error()}")


def _modprobe(name: str, timeout_s: float) -> None:
    result = run(["modprobe", name], timeout_s=timeout_s)
    if not result.ok:
        raise ToolError(f"modprobe {name} failed: {result.one_line_error()}")


def _depends(ko: Path, timeout_s: float) -> list[str]:
    result = run(["modinfo", "-F", "depends", str(ko)], timeout_s=timeout_s)
    if not result.ok:
        raise ToolError(f"modinfo {ko}: {result.one_line_error()}")
    return [d for d in result.stdout.strip().split(",") if d]


def _distro_srcversion(release: str, timeout_s: float) -> str:
    result = run(["modinfo", "-k", release, "-F", "srcversion", "nvme-core"], timeout_s=timeout_s)
    return result.stdout.strip() if result.ok else ""


def load_variant(
    variant: str,
    release: str | None = None,
    cache_dir: Path | None = None,
    fs: KernelFs | None = None,
    timeout_s: float = MODULE_TIMEOUT_S,
) -> LoadedVariant:
    """Make ``variant``'s nvme-core, nvme-fabrics and nvme-tcp the loaded ones, and verify.

    Refuses (SafetyError) to unload modules while NVMe controllers exist. A built variant that
    is loaded already (all three modules out of tree, same nvme-core srcversion) is not
    reloaded; for ``distro``, out-of-tree copies are unloaded before ``modprobe nvme-tcp``.
    """
    if variant not in KERNEL_VARIANTS:
        raise HarnessError(
            f"unknown kernel variant '{variant}'", hint=f"one of {', '.join(KERNEL_VARIANTS)}"
        )
    kfs = fs or KernelFs()
    rel = release or platform.release()
    loaded = loaded_nvme_modules(kfs)
    foreign = [name for name in loaded if _out_of_tree(kfs, name)]

    if variant == DISTRO:
        expected = _distro_srcversion(rel, timeout_s)
        if foreign:
            unload_nvme_modules(kfs, timeout_s)
        _modprobe("nvme-tcp", timeout_s)
        return LoadedVariant(DISTRO, rel, _verify(kfs, expected, DISTRO), None)

    record = load_variant_record(cache_dir or default_cache_dir(), rel, variant)
    if record is None:
        raise ToolError(
            f"the '{variant}' modules for {rel} are not built",
            hint=f"nvmf-harness build-variants --release {rel} --variant {variant}",
        )
    module_dir = Path(record.module_dir)
    expected = record.srcversion[HOST_CORE_MODULE]
    current = kfs.read(f"{SYS_MODULE}/{CORE}/srcversion", default="")
    if loaded == list(LOAD_ORDER) and foreign == loaded and current == expected:
        return LoadedVariant(variant, rel, expected, module_dir)
    if loaded:
        unload_nvme_modules(kfs, timeout_s)
    kos = [record.ko(m) for m in HOST_MODULES]
    for ko in kos:
        if not ko.is_file():
            raise ToolError(
                f"{ko} is missing", hint="rebuild it: nvmf-harness build-variants --force"
            )
    ours = set(HOST_MODULES) | set(LOAD_ORDER)
    deps: list[str] = []
    for ko in kos:
        deps += [d for d in _depends(ko, timeout_s) if d not in ours and d not in deps]
    for dep in deps:
        _modprobe(dep, timeout_s)
    for ko in kos:
        result = run(["insmod", str(ko)], timeout_s=timeout_s)
        if not result.ok:
            raise ToolError(
                f"insmod {ko.name} failed: {result.one_line_error()}",
                hint="see dmesg; the modules must match the running kernel",
            )
    return LoadedVariant(variant, rel, _verify(kfs, expected, variant), module_dir)


def _verify(fs: KernelFs, expected: str, variant: str) -> str:
    missing = [name for name in LOAD_ORDER if not is_loaded(fs, name)]
    if missing:
        raise ToolError(f"after loading '{variant}', {', '.join(missing)} is not loaded")
    srcversion = fs.read(f"{SYS_MODULE}/{CORE}/srcversion", default="")
    if expected and srcversion != expected:
        raise ToolError(
            f"nvme_core srcversion is '{srcversion}' after loading '{variant}', "
            f"expected '{expected}'"
        )
    return srcversion


@dataclass(frozen=True)
class KernelInfo:
    """The running kernel's release, the variant a run loaded and nvme_core's srcversion."""

    release: str
    variant: str
    srcversion: str


def kernel_info(variant: str) -> KernelInfo:
    """Release and nvme_core srcversion of the running kernel."""
    try:
        srcversion = Path("/sys/module/nvme_core/srcversion").read_text().strip()
    except OSError:
        srcversion = ""
    return KernelInfo(platform.release(), variant, srcversion)

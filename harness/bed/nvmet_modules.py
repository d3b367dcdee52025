"""The patched nvmet in the running kernel (inside the VM, as root): which nvmet is loaded,
loading our ns-visibility build with ``insmod``, loading the distribution's, unloading.

Never ``modprobe nvmet-tcp`` for the patched build: it would load the distribution's copies.
The patch gives nvmet ``MODULE_VERSION("ns-visibility-test")``, so ``/sys/module/nvmet/version``
and ``srcversion`` tell the patched build from the distribution's, which has neither. The
build itself is harness.kernels.nvmet_variant (on the host).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from harness.bed.module_records import (
    NVMET_MODULE_VERSION,
    NVMET_MODULES,
    default_cache_dir,
    load_nvmet_record,
    modinfo_field,
    sha256_of,
)
from harness.core.errors import SafetyError, ToolError
from harness.core.kernelfs import KernelFs
from harness.core.procs import run

SYS_MODULE = "/sys/module"
NVMET_CONFIGFS = "/sys/kernel/config/nvmet"
MODULE_TIMEOUT_S = 60.0
# Other users of nvmet: loaded, they keep it from being unloaded.
OTHER_TRANSPORTS: tuple[str, ...] = ("nvmet_rdma", "nvmet_fc", "nvme_loop", "nvme_fcloop")
BUILD_HINT = "nvmf-harness build-nvmet --release {release}"


@dataclass(frozen=True)
class LoadedNvmet:
    """Which nvmet is loaded, from /sys/module/nvmet (and the build records)."""

    loaded: bool
    tcp_loaded: bool  # nvmet_tcp
    out_of_tree: bool  # taint flag O
    version: str  # /sys/module/nvmet/version; "" for the distribution's module
    srcversion: str  # /sys/module/nvmet/srcversion; "" when the module has no version
    patched: bool  # the ns-visibility test build (version == NVMET_MODULE_VERSION)
    module_dir: str | None  # the build whose srcversion matches, when one is recorded

    def describe(self) -> str:
        """One line for run.json and doctor, e.g. ``nvmet ns-visibility-test 1A2B... (out
        of tree)``, ``nvmet distro (in tree)``, ``nvmet not loaded``."""
        if not self.loaded:
            return "nvmet not loaded"
        where = "out of tree" if self.out_of_tree else "in tree"
        if self.patched:
            return f"nvmet {NVMET_MODULE_VERSION} {self.srcversion} ({where})"
        name = "distro" if not self.out_of_tree else f"unknown build {self.srcversion}".strip()
        return f"nvmet {name} ({where})"


def _is_loaded(fs: KernelFs, name: str) -> bool:
    return fs.exists(f"{SYS_MODULE}/{name}/initstate")


def loaded_nvmet(
    fs: KernelFs | None = None, release: str | None = None, cache_dir: Path | None = None
) -> LoadedNvmet:
    """Which nvmet is loaded now (from /sys/module/nvmet: version, srcversion, taint), and
    the recorded build of ``release`` (default: the running one) that has its srcversion."""
    kfs = fs or KernelFs()
    if not _is_loaded(kfs, "nvmet"):
        return LoadedNvmet(False, _is_loaded(kfs, "nvmet_tcp"), False, "", "", False, None)
    version = kfs.read(f"{SYS_MODULE}/nvmet/version", default="")
    srcversion = kfs.read(f"{SYS_MODULE}/nvmet/srcversion", default="")
    out_of_tree = "O" in kfs.read(f"{SYS_MODULE}/nvmet/taint", default="")
    module_dir = None
    try:
        record = load_nvmet_record(cache_dir or default_cache_dir(), release or platform.release())
    except ToolError:
        record = None
    if record is not None and srcversion and record.srcversion == srcversion:
        module_dir = record.module_dir
    return LoadedNvmet(
        loaded=True,
        tcp_loaded=_is_loaded(kfs, "nvmet_tcp"),
        out_of_tree=out_of_tree,
        version=version,
        srcversion=srcversion,
        patched=version == NVMET_MODULE_VERSION,
        module_dir=module_dir,
    )


def patched_nvmet_loaded(fs: KernelFs | None = None) -> bool:
    """Whether the loaded nvmet is the ns-visibility test build (/sys/module/nvmet/version)."""
    kfs = fs or KernelFs()
    return kfs.read(f"{SYS_MODULE}/nvmet/version", default="") == NVMET_MODULE_VERSION


def nvmet_entries(fs: KernelFs) -> list[str]:
    """Everything nvmet holds in configfs (``ports/6000``, ``subsystems/NQN``, ``hosts/NQN``)."""
    if not fs.exists(NVMET_CONFIGFS):
        return []
    return [
        f"{group}/{name}"
        for group in ("ports", "subsystems", "hosts")
        for name in fs.listdir(f"{NVMET_CONFIGFS}/{group}")
    ]


def unload_nvmet(fs: KernelFs | None = None, timeout_s: float = MODULE_TIMEOUT_S) -> None:
    """rmmod nvmet_tcp and nvmet (whichever build they are).

    Raises SafetyError while nvmet holds configfs entries (ports, subsystems, hosts: someone's
    target) or another transport (nvmet_rdma, nvme_loop, ...) uses nvmet; ToolError when
    rmmod fails.
    """
    kfs = fs or KernelFs()
    held = nvmet_entries(kfs)
    if held:
        shown = ", ".join(held[:4]) + (" ..." if len(held) > 4 else "")
        raise SafetyError(
            f"nvmet holds configfs entries ({shown}): refusing to unload it",
            hint="remove that target first (nvmf-harness clean removes the harness's own)",
        )
    users = [name for name in OTHER_TRANSPORTS if _is_loaded(kfs, name)]
    if users:
        raise SafetyError(
            f"nvmet is also used by {', '.join(users)}: refusing to unload it",
            hint=f"rmmod {' '.join(users)} first",
        )
    for name in ("nvmet_tcp", "nvmet"):
        if _is_loaded(kfs, name):
            result = run(["rmmod", name], timeout_s=timeout_s)
            if not result.ok:
                raise ToolError(f"cannot unload {name}: {result.one_line_error()}")


def load_patched_nvmet(
    release: str | None = None,
    cache_dir: Path | None = None,
    fs: KernelFs | None = None,
    timeout_s: float = MODULE_TIMEOUT_S,
) -> LoadedNvmet:
    """Make the patched nvmet.ko and nvmet-tcp.ko the loaded ones (insmod), and verify.

    Already loaded (same srcversion, nvmet_tcp too) means nothing to do; any other nvmet is
    unloaded first, which unload_nvmet refuses (SafetyError) while it holds configfs entries.
    Dependencies (configfs, t10-pi) come from modprobe. Raises ToolError when the build is
    missing or damaged, insmod fails, or the loaded module is not the build afterwards.
    """
    kfs = fs or KernelFs()
    rel = release or platform.release()
    cache = cache_dir or default_cache_dir()
    record = load_nvmet_record(cache, rel)
    if record is None:
        raise ToolError(
            f"the patched nvmet for {rel} is not built",
            hint=BUILD_HINT.format(release=rel),
        )
    now = loaded_nvmet(kfs, rel, cache)
    if now.loaded and now.tcp_loaded and now.patched and now.srcversion == record.srcversion:
        return now
    for module in NVMET_MODULES:
        ko = record.ko(module)
        if not ko.is_file() or sha256_of(ko) != record.ko_sha256.get(module):
            raise ToolError(
                f"{ko} is missing or differs from its build record",
                hint=BUILD_HINT.format(release=rel) + " --force",
            )
    if now.loaded or now.tcp_loaded:
        unload_nvmet(kfs, timeout_s)
    deps: list[str] = []
    for module in NVMET_MODULES:
        for dep in modinfo_field(record.ko(module), "depends").split(","):
            if dep and dep not in NVMET_MODULES and dep not in deps:
                deps.append(dep)
    for dep in deps:
        result = run(["modprobe", dep], timeout_s=timeout_s)
        if not result.ok:
            raise ToolError(f"modprobe {dep} failed: {result.one_line_error()}")
    for module in NVMET_MODULES:
        result = run(["insmod", str(record.ko(module))], timeout_s=timeout_s)
        if not result.ok:
            raise ToolError(
                f"insmod {module}.ko failed: {result.one_line_error()}",
                hint="see dmesg; the modules must match the running kernel",
            )
    after = loaded_nvmet(kfs, rel, cache)
    if not (after.loaded and after.tcp_loaded and after.srcversion == record.srcversion):
        raise ToolError(
            f"after insmod, nvmet is '{after.describe()}', expected srcversion "
            f"{record.srcversion} with nvmet_tcp"
        )
    return after


def load_distro_nvmet(
    fs: KernelFs | None = None, timeout_s: float = MODULE_TIMEOUT_S
) -> LoadedNvmet:
    """Make the release's own nvmet and nvmet-tcp the loaded ones (unloading an out-of-tree
    nvmet first, which unload_nvmet may refuse) with ``modprobe nvmet-tcp``."""
    kfs = fs or KernelFs()
    now = loaded_nvmet(kfs)
    if now.out_of_tree:
        unload_nvmet(kfs, timeout_s)
    result = run(["modprobe", "nvmet-tcp"], timeout_s=timeout_s)
    if not result.ok:
        raise ToolError(
            f"cannot load nvmet-tcp: {result.one_line_error()}",
            hint="the kernel needs CONFIG_NVME_TARGET_TCP (m or y)",
        )
    after = loaded_nvmet(kfs)
    if after.out_of_tree or not after.loaded:
        raise ToolError(f"after modprobe nvmet-tcp, nvmet is '{after.describe()}'")
    return after

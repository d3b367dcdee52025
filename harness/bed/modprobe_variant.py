"""Make ``modprobe`` load a built variant's nvme host modules, for tools that load modules
themselves (blktests: ``modprobe nvme-tcp`` in tests/nvme/rc, ``modprobe -r`` in
common/nvme:_cleanup_nvmet). Inside the VM only.

harness.bed.variants loads a variant with ``insmod``; a tool that calls ``modprobe`` would
get the distribution's copies instead. Placing the ``.ko`` files in
``/lib/modules/<release>/updates/`` and running ``depmod -a`` works but took 150 s under
TCG (it rebuilds every index). Instead, a modprobe.d file (``/etc/modprobe.d/``, kmod's
``install`` directive, modprobe.d(5)) tells modprobe to run ``insmod <variant's .ko>`` for
each of nvme_core, nvme_fabrics and nvme_tcp, after their dependencies. ``modprobe -r``
needs nothing: the module names are the distribution's.

The guest's root is an overlay of the host's whose writes are lost when the VM ends
(harness/vm/boot.py), so the file never reaches the host. ``require_guest`` refuses to
write it anywhere but in a virtme-ng guest.
"""

from __future__ import annotations

import platform
from pathlib import Path

from harness.bed import variants
from harness.bed.module_records import HOST_MODULES, default_cache_dir, load_variant_record
from harness.core.errors import SafetyError, ToolError
from harness.core.kernelfs import KernelFs
from harness.core.procs import run

CONF = Path("/etc/modprobe.d/nvmf-harness-variant.conf")
PROC_CMDLINE = Path("/proc/cmdline")
GUEST_MARK = "virtme"  # virtme-ng puts virtme_* parameters on the guest kernel's command line
MODPROBE_TIMEOUT_S = 60.0


def require_guest(cmdline: Path = PROC_CMDLINE) -> None:
    """SafetyError unless this is a virtme-ng guest (its kernel command line names virtme)."""
    try:
        text = cmdline.read_text()
    except OSError as exc:
        raise SafetyError(f"cannot read {cmdline}: {exc}") from exc
    if GUEST_MARK not in text:
        raise SafetyError(
            "refusing to change how modprobe loads the nvme modules outside the VM",
            hint="run it in the VM: nvmf-harness blktests ...",
        )


def install_lines(kos: dict[str, Path], deps: dict[str, list[str]]) -> list[str]:
    """modprobe.d lines that load ``kos`` (file stem -> .ko, in HOST_MODULES order) with
    insmod, each after ``modprobe`` of its dependencies (``deps``: file stem -> module names
    from ``modinfo -F depends``). ``$CMDLINE_OPTS`` passes modprobe's options on."""
    lines = []
    for stem, ko in kos.items():
        steps = [f"/sbin/modprobe {dep}" for dep in deps.get(stem, [])]
        steps.append(f"/sbin/insmod {ko} $CMDLINE_OPTS")
        lines.append(f"install {variants.module_name(stem)} {' && '.join(steps)}")
    return lines


def _depends(ko: Path) -> list[str]:
    result = run(["modinfo", "-F", "depends", str(ko)], timeout_s=MODPROBE_TIMEOUT_S)
    if not result.ok:
        raise ToolError(f"modinfo {ko}: {result.one_line_error()}")
    return [variants.module_name(d) for d in result.stdout.strip().split(",") if d]


def install(variant: str, cache_dir: Path | None = None, conf: Path = CONF) -> str:
    """Make modprobe load ``variant`` (fixed, unfixed; distro removes our file) and verify
    it by loading nvme-tcp once and unloading it again. Returns the nvme_core srcversion
    the variant has. Needs no nvme module loaded (SafetyError from variants otherwise).
    Raises ToolError when the modules are not built or the loaded one is another."""
    require_guest()
    release = platform.release()
    if variant == variants.DISTRO:
        conf.unlink(missing_ok=True)
    else:
        record = load_variant_record(cache_dir or default_cache_dir(), release, variant)
        if record is None:
            raise ToolError(
                f"the '{variant}' modules for {release} are not built",
                hint=f"nvmf-harness build-variants --release {release} --variant {variant}",
            )
        kos = {stem: record.ko(stem) for stem in HOST_MODULES}
        for ko in kos.values():
            if not ko.is_file():
                raise ToolError(f"{ko} is missing", hint="nvmf-harness build-variants --force")
        deps = {stem: _depends(ko) for stem, ko in kos.items()}
        conf.parent.mkdir(parents=True, exist_ok=True)
        header = f"# nvmf-harness: modprobe loads the '{variant}' nvme host modules (VM only)"
        conf.write_text("\n".join([header, *install_lines(kos, deps)]) + "\n")
    return verify(variant, cache_dir)


def verify(variant: str, cache_dir: Path | None = None, fs: KernelFs | None = None) -> str:
    """``modprobe nvme-tcp``, check that nvme_core is ``variant`` (srcversion and build
    record, harness.bed.variants.current_state), ``modprobe -r nvme-tcp``. Returns the
    srcversion; ToolError when another is loaded."""
    kfs = fs or KernelFs()
    if variants.loaded_nvme_modules(kfs):
        variants.unload_nvme_modules(kfs)
    result = run(["modprobe", "nvme-tcp"], timeout_s=MODPROBE_TIMEOUT_S)
    if not result.ok:
        raise ToolError(f"modprobe nvme-tcp failed: {result.one_line_error()}")
    state = variants.current_state(kfs, cache_dir=cache_dir)
    run(["modprobe", "-r", "nvme-tcp"], timeout_s=MODPROBE_TIMEOUT_S)
    if state.variant != variant:
        raise ToolError(
            f"modprobe nvme-tcp loaded nvme_core {state.srcversion} "
            f"({state.variant or 'unknown'}), not '{variant}'",
            hint=f"see {CONF}",
        )
    return state.srcversion or ""


def loaded_variant(fs: KernelFs | None = None, cache_dir: Path | None = None) -> str | None:
    """The variant of the nvme_core loaded now (None when none is loaded); ``?`` when it is
    loaded but matches no build."""
    state = variants.current_state(fs or KernelFs(), cache_dir=cache_dir)
    if not state.loaded:
        return None
    return state.variant or "?"

"""``target.backend = "nvmetcli"``: the target is created by ``nvmetcli restore``.

For people who keep their nvmet targets as nvmetcli JSON and want the harness to build the
target the way their own tooling does. The harness writes the run's target as nvmetcli JSON
(harness/nvmetcli_json.py) and runs ``nvmetcli restore FILE``; faults and teardown still go
through configfs (harness/target.py), by the names in the spec.

Safety: ``nvmetcli restore`` first clears EVERY nvmet entry (its restore_from_file runs with
clear_existing), including targets the harness did not create. So this backend refuses to
run unless nvmet holds no host, port or subsystem at all; the default backend (configfs)
never needs that. nvmetcli does not restore ``buffered_io``: namespaces that need it (a file
on tmpfs, which refuses O_DIRECT) are disabled, switched to buffered IO and enabled again.
After the restore every namespace must be enabled and every port linked, or the run stops.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness.bed import nvmetcli_json
from harness.bed.target import NVMET, NvmetTarget, TargetSpec
from harness.core.errors import HarnessError, SafetyError, ToolError
from harness.core.kernelfs import KernelFs
from harness.core.procs import require_tool, run

RESTORE_TIMEOUT_S = 60.0


def nvmet_entries(kfs: KernelFs) -> list[str]:
    """Every host, port and subsystem in nvmet's configfs, whoever made it."""
    return [
        f"{group[:-1]} {name}"
        for group in ("hosts", "ports", "subsystems")
        for name in kfs.listdir(f"{NVMET}/{group}")
    ]


def restore_argv(nvmetcli: str, savefile: Path, netns: str | None) -> list[str]:
    """``nvmetcli restore``, inside the target's network namespace when it has one (nvmet
    opens a port's listening socket in the namespace of the process that enables it)."""
    argv = [nvmetcli, "restore", str(savefile)]
    if netns is not None:
        argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
    return argv


def apply(target: NvmetTarget, spec: TargetSpec, savefile: Path) -> None:
    """Create ``spec`` with ``nvmetcli restore``; on any failure remove it again and raise."""
    target.require_nvmet()
    existing = nvmet_entries(target.kfs)
    if existing:
        raise SafetyError(
            f"nvmetcli restore would remove {len(existing)} nvmet entries this run did not "
            f"create ({', '.join(existing[:3])})",
            hint='use target.backend = "configfs" (the default), which touches only its own',
        )
    nvmetcli = require_tool("nvmetcli")
    nvmetcli_json.save(restore_spec(spec), savefile)
    target.spec = spec  # from here on, teardown removes whatever of the spec exists
    try:
        result = run(restore_argv(nvmetcli, savefile, target.netns), RESTORE_TIMEOUT_S)
        if not result.ok:
            raise ToolError(f"nvmetcli restore {savefile} failed: {result.one_line_error()}")
        _buffered_io_fixup(target, spec)
        _require_complete(target, spec, savefile)
    except BaseException:
        target.teardown()
        raise


def restore_spec(spec: TargetSpec) -> TargetSpec:
    """``spec`` as ``nvmetcli restore`` gets it: the namespaces that need ``buffered_io``
    disabled. nvmetcli does not know that attribute, so it would enable them with O_DIRECT,
    which a file on tmpfs refuses before Linux 6.6 ("Cannot enable ... namespaces/1" on
    Debian 12's 6.1); :func:`_buffered_io_fixup` sets it and then enables them."""
    return replace(
        spec,
        subsystems=tuple(
            replace(
                subsystem,
                namespaces=tuple(
                    replace(ns, enable=False) if ns.buffered_io else ns
                    for ns in subsystem.namespaces
                ),
            )
            for subsystem in spec.subsystems
        ),
    )


def _buffered_io_fixup(target: NvmetTarget, spec: TargetSpec) -> None:
    """Set ``buffered_io`` on the namespaces that need it (restored disabled by
    :func:`restore_spec`), then enable them as ``spec`` says."""
    for subsystem in spec.subsystems:
        for namespace in subsystem.namespaces:
            if not namespace.buffered_io:
                continue
            base = f"{NVMET}/subsystems/{subsystem.nqn}/namespaces/{namespace.nsid}"
            if target.namespace_enabled(subsystem.nqn, namespace.nsid):
                target.set_namespace_enabled(subsystem.nqn, namespace.nsid, False)
            target.kfs.write(f"{base}/buffered_io", "1")
            if namespace.enable:
                target.set_namespace_enabled(subsystem.nqn, namespace.nsid, True)


def _require_complete(target: NvmetTarget, spec: TargetSpec, savefile: Path) -> None:
    missing = [
        f"namespace {namespace.nsid} of {subsystem.nqn} not enabled"
        for subsystem in spec.subsystems
        for namespace in subsystem.namespaces
        if not target.namespace_enabled(subsystem.nqn, namespace.nsid)
    ]
    missing += [
        f"port {port.portid} not linked to {nqn}"
        for port in spec.ports
        for nqn in port.subsystems
        if not target.port_linked(port.portid, nqn)
    ]
    if missing:
        raise HarnessError(
            f"nvmetcli restore {savefile} left the target incomplete: {'; '.join(missing)}",
            hint="run it by hand to see its messages",
        )

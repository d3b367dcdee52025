"""Per-port namespace visibility: hide one ANA group's namespaces from one nvmet port.

Only the project's test-only nvmet patch (patches/nvmet-ns-visibility/, built and loaded by
harness/kernels/nvmet_variant.py) has the attribute this drives,
``/sys/kernel/config/nvmet/ports/<portid>/ana_groups/<grpid>/ns_visibility``, beside
``ana_state``. Its values (drivers/nvme/target/configfs.c with the patch,
``nvmet_ns_visibility_names``):

- ``visible``: as stock nvmet (the default).
- ``hidden``: that port's controllers no longer list the group's namespaces (Identify Active
  Namespace ID list, ANA log); Identify Namespace returns zeroes and the NS descriptor list
  Invalid Namespace, as for an unallocated NSID; IO to them is still served.
- ``hidden-path-error``: hidden, and IO is answered Internal Path Error (0x300, no DNR),
  which a 6.1 host fails over to another path (host/core.c:nvme_decide_disposition,
  multipath.c:nvme_failover_req) without an ANA log re-read.
- ``hidden-invalid-ns``: hidden, and IO is answered Invalid Namespace with DNR (a spec-style
  detach), which the host does not fail over.

Every change sends a Namespace Attribute Changed event (changed-NS log entries for the
group's namespaces) to that port's controllers only (core.c with the patch:
``nvmet_port_ns_visibility_changed``), so the host rescans that one controller: the path's
per-path disk goes away (or comes back) while the controller stays live.
"""

from __future__ import annotations

from harness.bed import nvmet_modules
from harness.bed.target import DEFAULT_ANA_GROUP, NVMET
from harness.core.errors import HarnessError, KernelFsError
from harness.core.kernelfs import KernelFs

ATTRIBUTE = "ns_visibility"
VISIBLE = "visible"
HIDDEN = "hidden"
HIDDEN_PATH_ERROR = "hidden-path-error"
HIDDEN_INVALID_NS = "hidden-invalid-ns"
VISIBILITIES: tuple[str, ...] = (VISIBLE, HIDDEN, HIDDEN_PATH_ERROR, HIDDEN_INVALID_NS)
BUILD_HINT = (
    "load the patched nvmet: nvmf-harness build-nvmet --release REL on the host, then "
    "harness.bed.nvmet_modules.load_patched_nvmet() in the VM"
)


def attribute_path(portid: int, grpid: int = DEFAULT_ANA_GROUP) -> str:
    """``/sys/kernel/config/nvmet/ports/<portid>/ana_groups/<grpid>/ns_visibility``."""
    return f"{NVMET}/ports/{portid}/ana_groups/{grpid}/{ATTRIBUTE}"


def supported(kfs: KernelFs, portid: int | None = None) -> bool:
    """Whether the loaded nvmet has per-port namespace visibility.

    With ``portid``: whether that port's default ANA group has the attribute (the most direct
    test). Without: whether /sys/module/nvmet/version names the patched build.
    """
    if portid is not None:
        return kfs.exists(attribute_path(portid))
    return nvmet_modules.patched_nvmet_loaded(kfs)


def _require_attribute(kfs: KernelFs, portid: int, grpid: int) -> str:
    path = attribute_path(portid, grpid)
    if kfs.exists(path):
        return path
    group = f"{NVMET}/ports/{portid}/ana_groups/{grpid}"
    if not kfs.exists(group):
        raise HarnessError(
            f"nvmet port {portid} has no ANA group {grpid} ({group} is missing)",
            hint="create the port (and the group) first",
        )
    raise HarnessError(
        f"the loaded nvmet has no per-port namespace visibility ({path} is missing)",
        hint=BUILD_HINT,
    )


def visibility(kfs: KernelFs, portid: int, grpid: int = DEFAULT_ANA_GROUP) -> str:
    """The visibility of ANA group ``grpid``'s namespaces on port ``portid`` (one of
    VISIBILITIES). Raises HarnessError when the port, group or attribute is missing."""
    value = kfs.read(_require_attribute(kfs, portid, grpid), default="")
    if value not in VISIBILITIES:
        raise HarnessError(f"{attribute_path(portid, grpid)} reads {value!r}, not a visibility")
    return value


def set_visibility(kfs: KernelFs, portid: int, value: str, grpid: int = DEFAULT_ANA_GROUP) -> None:
    """Set the visibility of ANA group ``grpid``'s namespaces on port ``portid``.

    Returns when nvmet has queued the Namespace Attribute Changed event to that port's
    controllers; the host's rescan (the per-path disk going or coming) follows
    asynchronously: wait for it on the host side. Writing the current value sends no event.
    Raises HarnessError for an unknown value or a missing attribute (with a hint),
    KernelFsError/KernelFsTimeout when the write fails or hangs.
    """
    if value not in VISIBILITIES:
        raise HarnessError(
            f"unknown namespace visibility {value!r}", hint=f"one of {', '.join(VISIBILITIES)}"
        )
    path = _require_attribute(kfs, portid, grpid)
    try:
        kfs.write(path, value)
    except KernelFsError as exc:
        raise KernelFsError(
            f"cannot set {ATTRIBUTE} of port {portid} ANA group {grpid} to {value}: {exc}",
            hint="see dmesg",
        ) from exc


def hidden_groups(kfs: KernelFs, portid: int) -> dict[int, str]:
    """The ANA groups of ``portid`` whose namespaces are not visible: grpid -> visibility.

    Empty when nothing is hidden or the loaded nvmet has no visibility attribute.
    """
    found: dict[int, str] = {}
    for name in kfs.listdir(f"{NVMET}/ports/{portid}/ana_groups"):
        if not name.isdigit():
            continue
        value = kfs.read(attribute_path(portid, int(name)), default=VISIBLE)
        if value != VISIBLE:
            found[int(name)] = value
    return found


def make_all_visible(kfs: KernelFs, portids: list[int]) -> list[str]:
    """Set every hidden ANA group of these ports back to ``visible``; returns errors (one
    line each) instead of raising, for teardown paths."""
    errors: list[str] = []
    for portid in portids:
        for grpid in hidden_groups(kfs, portid):
            try:
                set_visibility(kfs, portid, VISIBLE, grpid)
            except HarnessError as exc:
                errors.append(str(exc))
    return errors

"""The nvmet target, driven through configfs (/sys/kernel/config/nvmet).

``TargetSpec`` describes a target in the shape of nvmetcli's JSON save format (hosts, ports,
subsystems with namespaces), so ``nvmetcli restore`` can load what we save and we can load
what nvmetcli saves (see nvmetcli_json.py). ``NvmetTarget`` creates a spec in configfs in the
order the kernel needs, remembers every entry it made, and removes them in reverse order.

Every name the harness creates carries a mark so ``clean`` can find what a killed run left:
subsystem NQNs start with NQN_PREFIX and port ids lie in [PORT_ID_BASE, PORT_ID_BASE + 64).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from harness.core.errors import HarnessError, KernelFsError
from harness.core.kernelfs import KernelFs
from harness.core.procs import run

NVMET = "/sys/kernel/config/nvmet"
NQN_PREFIX = "nqn.2026-11.io.nvmf-harness:"
PORT_ID_BASE = 6000
PORT_ID_COUNT = 64
ANA_STATES = ("optimized", "non-optimized", "inaccessible", "persistent-loss", "change")
DEFAULT_ANA_GROUP = 1
MAX_ANA_GROUPS = 128  # NVMET_MAX_ANAGRPS (drivers/nvme/target/nvmet.h)


@dataclass(frozen=True)
class NamespaceSpec:
    nsid: int
    device_path: str
    device_uuid: str = ""
    device_nguid: str = ""
    enable: bool = True
    buffered_io: bool = False
    ana_grpid: int = DEFAULT_ANA_GROUP


@dataclass(frozen=True)
class NamespaceIdentity:
    """A namespace's identifiers and backing as nvmet's configfs shows them ("" = leave)."""

    device_uuid: str = ""
    device_nguid: str = ""
    device_path: str = ""


@dataclass(frozen=True)
class SubsystemSpec:
    nqn: str
    namespaces: tuple[NamespaceSpec, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    allow_any_host: bool = False
    serial: str = ""
    model: str = ""


@dataclass(frozen=True)
class AnaGroupSpec:
    grpid: int
    state: str = "optimized"


@dataclass(frozen=True)
class PortSpec:
    portid: int
    traddr: str
    trsvcid: str
    trtype: str = "tcp"
    adrfam: str = "ipv4"
    subsystems: tuple[str, ...] = ()
    ana_groups: tuple[AnaGroupSpec, ...] = (AnaGroupSpec(DEFAULT_ANA_GROUP),)


@dataclass(frozen=True)
class TargetSpec:
    hosts: tuple[str, ...] = ()
    ports: tuple[PortSpec, ...] = ()
    subsystems: tuple[SubsystemSpec, ...] = ()

    def port(self, portid: int) -> PortSpec:
        for port in self.ports:
            if port.portid == portid:
                return port
        raise HarnessError(f"target has no port {portid}")


def port_ana_groups(spec: TargetSpec | None, portid: int) -> tuple[int, ...]:
    """The ANA group ids (1-128) port ``portid`` has in ``spec``, in spec order; the default
    group alone when there is no spec (none applied yet, or torn down) or no such port:
    nvmet gives every port group 1 (configfs.c:nvmet_ports_make)."""
    if spec is not None:
        for port in spec.ports:
            if port.portid == portid:
                return tuple(group.grpid for group in port.ana_groups)
    return (DEFAULT_ANA_GROUP,)


def ana_groups_spec(count: int) -> tuple[AnaGroupSpec, ...]:
    """Groups 1..``count``, all optimized: what every port of a bed with ``target.ana_groups
    = count`` has. A group nvmet has not been told about is inaccessible on a port
    (configfs.c:nvmet_ports_make), so each one is created and set (``_create_port``)."""
    if not 1 <= count <= MAX_ANA_GROUPS:
        raise HarnessError(f"ANA groups: {count} is out of range [1, {MAX_ANA_GROUPS}]")
    return tuple(AnaGroupSpec(grpid) for grpid in range(1, count + 1))


def namespace_ana_group(nsid: int, groups: int) -> int:
    """The ANA group of namespace ``nsid`` (1-based) on a bed with ``groups`` ANA groups:
    round robin, (nsid - 1) % groups + 1, so namespace 1 is always in group 1 and with as
    many groups as namespaces each namespace has its own group (written to the namespace's
    ana_grpid before it is enabled: configfs.c:nvmet_ns_ana_grpid_store)."""
    return (nsid - 1) % max(groups, 1) + 1


def is_harness_port(portid: int) -> bool:
    return PORT_ID_BASE <= portid < PORT_ID_BASE + PORT_ID_COUNT


@dataclass
class NvmetTarget:
    """Creates a TargetSpec in configfs and takes it down again (idempotent)."""

    kfs: KernelFs
    netns: str | None = None  # ports are enabled from inside this network namespace
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, path), in order
    spec: TargetSpec | None = None  # what apply() was asked to create

    # --- creation ----------------------------------------------------------------------------

    def apply(self, spec: TargetSpec) -> None:
        """Create hosts, subsystems, ports, namespaces and port links; undo all on failure."""
        self.require_nvmet()
        self.spec = spec
        try:
            for hostnqn in spec.hosts:
                self._mkdir(f"{NVMET}/hosts/{hostnqn}")
            for subsystem in spec.subsystems:
                self._create_subsystem(subsystem)
            for port in spec.ports:
                self._create_port(port)
            for subsystem in spec.subsystems:
                for namespace in subsystem.namespaces:
                    self._create_namespace(subsystem.nqn, namespace)
            for port in spec.ports:
                for nqn in port.subsystems:
                    self.link_port(port.portid, nqn)
        except HarnessError:
            self.teardown()
            raise

    def require_nvmet(self) -> None:
        if not self.kfs.exists(NVMET):
            raise HarnessError(
                f"{NVMET} not found: nvmet is not loaded or configfs is not mounted",
                hint="modprobe nvmet-tcp && mount -t configfs none /sys/kernel/config",
            )

    def _mkdir(self, path: str) -> None:
        self.kfs.mkdir(path)
        self.created.append(("dir", path))

    def _create_subsystem(self, subsystem: SubsystemSpec) -> None:
        base = f"{NVMET}/subsystems/{subsystem.nqn}"
        self._mkdir(base)
        if subsystem.serial:
            self.kfs.write(f"{base}/attr_serial", subsystem.serial)
        if subsystem.model and self.kfs.exists(f"{base}/attr_model"):
            self.kfs.write(f"{base}/attr_model", subsystem.model)
        self.kfs.write(f"{base}/attr_allow_any_host", "1" if subsystem.allow_any_host else "0")
        for hostnqn in subsystem.allowed_hosts:
            link = f"{base}/allowed_hosts/{hostnqn}"
            self.kfs.symlink(f"{NVMET}/hosts/{hostnqn}", link)
            self.created.append(("link", link))

    def _create_namespace(self, nqn: str, namespace: NamespaceSpec) -> None:
        base = f"{NVMET}/subsystems/{nqn}/namespaces/{namespace.nsid}"
        self._mkdir(base)
        self.kfs.write(f"{base}/device_path", namespace.device_path)
        if namespace.device_uuid:
            self.kfs.write(f"{base}/device_uuid", namespace.device_uuid)
        if namespace.device_nguid:
            self.kfs.write(f"{base}/device_nguid", namespace.device_nguid)
        # A file on tmpfs has no O_DIRECT on 6.1: buffered_io must be set before enable.
        if namespace.buffered_io:
            self.kfs.write(f"{base}/buffered_io", "1")
        if namespace.ana_grpid != DEFAULT_ANA_GROUP:
            self.kfs.write(f"{base}/ana_grpid", str(namespace.ana_grpid))
        self.created.append(("ns", base))
        if namespace.enable:
            self.set_namespace_enabled(nqn, namespace.nsid, True)

    def _create_port(self, port: PortSpec) -> None:
        base = f"{NVMET}/ports/{port.portid}"
        self._mkdir(base)
        self.kfs.write(f"{base}/addr_trtype", port.trtype)
        self.kfs.write(f"{base}/addr_adrfam", port.adrfam)
        self.kfs.write(f"{base}/addr_traddr", port.traddr)
        self.kfs.write(f"{base}/addr_trsvcid", port.trsvcid)
        for group in port.ana_groups:
            if group.grpid != DEFAULT_ANA_GROUP:
                self._mkdir(f"{base}/ana_groups/{group.grpid}")
            self.set_ana_state(port.portid, group.state, group.grpid)

    # --- changes (the target-side faults) ---------------------------------------------------

    def link_port(self, portid: int, nqn: str) -> None:
        """Expose subsystem ``nqn`` on port ``portid`` (enables the port on first link)."""
        link = f"{NVMET}/ports/{portid}/subsystems/{nqn}"
        if self.kfs.exists(link):
            return
        self.kfs.symlink(f"{NVMET}/subsystems/{nqn}", link, netns=self.netns)
        if ("link", link) not in self.created:
            self.created.append(("link", link))

    def unlink_port(self, portid: int, nqn: str) -> None:
        """Stop exposing ``nqn`` on ``portid``: the target drops that path's controllers."""
        self.kfs.unlink(f"{NVMET}/ports/{portid}/subsystems/{nqn}")

    def port_linked(self, portid: int, nqn: str) -> bool:
        return self.kfs.exists(f"{NVMET}/ports/{portid}/subsystems/{nqn}")

    def set_namespace_enabled(self, nqn: str, nsid: int, enabled: bool) -> None:
        self.kfs.write(
            f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}/enable", "1" if enabled else "0"
        )

    def set_namespace_uuid(self, nqn: str, nsid: int, device_uuid: str) -> None:
        """Give an enabled namespace a new uuid: disable, write ``device_uuid``, enable
        (configfs.c:nvmet_ns_device_uuid_store refuses while enabled). IO that reaches the
        target in the gap is answered with a path error (core.c:nvmet_req_find_ns on 6.1.192)
        and failed over by the host; both steps send a Namespace Attribute Changed AEN to
        every controller that did not mask it (core.c:nvmet_ns_changed)."""
        base = f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}"
        self.set_namespace_enabled(nqn, nsid, False)
        try:
            self.kfs.write(f"{base}/device_uuid", device_uuid)
        finally:
            self.set_namespace_enabled(nqn, nsid, True)

    def revalidate_size(self, nqn: str, nsid: int) -> None:
        """Make nvmet re-read an enabled namespace's backing size (configfs.c:
        nvmet_ns_revalidate_size_store -> core.c:nvmet_ns_revalidate); when it changed, every
        controller gets a Namespace Attribute Changed AEN (core.c:nvmet_ns_changed) and the
        host rescans. The kernel refuses (EINVAL) while the namespace is disabled."""
        self.kfs.write(f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}/revalidate_size", "1")

    def namespace_identity(self, nqn: str, nsid: int) -> NamespaceIdentity:
        """What a remap swaps: the namespace's device_uuid, device_nguid and device_path."""
        base = f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}"
        return NamespaceIdentity(
            device_uuid=self.kfs.read(f"{base}/device_uuid", default=""),
            device_nguid=self.kfs.read(f"{base}/device_nguid", default=""),
            device_path=self.kfs.read(f"{base}/device_path", default=""),
        )

    def set_namespace_identities(self, nqn: str, changes: dict[int, NamespaceIdentity]) -> None:
        """Give namespaces new identities at once: disable all of ``changes``' NSIDs, write
        each one's non-empty fields, enable them all again (even when a write failed).
        nvmet refuses these writes while a namespace is enabled (configfs.c:
        nvmet_ns_device_uuid_store and friends: EBUSY). Each disable and enable sends the
        Namespace Attribute Changed AEN (core.c:nvmet_ns_changed). Raises HarnessError."""
        for nsid in changes:
            self.set_namespace_enabled(nqn, nsid, False)
        try:
            for nsid, identity in changes.items():
                base = f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}"
                for attr in ("device_path", "device_uuid", "device_nguid"):
                    value = getattr(identity, attr)
                    if value:
                        self.kfs.write(f"{base}/{attr}", value)
        finally:
            errors: list[str] = []
            for nsid in changes:
                try:
                    self.set_namespace_enabled(nqn, nsid, True)
                except HarnessError as exc:
                    errors.append(str(exc))
            if errors:
                raise HarnessError(errors[0])

    def namespace_uuid(self, nqn: str, nsid: int) -> str:
        return self.kfs.read(f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}/device_uuid", default="")

    def namespace_enabled(self, nqn: str, nsid: int) -> bool:
        value = self.kfs.read(f"{NVMET}/subsystems/{nqn}/namespaces/{nsid}/enable", default="0")
        return value == "1"

    def set_ana_state(self, portid: int, state: str, grpid: int = DEFAULT_ANA_GROUP) -> None:
        if state not in ANA_STATES:
            raise HarnessError(f"unknown ANA state {state!r} (known: {', '.join(ANA_STATES)})")
        self.kfs.write(f"{NVMET}/ports/{portid}/ana_groups/{grpid}/ana_state", state)

    def ana_state(self, portid: int, grpid: int = DEFAULT_ANA_GROUP) -> str:
        return self.kfs.read(f"{NVMET}/ports/{portid}/ana_groups/{grpid}/ana_state", default="")

    # --- removal -----------------------------------------------------------------------------

    def teardown(self) -> list[str]:
        """Remove everything this object created, newest first; returns errors.

        Then everything the applied spec names that still exists: an interrupt (Ctrl-C)
        can land after the kernel made an entry and before it was recorded.
        """
        errors: list[str] = []
        while self.created:
            kind, path = self.created.pop()
            try:
                _remove_entry(self.kfs, kind, path)
            except HarnessError as exc:
                errors.append(str(exc))
        spec = self.spec
        if spec is not None and self.kfs.exists(NVMET):
            ports = [port.portid for port in spec.ports]
            nqns = [subsystem.nqn for subsystem in spec.subsystems]
            sweep = remove_entries(self.kfs, ports, nqns, list(spec.hosts))
            errors += [error for error in sweep if error not in errors]
            self.spec = None
        return errors


def _remove_entry(kfs: KernelFs, kind: str, path: str) -> None:
    if not kfs.exists(path):
        return
    if kind == "link":
        kfs.unlink(path)
    elif kind == "ns":
        if kfs.read(f"{path}/enable", default="0") == "1":
            kfs.write(f"{path}/enable", "0")
        _rmdir_retry(kfs, path)
    else:
        _rmdir_retry(kfs, path)


def _rmdir_retry(kfs: KernelFs, path: str, attempts: int = 20) -> None:
    """rmdir, retrying briefly: nvmet drops references asynchronously (EBUSY for a moment)."""
    for attempt in range(attempts):
        try:
            kfs.rmdir(path)
            return
        except KernelFsError:
            if attempt == attempts - 1 or not kfs.exists(path):
                if kfs.exists(path):
                    raise
                return
            time.sleep(0.1)


# --- finding and removing what earlier runs left ----------------------------------------------


def find_leftovers(kfs: KernelFs) -> list[str]:
    """nvmet entries a harness run made (by NQN prefix and port id range)."""
    if not kfs.exists(NVMET):
        return []
    found = [f"nvmet port {portid}" for portid in _harness_ports(kfs)]
    for nqn in kfs.listdir(f"{NVMET}/subsystems"):
        if nqn.startswith(NQN_PREFIX):
            found.append(f"nvmet subsystem {nqn}")
    for nqn in kfs.listdir(f"{NVMET}/hosts"):
        if _is_harness_host(kfs, nqn):
            found.append(f"nvmet host {nqn}")
    return found


def remove_leftovers(kfs: KernelFs) -> list[str]:
    """Remove our ports, subsystems (namespaces first) and hosts; returns errors."""
    if not kfs.exists(NVMET):
        return []
    ours = [nqn for nqn in kfs.listdir(f"{NVMET}/subsystems") if nqn.startswith(NQN_PREFIX)]
    hosts = [nqn for nqn in kfs.listdir(f"{NVMET}/hosts") if _is_harness_host(kfs, nqn)]
    return remove_entries(kfs, _harness_ports(kfs), ours, hosts)


def remove_entries(
    kfs: KernelFs, portids: list[int], nqns: list[str], hosts: list[str]
) -> list[str]:
    """Remove these ports, subsystems and hosts, whatever state they are in (links from
    any port to the subsystems first, then namespaces); absent entries are skipped."""
    errors: list[str] = []
    for port_name in kfs.listdir(f"{NVMET}/ports"):
        for nqn in kfs.listdir(f"{NVMET}/ports/{port_name}/subsystems"):
            if nqn in nqns:
                _collect(errors, kfs, "link", f"{NVMET}/ports/{port_name}/subsystems/{nqn}")
    for portid in portids:
        base = f"{NVMET}/ports/{portid}"
        if not kfs.exists(base):
            continue
        for nqn in kfs.listdir(f"{base}/subsystems"):
            _collect(errors, kfs, "link", f"{base}/subsystems/{nqn}")
        for grpid in kfs.listdir(f"{base}/ana_groups"):
            if grpid != str(DEFAULT_ANA_GROUP):
                _collect(errors, kfs, "dir", f"{base}/ana_groups/{grpid}")
        _collect(errors, kfs, "dir", base)
    for nqn in nqns:
        base = f"{NVMET}/subsystems/{nqn}"
        if not kfs.exists(base):
            continue
        for nsid in kfs.listdir(f"{base}/namespaces"):
            _collect(errors, kfs, "ns", f"{base}/namespaces/{nsid}")
        for host in kfs.listdir(f"{base}/allowed_hosts"):
            _collect(errors, kfs, "link", f"{base}/allowed_hosts/{host}")
        _collect(errors, kfs, "dir", base)
    for hostnqn in hosts:
        _collect(errors, kfs, "dir", f"{NVMET}/hosts/{hostnqn}")
    return errors


def _collect(errors: list[str], kfs: KernelFs, kind: str, path: str) -> None:
    try:
        _remove_entry(kfs, kind, path)
    except HarnessError as exc:
        errors.append(str(exc))


def _harness_ports(kfs: KernelFs) -> list[int]:
    ports = []
    for name in kfs.listdir(f"{NVMET}/ports"):
        if name.isdigit() and is_harness_port(int(name)):
            ports.append(int(name))
    return ports


def _is_harness_host(kfs: KernelFs, hostnqn: str) -> bool:
    """Our host NQNs carry NQN_PREFIX (HostIdentity.generate); never touch one in use by
    a subsystem that is not ours."""
    if not hostnqn.startswith(NQN_PREFIX):
        return False
    for nqn in kfs.listdir(f"{NVMET}/subsystems"):
        if not nqn.startswith(NQN_PREFIX) and hostnqn in kfs.listdir(
            f"{NVMET}/subsystems/{nqn}/allowed_hosts"
        ):
            return False
    return True


TRANSPORT_MODULES = {
    "tcp": (("nvmet-tcp", "NVME_TARGET_TCP"), ("nvme-tcp", "NVME_TCP")),
    "rdma": (("nvmet-rdma", "NVME_TARGET_RDMA"), ("nvme-rdma", "NVME_RDMA")),
}


def load_modules(
    timeout_s: float = 60.0, sys_module: str = "/sys/module", transport: str = "tcp"
) -> None:
    """Load nvmet-tcp and nvme-tcp (``transport = "rdma"``: nvmet-rdma and nvme-rdma) unless
    they are loaded already, and mount configfs.

    A loaded module is kept: it may be an out-of-tree build loaded with insmod (a host
    variant, harness.bed.variants; the patched nvmet, harness.kernels.nvmet_variant) that
    modprobe must not replace. An out-of-tree nvmet without its nvmet-tcp is an error
    (HarnessError): modprobe would pair it with the distribution's nvmet-tcp, built against
    another ``struct nvmet_port``. ``sys_module`` lets unit tests use a fake /sys/module.
    """
    if transport not in TRANSPORT_MODULES:
        raise HarnessError(f"unknown transport {transport!r}")
    for module, option in TRANSPORT_MODULES[transport]:
        if os.path.isdir(f"{sys_module}/{module.replace('-', '_')}"):
            continue  # keep what is loaded (maybe a built variant, insmod'ed)
        if module.startswith("nvmet-") and os.path.isdir(f"{sys_module}/nvmet"):
            try:
                with open(f"{sys_module}/nvmet/taint", encoding="utf-8") as taint:
                    out_of_tree = "O" in taint.read()
            except OSError:
                out_of_tree = False
            if out_of_tree:
                raise HarnessError(
                    f"an out-of-tree nvmet is loaded without its {module}",
                    hint="load both: harness.kernels.nvmet_variant.load_patched_nvmet(), "
                    "or rmmod nvmet",
                )
        result = run(["modprobe", module], timeout_s=timeout_s)
        if not result.ok:
            raise HarnessError(
                f"cannot load {module}: {result.one_line_error()}",
                hint=f"the kernel needs CONFIG_{option} (m or y)",
            )
    mount_configfs()


def mount_configfs(timeout_s: float = 30.0) -> None:
    """Mount configfs on /sys/kernel/config unless it is (loading the configfs module
    first where it is one and not loaded); HarnessError when it cannot be."""
    if not _configfs_mounted():
        if not os.path.isdir("/sys/kernel/config"):
            run(["modprobe", "configfs"], timeout_s=timeout_s)
        mount = run(["mount", "-t", "configfs", "none", "/sys/kernel/config"], timeout_s=timeout_s)
        if not mount.ok and not _configfs_mounted():
            raise HarnessError(f"cannot mount configfs: {mount.one_line_error()}")


def _configfs_mounted() -> bool:
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            return any(line.split()[1] == "/sys/kernel/config" for line in mounts if line.strip())
    except OSError:
        return False

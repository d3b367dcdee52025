"""Fake /sys trees for unit tests, laid out the way Linux 6.1 lays out NVMe-oF (TCP).

What the real kernel shows, and what :class:`FakeSysfs` builds below its root:

- ``/sys/devices/virtual/nvme-subsystem/nvme-subsysS/``: ``subsysnqn``, ``iopolicy``,
  ``serial``, ``model``, ... ; one *symlink* per controller (``nvmeC ->
  ../../nvme-fabrics/ctl/nvmeC``), one *directory* per namespace head (``nvmeSnH``, the
  multipath disk, whose parent device is the subsystem) and its char device ``ngSnH``.
- ``/sys/devices/virtual/nvme-fabrics/ctl/nvmeC/``: ``state``, ``address``, ``transport``,
  ``subsysnqn``, ``delete_controller``, ``reset_controller``, ... ; one *directory* per
  per-path disk (``nvmeScCnH``, hidden, parent device is the controller) with
  ``ana_state``, and the per-path char device ``ngCnH``.
- ``/sys/class/nvme-subsystem/nvme-subsysS``, ``/sys/class/nvme/nvmeC`` and
  ``/sys/block/<disk>`` are symlinks into ``/sys/devices``.

Names follow the kernel: the head is ``nvme<subsys instance>n<head instance>``, a path disk
``nvme<subsys instance>c<ctrl instance>n<head instance>``; controller instances are global,
head instances count from 1 within a subsystem.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.errors import KernelFsError
from harness.core.kernelfs import KernelFs
from harness.core.procs import ProcResult

SUBSYS_DEVICES = "sys/devices/virtual/nvme-subsystem"
CTRL_DEVICES = "sys/devices/virtual/nvme-fabrics/ctl"
PATH_DISK_RE = re.compile(r"^nvme\d+c\d+n\d+$")

# Controller states as /sys/class/nvme/nvmeX/state prints them (nvme_sysfs_show_state).
CTRL_STATES = ("new", "live", "resetting", "connecting", "deleting", "deleting (no IO)", "dead")


def block_stat(read_ios: int = 0, write_ios: int = 0, in_flight: int = 0) -> str:
    """A /sys/block/<disk>/stat line as 6.1 prints it (17 fields, %8lu each)."""
    values = [read_ios, 0, read_ios * 8, 3, write_ios, 0, write_ios * 8, 5, in_flight]
    values += [7, 11, 0, 0, 0, 0, 0, 0]
    return "".join(f"{value:8d} " for value in values).rstrip() + "\n"


@dataclass
class FakeSubsystem:
    name: str  # nvme-subsys0
    instance: int
    nqn: str
    heads: list[str] = field(default_factory=list)
    controllers: list[str] = field(default_factory=list)


@dataclass
class FakeMultipath:
    """What :meth:`FakeSysfs.multipath` built: one subsystem, its head and controllers."""

    subsystem: str
    nqn: str
    head: str
    controllers: list[str]
    path_disks: list[str]


class FakeSysfs:
    """Builds a fake /sys below ``root``; every method returns the kernel name it created."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.subsystems: dict[str, FakeSubsystem] = {}
        self._next_ctrl = 0
        self._next_subsys = 0
        for rel in (
            SUBSYS_DEVICES,
            CTRL_DEVICES,
            "sys/class/nvme-subsystem",
            "sys/class/nvme",
            "sys/block",
        ):
            (root / rel).mkdir(parents=True, exist_ok=True)

    @property
    def kfs(self) -> KernelFs:
        return KernelFs(root=self.root, timeout_s=5.0)

    def path(self, rel: str) -> Path:
        return self.root / rel.lstrip("/")

    # --- building --------------------------------------------------------------------------

    def add_subsystem(
        self,
        nqn: str,
        iopolicy: str = "numa",
        serial: str = "4c1ae3b5d6f7a8b9c0d1",
        model: str = "Linux",
    ) -> str:
        instance = self._next_subsys
        self._next_subsys += 1
        name = f"nvme-subsys{instance}"
        base = self.root / SUBSYS_DEVICES / name
        base.mkdir()
        _attrs(
            base,
            subsysnqn=nqn,
            iopolicy=iopolicy,
            serial=serial,
            model=model,
            firmware_rev="6.1.0-56",
            subsystype="nvm",
            uevent="",
        )
        (base / "power").mkdir()
        _link(
            self.root / "sys/class/nvme-subsystem" / name,
            f"../../devices/virtual/nvme-subsystem/{name}",
        )
        self.subsystems[name] = FakeSubsystem(name, instance, nqn)
        return name

    def add_controller(
        self,
        subsystem: str,
        traddr: str = "127.0.0.1",
        trsvcid: str = "4421",
        state: str = "live",
        transport: str = "tcp",
        src_addr: str | None = "127.0.0.1",
    ) -> str:
        """A controller of ``subsystem``, with a path disk for every head it already has."""
        subsys = self.subsystems[subsystem]
        name = f"nvme{self._next_ctrl}"
        self._next_ctrl += 1
        base = self.root / CTRL_DEVICES / name
        base.mkdir()
        address = f"traddr={traddr},trsvcid={trsvcid}"
        if src_addr is not None:
            address += f",src_addr={src_addr}"
        _attrs(
            base,
            state=state,
            address=address,
            transport=transport,
            subsysnqn=subsys.nqn,
            serial=self.read(f"{SUBSYS_DEVICES}/{subsystem}/serial"),
            model="Linux",
            firmware_rev="6.1.0-56",
            cntlid=str(len(subsys.controllers) + 1),
            hostnqn="nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000",
            hostid="00000000-0000-0000-0000-000000000000",
            kato="5",
            queue_count="3",
            sqsize="127",
            numa_node="-1",
            ctrl_loss_tmo="1",
            reconnect_delay="1",
            fast_io_fail_tmo="off",
            cntrltype="io",
            dctype="none",
            delete_controller="",
            reset_controller="",
            rescan_controller="",
            uevent="",
        )
        (base / "power").mkdir()
        _link(base / "subsystem", "../../../../../class/nvme")
        _link(self.root / "sys/class/nvme" / name, f"../../devices/virtual/nvme-fabrics/ctl/{name}")
        _link(self.root / SUBSYS_DEVICES / subsystem / name, f"../../nvme-fabrics/ctl/{name}")
        subsys.controllers.append(name)
        for head in subsys.heads:
            self.add_path_disk(name, head)
        return name

    def add_head(self, subsystem: str, size_sectors: int = 524288) -> str:
        """A namespace head (the multipath disk), with a path disk on every controller."""
        subsys = self.subsystems[subsystem]
        head_instance = len(subsys.heads) + 1
        name = f"nvme{subsys.instance}n{head_instance}"
        base = self.root / SUBSYS_DEVICES / subsystem / name
        base.mkdir()
        _disk_attrs(base, size_sectors)
        (base / "queue").mkdir()
        _attrs(base / "queue", logical_block_size="512", rotational="0")
        generic = self.root / SUBSYS_DEVICES / subsystem / f"ng{subsys.instance}n{head_instance}"
        generic.mkdir()
        _attrs(generic, dev=f"240:{head_instance}", uevent="")
        _link(
            self.root / "sys/block" / name, f"../devices/virtual/nvme-subsystem/{subsystem}/{name}"
        )
        subsys.heads.append(name)
        for ctrl in subsys.controllers:
            self.add_path_disk(ctrl, name)
        return name

    def add_path_disk(self, ctrl: str, head: str, ana_state: str = "optimized") -> str:
        subsys_instance, head_instance = head.removeprefix("nvme").split("n")
        ctrl_instance = ctrl.removeprefix("nvme")
        name = f"nvme{subsys_instance}c{ctrl_instance}n{head_instance}"
        base = self.root / CTRL_DEVICES / ctrl / name
        base.mkdir()
        size = self.read(f"sys/block/{head}/size")
        _disk_attrs(base, int(size))
        _attrs(base, ana_state=ana_state, ana_grpid="1", nsid=head_instance)
        generic = self.root / CTRL_DEVICES / ctrl / f"ng{ctrl_instance}n{head_instance}"
        generic.mkdir(exist_ok=True)
        _link(self.root / "sys/block" / name, f"../devices/virtual/nvme-fabrics/ctl/{ctrl}/{name}")
        return name

    def multipath(
        self,
        nqn: str,
        ports: tuple[str, ...] = ("4421", "4422"),
        states: tuple[str, ...] | None = None,
        traddr: str = "127.0.0.1",
        iopolicy: str = "numa",
    ) -> FakeMultipath:
        """A connected multipath device: one subsystem, one controller per port, one head."""
        subsystem = self.add_subsystem(nqn, iopolicy=iopolicy)
        ctrl_states = states if states is not None else ("live",) * len(ports)
        ctrls = [
            self.add_controller(subsystem, traddr=traddr, trsvcid=port, state=state)
            for port, state in zip(ports, ctrl_states, strict=True)
        ]
        head = self.add_head(subsystem)
        disks = [entry for ctrl in ctrls for entry in self.path_disks(ctrl)]
        return FakeMultipath(subsystem, nqn, head, ctrls, disks)

    # --- changing --------------------------------------------------------------------------

    def set_state(self, ctrl: str, state: str) -> None:
        (self.root / CTRL_DEVICES / ctrl / "state").write_text(state + "\n")

    def set_stat(
        self, disk: str, read_ios: int = 0, write_ios: int = 0, in_flight: int = 0
    ) -> None:
        self.path(f"sys/block/{disk}/stat").write_text(block_stat(read_ios, write_ios, in_flight))

    def remove_path_disk(self, ctrl: str, disk: str) -> None:
        shutil.rmtree(self.root / CTRL_DEVICES / ctrl / disk)
        (self.root / "sys/block" / disk).unlink()

    def remove_controller(self, ctrl: str) -> None:
        """What a completed delete_controller leaves: no trace of the controller."""
        for disk in self.path_disks(ctrl):
            self.remove_path_disk(ctrl, disk)
        for subsys in self.subsystems.values():
            if ctrl in subsys.controllers:
                subsys.controllers.remove(ctrl)
                (self.root / SUBSYS_DEVICES / subsys.name / ctrl).unlink()
        (self.root / "sys/class/nvme" / ctrl).unlink()
        shutil.rmtree(self.root / CTRL_DEVICES / ctrl)

    # --- reading ---------------------------------------------------------------------------

    def read(self, rel: str) -> str:
        return self.path(rel).read_text().strip()

    def path_disks(self, ctrl: str) -> list[str]:
        base = self.root / CTRL_DEVICES / ctrl
        return sorted(entry.name for entry in base.iterdir() if PATH_DISK_RE.match(entry.name))


def _attrs(base: Path, **values: str) -> None:
    for key, value in values.items():
        (base / key).write_text(value + "\n" if value else "")


def _disk_attrs(base: Path, size_sectors: int) -> None:
    _attrs(base, size=str(size_sectors), ro="0", removable="0", uevent="")
    (base / "stat").write_text(block_stat())


def _link(link: Path, target: str) -> None:
    os.symlink(target, link)


# --- a fake nvmet configfs ---------------------------------------------------------------------

NVMET = "sys/kernel/config/nvmet"

# What nvmet (6.1, Debian's config) creates by itself on mkdir: attribute files with their
# initial values, and default groups (directories). A plain directory has none of these, so
# the fake adds them.
SUBSYS_ATTRS = {
    "attr_allow_any_host": "0",
    "attr_version": "1.3",
    "attr_serial": "4c1ae3b5d6f7a8b9c0d1",
    "attr_model": "Linux",
    "attr_cntlid_min": "1",
    "attr_cntlid_max": "65519",
    "attr_pi_enable": "0",
    "attr_qid_max": "128",
}
SUBSYS_GROUPS = ("namespaces", "allowed_hosts")  # + passthru with CONFIG_NVME_TARGET_PASSTHRU
NS_ATTRS = {
    "device_path": "",
    "device_uuid": "00000000-0000-0000-0000-000000000000",
    "device_nguid": "00000000-0000-0000-0000-000000000000",
    "enable": "0",
    "buffered_io": "0",
    "ana_grpid": "1",
    "revalidate_size": "",
}
PORT_ATTRS = {
    "addr_adrfam": "",
    "addr_treq": "not specified",
    "addr_traddr": "",
    "addr_trsvcid": "",
    "addr_trtype": "",
    "addr_tsas": "",
    "param_inline_data_size": "-1",
    "param_pi_enable": "0",
}
PORT_GROUPS = ("subsystems", "referrals", "ana_groups")
ANA_GROUP_ATTRS = {"ana_state": "optimized"}
HOST_ATTRS: dict[str, str] = {}  # dhchap_* with CONFIG_NVME_TARGET_AUTH (off in Debian 6.1)
NVMET_ANA_STATES = ("optimized", "non-optimized", "inaccessible", "persistent-loss", "change")
# Namespace attributes nvmet refuses to change while the namespace is enabled (EBUSY).
NS_ATTRS_FIXED_WHEN_ENABLED = ("device_path", "device_uuid", "device_nguid", "buffered_io")


@dataclass(frozen=True)
class FakeNvmetFs(KernelFs):
    """A KernelFs whose tree below ``root`` behaves like nvmet's configfs (6.1), enough for
    NvmetTarget: mkdir creates the attributes and default groups nvmet creates, rmdir removes
    them and refuses while a default group still holds entries, writes go only to existing
    attributes and follow nvmet's rules (EBUSY on an enabled namespace's device, port address
    fixed while the port is enabled, ana_grpid only of an existing group), links need what
    nvmet needs. Every change is logged in ``ops`` as (operation, path below nvmet, detail).

    ``fail`` maps a path below nvmet (e.g. ``"subsystems/NQN/namespaces/1/enable"``) to an
    error message: every change of that path fails with it; ``fail_once``: only the next one.
    """

    ops: list[tuple[str, str, str]] = field(default_factory=list, compare=False)
    fail: dict[str, str] = field(default_factory=dict, compare=False)
    fail_once: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def create(cls, root: Path, timeout_s: float = 5.0) -> FakeNvmetFs:
        """An empty nvmet below ``root`` (as after modprobe nvmet and mounting configfs)."""
        for group in ("hosts", "ports", "subsystems"):
            (root / NVMET / group).mkdir(parents=True, exist_ok=True)
        return cls(root=root, timeout_s=timeout_s)

    # --- helpers -------------------------------------------------------------------------------

    def nvmet_rel(self, rel: str | Path) -> str:
        return str(self.path(rel).relative_to(self.root / NVMET))

    def nvmet(self, rel: str) -> Path:
        return self.root / NVMET / rel

    def _check_fail(self, what: str, rel: str) -> None:
        message = self.fail_once.pop(rel, None) or self.fail.get(rel)
        if message is not None:
            raise KernelFsError(f"{what} {self.nvmet(rel)} failed: {message}")

    @staticmethod
    def _kind(rel: str) -> str:
        parts = rel.split("/")
        shapes = {
            (2, "hosts"): "host",
            (2, "subsystems"): "subsystem",
            (2, "ports"): "port",
        }
        kind = shapes.get((len(parts), parts[0]), "")
        if len(parts) == 4 and parts[0] == "subsystems" and parts[2] == "namespaces":
            kind = "namespace"
        if len(parts) == 4 and parts[0] == "ports" and parts[2] == "ana_groups":
            kind = "ana_group"
        return kind

    def _populate(self, rel: str, kind: str) -> None:
        base = self.nvmet(rel)
        attrs: dict[str, str] = {}
        groups: tuple[str, ...] = ()
        if kind == "subsystem":
            attrs, groups = SUBSYS_ATTRS, SUBSYS_GROUPS
        elif kind == "namespace":
            attrs = NS_ATTRS
        elif kind == "port":
            attrs, groups = PORT_ATTRS, PORT_GROUPS
        elif kind in ("ana_group", "default_ana_group"):
            attrs = ANA_GROUP_ATTRS
        elif kind == "host":
            attrs = HOST_ATTRS
        for name, value in attrs.items():
            (base / name).write_text(value + "\n")
        for group in groups:
            (base / group).mkdir()
        if kind == "port":
            (base / "ana_groups" / "1").mkdir()
            self._populate(f"{rel}/ana_groups/1", "default_ana_group")

    def _auto_children(self, rel: str) -> set[str]:
        kind = self._kind(rel)
        if kind == "subsystem":
            return set(SUBSYS_ATTRS) | set(SUBSYS_GROUPS)
        if kind == "namespace":
            return set(NS_ATTRS)
        if kind == "port":
            return set(PORT_ATTRS) | set(PORT_GROUPS)
        if kind == "ana_group":
            return set(ANA_GROUP_ATTRS)
        if kind == "host":
            return set(HOST_ATTRS)
        return set()

    # --- what other users of nvmet made (built directly, not through the fake's rules) ----------

    def make(self, rel: str) -> str:
        """Create an nvmet entry (host, subsystem, namespace, port, ana group) directly."""
        kind = self._kind(rel)
        if not kind:
            raise ValueError(f"not an nvmet entry: {rel}")
        self.nvmet(rel).mkdir()
        self._populate(rel, kind)
        return rel

    def make_link(self, target_rel: str, link_rel: str) -> None:
        os.symlink(self.nvmet(target_rel), self.nvmet(link_rel))

    def set_attr(self, rel: str, value: str) -> None:
        self.nvmet(rel).write_text(value + "\n")

    def attr(self, rel: str) -> str:
        return self.nvmet(rel).read_text().strip()

    def entries(self) -> set[str]:
        """Every directory and link below nvmet that is not an auto-created default."""
        found: set[str] = set()
        top = self.root / NVMET
        for dirpath, dirnames, filenames in os.walk(top):
            rel_dir = os.path.relpath(dirpath, top)
            for name in (*dirnames, *filenames):
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                path = top / rel
                if path.is_symlink() or (path.is_dir() and self._kind(rel)):
                    found.add(rel)
        # ana group 1 comes with its port
        return {rel for rel in found if not rel.endswith("/ana_groups/1")}

    # --- KernelFs, with nvmet's rules ----------------------------------------------------------

    def mkdir(self, rel: str | Path, timeout_s: float | None = None) -> None:
        nrel = self.nvmet_rel(rel)
        self.ops.append(("mkdir", nrel, ""))
        self._check_fail("mkdir", nrel)
        kind = self._kind(nrel)
        name = nrel.rsplit("/", 1)[-1]
        if not kind or (kind in ("namespace", "port", "ana_group") and not name.isdigit()):
            raise KernelFsError(f"mkdir {self.path(rel)} failed: Operation not permitted")
        super().mkdir(rel, timeout_s)
        self._populate(nrel, kind)

    def rmdir(self, rel: str | Path, timeout_s: float | None = None) -> None:
        nrel = self.nvmet_rel(rel)
        self.ops.append(("rmdir", nrel, ""))
        self._check_fail("rmdir", nrel)
        base = self.path(rel)
        auto = self._auto_children(nrel)
        if base.is_dir():
            busy = [
                name
                for name in os.listdir(base)
                if name not in auto
                or (
                    (base / name).is_dir()
                    and [c for c in os.listdir(base / name) if (name, c) != ("ana_groups", "1")]
                )
            ]
            if busy:
                raise KernelFsError(f"rmdir {base} failed: Directory not empty")
            for name in os.listdir(base):
                child = base / name
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        super().rmdir(rel, timeout_s)

    def write(self, rel: str | Path, value: str, timeout_s: float | None = None) -> None:
        nrel = self.nvmet_rel(rel)
        self.ops.append(("write", nrel, value))
        self._check_fail("write", nrel)
        path = self.path(rel)
        base, _, attr = nrel.rpartition("/")
        if not path.is_file():
            raise KernelFsError(f"write '{value}' to {path} failed: Permission denied")
        kind = self._kind(base)
        if kind == "namespace":
            self._check_namespace_write(path, base, attr, value)
        elif kind == "port" and attr.startswith("addr_") and os.listdir(path.parent / "subsystems"):
            raise KernelFsError(f"write '{value}' to {path} failed: Permission denied")
        elif attr == "ana_state" and value not in NVMET_ANA_STATES:
            raise KernelFsError(f"write '{value}' to {path} failed: Invalid argument")
        super().write(rel, value, timeout_s)

    def _check_namespace_write(self, path: Path, base: str, attr: str, value: str) -> None:
        enabled = self.attr(f"{base}/enable") == "1"
        if attr in NS_ATTRS_FIXED_WHEN_ENABLED and enabled:
            raise KernelFsError(f"write '{value}' to {path} failed: Device or resource busy")
        if attr == "enable" and value == "1" and not self.attr(f"{base}/device_path"):
            raise KernelFsError(f"write '{value}' to {path} failed: Invalid argument")
        if attr == "ana_grpid" and not any(
            (port / "ana_groups" / value).is_dir() for port in self.nvmet("ports").iterdir()
        ):
            raise KernelFsError(f"write '{value}' to {path} failed: Invalid argument")

    def symlink(
        self,
        target_rel: str | Path,
        link_rel: str | Path,
        timeout_s: float | None = None,
        netns: str | None = None,
    ) -> None:
        nlink, ntarget = self.nvmet_rel(link_rel), self.nvmet_rel(target_rel)
        self.ops.append(("symlink", nlink, f"{ntarget} netns={netns}"))
        self._check_fail("symlink", nlink)
        parts = nlink.split("/")
        link = self.path(link_rel)
        if not self.path(target_rel).is_dir():
            raise KernelFsError(f"symlink {link} failed: No such file or directory")
        if len(parts) == 4 and parts[0] == "ports" and parts[2] == "subsystems":
            port = f"ports/{parts[1]}"
            if not all(self.attr(f"{port}/{a}") for a in ("addr_trtype", "addr_traddr")):
                raise KernelFsError(f"symlink {link} failed: Invalid argument")
        elif len(parts) == 4 and parts[0] == "subsystems" and parts[2] == "allowed_hosts":
            if self.attr(f"subsystems/{parts[1]}/attr_allow_any_host") == "1":
                raise KernelFsError(f"symlink {link} failed: Invalid argument")
        else:
            raise KernelFsError(f"symlink {link} failed: Operation not permitted")
        super().symlink(target_rel, link_rel, timeout_s)

    def unlink(self, rel: str | Path, timeout_s: float | None = None) -> None:
        nrel = self.nvmet_rel(rel)
        self.ops.append(("unlink", nrel, ""))
        self._check_fail("unlink", nrel)
        super().unlink(rel, timeout_s)


@dataclass
class RecordingRun:
    """A stand-in for ``harness.core.procs.run``: records each argv in ``calls`` and answers with
    ``returncode`` and ``stderr`` (default: success), without running anything."""

    returncode: int = 0
    stderr: str = ""
    calls: list[list[str]] = field(default_factory=list)

    def __call__(
        self, argv: list[str], timeout_s: float, input_text: str | None = None
    ) -> ProcResult:
        self.calls.append(list(argv))
        return ProcResult(tuple(argv), self.returncode, "", self.stderr)

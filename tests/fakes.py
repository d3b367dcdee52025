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

from harness.kernelfs import KernelFs

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

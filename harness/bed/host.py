"""The NVMe-oF host side (tcp or rdma): connect, disconnect, reset, find the multipath
devices, and the nvme_core module parameters.

Connections are made with nvme-cli (argument lists, timeouts); everything else is read from
and written to sysfs, where the kernel keeps the truth:

- /sys/class/nvme-subsystem/nvme-subsysN/{subsysnqn,iopolicy,nvmeX,nvmeXnY}
- /sys/class/nvme/nvmeX/{state,address,transport,subsysnqn,serial,reset_controller,
  delete_controller,ctrl_loss_tmo,reconnect_delay,fast_io_fail_tmo,nvmeXcYnZ}
- /sys/block/nvmeXcYnZ/ana_state, /sys/block/nvmeXnY/{size,stat}
- /sys/module/nvme_core/parameters/{io_timeout,max_retries}
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass

from harness.bed.blocked import describe_blocked
from harness.core.errors import HarnessError, KernelFsError, KernelFsTimeout, ToolError
from harness.core.kernelfs import FABRICS_DEVICE, KernelFs
from harness.core.procs import run

SUBSYS_CLASS = "/sys/class/nvme-subsystem"
CTRL_CLASS = "/sys/class/nvme"
HEAD_RE = re.compile(r"^nvme\d+n\d+$")
PATH_RE = re.compile(r"^nvme\d+c\d+n\d+$")
CTRL_RE = re.compile(r"^nvme\d+$")
CONNECT_TIMEOUT_S = 30.0
# Host NQNs the harness makes; clean finds nvmet host entries by this prefix (target.NQN_PREFIX).
HOST_NQN_PREFIX = "nqn.2026-11.io.nvmf-harness:host-"
NVME_CORE_PARAMS = "/sys/module/nvme_core/parameters"
# nvme_core parameters a config may set ([host] io_timeout, max_retries).
HOST_MODULE_PARAMS = ("io_timeout", "max_retries")
# The namespace the workload uses (testbed.NSID); the others exist to be faulted.
IO_NSID = 1


@dataclass(frozen=True)
class HostIdentity:
    """The host NQN and host ID the harness connects with (never the machine's own)."""

    hostnqn: str
    hostid: str

    @classmethod
    def generate(cls) -> HostIdentity:
        host_uuid = str(uuid.uuid4())
        return cls(f"{HOST_NQN_PREFIX}{host_uuid}", host_uuid)


@dataclass(frozen=True)
class PathEndpoint:
    """Where one path connects: the target port's address."""

    traddr: str
    trsvcid: str


@dataclass(frozen=True)
class ControllerInfo:
    name: str  # nvme0
    state: str  # live, connecting, resetting, deleting, ...
    transport: str
    traddr: str
    trsvcid: str
    subsysnqn: str
    path_disks: tuple[str, ...]  # nvme0c0n1, ...


@dataclass(frozen=True)
class MultipathDevice:
    """A native NVMe multipath subsystem as the host sees it."""

    subsystem: str  # nvme-subsys0
    nqn: str
    heads: tuple[str, ...]  # nvme0n1, ...
    controllers: tuple[ControllerInfo, ...]
    # The NSID of each head, in the order of ``heads`` (/sys/block/<head>/nsid; 0 where it
    # could not be read); () when not read.
    head_nsids: tuple[int, ...] = ()

    @property
    def head(self) -> str:
        """The head IO goes to: namespace IO_NSID's when the NSIDs are known (several
        namespaces), else the first. HarnessError when there is none, or when the NSIDs are
        known and IO_NSID's head is missing (never another namespace's head instead)."""
        if not self.heads:
            raise HarnessError(f"subsystem {self.nqn} has no namespace head yet")
        if not any(self.head_nsids):
            return self.heads[0]
        head = self.head_for(IO_NSID)
        if head is None:
            raise HarnessError(f"subsystem {self.nqn} has no head for namespace {IO_NSID}")
        return head

    def head_for(self, nsid: int) -> str | None:
        """The head (nvmeXnY) of namespace ``nsid``, or None."""
        for head, head_nsid in zip(self.heads, self.head_nsids, strict=False):
            if head_nsid == nsid:
                return head
        return None

    @property
    def head_dev(self) -> str:
        return f"/dev/{self.head}"

    def live_controllers(self) -> list[ControllerInfo]:
        return [ctrl for ctrl in self.controllers if ctrl.state == "live"]

    def controller_for(self, endpoint: PathEndpoint) -> ControllerInfo | None:
        for ctrl in self.controllers:
            if ctrl.traddr == endpoint.traddr and ctrl.trsvcid == endpoint.trsvcid:
                return ctrl
        return None


def parse_address(text: str) -> dict[str, str]:
    """Parse /sys/class/nvme/nvmeX/address ("traddr=127.0.0.1,trsvcid=4421,src_addr=...")."""
    fields: dict[str, str] = {}
    for part in text.strip().split(","):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


class NvmeHost:
    """Host-side operations for one harness run."""

    def __init__(self, kfs: KernelFs, identity: HostIdentity) -> None:
        self.kfs = kfs
        self.identity = identity

    # --- discovery -------------------------------------------------------------------------

    def controller(self, name: str, subsysnqn: str | None = None) -> ControllerInfo | None:
        """Controller ``name`` as sysfs shows it now, or None when its directory is gone (a
        directory whose ``state`` cannot be read any more is state "gone"). ``subsysnqn``:
        the caller already knows it (found under that subsystem), one read fewer; each read
        costs milliseconds in a starved TCG guest, and the fault loop polls this."""
        base = f"{CTRL_CLASS}/{name}"
        state = self.kfs.read(f"{base}/state", default="")
        if not state:
            if not self.kfs.exists(base):
                return None
            state = "gone"  # torn down under our feet
        address = parse_address(self.kfs.read(f"{base}/address", default=""))
        disks = tuple(entry for entry in self.kfs.listdir(base) if PATH_RE.match(entry))
        return ControllerInfo(
            name=name,
            state=state,
            transport=self.kfs.read(f"{base}/transport", default=""),
            traddr=address.get("traddr", ""),
            trsvcid=address.get("trsvcid", ""),
            subsysnqn=(
                subsysnqn
                if subsysnqn is not None
                else self.kfs.read(f"{base}/subsysnqn", default="")
            ),
            path_disks=disks,
        )

    def controllers(self, nqn: str) -> list[ControllerInfo]:
        """Every controller (any state) connected to the subsystem ``nqn``."""
        found = []
        for name in self.kfs.listdir(CTRL_CLASS):
            if not CTRL_RE.match(name):
                continue
            if self.kfs.read(f"{CTRL_CLASS}/{name}/subsysnqn", default="") != nqn:
                continue  # another subsystem's (or gone): nothing more to read
            info = self.controller(name, subsysnqn=nqn)
            if info is not None:
                found.append(info)
        return found

    def find(self, nqn: str) -> MultipathDevice | None:
        """The multipath subsystem with this NQN, or None when no controller is connected."""
        for subsystem in self.kfs.listdir(SUBSYS_CLASS):
            base = f"{SUBSYS_CLASS}/{subsystem}"
            if self.kfs.read(f"{base}/subsysnqn", default="") != nqn:
                continue
            entries = self.kfs.listdir(base)
            heads = tuple(entry for entry in entries if HEAD_RE.match(entry))
            ctrls = [self.controller(entry, nqn) for entry in entries if CTRL_RE.match(entry)]
            return MultipathDevice(
                subsystem=subsystem,
                nqn=nqn,
                heads=heads,
                controllers=tuple(ctrl for ctrl in ctrls if ctrl is not None),
                head_nsids=tuple(self.nsid(head) for head in heads),
            )
        return None

    def nsid(self, disk: str) -> int:
        """The NSID of a head or per-path disk (/sys/block/<disk>/nsid, core.c:nsid_show);
        0 when it cannot be read (the disk is going away)."""
        text = self.kfs.read(f"/sys/block/{disk}/nsid", default="")
        return int(text) if text.isdigit() else 0

    def disk_uuid(self, disk: str) -> str:
        """The namespace UUID of a head or per-path disk as the host identified it
        (/sys/block/<disk>/uuid, core.c:uuid_show: the NGUID when the UUID is null);
        "" when gone."""
        return self.kfs.read(f"/sys/block/{disk}/uuid", default="")

    def disk_sectors(self, disk: str) -> int:
        """The capacity of a head or per-path disk in 512-byte sectors (/sys/block/<disk>/
        size, set by core.c:nvme_update_disk_info via set_capacity_and_notify); -1 when
        gone."""
        text = self.kfs.read(f"/sys/block/{disk}/size", default="")
        return int(text) if text.isdigit() else -1

    def iopolicy(self, device: MultipathDevice) -> str:
        return self.kfs.read(f"{SUBSYS_CLASS}/{device.subsystem}/iopolicy", default="")

    def set_iopolicy(self, device: MultipathDevice, policy: str) -> None:
        """Set the subsystem's iopolicy; HarnessError (with a hint) when the kernel does not
        know it (multipath.c:nvme_subsys_iopolicy_store: queue-depth only from 6.11 on)."""
        try:
            self.kfs.write(f"{SUBSYS_CLASS}/{device.subsystem}/iopolicy", policy)
        except KernelFsError as exc:
            raise HarnessError(
                f"the kernel refuses iopolicy {policy!r}: {exc.message}",
                hint="queue-depth needs 6.11 or newer; numa and round-robin work everywhere",
            ) from exc

    def ana_state(self, path_disk: str) -> str:
        return self.kfs.read(f"/sys/block/{path_disk}/ana_state", default="")

    def serial(self, device: MultipathDevice) -> str:
        """The subsystem serial number as the host read it from Identify Controller."""
        return self.kfs.read(f"{SUBSYS_CLASS}/{device.subsystem}/serial", default="")

    def io_completed(self, disk: str) -> tuple[int, int]:
        """(IOs completed, IOs in flight) for a disk, from /sys/block/<disk>/stat."""
        fields = self.kfs.read(f"/sys/block/{disk}/stat", default="").split()
        if len(fields) < 9:
            return (0, 0)
        return (int(fields[0]) + int(fields[4]), int(fields[8]))

    # --- changes ---------------------------------------------------------------------------

    def connect(
        self,
        nqn: str,
        endpoint: PathEndpoint,
        ctrl_loss_tmo: int,
        reconnect_delay: int,
        keep_alive_tmo: int,
        nr_io_queues: int,
        connect_with: str = "fabrics",
        transport: str = "tcp",
    ) -> str:
        """Connect one path over ``transport`` ("tcp" or "rdma"); returns the new
        controller's name (nvmeX)."""
        options = {
            "transport": transport,
            "traddr": endpoint.traddr,
            "trsvcid": endpoint.trsvcid,
            "nqn": nqn,
            "hostnqn": self.identity.hostnqn,
            "hostid": self.identity.hostid,
            "ctrl_loss_tmo": str(ctrl_loss_tmo),
            "reconnect_delay": str(reconnect_delay),
            "keep_alive_tmo": str(keep_alive_tmo),
            "nr_io_queues": str(nr_io_queues),
        }
        said = ""
        if connect_with == "nvme-cli":
            name, said = self._connect_nvme_cli(endpoint, options)
        else:
            name = self._connect_fabrics(endpoint, options)
        if name is None:
            ctrl = self._wait_controller(nqn, endpoint, timeout_s=5.0)
            if ctrl is None:
                raise ToolError(
                    f"nvme connect gave no controller for {endpoint}"
                    + (f" (nvme-cli printed: {said})" if said else "")
                )
            name = ctrl.name
        return name

    def _connect_fabrics(self, endpoint: PathEndpoint, options: dict[str, str]) -> str | None:
        """What nvme-cli does, without a process: the options to /dev/nvme-fabrics."""
        if not self.kfs.exists(FABRICS_DEVICE):
            raise ToolError(
                f"{FABRICS_DEVICE} is missing: nvme-fabrics is not loaded",
                hint=f"modprobe nvme-{options['transport']}",
            )
        text = ",".join(f"{key}={value}" for key, value in options.items())
        try:
            reply = self.kfs.fabrics_connect(text, timeout_s=CONNECT_TIMEOUT_S)
        except HarnessError as exc:
            raise ToolError(
                f"nvme connect to {endpoint.traddr}:{endpoint.trsvcid} failed: {exc.message}"
            ) from exc
        return _fabrics_instance(reply)

    def _connect_nvme_cli(
        self, endpoint: PathEndpoint, options: dict[str, str]
    ) -> tuple[str | None, str]:
        """The controller nvme-cli named (None when its output names none) and what it
        printed, stdout and stderr on one line (for the error when no controller shows)."""
        argv = ["nvme", "connect"]
        argv += [f"--{key.replace('_', '-')}={value}" for key, value in options.items()]
        # No --config: nvme-cli 2.3 (Debian 12) reads "none" as "no configuration file", but
        # 2.13 (Debian 13) opens a file named "none", then connects what its configuration
        # and the scanned topology name (the run's own paths: EALREADY) instead of this
        # target, and exits 0 with no controller (testcase 005's decoy, nvme -vvv in the VM).
        # Without it both connect the target asked for (2.3: CI's testcase 005 on Debian 12;
        # 2.13: the same probe); the host NQN and ID are given here either way.
        argv += ["--output-format=json"]
        result = run(argv, timeout_s=CONNECT_TIMEOUT_S)
        if not result.ok:
            raise ToolError(
                f"nvme connect to {endpoint.traddr}:{endpoint.trsvcid} failed: "
                f"{result.one_line_error()}"
            )
        said = " | ".join(
            line.strip()
            for line in (result.stdout + "\n" + result.stderr).splitlines()
            if line.strip()
        )
        return _connected_device(result.stdout), said[:300]

    def _wait_controller(
        self, nqn: str, endpoint: PathEndpoint, timeout_s: float
    ) -> ControllerInfo | None:
        deadline = time.monotonic() + timeout_s
        while True:
            device = self.find(nqn)
            ctrl = device.controller_for(endpoint) if device else None
            if ctrl is not None or time.monotonic() > deadline:
                return ctrl
            time.sleep(0.1)

    def set_fast_io_fail_tmo(self, ctrl: str, seconds: int) -> None:
        self.kfs.write(f"{CTRL_CLASS}/{ctrl}/fast_io_fail_tmo", str(seconds))

    def delete_controller(self, ctrl: str, timeout_s: float = 30.0) -> None:
        """Delete (disconnect) one controller through sysfs, as `nvme disconnect -d` does.
        Raises KernelFsTimeout after ``timeout_s`` seconds, naming the tasks blocked in the
        kernel and their stacks (bed/blocked.py): the hung-task detector says nothing for
        120 s, and a deletion that hangs holds what every later one waits for."""
        try:
            self.kfs.write(f"{CTRL_CLASS}/{ctrl}/delete_controller", "1", timeout_s=timeout_s)
        except KernelFsTimeout as exc:
            raise KernelFsTimeout(
                f"{exc.message}: {describe_blocked(self.kfs)}", hint=exc.hint
            ) from exc

    def reset_controller(self, ctrl: str) -> None:
        self.kfs.write(f"{CTRL_CLASS}/{ctrl}/reset_controller", "1")

    def rescan_controller(self, ctrl: str) -> None:
        """Queue a namespace scan of one controller (core.c:nvme_sysfs_rescan); returns
        before the scan ran. The scan removes a namespace whose identifiers changed or that
        left the controller's active list (core.c:nvme_validate_ns, nvme_scan_ns_list)."""
        self.kfs.write(f"{CTRL_CLASS}/{ctrl}/rescan_controller", "1")

    def cntlid(self, ctrl: str) -> str:
        """The controller ID the target gave this association ("" when gone); a reconnect
        gets a new one from nvmet, so it tells a reconnected controller from the old one."""
        return self.kfs.read(f"{CTRL_CLASS}/{ctrl}/cntlid", default="")

    def ctrl_state(self, ctrl: str) -> str:
        """The controller's state (/sys/class/nvme/<ctrl>/state: live, connecting, resetting,
        deleting, ...); "gone" when it cannot be read."""
        return self.kfs.read(f"{CTRL_CLASS}/{ctrl}/state", default="gone")

    def path_disks(self, ctrl: str) -> tuple[str, ...]:
        """The per-path disks (nvmeXcYnZ) a controller has now."""
        return tuple(e for e in self.kfs.listdir(f"{CTRL_CLASS}/{ctrl}") if PATH_RE.match(e))

    def set_async_event_config(self, ctrl: str, value: int) -> None:
        """Set Features, Asynchronous Event Configuration (FID 0Bh) on one controller, with
        nvme-cli. Bit 8 enables Namespace Attribute Notices, bit 11 ANA Change Notices
        (NVMe base spec 2.0, Figure 326). The host sets it at every (re)connect
        (core.c:nvme_enable_aen), so a changed value lasts until the next one.

        Raises ToolError when nvme-cli fails.
        """
        argv = ["nvme", "set-feature", f"/dev/{ctrl}", "--feature-id=0x0b", f"--value={value:#x}"]
        result = run(argv, timeout_s=CONNECT_TIMEOUT_S)
        if not result.ok:
            raise ToolError(
                f"nvme set-feature 0x0b on {ctrl} failed: {result.one_line_error()}",
                hint="needs nvme-cli and a live controller",
            )

    def disconnect_all(self, nqn: str) -> list[str]:
        """Delete every controller of ``nqn``; returns errors as one-line strings. A
        controller already "deleting" is not written to again: its delete_controller
        attribute is gone (core.c:nvme_sysfs_delete removes it with device_remove_file_self
        before nvme_delete_ctrl_sync), so an earlier delete that never returned is named,
        with the tasks blocked in the kernel and their stacks (bed/blocked.py)."""
        errors = []
        for ctrl in self.controllers(nqn):
            if ctrl.state.startswith("deleting"):
                errors.append(
                    f"{ctrl.name}: still {ctrl.state!r}: an earlier delete_controller has not "
                    f"finished (a kernel hang? {describe_blocked(self.kfs)})"
                )
                continue
            try:
                self.delete_controller(ctrl.name)
            except HarnessError as exc:
                errors.append(str(exc))
        return errors

    def wait_paths(
        self, nqn: str, endpoints: list[PathEndpoint], timeout_s: float, namespaces: int = 1
    ) -> MultipathDevice | None:
        """Wait until every endpoint has a live controller with ``namespaces`` per-path disks
        and that many heads exist."""
        deadline = time.monotonic() + timeout_s
        while True:
            device = self.find(nqn)
            if (
                device is not None
                and len(device.heads) >= namespaces
                and device.heads
                and _all_live(device, endpoints, namespaces)
            ):
                return device
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)


def read_module_params(
    kfs: KernelFs, names: tuple[str, ...] = HOST_MODULE_PARAMS
) -> dict[str, str]:
    """The nvme_core parameters ``names`` as the loaded module has them ("" when absent)."""
    return {name: kfs.read(f"{NVME_CORE_PARAMS}/{name}", default="") for name in names}


def set_module_params(kfs: KernelFs, values: dict[str, int]) -> dict[str, str]:
    """Write nvme_core parameters (``{"io_timeout": 30, "max_retries": 5}``; a value < 0 is
    skipped) and return what each written one was before, for ``restore_module_params``.

    io_timeout (seconds) reaches controllers created after the write (it is copied into
    the tag set at connect, core.c:nvme_alloc_io_tag_set); max_retries counts at every
    completion (core.c:nvme_decide_disposition). Raises HarnessError for an unknown name or
    a value the kernel refuses.
    """
    before: dict[str, str] = {}
    for name, value in values.items():
        if name not in HOST_MODULE_PARAMS:
            raise HarnessError(
                f"unknown nvme_core parameter {name!r} (known: {', '.join(HOST_MODULE_PARAMS)})"
            )
        if value < 0:
            continue
        path = f"{NVME_CORE_PARAMS}/{name}"
        if not kfs.exists(path):
            raise HarnessError(f"{path} is missing", hint="is nvme_core loaded?")
        previous = kfs.read(path, default="")
        try:
            kfs.write(path, str(value))
        except KernelFsError as exc:
            raise HarnessError(
                f"nvme_core refuses {name}={value}: {exc.message}",
                hint="io_timeout is seconds >= 1, max_retries 0-255",
            ) from exc
        before.setdefault(name, previous)
    return before


def restore_module_params(kfs: KernelFs, before: dict[str, str]) -> list[str]:
    """Write back what ``set_module_params`` returned; returns errors (one line each)."""
    errors: list[str] = []
    for name, value in before.items():
        if not value:
            continue
        try:
            kfs.write(f"{NVME_CORE_PARAMS}/{name}", value)
        except HarnessError as exc:
            errors.append(f"restore nvme_core {name}={value}: {exc}")
    return errors


def _all_live(device: MultipathDevice, endpoints: list[PathEndpoint], namespaces: int = 1) -> bool:
    for endpoint in endpoints:
        ctrl = device.controller_for(endpoint)
        if ctrl is None or ctrl.state != "live" or len(ctrl.path_disks) < max(namespaces, 1):
            return False
    return True


def _fabrics_instance(reply: str) -> str | None:
    """/dev/nvme-fabrics answers a connect with ``instance=N,cntlid=M``: the controller nvmeN."""
    for item in reply.split(","):
        key, _, value = item.strip().partition("=")
        if key == "instance" and value.isascii() and value.isdigit():
            return f"nvme{int(value)}"
    return None


def _connected_device(stdout: str) -> str | None:
    """nvme-cli 2.x prints {"device": "nvme0"} with --output-format=json."""
    start = stdout.find("{")
    if start < 0:
        return None
    try:
        data = json.loads(stdout[start:])
    except json.JSONDecodeError:
        return None
    name = data.get("device") if isinstance(data, dict) else None
    return name if isinstance(name, str) and CTRL_RE.match(name) else None

"""The two-path (or N-path) NVMe/TCP or NVMe/RDMA test bed: backing store, nvmet target,
network, host.

``Testbed.up()`` builds everything for one run and ``Testbed.down()`` removes it again, in
reverse order, tolerating partial setups; ``down`` is safe to call twice. Everything is
named after the run id so ``clean`` can find it after a crash.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.bed import backing as backing_mod
from harness.bed import nvmetcli_backend, rdma
from harness.bed.host import (
    HostIdentity,
    MultipathDevice,
    NvmeHost,
    PathEndpoint,
    read_module_params,
    restore_module_params,
    set_module_params,
)
from harness.bed.net import Network
from harness.bed.safety import require_harness_device, require_harness_devices
from harness.bed.target import (
    NQN_PREFIX,
    PORT_ID_BASE,
    NamespaceSpec,
    NvmetTarget,
    PortSpec,
    SubsystemSpec,
    TargetSpec,
    ana_groups_spec,
    load_modules,
    namespace_ana_group,
)
from harness.core.errors import HarnessError
from harness.core.kernelfs import KernelFs

if TYPE_CHECKING:
    from harness.config.campaign import CampaignConfig

NSID = 1
SETUP_TIMEOUT_S = 60.0


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


@dataclass
class Testbed:
    """One run's target, paths and host connections."""

    __test__: ClassVar[bool] = False  # not a pytest test class, whatever its name

    config: CampaignConfig
    run_id: str
    kfs: KernelFs = field(default_factory=KernelFs)
    identity: HostIdentity = field(default_factory=HostIdentity.generate)
    serial: str = field(default_factory=lambda: secrets.token_hex(10))
    network: Network | None = None
    target: NvmetTarget | None = None
    backing: backing_mod.Backing | None = None  # namespace 1's (NSID)
    more_backings: list[backing_mod.Backing] = field(default_factory=list)  # NSIDs 2, 3, ...
    spec: TargetSpec | None = None
    host: NvmeHost | None = None
    setup_phases: dict[str, float] = field(default_factory=dict)  # seconds per step of up()
    rdma_modules: list[str] = field(default_factory=list)  # what up() loaded for rdma
    module_params_before: dict[str, str] = field(default_factory=dict)  # nvme_core, to restore
    module_params: dict[str, str] = field(default_factory=dict)  # nvme_core after up()

    @property
    def transport(self) -> str:
        """ "tcp" or "rdma" (config target.transport): record it per run."""
        return self.config.target.transport

    def record_fields(self) -> dict[str, Any]:
        """What a run record should say about this bed: transport, the rxe devices (rdma),
        the nvme_core io_timeout/max_retries in force, the RDMA modules up() loaded."""
        return {
            "transport": self.transport,
            "rxe_devices": self.network.rxe_devices if self.network else [],
            "nvme_core_params": dict(self.module_params),
            "rdma_modules_loaded": list(self.rdma_modules),
        }

    @property
    def nqn(self) -> str:
        return f"{NQN_PREFIX}subsys-{self.run_id}"

    @property
    def endpoints(self) -> list[PathEndpoint]:
        assert self.network is not None
        return [link.endpoint for link in self.network.links]

    def portid(self, path: int) -> int:
        return PORT_ID_BASE + path

    def up(self) -> MultipathDevice:
        """Build the test bed; on any failure, remove what was built and re-raise."""
        try:
            return self._up()
        except BaseException:
            self.down()
            raise

    def _up(self) -> MultipathDevice:
        tcfg = self.config.target
        with self._phase("modules"):
            if self.config.needs_patched_nvmet():
                from harness.bed import nvmet_modules

                nvmet_modules.load_patched_nvmet()
            if tcfg.transport == "rdma":
                self.rdma_modules = rdma.load_modules()
            load_modules(transport=tcfg.transport)
            hcfg = self.config.host
            self.module_params_before = set_module_params(
                self.kfs, {"io_timeout": hcfg.io_timeout, "max_retries": hcfg.max_retries}
            )
            self.module_params = read_module_params(self.kfs)
        self.host = NvmeHost(self.kfs, self.identity)
        self.network = Network(tcfg.network, tcfg.paths, tcfg.first_port, tcfg.transport)
        with self._phase("network"):
            self.network.setup()
        with self._phase("backing"):
            self._create_backings()
        self.spec = self.target_spec()
        self.target = NvmetTarget(self.kfs, netns=self.network.netns)
        with self._phase("target"):
            if tcfg.backend == "nvmetcli":
                with tempfile.TemporaryDirectory(prefix="nvmfh-nvmetcli-") as tmp:
                    nvmetcli_backend.apply(self.target, self.spec, Path(tmp) / "target.json")
            else:
                self.target.apply(self.spec)
        with self._phase("connect"):
            for endpoint in self.endpoints:
                self.connect(endpoint)
        with self._phase("paths_live"):
            device = self.host.wait_paths(
                self.nqn, self.endpoints, timeout_s=SETUP_TIMEOUT_S, namespaces=len(self.nsids)
            )
        if device is None:
            raise HarnessError(
                f"paths to {self.nqn} (with {len(self.nsids)} namespace(s) each) did not all "
                f"come up in {SETUP_TIMEOUT_S:g} s",
                hint="see dmesg",
            )
        with self._phase("iopolicy"):
            self.host.set_iopolicy(device, self.config.host.iopolicy)
            return self.checked_device()

    def _create_backings(self) -> None:
        """One backing per namespace (target.namespaces), namespace 1's owning the tmpfs."""
        tcfg = self.config.target
        count = tcfg.namespaces
        if tcfg.backing == "dm":
            self.backing = backing_mod.create_dm_backing(self.run_id, tcfg.size_mib, count)
        else:
            self.backing = backing_mod.create_file_backing(self.run_id, tcfg.size_mib, count)
        for nsid in range(NSID + 1, NSID + count):
            if tcfg.backing == "dm":
                more = backing_mod.create_dm_backing(
                    self.run_id, tcfg.size_mib, count, nsid=nsid, on=self.backing
                )
            else:
                more = backing_mod.add_file_backing(self.backing, nsid, tcfg.size_mib)
            self.more_backings.append(more)

    def backing_of(self, nsid: int) -> backing_mod.Backing:
        """The backing of namespace ``nsid``; HarnessError when the bed has none."""
        backings = [self.backing, *self.more_backings] if self.backing else []
        if not NSID <= nsid < NSID + len(backings):
            raise HarnessError(f"the test bed has no namespace {nsid}")
        found = backings[nsid - NSID]
        assert found is not None
        return found

    @property
    def nsids(self) -> tuple[int, ...]:
        """The NSIDs of this run's namespaces (1 .. target.namespaces)."""
        return tuple(range(NSID, NSID + self.config.target.namespaces))

    @contextlib.contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.setup_phases[name] = time.monotonic() - started

    def target_spec(self) -> TargetSpec:
        assert self.network is not None and self.backing is not None
        tcfg = self.config.target
        namespaces = tuple(
            NamespaceSpec(
                nsid=nsid,
                device_path=self.backing_of(nsid).device_path,
                device_uuid=str(uuid.uuid4()),
                # several namespaces: an NGUID too, so a remap changes both (ns_remap)
                device_nguid=str(uuid.uuid4()) if tcfg.namespaces > 1 else "",
                buffered_io=self.backing_of(nsid).buffered_io,
                ana_grpid=namespace_ana_group(nsid, tcfg.ana_groups),
            )
            for nsid in self.nsids
        )
        hosts = () if tcfg.allow_any_host else (self.identity.hostnqn,)
        subsystem = SubsystemSpec(
            nqn=self.nqn,
            namespaces=namespaces,
            allowed_hosts=hosts,
            allow_any_host=tcfg.allow_any_host,
            serial=self.serial,
            model="nvmf-harness",
        )
        ports = tuple(
            PortSpec(
                portid=self.portid(link.index),
                traddr=link.endpoint.traddr,
                trsvcid=link.endpoint.trsvcid,
                trtype=tcfg.transport,
                subsystems=(self.nqn,),
                ana_groups=ana_groups_spec(tcfg.ana_groups),
            )
            for link in self.network.links
        )
        return TargetSpec(hosts=hosts, ports=ports, subsystems=(subsystem,))

    def connect(self, endpoint: PathEndpoint, connect_with: str | None = None) -> str:
        """Connect one path with the configured options (``connect_with`` overrides how)."""
        assert self.host is not None
        hcfg = self.config.host
        name = self.host.connect(
            self.nqn,
            endpoint,
            ctrl_loss_tmo=hcfg.ctrl_loss_tmo,
            reconnect_delay=hcfg.reconnect_delay,
            keep_alive_tmo=hcfg.keep_alive_tmo,
            nr_io_queues=hcfg.nr_io_queues,
            connect_with=connect_with or hcfg.connect_with,
            transport=self.config.target.transport,
        )
        if hcfg.fast_io_fail_tmo >= 0:
            self.host.set_fast_io_fail_tmo(name, hcfg.fast_io_fail_tmo)
        return name

    def path_ios(self, device: MultipathDevice | None) -> list[int]:
        """IOs completed so far on each path's per-path disks of ``device`` (a topology read
        earlier: the caller decides when), in path order; 0 for a path with no controller or
        no disk, and for every path when ``device`` is None. Read from each disk's
        /sys/block/<disk>/stat (host.io_completed)."""
        assert self.host is not None
        counts = []
        for endpoint in self.endpoints:
            ctrl = device.controller_for(endpoint) if device else None
            disks = ctrl.path_disks if ctrl else ()
            counts.append(sum(self.host.io_completed(disk)[0] for disk in disks))
        return counts

    def device(self) -> MultipathDevice | None:
        assert self.host is not None
        return self.host.find(self.nqn)

    def checked_device(self) -> MultipathDevice:
        """The multipath device of this run, after the device interlock.

        fio is only ever pointed at a head whose subsystem NQN and serial are the ones this
        run created; anything else (a real disk, another subsystem) is refused. Every head
        the run has (one per namespace) passes the same check; fio uses namespace 1's
        (``MultipathDevice.head``).
        """
        device = self.device()
        if device is None or not device.heads:
            raise HarnessError(f"no multipath head for {self.nqn}")
        require_harness_devices(
            [f"/dev/{head}" for head in device.heads], self.nqn, self.serial, self.kfs
        )
        require_harness_device(device.head_dev, self.nqn, self.serial, self.kfs)
        return device

    @contextlib.contextmanager
    def running(self) -> Iterator[MultipathDevice]:
        """``up()`` for the with block (its device), ``down()`` after it, even when the block
        raised. Raises HarnessError naming the teardown errors when ``down()`` reported any
        and the block itself raised nothing (a testcase must not leave a half-removed bed
        unnoticed)."""
        device = self.up()
        try:
            yield device
        finally:
            errors = self.down()
        if errors:
            raise HarnessError(f"teardown errors: {'; '.join(errors)}")

    def down(self) -> list[str]:
        """Disconnect, remove the target, the backing and the network; returns errors."""
        errors: list[str] = []
        if self.host is not None:
            errors += self.host.disconnect_all(self.nqn)
            deadline = time.monotonic() + 30
            while self.host.controllers(self.nqn) and time.monotonic() < deadline:
                time.sleep(0.1)
        if self.target is not None:
            errors += self.target.teardown()
            self.target = None
        while self.more_backings:  # on namespace 1's tmpfs: before it
            errors += backing_mod.remove_backing(self.more_backings.pop())
        if self.backing is not None:
            errors += backing_mod.remove_backing(self.backing)
            self.backing = None
        errors += backing_mod.remove_run(self.run_id)  # also one never recorded
        if self.network is not None:
            errors += self.network.teardown()
            self.network = None
        if self.module_params_before:
            errors += restore_module_params(self.kfs, self.module_params_before)
            self.module_params_before = {}
        if self.rdma_modules:
            errors += rdma.unload_modules(list(reversed(self.rdma_modules)))
            self.rdma_modules = []
        self.kfs.close()  # its child process; a later change would start a new one
        return errors

"""NvmeHost discovery and sysfs writes, against a fake 6.1 /sys tree."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence

import pytest

from harness.bed import host as host_module
from harness.bed.host import (
    HOST_NQN_PREFIX,
    HostIdentity,
    MultipathDevice,
    NvmeHost,
    PathEndpoint,
    _connected_device,
    _fabrics_instance,
    parse_address,
)
from harness.core.errors import HarnessError, KernelFsError, KernelFsTimeout, ToolError
from harness.core.kernelfs import KernelFs
from harness.core.procs import ProcResult
from tests.fakes import CTRL_DEVICES, FakeSysfs

NQN = "nqn.2014-08.org.nvmexpress:nvmfh-test"
OTHER_NQN = "nqn.2014-08.org.nvmexpress:someone-else"
EP0 = PathEndpoint("127.0.0.1", "4421")
EP1 = PathEndpoint("127.0.0.1", "4422")


@pytest.fixture
def host(fake_sysfs: FakeSysfs) -> NvmeHost:
    return NvmeHost(fake_sysfs.kfs, HostIdentity.generate())


# --- pure parsing -------------------------------------------------------------------------


def test_parse_address() -> None:
    assert parse_address("traddr=127.0.0.1,trsvcid=4421,src_addr=127.0.0.1\n") == {
        "traddr": "127.0.0.1",
        "trsvcid": "4421",
        "src_addr": "127.0.0.1",
    }
    assert parse_address("traddr=198.18.1.2,trsvcid=4422") == {
        "traddr": "198.18.1.2",
        "trsvcid": "4422",
    }
    assert parse_address("") == {}
    assert parse_address("garbage,traddr=::1") == {"traddr": "::1"}


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ('{\n  "device":"nvme0"\n}\n', "nvme0"),  # nvme-cli 2.3 (json-c pretty print)
        ('{"device": "nvme12"}', "nvme12"),
        ('warning: something\n{\n  "device":"nvme3"\n}\n', "nvme3"),
        ("device: nvme0\n", None),  # normal output format
        ("", None),
        ("{not json", None),
        ('{"device": "nvme0n1"}', None),  # a namespace, not a controller
        ('{"device": 3}', None),
        ("[1, 2]", None),
    ],
)
def test_connected_device(stdout: str, expected: str | None) -> None:
    assert _connected_device(stdout) == expected


def test_host_identity_is_fresh_and_consistent() -> None:
    first, second = HostIdentity.generate(), HostIdentity.generate()
    assert first != second
    assert first.hostnqn == f"{HOST_NQN_PREFIX}{first.hostid}"
    assert first.hostnqn.startswith("nqn.")
    assert str(uuid.UUID(first.hostid)) == first.hostid


# --- discovery ----------------------------------------------------------------------------


def test_find_two_live_paths(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    built = fake_sysfs.multipath(NQN)
    device = host.find(NQN)
    assert device is not None
    assert device.subsystem == built.subsystem == "nvme-subsys0"
    assert device.nqn == NQN
    assert device.heads == ("nvme0n1",)
    assert device.head == "nvme0n1"
    assert device.head_dev == "/dev/nvme0n1"
    assert [c.name for c in device.controllers] == ["nvme0", "nvme1"]
    first = device.controllers[0]
    assert first.state == "live"
    assert first.transport == "tcp"
    assert (first.traddr, first.trsvcid) == ("127.0.0.1", "4421")
    assert first.subsysnqn == NQN
    assert first.path_disks == ("nvme0c0n1",)
    assert device.controllers[1].path_disks == ("nvme0c1n1",)
    assert [c.name for c in device.live_controllers()] == ["nvme0", "nvme1"]


def test_find_ignores_other_subsystems(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(OTHER_NQN, ports=("4420",))
    fake_sysfs.multipath(NQN, ports=("4421", "4422", "4423"))
    device = host.find(NQN)
    assert device is not None
    assert device.subsystem == "nvme-subsys1"
    assert device.heads == ("nvme1n1",)
    assert [c.name for c in device.controllers] == ["nvme1", "nvme2", "nvme3"]
    assert [c.path_disks for c in device.controllers] == [
        ("nvme1c1n1",),
        ("nvme1c2n1",),
        ("nvme1c3n1",),
    ]
    assert host.find("nqn.none") is None
    assert [c.name for c in host.controllers(OTHER_NQN)] == ["nvme0"]


def test_find_before_the_namespace_appears(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    subsystem = fake_sysfs.add_subsystem(NQN)
    fake_sysfs.add_controller(subsystem, trsvcid="4421")
    device = host.find(NQN)
    assert device is not None
    assert device.heads == ()
    assert device.controllers[0].path_disks == ()
    with pytest.raises(HarnessError, match="no namespace head"):
        _ = device.head


def test_controllers_in_any_state(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    built = fake_sysfs.multipath(NQN, ports=("4421", "4422", "4423"))
    fake_sysfs.set_state(built.controllers[1], "connecting")
    fake_sysfs.set_state(built.controllers[2], "deleting (no IO)")
    states = {c.name: c.state for c in host.controllers(NQN)}
    assert states == {"nvme0": "live", "nvme1": "connecting", "nvme2": "deleting (no IO)"}
    device = host.find(NQN)
    assert device is not None
    assert [c.name for c in device.live_controllers()] == ["nvme0"]


def test_controller_for(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(NQN)
    device = host.find(NQN)
    assert device is not None
    ctrl = device.controller_for(EP1)
    assert ctrl is not None and ctrl.name == "nvme1"
    assert device.controller_for(PathEndpoint("127.0.0.1", "4499")) is None
    assert device.controller_for(PathEndpoint("198.18.1.2", "4421")) is None


def test_controller_gone_or_half_gone(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    built = fake_sysfs.multipath(NQN)
    assert host.controller("nvme9") is None
    (fake_sysfs.path(f"{CTRL_DEVICES}/nvme1/state")).unlink()  # torn down under our feet
    info = host.controller("nvme1")
    assert info is not None and info.state == "gone"
    fake_sysfs.remove_controller(built.controllers[0])
    assert host.controller("nvme0") is None
    device = host.find(NQN)
    assert device is not None
    assert [c.name for c in device.controllers] == ["nvme1"]


def test_iopolicy_read_and_write(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(NQN, iopolicy="numa")
    device = host.find(NQN)
    assert device is not None
    assert host.iopolicy(device) == "numa"
    host.set_iopolicy(device, "round-robin")
    assert fake_sysfs.read("sys/devices/virtual/nvme-subsystem/nvme-subsys0/iopolicy") == (
        "round-robin"
    )
    assert host.iopolicy(device) == "round-robin"


def test_serial_and_ana_state(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    built = fake_sysfs.multipath(NQN)
    device = host.find(NQN)
    assert device is not None
    assert host.serial(device) == "4c1ae3b5d6f7a8b9c0d1"
    assert host.ana_state(built.path_disks[0]) == "optimized"
    fake_sysfs.path(f"sys/block/{built.path_disks[1]}/ana_state").write_text("inaccessible\n")
    assert host.ana_state(built.path_disks[1]) == "inaccessible"
    assert host.ana_state("nvme7c7n7") == ""


def test_io_completed(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    built = fake_sysfs.multipath(NQN)
    assert host.io_completed(built.head) == (0, 0)
    fake_sysfs.set_stat(built.head, read_ios=1200, write_ios=34, in_flight=32)
    assert host.io_completed(built.head) == (1234, 32)
    # the 6.1 line, as the kernel prints it
    fake_sysfs.path(f"sys/block/{built.path_disks[0]}/stat").write_text(
        "    5213        0   41704     1042     4876        0   39008     2817       16     "
        "3940     3860        0        0        0        0        0        0\n"
    )
    assert host.io_completed(built.path_disks[0]) == (5213 + 4876, 16)
    fake_sysfs.path(f"sys/block/{built.path_disks[1]}/stat").write_text("1 2 3\n")
    assert host.io_completed(built.path_disks[1]) == (0, 0)
    assert host.io_completed("nvme9n9") == (0, 0)


# --- changes through sysfs ----------------------------------------------------------------


def test_delete_reset_and_fast_io_fail(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(NQN)
    host.delete_controller("nvme0")
    host.reset_controller("nvme1")
    host.set_fast_io_fail_tmo("nvme1", 0)
    assert fake_sysfs.read(f"{CTRL_DEVICES}/nvme0/delete_controller") == "1"
    assert fake_sysfs.read(f"{CTRL_DEVICES}/nvme0/reset_controller") == ""
    assert fake_sysfs.read(f"{CTRL_DEVICES}/nvme1/reset_controller") == "1"
    assert fake_sysfs.read(f"{CTRL_DEVICES}/nvme1/fast_io_fail_tmo") == "0"


def test_a_deletion_that_hangs_names_the_tasks_blocked_in_the_kernel(
    fake_sysfs: FakeSysfs, host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sysfs.multipath(NQN)
    task = fake_sysfs.path("proc/77/task/77")
    task.mkdir(parents=True)
    (task / "stat").write_text("77 (kworker/u4:2) D 2 0\n")
    (task / "stack").write_text("[<0>] __synchronize_srcu+0x1/0x2\n[<0>] nvme_ns_remove+0x3/0x4\n")

    def hangs(kfs: object, rel: str, value: str, timeout_s: float | None = None) -> None:
        raise KernelFsTimeout(f"write '1' to {rel} hung for 30 s", hint="see dmesg")

    monkeypatch.setattr(type(host.kfs), "write", hangs)
    with pytest.raises(KernelFsTimeout) as caught:
        host.delete_controller("nvme0")
    assert "hung for 30 s: tasks blocked in the kernel (state D): kworker/u4:2[77]: " in str(
        caught.value
    )
    assert "__synchronize_srcu < nvme_ns_remove" in str(caught.value)
    assert caught.value.hint == "see dmesg"
    errors = host.disconnect_all(NQN)
    assert len(errors) == 2 and all("state D" in error for error in errors)


def test_disconnect_all_collects_errors(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(OTHER_NQN, ports=("4420",))
    fake_sysfs.multipath(NQN)
    broken = fake_sysfs.path(f"{CTRL_DEVICES}/nvme2/delete_controller")
    broken.unlink()
    broken.mkdir()  # writing to it fails
    errors = host.disconnect_all(NQN)
    assert len(errors) == 1
    assert "nvme2/delete_controller" in errors[0]
    assert "\n" not in errors[0]
    assert fake_sysfs.read(f"{CTRL_DEVICES}/nvme1/delete_controller") == "1"
    assert fake_sysfs.read(f"{CTRL_DEVICES}/nvme0/delete_controller") == ""  # other subsystem


# --- connect (nvme-cli faked) -------------------------------------------------------------


class FakeNvmeCli:
    def __init__(self, result: ProcResult) -> None:
        self.result = result
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], timeout_s: float) -> ProcResult:
        self.calls.append(list(argv))
        return self.result


def test_connect_reads_the_json_device(
    fake_sysfs: FakeSysfs, host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    cli = FakeNvmeCli(ProcResult(("nvme",), 0, '{\n  "device":"nvme4"\n}\n', ""))
    monkeypatch.setattr(host_module, "run", cli)
    name = host.connect(
        NQN,
        EP1,
        ctrl_loss_tmo=1,
        reconnect_delay=2,
        keep_alive_tmo=5,
        nr_io_queues=2,
        connect_with="nvme-cli",
    )
    assert name == "nvme4"
    (argv,) = cli.calls
    assert argv[:2] == ["nvme", "connect"]
    for option in (
        "--transport=tcp",
        "--traddr=127.0.0.1",
        "--trsvcid=4422",
        f"--nqn={NQN}",
        f"--hostnqn={host.identity.hostnqn}",
        f"--hostid={host.identity.hostid}",
        "--ctrl-loss-tmo=1",
        "--reconnect-delay=2",
        "--keep-alive-tmo=5",
        "--nr-io-queues=2",
        "--output-format=json",
    ):
        assert option in argv
    # nvme-cli 2.13 takes --config=none for a file name and connects something else
    assert not any(arg.startswith("--config") for arg in argv)


def test_connect_falls_back_to_sysfs(
    fake_sysfs: FakeSysfs, host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sysfs.multipath(NQN)
    monkeypatch.setattr(host_module, "run", FakeNvmeCli(ProcResult(("nvme",), 0, "", "")))
    assert host.connect(NQN, EP1, 1, 1, 5, 2, connect_with="nvme-cli") == "nvme1"


def test_a_connect_that_exits_0_without_a_controller_says_what_nvme_cli_printed(
    fake_sysfs: FakeSysfs, host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nvme-cli 2.13 (Debian 13) exited 0 for the decoy of testcase 005 with no controller:
    the error carries its words."""
    quiet = ProcResult(("nvme", "connect"), 0, "", "already connected\n")
    monkeypatch.setattr(host_module, "run", FakeNvmeCli(quiet))
    monkeypatch.setattr(host, "_wait_controller", lambda nqn, endpoint, timeout_s: None)
    with pytest.raises(ToolError) as info:
        host.connect(NQN, EP0, 1, 1, 5, 2, connect_with="nvme-cli")
    assert str(info.value) == (
        "nvme connect gave no controller for PathEndpoint(traddr='127.0.0.1', trsvcid='4421') "
        "(nvme-cli printed: already connected)"
    )


def test_connect_failure_is_one_line(
    fake_sysfs: FakeSysfs, host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = ProcResult(("nvme", "connect"), 1, "", "could not add new controller: failed\n")
    monkeypatch.setattr(host_module, "run", FakeNvmeCli(failed))
    with pytest.raises(ToolError) as info:
        host.connect(NQN, EP0, 1, 1, 5, 2, connect_with="nvme-cli")
    assert str(info.value) == (
        "nvme connect to 127.0.0.1:4421 failed: nvme connect: could not add new controller: failed"
    )


# --- connect through /dev/nvme-fabrics (the KernelFs child faked at its entry point) ------


class FakeFabrics:
    def __init__(self, reply: str = "", error: HarnessError | None = None) -> None:
        self.reply = reply
        self.error = error
        self.options: list[str] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Stand in for KernelFs.fabrics_connect (what the child would do in the kernel)."""

        def fabrics_connect(kfs: KernelFs, options: str, timeout_s: float | None = None) -> str:
            self.options.append(options)
            if self.error is not None:
                raise self.error
            return self.reply

        monkeypatch.setattr(KernelFs, "fabrics_connect", fabrics_connect)


@pytest.fixture
def fabrics_device(fake_sysfs: FakeSysfs) -> None:
    (fake_sysfs.root / "dev").mkdir(exist_ok=True)
    (fake_sysfs.root / "dev/nvme-fabrics").write_text("")


@pytest.mark.usefixtures("fabrics_device")
def test_connect_through_fabrics_sends_the_options(
    host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    fabrics = FakeFabrics("instance=7,cntlid=2")
    fabrics.install(monkeypatch)
    name = host.connect(
        NQN, EP1, ctrl_loss_tmo=1, reconnect_delay=2, keep_alive_tmo=5, nr_io_queues=3
    )
    assert name == "nvme7"
    (options,) = fabrics.options
    assert options.split(",") == [
        "transport=tcp",
        "traddr=127.0.0.1",
        "trsvcid=4422",
        f"nqn={NQN}",
        f"hostnqn={host.identity.hostnqn}",
        f"hostid={host.identity.hostid}",
        "ctrl_loss_tmo=1",
        "reconnect_delay=2",
        "keep_alive_tmo=5",
        "nr_io_queues=3",
    ]


@pytest.mark.usefixtures("fabrics_device")
def test_connect_through_fabrics_falls_back_to_sysfs(
    fake_sysfs: FakeSysfs, host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_sysfs.multipath(NQN)
    FakeFabrics("something else").install(monkeypatch)
    assert host.connect(NQN, EP1, 1, 1, 5, 2) == "nvme1"


@pytest.mark.usefixtures("fabrics_device")
def test_connect_through_fabrics_failure_is_one_line(
    host: NvmeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = KernelFsError("connect through /dev/nvme-fabrics failed: Connection refused")
    FakeFabrics(error=refused).install(monkeypatch)
    with pytest.raises(ToolError) as info:
        host.connect(NQN, EP0, 1, 1, 5, 2)
    assert str(info.value) == (
        "nvme connect to 127.0.0.1:4421 failed: "
        "connect through /dev/nvme-fabrics failed: Connection refused"
    )


def test_connect_without_fabrics_device_says_what_to_load(host: NvmeHost) -> None:
    with pytest.raises(ToolError, match="modprobe nvme-tcp"):
        host.connect(NQN, EP0, 1, 1, 5, 2)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("instance=3,cntlid=1", "nvme3"),
        ("instance=12,cntlid=5\n", "nvme12"),
        ("cntlid=5,instance=0", "nvme0"),
        ("instance=x", None),
        ("instance=٣", None),
        ("", None),
    ],
)
def test_fabrics_instance(reply: str, expected: str | None) -> None:
    assert _fabrics_instance(reply) == expected


# --- waiting ------------------------------------------------------------------------------


def test_wait_paths_all_live(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(NQN)
    started = time.monotonic()
    device = host.wait_paths(NQN, [EP0, EP1], timeout_s=5.0)
    assert device is not None
    assert isinstance(device, MultipathDevice)
    assert time.monotonic() - started < 1.0


def test_wait_paths_times_out_on_a_connecting_path(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(NQN, states=("live", "connecting"))
    started = time.monotonic()
    assert host.wait_paths(NQN, [EP0, EP1], timeout_s=0.3) is None
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 1.5


def test_wait_paths_needs_every_endpoint(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    fake_sysfs.multipath(NQN, ports=("4421",))
    assert host.wait_paths(NQN, [EP0, EP1], timeout_s=0.1) is None
    assert host.wait_paths(NQN, [EP0], timeout_s=0.1) is not None


def test_wait_paths_needs_a_path_disk(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    built = fake_sysfs.multipath(NQN)
    fake_sysfs.remove_path_disk(built.controllers[1], built.path_disks[1])
    assert host.wait_paths(NQN, [EP0, EP1], timeout_s=0.1) is None


def test_wait_paths_sees_a_path_come_back(fake_sysfs: FakeSysfs, host: NvmeHost) -> None:
    built = fake_sysfs.multipath(NQN, states=("live", "connecting"))
    timer = threading.Timer(0.3, fake_sysfs.set_state, (built.controllers[1], "live"))
    timer.start()
    try:
        started = time.monotonic()
        device = host.wait_paths(NQN, [EP0, EP1], timeout_s=5.0)
        assert device is not None
        assert [c.state for c in device.controllers] == ["live", "live"]
        assert 0.25 <= time.monotonic() - started < 2.0
    finally:
        timer.cancel()


def test_an_iopolicy_the_kernel_refuses_is_one_line_with_a_hint(host: NvmeHost) -> None:
    """6.1 has no queue-depth: its iopolicy write fails (here: no such attribute)."""
    device = MultipathDevice("nvme-subsys9", NQN, ("nvme9n1",), ())
    with pytest.raises(HarnessError, match="refuses iopolicy 'queue-depth'") as caught:
        host.set_iopolicy(device, "queue-depth")
    assert "6.11" in (caught.value.hint or "")


def test_disconnect_all_names_a_delete_that_never_finished(
    fake_sysfs: FakeSysfs, host: NvmeHost
) -> None:
    fake_sysfs.multipath(NQN)
    stuck = fake_sysfs.path(f"{CTRL_DEVICES}/nvme0")
    (stuck / "state").write_text("deleting\n")
    (stuck / "delete_controller").unlink()  # the kernel removed it with the first delete
    # the task that wrote delete_controller, blocked where 6.1 waits for the head's readers
    task = fake_sysfs.path("proc/412")
    task.mkdir(parents=True)
    (task / "stat").write_text("412 (python3) D 1 412 412 0 -1 4194560 0 0 0 0\n")
    (task / "stack").write_text(
        "[<0>] __synchronize_srcu.part.0+0x7c/0xa0\n"
        "[<0>] nvme_ns_remove+0x140/0x1e0 [nvme_core]\n"
        "[<0>] nvme_remove_namespaces+0xb4/0x110 [nvme_core]\n"
    )
    (fake_sysfs.path("proc/413")).mkdir()
    (fake_sysfs.path("proc/413/stat")).write_text("413 (fio) S 1 413 413 0 -1 0 0 0\n")
    errors = host.disconnect_all(NQN)
    assert errors == [
        "nvme0: still 'deleting': an earlier delete_controller has not finished (a kernel "
        "hang? tasks blocked in the kernel (state D): python3[412]: __synchronize_srcu.part.0 "
        "< nvme_ns_remove < nvme_remove_namespaces)"
    ]
    assert fake_sysfs.read(f"{CTRL_DEVICES}/nvme1/delete_controller") == "1"

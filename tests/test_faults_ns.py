"""Several namespaces (target.namespaces) and the faults ns_resize and ns_remap, on a fake
nvmet configfs (FakeNvmetFs) and a fake host sysfs (FakeSysfs) below one root.

The fake host follows the target the way 6.1's does after the AEN and rescan: its per-path
disks and heads take the size of the namespace's backing file (ns_resize) and the uuid
nvmet's configfs holds (ns_remap), only when the test lets it ("reacts").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.bed import backing as backing_mod
from harness.bed import testbed as testbed_mod
from harness.bed.host import MultipathDevice, NvmeHost
from harness.bed.net import Network
from harness.bed.safety import require_harness_devices
from harness.bed.target import NamespaceIdentity, NvmetTarget
from harness.config import campaign as config_mod
from harness.core.errors import ConfigError, HarnessError, SafetyError
from harness.faults import FaultAction, FaultInjector, fault_class
from tests.fakes import FakeNvmetFs, FakeSysfs

RUN_ID = "20261201-101010-abcdef"
SIZE_MIB = 16


class FakeNsBed:
    """A real Testbed on the fakes: target applied in the fake configfs, host connected in
    the fake sysfs, namespaces backed by real sparse files below ``root``."""

    def __init__(self, root: Path, namespaces: int = 3) -> None:
        self.nvmet = FakeNvmetFs.create(root)
        self.sysfs = FakeSysfs(root)
        config = config_mod.validate({"target": {"namespaces": namespaces}})
        bed = testbed_mod.Testbed(config, RUN_ID, kfs=self.sysfs.kfs)
        bed.network = Network("loopback", 2, 4421)
        images = root / "backing"
        images.mkdir()
        for nsid in range(1, namespaces + 1):
            image = images / f"ns{nsid}.img"
            image.write_bytes(b"")
            backing = backing_mod.Backing(str(image), True, image_path=str(image))
            backing_mod.resize(backing, SIZE_MIB * 1024 * 1024)
            if nsid == 1:
                bed.backing = backing
            else:
                bed.more_backings.append(backing)
        bed.spec = bed.target_spec()
        bed.target = NvmetTarget(self.nvmet)
        bed.target.apply(bed.spec)
        bed.host = NvmeHost(self.sysfs.kfs, bed.identity)
        self.subsystem = self.sysfs.add_subsystem(bed.nqn, serial=bed.serial)
        self.ctrls = [
            self.sysfs.add_controller(self.subsystem, link.endpoint.traddr, link.endpoint.trsvcid)
            for link in bed.network.links
        ]
        self.heads = [
            self.sysfs.add_head(self.subsystem, SIZE_MIB * 2048) for _ in range(namespaces)
        ]
        self.bed = bed
        self.host_follows()

    def disks(self, nsid: int) -> list[str]:
        """Namespace ``nsid``'s head and per-path disks in the fake sysfs."""
        head = self.heads[nsid - 1]
        found = [f"sys/block/{head}"]
        for ctrl in self.ctrls:
            found += [
                f"sys/class/nvme/{ctrl}/{disk}"
                for disk in self.sysfs.path_disks(ctrl)
                if disk.endswith(f"n{nsid}")
            ]
        return found

    def host_follows(self) -> None:
        """What the host's scan does: every namespace's disks show the nvmet uuid and the
        backing file's size (in sectors), and their nsid."""
        assert self.bed.target is not None
        for nsid in self.bed.nsids:
            uuid = self.bed.target.namespace_identity(self.bed.nqn, nsid).device_uuid
            sectors = backing_mod.size_bytes(self.bed.backing_of(nsid)) // 512
            for disk in self.disks(nsid):
                base = self.sysfs.path(disk)
                (base / "uuid").write_text(uuid + "\n")
                (base / "nsid").write_text(f"{nsid}\n")
                (base / "size").write_text(f"{sectors}\n")


@pytest.fixture
def fake(tmp_path: Path) -> FakeNsBed:
    return FakeNsBed(tmp_path)


def react(monkeypatch: pytest.MonkeyPatch, fake: FakeNsBed, on: str = "target") -> list[str]:
    """Make the fake host follow the target after a revalidate/identity change (``on`` =
    "target") or only after a rescan of a controller (``on`` = "rescan"); returns the log of
    what happened."""
    log: list[str] = []
    target_cls: Any = NvmetTarget
    revalidate = target_cls.revalidate_size
    identities = target_cls.set_namespace_identities

    def after_revalidate(self: NvmetTarget, nqn: str, nsid: int) -> None:
        revalidate(self, nqn, nsid)
        log.append(f"revalidate {nsid}")
        if on == "target":
            fake.host_follows()

    def after_identities(self: NvmetTarget, nqn: str, changes: dict[int, Any]) -> None:
        identities(self, nqn, changes)
        log.append(f"identities {sorted(changes)}")
        if on == "target":
            fake.host_follows()

    def rescan(self: NvmeHost, ctrl: str) -> None:
        log.append(f"rescan {ctrl}")
        if on == "rescan":
            fake.host_follows()

    monkeypatch.setattr(NvmetTarget, "revalidate_size", after_revalidate)
    monkeypatch.setattr(NvmetTarget, "set_namespace_identities", after_identities)
    monkeypatch.setattr(NvmeHost, "rescan_controller", rescan)
    return log


# --- the test bed with several namespaces -------------------------------------------------------


def test_namespaces_is_a_bounded_target_field() -> None:
    assert config_mod.validate({}).target.namespaces == 1
    assert config_mod.validate({"target": {"namespaces": 8}}).target.namespaces == 8
    for bad in (0, 9):
        with pytest.raises(ConfigError, match=r"target\.namespaces"):
            config_mod.validate({"target": {"namespaces": bad}})


def test_each_namespace_has_its_own_backing_uuid_and_nguid(fake: FakeNsBed) -> None:
    bed = fake.bed
    assert bed.spec is not None
    namespaces = bed.spec.subsystems[0].namespaces
    assert [ns.nsid for ns in namespaces] == [1, 2, 3]
    assert len({ns.device_path for ns in namespaces}) == 3
    assert len({ns.device_uuid for ns in namespaces}) == 3
    assert len({ns.device_nguid for ns in namespaces}) == 3 and all(
        ns.device_nguid for ns in namespaces
    )
    for ns in namespaces:  # in nvmet's configfs, enabled
        base = f"subsystems/{bed.nqn}/namespaces/{ns.nsid}"
        assert fake.nvmet.attr(f"{base}/enable") == "1"
        assert fake.nvmet.attr(f"{base}/device_path") == ns.device_path
    with pytest.raises(HarnessError, match="no namespace 4"):
        bed.backing_of(4)


def test_one_namespace_keeps_no_nguid(tmp_path: Path) -> None:
    one = FakeNsBed(tmp_path, namespaces=1)
    assert one.bed.spec is not None
    (namespace,) = one.bed.spec.subsystems[0].namespaces
    assert namespace.device_nguid == "" and namespace.nsid == 1


def test_fio_head_is_namespace_1s_whatever_the_order(fake: FakeNsBed) -> None:
    device = fake.bed.device()
    assert device is not None and len(device.heads) == 3
    assert device.head == fake.heads[0] and device.head_for(3) == fake.heads[2]
    shuffled = MultipathDevice("s", "nqn", ("nvme0n3", "nvme0n1"), (), head_nsids=(3, 1))
    assert shuffled.head == "nvme0n1"
    without = MultipathDevice("s", "nqn", ("nvme0n2", "nvme0n3"), (), head_nsids=(2, 3))
    with pytest.raises(HarnessError, match="no head for namespace 1"):
        _ = without.head
    unknown = MultipathDevice("s", "nqn", ("nvme0n7",), ())
    assert unknown.head == "nvme0n7"  # one head, NSIDs not read: the only one


def test_wait_paths_waits_for_every_namespace_on_every_path(fake: FakeNsBed) -> None:
    bed = fake.bed
    assert bed.host is not None
    assert bed.host.wait_paths(bed.nqn, bed.endpoints, 0.1, namespaces=3) is not None
    assert bed.host.wait_paths(bed.nqn, bed.endpoints, 0.1, namespaces=4) is None
    fake.sysfs.remove_path_disk(fake.ctrls[1], fake.sysfs.path_disks(fake.ctrls[1])[2])
    assert bed.host.wait_paths(bed.nqn, bed.endpoints, 0.1, namespaces=3) is None


def test_the_interlock_checks_every_head(fake: FakeNsBed, tmp_path: Path) -> None:
    bed = fake.bed
    device = bed.checked_device()  # all three heads are this run's
    assert device.head == fake.heads[0]
    other = fake.sysfs.add_subsystem("nqn.2014-08.org.example:real-disk")
    foreign = fake.sysfs.add_head(other)
    heads = [f"/dev/{head}" for head in device.heads]
    with pytest.raises(SafetyError, match="not created by this run"):
        require_harness_devices([*heads, f"/dev/{foreign}"], bed.nqn, bed.serial, bed.kfs)
    with pytest.raises(SafetyError, match="no head"):
        require_harness_devices([], bed.nqn, bed.serial, bed.kfs)


# --- backings -------------------------------------------------------------------------------


def test_tmpfs_has_room_for_every_namespace_and_its_growth() -> None:
    assert backing_mod.tmpfs_mib(256) == 256 + backing_mod.RESIZE_HEADROOM_MIB + 16
    assert backing_mod.tmpfs_mib(64, 3) == 3 * (64 + backing_mod.RESIZE_HEADROOM_MIB) + 16


def test_more_namespaces_files_live_on_namespace_1s_tmpfs(tmp_path: Path) -> None:
    first = backing_mod.Backing(
        str(tmp_path / "ns1.img"),
        True,
        mountpoint=str(tmp_path),
        image_path=str(tmp_path / "ns1.img"),
    )
    second = backing_mod.add_file_backing(first, 2, 16)
    assert second.device_path == str(tmp_path / "ns2.img") and second.mountpoint == ""
    assert backing_mod.size_bytes(second) == 16 * 1024 * 1024
    assert backing_mod.dm_name(RUN_ID, 2) == f"nvmfh-{RUN_ID}-ns2"
    assert backing_mod.dm_name(RUN_ID) == f"nvmfh-{RUN_ID}"


def test_resize_a_file_backing(tmp_path: Path) -> None:
    image = tmp_path / "ns1.img"
    image.write_bytes(b"")
    backing = backing_mod.Backing(str(image), True, image_path=str(image))
    backing_mod.resize(backing, 32 * 1024 * 1024)
    assert image.stat().st_size == 32 * 1024 * 1024
    backing_mod.resize(backing, 16 * 1024 * 1024)
    assert backing_mod.size_bytes(backing) == 16 * 1024 * 1024
    with pytest.raises(HarnessError, match="not sectors"):
        backing_mod.resize(backing, 1000)


def test_resize_a_dm_backing_never_maps_past_the_loop_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "ns1.img"
    image.write_bytes(b"\0" * 1024)
    calls: list[str] = []

    class Ok:
        ok = True

        def one_line_error(self) -> str:
            return ""

    def run(argv: list[str], timeout_s: float) -> Ok:
        calls.append(" ".join(argv[:2]) + f" size={image.stat().st_size}")
        return Ok()

    monkeypatch.setattr(backing_mod, "run", run)
    backing = backing_mod.Backing(
        "/dev/mapper/x", False, dm_name="x", loop_device="/dev/loop7", image_path=str(image)
    )
    backing_mod.resize(backing, 4096)  # grow: file and loop first, then the table
    assert calls == [
        "losetup --set-capacity size=4096",
        "dmsetup reload size=4096",
        "dmsetup resume size=4096",
    ]
    calls.clear()
    backing_mod.resize(backing, 2048)  # shrink: the table first
    assert calls == [
        "dmsetup reload size=4096",
        "dmsetup resume size=4096",
        "losetup --set-capacity size=2048",
    ]


# --- ns_resize --------------------------------------------------------------------------------


def _sectors(fake: FakeNsBed, nsid: int) -> set[int]:
    return {int(fake.sysfs.path(disk).joinpath("size").read_text()) for disk in fake.disks(nsid)}


def test_ns_resize_grows_revalidates_and_waits_for_the_host(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = react(monkeypatch, fake)
    injector = FaultInjector(fake.bed)
    action = FaultAction("ns_resize", 0, (("grow_mib", 8),))
    injector.inject(action)
    grown = (SIZE_MIB + 8) * 2048
    assert backing_mod.size_bytes(fake.bed.backing_of(1)) == grown * 512
    assert _sectors(fake, 1) == {grown} and _sectors(fake, 2) == {SIZE_MIB * 2048}
    assert log == ["revalidate 1"]
    injector.restore(action)
    assert _sectors(fake, 1) == {SIZE_MIB * 2048}
    assert backing_mod.size_bytes(fake.bed.backing_of(1)) == SIZE_MIB * 1024 * 1024
    notes = injector.take_notes()
    assert notes[0].startswith(f"ns_resize: namespace 1 grew from {SIZE_MIB * 2048} to {grown}")
    assert notes[1].startswith(f"ns_resize: namespace 1 shrank back to {SIZE_MIB * 2048}")
    # revalidate_size was written in nvmet's configfs, twice
    writes = [op for op in fake.nvmet.ops if op[1].endswith("/1/revalidate_size")]
    assert [op[2] for op in writes] == ["1", "1"]


def test_ns_resize_of_another_namespace(fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch) -> None:
    react(monkeypatch, fake)
    injector = FaultInjector(fake.bed)
    injector.inject(FaultAction("ns_resize", 1, (("nsid", 3), ("grow_mib", 1))))
    assert _sectors(fake, 3) == {(SIZE_MIB + 1) * 2048} and _sectors(fake, 1) == {SIZE_MIB * 2048}
    assert injector.restore_everything() == []
    assert backing_mod.size_bytes(fake.bed.backing_of(3)) == SIZE_MIB * 1024 * 1024


def test_ns_resize_times_out_naming_the_sizes_the_host_shows(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    react(monkeypatch, fake, on="rescan")  # the host never follows
    injector = FaultInjector(fake.bed)
    action = FaultAction("ns_resize", 0, (("timeout_s", 0.2),))
    with pytest.raises(HarnessError, match=rf"did not show {(SIZE_MIB + 16) * 2048} sectors.*"):
        injector.inject(action)
    # restore_everything shrinks the backing back even so
    assert injector.restore_everything() == []
    assert backing_mod.size_bytes(fake.bed.backing_of(1)) == SIZE_MIB * 1024 * 1024


def test_ns_resize_needs_the_namespace_it_names() -> None:
    cls = fault_class("ns_resize")
    steps = [{"fault": "ns_resize", "args": {"nsid": 3}}]
    with pytest.raises(ConfigError, match=r"needs target\.namespaces >= 3"):
        config_mod.validate({"steps": steps, "target": {"namespaces": 2}})
    ok = config_mod.validate({"steps": steps, "target": {"namespaces": 3}})
    assert cls.unmet(ok) is None


# --- ns_remap ---------------------------------------------------------------------------------


def _identity(fake: FakeNsBed, nsid: int) -> NamespaceIdentity:
    assert fake.bed.target is not None
    return fake.bed.target.namespace_identity(fake.bed.nqn, nsid)


def _host_uuid(fake: FakeNsBed, nsid: int) -> set[str]:
    return {fake.sysfs.path(disk).joinpath("uuid").read_text().strip() for disk in fake.disks(nsid)}


def test_ns_remap_swaps_ids_on_the_target_and_waits_for_the_host(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = react(monkeypatch, fake)
    one, two, three = (_identity(fake, n) for n in (1, 2, 3))
    injector = FaultInjector(fake.bed)
    action = FaultAction("ns_remap", 0)
    injector.inject(action)
    assert _identity(fake, 1) == NamespaceIdentity(
        two.device_uuid, two.device_nguid, one.device_path
    )
    assert _identity(fake, 2) == NamespaceIdentity(
        one.device_uuid, one.device_nguid, two.device_path
    )
    assert _identity(fake, 3) == three
    assert _host_uuid(fake, 1) == {two.device_uuid}
    # disabled both before any write (nvmet refuses them while enabled), enabled both after
    ns_ops = [
        (op, rel.split("/", 3)[-1], v) for op, rel, v in fake.nvmet.ops if "/namespaces/" in rel
    ]
    recent = ns_ops[-8:]
    assert [r[1] for r in recent[:2]] == ["1/enable", "2/enable"] and recent[0][2] == "0"
    assert [r[1] for r in recent[-2:]] == ["1/enable", "2/enable"] and recent[-1][2] == "1"
    injector.restore(action)
    assert [_identity(fake, n) for n in (1, 2, 3)] == [one, two, three]
    assert _host_uuid(fake, 1) == {one.device_uuid}
    notes = injector.take_notes()
    assert "swapped ids of namespaces 1 and 2" in notes[0]
    assert "fio's namespace 1 among them" in notes[0]
    assert log == ["identities [1, 2]", "identities [1, 2]"]


def test_ns_remap_of_neighbours_says_an_eio_on_namespace_1_is_a_bug(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    react(monkeypatch, fake)
    injector = FaultInjector(fake.bed)
    injector.inject(FaultAction("ns_remap", 0, (("first", 2), ("second", 3))))
    (note,) = injector.take_notes()
    assert "untouched: an EIO on it is a multipath bug" in note
    assert injector.restore_everything() == []
    assert _host_uuid(fake, 2) != _host_uuid(fake, 3)


def test_ns_remap_of_device_paths_keeps_the_ids(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    react(monkeypatch, fake)
    one, two = _identity(fake, 1), _identity(fake, 2)
    injector = FaultInjector(fake.bed)
    injector.inject(FaultAction("ns_remap", 0, (("swap", "device_path"),)))
    assert _identity(fake, 1) == NamespaceIdentity(
        one.device_uuid, one.device_nguid, two.device_path
    )
    injector.restore(FaultAction("ns_remap", 0, (("swap", "device_path"),)))
    assert _identity(fake, 1) == one


def test_ns_remap_rescans_the_lagging_controllers_when_the_host_lags(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = react(monkeypatch, fake, on="rescan")
    injector = FaultInjector(fake.bed)
    injector.inject(FaultAction("ns_remap", 0, (("timeout_s", 0.4),)))
    assert log == ["identities [1, 2]", *(f"rescan {ctrl}" for ctrl in sorted(fake.ctrls))]
    notes = injector.take_notes()
    assert "rescanning those controllers" in notes[0] and "nsid 1" in notes[0]
    assert "after" in notes[1] and "and 1 rescan(s)" in notes[1]


def test_ns_remap_rescans_again_until_the_host_follows(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rescan refused again (another controller still held the old head) is repeated
    every RESCAN_EVERY_S; the note counts them."""
    from harness.faults import ns_remap

    monkeypatch.setattr(ns_remap, "RESCAN_EVERY_S", 0.05)
    log = react(monkeypatch, fake, on="nothing")
    host_rescan: Any = NvmeHost.rescan_controller

    def second_round_follows(self: NvmeHost, ctrl: str) -> None:
        host_rescan(self, ctrl)
        if log.count(f"rescan {fake.ctrls[0]}") >= 2:
            fake.host_follows()

    monkeypatch.setattr(NvmeHost, "rescan_controller", second_round_follows)
    injector = FaultInjector(fake.bed)
    injector.inject(FaultAction("ns_remap", 0, (("timeout_s", 2.0),)))
    assert log.count(f"rescan {fake.ctrls[0]}") == 2
    assert "and 2 rescan(s)" in injector.take_notes()[-1]


def test_ns_remap_without_rescan_leaves_a_lagging_host_as_it_is(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = react(monkeypatch, fake, on="rescan")
    injector = FaultInjector(fake.bed)
    action = FaultAction("ns_remap", 0, (("timeout_s", 0.3), ("rescan", False)))
    with pytest.raises(
        HarnessError, match=r"after 0.3 s and 0 rescan\(s\) the host still lacks nvme\d+: nsid 1"
    ):
        injector.inject(action)
    assert log == ["identities [1, 2]"]  # no rescan
    assert injector.restore_everything() == []


def test_ns_remap_fails_in_one_line_when_the_host_never_follows(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    react(monkeypatch, fake, on="nothing")
    injector = FaultInjector(fake.bed)
    with pytest.raises(
        HarnessError, match=r"and 1 rescan\(s\) the host still lacks nvme\d+: nsid 1"
    ):
        injector.inject(FaultAction("ns_remap", 0, (("timeout_s", 0.2),)))
    # the target side is put back by restore_everything
    assert injector.restore_everything() == []
    assert _identity(fake, 1).device_uuid != _identity(fake, 2).device_uuid


def test_ns_remap_enables_both_again_when_a_write_fails(
    fake: FakeNsBed, monkeypatch: pytest.MonkeyPatch
) -> None:
    react(monkeypatch, fake)
    fake.nvmet.fail_once[f"subsystems/{fake.bed.nqn}/namespaces/2/device_uuid"] = (
        "Input/output error"
    )
    with pytest.raises(HarnessError, match="Input/output error"):
        FaultInjector(fake.bed).inject(FaultAction("ns_remap", 0))
    for nsid in (1, 2):
        assert fake.nvmet.attr(f"subsystems/{fake.bed.nqn}/namespaces/{nsid}/enable") == "1"


@pytest.mark.parametrize(
    ("namespaces", "args", "message"),
    [
        (1, {}, "needs target.namespaces >= 2 (it is 1)"),
        (2, {"first": 2, "second": 3}, "two different NSIDs of 1-2"),
        (3, {"first": 2, "second": 2}, "two different NSIDs of 1-3"),
    ],
)
def test_ns_remap_needs_two_namespaces(namespaces: int, args: dict[str, int], message: str) -> None:
    steps = [{"fault": "ns_remap", "args": args}]
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config_mod.validate({"steps": steps, "target": {"namespaces": namespaces}})
    assert (
        config_mod.validate(
            {"campaign": {"faults": ["ns_remap"]}, "target": {"namespaces": 2}}
        ).target.namespaces
        == 2
    )


def test_revalidate_size_writes_1_to_the_namespace(fake: FakeNsBed) -> None:
    """What ``revalidate_size`` writes: "1" to the namespace's attribute in configfs."""
    assert fake.bed.target is not None
    fake.bed.target.revalidate_size(fake.bed.nqn, 2)
    assert (
        "write",
        f"subsystems/{fake.bed.nqn}/namespaces/2/revalidate_size",
        "1",
    ) in fake.nvmet.ops


def test_ns_remap_spares_fio_only_when_namespace_1_is_not_in_the_pair() -> None:
    from harness.faults import fault_class

    remap = fault_class("ns_remap")
    assert not remap.spares_io({})  # the default pair (1, 2) takes fio's namespace
    assert not remap.spares_io({"first": 3, "second": 1})
    assert remap.spares_io({"first": 2, "second": 3})
    assert fault_class("ctrl_delete").spares_io({}) and not fault_class("ns_disable").spares_io({})

"""Network address planning (no root), plus one netns round trip that needs root."""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from pathlib import Path

import pytest

from harness.bed import net
from harness.bed.net import LOOPBACK_ADDR, NAME_PREFIX, TARGET_NETNS, Network
from harness.core.errors import HarnessError
from tests.fakes import RecordingRun

IFNAMSIZ = 16  # interface names are at most 15 characters


@pytest.mark.parametrize("paths", [2, 3, 8])
def test_loopback_plan(paths: int) -> None:
    network = Network("loopback", paths, first_port=4421)
    assert network.netns is None
    assert [link.index for link in network.links] == list(range(paths))
    for index, link in enumerate(network.links):
        assert link.endpoint.traddr == LOOPBACK_ADDR
        assert link.endpoint.trsvcid == str(4421 + index)
        assert link.host_ifname is None
        assert link.target_ifname is None
        assert link.host_addr is None


@pytest.mark.parametrize("paths", [2, 3, 8])
def test_netns_plan(paths: int) -> None:
    network = Network("netns", paths, first_port=5000)
    assert network.netns == TARGET_NETNS
    assert TARGET_NETNS.startswith(NAME_PREFIX)
    bench = ipaddress.ip_network("198.18.0.0/15")
    subnets = set()
    for index, link in enumerate(network.links):
        assert link.endpoint.trsvcid == str(5000 + index)
        assert link.host_ifname is not None and link.target_ifname is not None
        assert link.host_addr is not None
        for name in (link.host_ifname, link.target_ifname):
            assert name.startswith(f"{NAME_PREFIX}-")
            assert len(name) < IFNAMSIZ
        host = ipaddress.ip_interface(f"{link.host_addr}/30")
        target = ipaddress.ip_address(link.endpoint.traddr)
        assert host.ip in bench and target in bench
        assert host.ip != target
        assert target in host.network  # same /30: the target is reachable over this veth only
        assert target not in (host.network.network_address, host.network.broadcast_address)
        assert host.ip not in (host.network.network_address, host.network.broadcast_address)
        subnets.add(host.network)
    assert len(subnets) == paths  # one /30 per path, no overlap
    names = [n for link in network.links for n in (link.host_ifname, link.target_ifname)]
    assert len(set(names)) == 2 * paths


def test_unknown_layout() -> None:
    with pytest.raises(HarnessError, match="unknown network layout"):
        Network("bridge", 2, 4421)


def test_loopback_has_no_link_faults() -> None:
    network = Network("loopback", 2, 4421)
    with pytest.raises(HarnessError, match="netns"):
        network.set_link(0, up=False)
    assert network.link_is_up(1)
    assert network.teardown() == []


@pytest.mark.root
def test_netns_setup_link_fault_and_teardown() -> None:
    if net.find_leftovers():
        pytest.skip("nvmfh network objects already exist (another run?); not touching them")
    network = Network("netns", 2, 4421)
    netns_dir_was_mounted = net.is_mount_point(net.NETNS_DIR)
    try:
        network.setup()
        assert set(net.find_leftovers()) == {
            f"netns {TARGET_NETNS}",
            f"link {NAME_PREFIX}-h0",
            f"link {NAME_PREFIX}-h1",
        }
        network.set_link(1, up=False)
        assert not network.link_is_up(1)
        network.set_link(1, up=True)
        deadline = time.monotonic() + 5.0
        while not network.link_is_up(1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert network.link_is_up(1)
        assert network.link_is_up(0)
        assert network.teardown() == []
        assert net.find_leftovers() == []
        # pyroute2 bind-mounted /run/netns onto itself for the namespace: gone again, unless
        # it was a mount point before (then it is not ours).
        assert net.is_mount_point(net.NETNS_DIR) is netns_dir_was_mounted
        assert not net.NETNS_DIR_MARK.exists()
    finally:
        net.remove_leftovers()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("0x9", True), ("0x1003", True), ("0x1002", False), ("0x8", False), ("junk", False)],
)
def test_interface_is_up_reads_iff_up(tmp_path: Path, flags: str, expected: bool) -> None:
    (tmp_path / "class/net/lo").mkdir(parents=True)
    (tmp_path / "class/net/lo/flags").write_text(flags + "\n")
    assert net.interface_is_up("lo", sysfs=tmp_path) is expected


def test_interface_is_up_missing_interface(tmp_path: Path) -> None:
    assert net.interface_is_up("nvmfh-nope", sysfs=tmp_path) is False


def test_loopback_setup_with_lo_up_needs_no_netlink(monkeypatch: pytest.MonkeyPatch) -> None:
    """lo already up: setup does nothing, and never imports pyroute2 (9 s under TCG)."""
    monkeypatch.setattr(net, "interface_is_up", lambda ifname: ifname == "lo")
    monkeypatch.setitem(sys.modules, "pyroute2", None)  # importing it now raises ImportError
    Network("loopback", 2, 4421).setup()


def test_find_leftovers_from_sysfs_and_run_netns(tmp_path: Path) -> None:
    sysfs, netns_dir = tmp_path / "sys", tmp_path / "netns"
    for name in ("lo", "eth0", f"{NAME_PREFIX}-h0", f"{NAME_PREFIX}-h1", "nvmfhx"):
        (sysfs / "class/net" / name).mkdir(parents=True)
    netns_dir.mkdir()
    for name in (TARGET_NETNS, "someone-else"):
        (netns_dir / name).touch()
    assert net.find_leftovers(sysfs=sysfs, netns_dir=netns_dir) == [
        f"netns {TARGET_NETNS}",
        f"link {NAME_PREFIX}-h0",
        f"link {NAME_PREFIX}-h1",
    ]
    assert net.find_leftovers(sysfs=tmp_path / "none", netns_dir=tmp_path / "none") == []


MOUNTINFO_WITH_NETNS = (
    "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "42 27 254:0 /run/netns {netns_dir} rw,relatime shared:1 - ext4 /dev/vda rw\n"
)
LEFTOVER = "mount {} (made by our first netns)"


def fake_mounts(tmp_path: Path, mounted: bool) -> tuple[Path, Path, Path]:
    """(netns_dir, mark, mountinfo) under tmp_path; netns_dir mount 42 or no mount point."""
    netns_dir, mark, mountinfo = tmp_path / "netns", tmp_path / "run/mark", tmp_path / "mi"
    netns_dir.mkdir(parents=True)
    text = MOUNTINFO_WITH_NETNS.format(netns_dir=netns_dir)
    mountinfo.write_text(text if mounted else text.splitlines()[0] + "\n")
    return netns_dir, mark, mountinfo


def remount(mountinfo: Path, new_id: int) -> None:
    """Someone unmounted our mount and made another on the same directory."""
    mountinfo.write_text(mountinfo.read_text().replace("\n42 27 ", f"\n{new_id} 27 "))


def test_mount_id_reads_mountinfo(tmp_path: Path) -> None:
    netns_dir, _mark, mountinfo = fake_mounts(tmp_path, mounted=True)
    assert net.mount_id(netns_dir, mountinfo) == 42
    assert net.is_mount_point(netns_dir, mountinfo)
    assert not net.is_mount_point(tmp_path, mountinfo)
    assert not net.is_mount_point(netns_dir, tmp_path / "missing")


def test_the_mark_names_the_mount_and_the_mount_namespace(tmp_path: Path) -> None:
    netns_dir, mark, mountinfo = fake_mounts(tmp_path, mounted=False)
    net.mark_netns_dir_mount(netns_dir, mark, mountinfo)
    assert not mark.exists()  # create made no mount: nothing to mark
    netns_dir, mark, mountinfo = fake_mounts(tmp_path / "b", mounted=True)
    net.mark_netns_dir_mount(netns_dir, mark, mountinfo)
    record = json.loads(mark.read_text())
    assert record["mount_id"] == 42
    assert record["mount_ns"] == os.stat("/proc/self/ns/mnt").st_ino


@pytest.fixture
def fake_umount(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """net.run faked: records each command, succeeds."""
    recorder = RecordingRun()
    monkeypatch.setattr(net, "run", recorder)
    return recorder.calls


def test_our_empty_mount_is_reported_and_unmounted(
    tmp_path: Path, fake_umount: list[list[str]]
) -> None:
    netns_dir, mark, mountinfo = fake_mounts(tmp_path, mounted=True)
    net.mark_netns_dir_mount(netns_dir, mark, mountinfo)
    assert LEFTOVER.format(netns_dir) in net.find_leftovers(tmp_path, netns_dir, mark, mountinfo)
    assert net.release_netns_dir(netns_dir, mark, mountinfo) == []
    assert fake_umount == [["umount", str(netns_dir)]]
    assert not mark.exists()


def test_a_mount_with_someone_elses_namespace_in_it_stays(
    tmp_path: Path, fake_umount: list[list[str]]
) -> None:
    netns_dir, mark, mountinfo = fake_mounts(tmp_path, mounted=True)
    net.mark_netns_dir_mount(netns_dir, mark, mountinfo)
    (netns_dir / "theirs").touch()
    assert LEFTOVER.format(netns_dir) not in net.find_leftovers(
        tmp_path, netns_dir, mark, mountinfo
    )
    assert net.release_netns_dir(netns_dir, mark, mountinfo) == []
    assert fake_umount == [] and mark.exists()  # kept for a later clean
    (netns_dir / "theirs").unlink()
    assert LEFTOVER.format(netns_dir) in net.find_leftovers(tmp_path, netns_dir, mark, mountinfo)


@pytest.mark.parametrize("what", ["unmounted", "replaced", "unreadable mark"])
def test_a_mount_that_is_not_the_marked_one_is_never_unmounted(
    tmp_path: Path, fake_umount: list[list[str]], what: str
) -> None:
    """The mark outlived its mount (a crash, then someone's `ip netns add` and `del`): the
    mount on /run/netns now is not ours, whatever the mark says."""
    netns_dir, mark, mountinfo = fake_mounts(tmp_path, mounted=True)
    net.mark_netns_dir_mount(netns_dir, mark, mountinfo)
    if what == "unmounted":
        mountinfo.write_text(mountinfo.read_text().splitlines()[0] + "\n")
    elif what == "replaced":
        remount(mountinfo, 77)
    else:
        mark.write_text("/run/netns\n")  # an older harness's mark: no mount id
    assert LEFTOVER.format(netns_dir) not in net.find_leftovers(
        tmp_path, netns_dir, mark, mountinfo
    )
    assert net.release_netns_dir(netns_dir, mark, mountinfo) == []
    assert fake_umount == [] and not mark.exists()


def test_a_mark_from_another_mount_namespace_is_not_judged(
    tmp_path: Path, fake_umount: list[list[str]]
) -> None:
    netns_dir, mark, mountinfo = fake_mounts(tmp_path, mounted=True)
    mark.parent.mkdir(parents=True)
    mark.write_text(json.dumps({"path": str(netns_dir), "mount_id": 42, "mount_ns": 1}))
    assert LEFTOVER.format(netns_dir) not in net.find_leftovers(
        tmp_path, netns_dir, mark, mountinfo
    )
    assert net.release_netns_dir(netns_dir, mark, mountinfo) == []
    assert fake_umount == [] and mark.exists()


def test_release_netns_dir_says_why_umount_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netns_dir, mark, mountinfo = fake_mounts(tmp_path, mounted=True)
    net.mark_netns_dir_mount(netns_dir, mark, mountinfo)
    monkeypatch.setattr(net, "run", RecordingRun(returncode=32, stderr="busy"))
    assert net.release_netns_dir(netns_dir, mark, mountinfo) == [f"umount {netns_dir}: busy"]
    assert mark.exists()

"""Network address planning (no root), plus one netns round trip that needs root."""

from __future__ import annotations

import ipaddress
import sys
import time
from pathlib import Path

import pytest

from harness import net
from harness.errors import HarnessError
from harness.net import LOOPBACK_ADDR, NAME_PREFIX, TARGET_NETNS, Network

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

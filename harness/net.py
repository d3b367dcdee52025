"""Network plumbing for the paths, through netlink (pyroute2).

Two layouts:

- ``loopback``: every path is a TCP port on 127.0.0.1. Nothing to set up; a link fault is
  impossible (it would hit every path), so configs that ask for one are rejected.
- ``netns``: the target lives in its own network namespace; each path is one veth pair, host
  end in the initial namespace, target end in the target namespace, with a /30 per path in
  198.18.0.0/15 (the benchmarking range, RFC 2544). Taking one host-side veth down breaks
  exactly one path. The nvme-tcp host must stay in the initial namespace: its reconnect work
  runs in a kworker there.

All names start with NAME_PREFIX so ``clean`` can find what a crashed run left.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.host import PathEndpoint

NAME_PREFIX = "nvmfh"
TARGET_NETNS = f"{NAME_PREFIX}-tgt"
LOOPBACK_ADDR = "127.0.0.1"
IFF_UP = 0x1
NETNS_DIR = Path("/run/netns")  # where `ip netns` and pyroute2 keep named namespaces


@dataclass(frozen=True)
class PathLink:
    """One path's network: the endpoint the host connects to and, for netns, its veth."""

    index: int
    endpoint: PathEndpoint
    host_ifname: str | None = None
    target_ifname: str | None = None
    host_addr: str | None = None


def _netlink_error(action: str, exc: Exception) -> HarnessError:
    return HarnessError(f"netlink: {action} failed: {exc}", hint="are you root in the VM?")


class Network:
    """Creates, faults and removes the per-path network of one run."""

    def __init__(self, layout: str, paths: int, first_port: int) -> None:
        if layout not in ("loopback", "netns"):
            raise HarnessError(f"unknown network layout {layout!r}")
        self.layout = layout
        self.paths = paths
        self.first_port = first_port
        self.links = [self._plan(index) for index in range(paths)]
        self._created = False

    @property
    def netns(self) -> str | None:
        return TARGET_NETNS if self.layout == "netns" else None

    def _plan(self, index: int) -> PathLink:
        port = str(self.first_port + index)
        if self.layout == "loopback":
            return PathLink(index, PathEndpoint(LOOPBACK_ADDR, port))
        octet = 1 + index
        return PathLink(
            index,
            PathEndpoint(f"198.18.{octet}.2", port),
            host_ifname=f"{NAME_PREFIX}-h{index}",
            target_ifname=f"{NAME_PREFIX}-t{index}",
            host_addr=f"198.18.{octet}.1",
        )

    def setup(self) -> None:
        """Bring up loopback and, for netns, the namespace and one veth pair per path."""
        if self.layout == "loopback" and interface_is_up("lo"):
            # Nothing to do, and importing pyroute2 costs ~9 s of a test bed's setup under
            # qemu TCG (its package imports every netlink family).
            return
        from pyroute2 import IPRoute, NetNS, netns

        try:
            with IPRoute() as ipr:
                _set_up(ipr, "lo")
                if self.layout == "loopback":
                    return
                netns.create(TARGET_NETNS)
                self._created = True
                for link in self.links:
                    assert link.host_ifname and link.target_ifname and link.host_addr
                    ipr.link("add", ifname=link.host_ifname, kind="veth", peer=link.target_ifname)
                    peer = ipr.link_lookup(ifname=link.target_ifname)[0]
                    ipr.link("set", index=peer, net_ns_fd=TARGET_NETNS)
                    host_index = ipr.link_lookup(ifname=link.host_ifname)[0]
                    ipr.addr("add", index=host_index, address=link.host_addr, prefixlen=30)
                    ipr.link("set", index=host_index, state="up")
            with NetNS(TARGET_NETNS) as ns:
                _set_up(ns, "lo")
                for link in self.links:
                    assert link.target_ifname
                    index = ns.link_lookup(ifname=link.target_ifname)[0]
                    ns.addr("add", index=index, address=link.endpoint.traddr, prefixlen=30)
                    ns.link("set", index=index, state="up")
        except HarnessError:
            raise
        except Exception as exc:
            self.teardown()
            raise _netlink_error("network setup", exc) from exc

    def set_link(self, path: int, up: bool) -> None:
        """Take one path's host-side link down or up (netns layout only)."""
        link = self.links[path]
        if link.host_ifname is None:
            raise HarnessError('link faults need target.network = "netns"')
        from pyroute2 import IPRoute

        try:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=link.host_ifname)[0]
                ipr.link("set", index=index, state="up" if up else "down")
                if up:
                    _ensure_addr(ipr, index, link.host_addr or "")
        except Exception as exc:
            raise _netlink_error(f"set {link.host_ifname} {'up' if up else 'down'}", exc) from exc

    def link_is_up(self, path: int) -> bool:
        link = self.links[path]
        if link.host_ifname is None:
            return True
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=link.host_ifname)
            if not found:
                return False
            state = ipr.get_links(found[0])[0].get_attr("IFLA_OPERSTATE")
            return bool(state == "UP")

    def teardown(self) -> list[str]:
        """Remove what setup created; idempotent. Returns errors as one-line strings."""
        if self.layout == "loopback":
            return []
        return remove_leftovers()


def interface_is_up(ifname: str, sysfs: Path = Path("/sys")) -> bool:
    """Whether ``ifname`` is administratively up (IFF_UP in its sysfs flags)."""
    try:
        flags = int((sysfs / "class/net" / ifname / "flags").read_text().strip(), 16)
    except (OSError, ValueError):
        return False
    return bool(flags & IFF_UP)


def _set_up(ipr: Any, ifname: str) -> None:
    found = ipr.link_lookup(ifname=ifname)
    if found:
        ipr.link("set", index=found[0], state="up")


def _ensure_addr(ipr: Any, index: int, address: str) -> None:
    """Re-add the host address if taking the link down dropped it."""
    present = {addr.get_attr("IFA_ADDRESS") for addr in ipr.get_addr(index=index)}
    if address and address not in present:
        with contextlib.suppress(Exception):
            ipr.addr("add", index=index, address=address, prefixlen=30)


def find_leftovers(sysfs: Path = Path("/sys"), netns_dir: Path = NETNS_DIR) -> list[str]:
    """Our network namespaces and links left by an earlier run (from /run/netns and
    /sys/class/net: listing them needs no netlink, so no pyroute2 import)."""
    found = [f"netns {name}" for name in _names(netns_dir) if name.startswith(NAME_PREFIX)]
    found += [
        f"link {name}" for name in _names(sysfs / "class/net") if name.startswith(f"{NAME_PREFIX}-")
    ]
    return found


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def remove_leftovers() -> list[str]:
    """Delete our veths (the peer goes with each) and namespaces; returns errors."""
    if not find_leftovers():
        return []
    from pyroute2 import IPRoute, netns

    errors: list[str] = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith(f"{NAME_PREFIX}-"):
                try:
                    ipr.link("del", index=link["index"])
                except Exception as exc:
                    errors.append(f"delete link {name}: {exc}")
    for name in netns.listnetns():
        if name.startswith(NAME_PREFIX):
            try:
                netns.remove(name)
            except Exception as exc:
                errors.append(f"delete netns {name}: {exc}")
    return errors

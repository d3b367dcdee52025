"""Network plumbing for the paths, through netlink (pyroute2).

Two layouts:

- ``loopback``: every path is a TCP port on 127.0.0.1. Nothing to set up; a link fault is
  impossible (it would hit every path), so configs that ask for one are rejected.
- ``netns``: the target lives in its own network namespace; each path is one veth pair, host
  end in the initial namespace, target end in the target namespace, with a /30 per path in
  198.18.0.0/15 (the benchmarking range, RFC 2544). Taking one host-side veth down breaks
  exactly one path. The nvme-tcp host must stay in the initial namespace: its reconnect work
  runs in a kworker there.

With ``transport = "rdma"`` (soft-RoCE, harness/rdma.py) every path is one veth pair in the
initial namespace with an rxe device on its host end; host and target both use that end's
address, so rxe loops the traffic back inside itself (nvmet-rdma and nvme-rdma bind in the
initial namespace, and an rxe on ``lo`` does not resolve routes on 6.1). Taking a host-side
veth down still breaks exactly one path; netem does not apply (looped-back packets never
reach the qdisc).

Per-path impairments (netem: delay, loss, a full stall) sit on the host-side veth of the
netns layout, as the root qdisc (host-to-target direction), through pyroute2's tc API.

All names start with NAME_PREFIX so ``clean`` can find what a crashed run left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.bed.host import PathEndpoint
from harness.core.errors import HarnessError, ToolError
from harness.core.procs import run

NAME_PREFIX = "nvmfh"
TARGET_NETNS = f"{NAME_PREFIX}-tgt"
LOOPBACK_ADDR = "127.0.0.1"
IFF_UP = 0x1
NETNS_DIR = Path("/run/netns")  # where `ip netns` and pyroute2 keep named namespaces
# Written when our first netns made NETNS_DIR a mount point (pyroute2's netns.create, like
# `ip netns add`, bind-mounts the directory onto itself, shared, and never undoes it).
NETNS_DIR_MARK = Path("/run/nvmf-harness/netns-dir-mounted")
MOUNTINFO = Path("/proc/self/mountinfo")
UMOUNT_TIMEOUT_S = 30.0
# pyroute2 runs netns work in a child process and gives up on it after 2 s by default
# (pyroute2.config.default_communicate_timeout); a TCG guest on a loaded host answers later
# ("netlink: network setup failed: no response from the child pid N", measured at load 11).
NETNS_CHILD_TIMEOUT_S = 60


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

    def __init__(self, layout: str, paths: int, first_port: int, transport: str = "tcp") -> None:
        if layout not in ("loopback", "netns"):
            raise HarnessError(f"unknown network layout {layout!r}")
        if transport not in TRANSPORTS:
            raise HarnessError(f"unknown transport {transport!r} (known: {', '.join(TRANSPORTS)})")
        if transport == "rdma" and layout == "netns":
            raise HarnessError(
                'target.transport = "rdma" cannot use target.network = "netns"',
                hint="nvmet-rdma listens in the initial network namespace; use loopback "
                "(each rdma path gets its own veth and rxe device anyway)",
            )
        self.layout = layout
        self.transport = transport
        self.paths = paths
        self.first_port = first_port
        self.links = [self._plan(index) for index in range(paths)]
        self._created = False
        self.netem: dict[int, NetemSpec] = {}  # path -> impairment in place

    @property
    def netns(self) -> str | None:
        return TARGET_NETNS if self.layout == "netns" else None

    @property
    def rxe_devices(self) -> list[str]:
        """The rxe device of each path (rdma transport), in path order; [] for tcp."""
        if self.transport != "rdma":
            return []
        from harness.bed import rdma

        return [rdma.rxe_name(link.index) for link in self.links]

    def _plan(self, index: int) -> PathLink:
        port = str(self.first_port + index)
        octet = 1 + index
        if self.transport == "rdma":
            addr = f"198.18.{octet}.1"
            return PathLink(
                index,
                PathEndpoint(addr, port),
                host_ifname=f"{NAME_PREFIX}-h{index}",
                target_ifname=f"{NAME_PREFIX}-t{index}",
                host_addr=addr,
            )
        if self.layout == "loopback":
            return PathLink(index, PathEndpoint(LOOPBACK_ADDR, port))
        return PathLink(
            index,
            PathEndpoint(f"198.18.{octet}.2", port),
            host_ifname=f"{NAME_PREFIX}-h{index}",
            target_ifname=f"{NAME_PREFIX}-t{index}",
            host_addr=f"198.18.{octet}.1",
        )

    def setup(self) -> None:
        """Bring up loopback and, for netns, the namespace and one veth pair per path; for
        rdma, one veth pair and one rxe device per path (rdma_rxe must be loaded)."""
        if self.transport == "rdma":
            self._setup_rdma()
            return
        if self.layout == "loopback" and interface_is_up("lo"):
            # Nothing to do, and importing pyroute2 costs ~9 s of a test bed's setup under
            # qemu TCG (its package imports every netlink family).
            return
        from pyroute2 import IPRoute, NetNS, netns

        _patient_netns_child()
        try:
            with IPRoute() as ipr:
                _set_up(ipr, "lo")
                if self.layout == "loopback":
                    return
                netns_dir_was_mounted = is_mount_point(NETNS_DIR)
                netns.create(TARGET_NETNS)
                if not netns_dir_was_mounted:
                    mark_netns_dir_mount()
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

    def _setup_rdma(self) -> None:
        from pyroute2 import IPRoute

        from harness.bed import rdma

        try:
            with IPRoute() as ipr:
                _set_up(ipr, "lo")
                for link in self.links:
                    assert link.host_ifname and link.target_ifname and link.host_addr
                    ipr.link("add", ifname=link.host_ifname, kind="veth", peer=link.target_ifname)
                    self._created = True
                    host_index = ipr.link_lookup(ifname=link.host_ifname)[0]
                    peer_index = ipr.link_lookup(ifname=link.target_ifname)[0]
                    ipr.addr("add", index=host_index, address=link.host_addr, prefixlen=30)
                    ipr.link("set", index=peer_index, state="up")  # the carrier needs both
                    ipr.link("set", index=host_index, state="up")
        except Exception as exc:
            self.teardown()
            raise _netlink_error("rdma network setup", exc) from exc
        try:
            for link in self.links:
                assert link.host_ifname
                name = rdma.rxe_name(link.index)
                rdma.add_rxe(name, link.host_ifname)
                if not rdma.wait_rxe_active(name, timeout_s=RXE_ACTIVE_TIMEOUT_S):
                    raise HarnessError(
                        f"rxe device {name} on {link.host_ifname} did not become ACTIVE "
                        f"in {RXE_ACTIVE_TIMEOUT_S:g} s",
                        hint="see dmesg",
                    )
        except BaseException:
            self.teardown()
            raise

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

    # --- impairments (netem) ------------------------------------------------------------------

    def set_netem(self, path: int, spec: NetemSpec) -> None:
        """Put ``spec`` on one path's host-side veth (replacing any impairment there).

        Needs the netns layout over tcp: on loopback every path shares ``lo``, and rdma
        traffic is looped back inside rxe before any qdisc. Raises HarnessError otherwise,
        or when netlink refuses (sch_netem missing: the hint says so).
        """
        ifname = self._impairable(path)
        from pyroute2 import IPRoute

        try:
            with IPRoute() as ipr:
                index = ipr.link_lookup(ifname=ifname)[0]
                if path in self.netem or _has_root_qdisc(ipr, index, "netem"):
                    ipr.tc("del", index=index, root=True)
                ipr.tc("add", "netem", index=index, root=True, **spec.tc_kwargs())
        except Exception as exc:
            raise HarnessError(
                f"netlink: netem {spec.describe()} on {ifname} failed: {exc}",
                hint="needs root and the sch_netem module (modprobe sch_netem)",
            ) from exc
        self.netem[path] = spec

    def clear_netem(self, path: int) -> None:
        """Remove the impairment of one path (back to the default qdisc); idempotent."""
        ifname = self._impairable(path)
        from pyroute2 import IPRoute

        try:
            with IPRoute() as ipr:
                found = ipr.link_lookup(ifname=ifname)
                if found and _has_root_qdisc(ipr, found[0], "netem"):
                    ipr.tc("del", index=found[0], root=True)
        except Exception as exc:
            raise _netlink_error(f"remove netem from {ifname}", exc) from exc
        self.netem.pop(path, None)

    def netem_of(self, path: int) -> str:
        """The root qdisc kind of one path's host-side veth as the kernel reports it
        ("netem", "noqueue", ...; "" when the link is gone)."""
        ifname = self._impairable(path)
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=ifname)
            if not found:
                return ""
            for qdisc in ipr.get_qdiscs(index=found[0]):
                if qdisc["parent"] == TC_H_ROOT:
                    return str(qdisc.get_attr("TCA_KIND") or "")
        return ""

    def _impairable(self, path: int) -> str:
        if not 0 <= path < len(self.links):
            raise HarnessError(f"no path {path} (this run has {len(self.links)})")
        link = self.links[path]
        if self.transport == "rdma":
            raise HarnessError(
                "netem does not apply to the rdma transport",
                hint="rxe loops host-target traffic back before any qdisc; use tcp with "
                'target.network = "netns"',
            )
        if link.host_ifname is None:
            raise HarnessError('netem needs target.network = "netns"')
        return link.host_ifname

    def teardown(self) -> list[str]:
        """Remove what setup created; idempotent. Returns errors as one-line strings.
        (netem goes with the veth it sits on.)"""
        self.netem.clear()
        if self.layout == "loopback" and self.transport != "rdma":
            return []
        errors: list[str] = []
        if self.transport == "rdma":
            from harness.bed import rdma

            for name in rdma.rxe_devices():
                errors += rdma.remove_rxe(name)
        return errors + remove_leftovers()


TRANSPORTS = ("tcp", "rdma")
RXE_ACTIVE_TIMEOUT_S = 30.0
TC_H_ROOT = 0xFFFFFFFF


@dataclass(frozen=True)
class NetemSpec:
    """One path's impairment: ``delay_ms`` (+- ``jitter_ms``) and ``loss_pct`` percent of
    packets dropped, host to target. ``loss_pct = 100`` is a full stall: nothing the host
    sends arrives (TCP retransmits until keep-alive or IO timeouts fire)."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    limit: int = 10000  # packets netem may hold (its default 1000 drops under a 50 ms delay)

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or not 0 <= self.loss_pct <= 100:
            raise HarnessError(
                f"netem: bad impairment {self.describe()}",
                hint="delay_ms and jitter_ms >= 0, loss_pct in [0, 100]",
            )
        if self.jitter_ms and not self.delay_ms:
            raise HarnessError("netem: jitter_ms needs delay_ms")

    @classmethod
    def stall(cls) -> NetemSpec:
        return cls(loss_pct=100.0)

    def tc_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of pyroute2's ``tc("add", "netem", ...)`` (times in us)."""
        return {
            "delay": round(self.delay_ms * 1000),
            "jitter": round(self.jitter_ms * 1000),
            "loss": self.loss_pct,
            "limit": self.limit,
        }

    def describe(self) -> str:
        parts = []
        if self.delay_ms:
            parts.append(f"delay {self.delay_ms:g} ms")
        if self.jitter_ms:
            parts.append(f"jitter {self.jitter_ms:g} ms")
        if self.loss_pct:
            parts.append(f"loss {self.loss_pct:g}%")
        return ", ".join(parts) or "none"


def _has_root_qdisc(ipr: Any, index: int, kind: str) -> bool:
    for qdisc in ipr.get_qdiscs(index=index):
        if qdisc["parent"] == TC_H_ROOT and qdisc.get_attr("TCA_KIND") == kind:
            return True
    return False


def _patient_netns_child() -> None:
    """Let pyroute2 wait NETNS_CHILD_TIMEOUT_S for its netns child (never shorter than set)."""
    import pyroute2.config

    current = pyroute2.config.default_communicate_timeout
    pyroute2.config.default_communicate_timeout = max(current, NETNS_CHILD_TIMEOUT_S)


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


def find_leftovers(
    sysfs: Path = Path("/sys"),
    netns_dir: Path = NETNS_DIR,
    mark: Path = NETNS_DIR_MARK,
    mountinfo: Path = MOUNTINFO,
) -> list[str]:
    """Our network namespaces and links left by an earlier run (from /run/netns and
    /sys/class/net: listing them needs no netlink, so no pyroute2 import), and the
    /run/netns mount our first namespace made, while it is empty (see release_netns_dir)."""
    found = [f"netns {name}" for name in _names(netns_dir) if name.startswith(NAME_PREFIX)]
    found += [
        f"link {name}" for name in _names(sysfs / "class/net") if name.startswith(f"{NAME_PREFIX}-")
    ]
    if _marked_mount(netns_dir, mark, mountinfo) == "ours" and not _names(netns_dir):
        found.append(f"mount {netns_dir} (made by our first netns)")
    return found


def _names(directory: Path) -> list[str]:
    try:
        return sorted(os.listdir(directory))
    except OSError:
        return []


def mount_id(path: Path, mountinfo: Path = MOUNTINFO) -> int | None:
    """The id (field 1 of /proc/self/mountinfo) of the topmost mount on ``path``, or None
    when ``path`` is no mount point (``os.path.ismount`` misses a directory bind-mounted
    onto itself, which is what /run/netns is)."""
    try:
        lines = mountinfo.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    ids = [int(f[0]) for line in lines if len(f := line.split()) > 4 and f[4] == str(path)]
    return ids[-1] if ids else None


def is_mount_point(path: Path, mountinfo: Path = MOUNTINFO) -> bool:
    """Whether ``path`` is a mount point in this mount namespace (see mount_id)."""
    return mount_id(path, mountinfo) is not None


def _mount_namespace() -> int:
    """This process's mount namespace (the inode of /proc/self/ns/mnt)."""
    return os.stat("/proc/self/ns/mnt").st_ino


def mark_netns_dir_mount(
    netns_dir: Path = NETNS_DIR, mark: Path = NETNS_DIR_MARK, mountinfo: Path = MOUNTINFO
) -> None:
    """After our first netns made ``netns_dir`` a mount point (the caller saw it was none
    before): write ``mark`` with that mount's id and our mount namespace, so that the
    teardown, or a later ``clean``, unmounts that mount and no other."""
    ident = mount_id(netns_dir, mountinfo)
    if ident is None:
        return
    mark.parent.mkdir(parents=True, exist_ok=True)
    record = {"path": str(netns_dir), "mount_id": ident, "mount_ns": _mount_namespace()}
    mark.write_text(json.dumps(record) + "\n", encoding="utf-8")


def _marked_mount(netns_dir: Path, mark: Path, mountinfo: Path) -> str:
    """What ``mark`` says of ``netns_dir``: "none" (no mark), "ours" (the marked mount is
    still there, seen from the namespace that made it), "gone" (the mount is not the
    marked one any more), or "elsewhere" (another mount namespace made it: not judged)."""
    try:
        record = json.loads(mark.read_text(encoding="utf-8"))
        marked = (int(record["mount_id"]), int(record["mount_ns"]))
    except FileNotFoundError:
        return "none"
    except (OSError, ValueError, KeyError, TypeError):
        return "gone"  # unreadable: nothing can be proven ours
    if marked[1] != _mount_namespace():
        return "elsewhere"
    return "ours" if mount_id(netns_dir, mountinfo) == marked[0] else "gone"


def release_netns_dir(
    netns_dir: Path = NETNS_DIR, mark: Path = NETNS_DIR_MARK, mountinfo: Path = MOUNTINFO
) -> list[str]:
    """Unmount ``netns_dir`` if the mount on it is the one our netns made (``mark``) and no
    namespace is left in it: someone else's keeps it, and the mark, for a later clean. A
    mark whose mount is gone or was replaced is dropped without unmounting anything.
    Returns errors as one-line strings."""
    state = _marked_mount(netns_dir, mark, mountinfo)
    if state in ("none", "elsewhere"):
        return []
    if state == "ours":
        if _names(netns_dir):
            return []
        try:
            result = run(["umount", str(netns_dir)], timeout_s=UMOUNT_TIMEOUT_S)
        except ToolError as exc:
            return [f"umount {netns_dir}: {exc}"]
        if not result.ok:
            return [f"umount {netns_dir}: {result.stderr.strip()}"]
    mark.unlink(missing_ok=True)
    return []


def remove_leftovers() -> list[str]:
    """Delete our veths (the peer goes with each) and namespaces, then the /run/netns mount
    our first namespace made; returns errors."""
    ours = [item for item in find_leftovers() if not item.startswith("mount ")]
    errors = _remove_links_and_namespaces() if ours else []
    return errors + release_netns_dir()


def _remove_links_and_namespaces() -> list[str]:
    from pyroute2 import IPRoute, netns

    _patient_netns_child()
    errors: list[str] = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            if name.startswith(f"{NAME_PREFIX}-"):
                try:
                    ipr.link("del", index=link["index"])
                except Exception as exc:
                    if getattr(exc, "code", None) == errno.ENODEV:
                        continue  # the peer of a veth deleted just before (rdma layout)
                    errors.append(f"delete link {name}: {exc}")
    for name in netns.listnetns():
        if name.startswith(NAME_PREFIX):
            try:
                netns.remove(name)
            except Exception as exc:
                errors.append(f"delete netns {name}: {exc}")
    return errors

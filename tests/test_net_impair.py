"""netem impairments on one path and the rdma network plan (no root: a fake IPRoute)."""

from __future__ import annotations

from typing import Any

import pyroute2
import pytest

from harness.bed.net import NAME_PREFIX, TC_H_ROOT, NetemSpec, Network
from harness.core.errors import HarnessError

IFNAMSIZ = 16


class FakeQdisc(dict[str, Any]):
    def __init__(self, kind: str) -> None:
        super().__init__(parent=TC_H_ROOT)
        self.kind = kind

    def get_attr(self, name: str) -> str | None:
        return self.kind if name == "TCA_KIND" else None


class FakeIPRoute:
    """Links by name -> index and one root qdisc per link; records tc calls."""

    calls: list[tuple[Any, ...]] = []
    root: dict[int, str] = {}

    def __enter__(self) -> FakeIPRoute:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def link_lookup(self, ifname: str) -> list[int]:
        return [int(ifname[-1]) + 10] if ifname.startswith(f"{NAME_PREFIX}-h") else []

    def get_qdiscs(self, index: int) -> list[FakeQdisc]:
        return [FakeQdisc(self.root.get(index, "noqueue"))]

    def tc(self, command: str, kind: str | None = None, **kwargs: Any) -> None:
        self.calls.append((command, kind, kwargs))
        if command == "add":
            self.root[kwargs["index"]] = str(kind)
        elif command == "del":
            self.root.pop(kwargs["index"], None)


@pytest.fixture
def ipr(monkeypatch: pytest.MonkeyPatch) -> type[FakeIPRoute]:
    FakeIPRoute.calls = []
    FakeIPRoute.root = {}
    monkeypatch.setattr(pyroute2, "IPRoute", FakeIPRoute)
    return FakeIPRoute


def test_delay_on_one_path_then_removed(ipr: type[FakeIPRoute]) -> None:
    network = Network("netns", 2, first_port=4421)
    network.set_netem(0, NetemSpec(delay_ms=50))
    assert ipr.calls == [
        (
            "add",
            "netem",
            {"index": 10, "root": True, "delay": 50_000, "jitter": 0, "loss": 0.0, "limit": 10000},
        )
    ]
    assert network.netem_of(0) == "netem" and network.netem_of(1) == "noqueue"
    assert network.netem == {0: NetemSpec(delay_ms=50)}
    network.clear_netem(0)
    assert ipr.calls[-1] == ("del", None, {"index": 10, "root": True})
    assert network.netem_of(0) == "noqueue" and network.netem == {}
    calls = len(ipr.calls)
    network.clear_netem(0)  # idempotent: nothing to delete
    assert len(ipr.calls) == calls


def test_a_new_impairment_replaces_the_old(ipr: type[FakeIPRoute]) -> None:
    network = Network("netns", 2, first_port=4421)
    network.set_netem(1, NetemSpec(loss_pct=5))
    network.set_netem(1, NetemSpec.stall())
    assert [call[0] for call in ipr.calls] == ["add", "del", "add"]
    assert ipr.calls[-1][2]["loss"] == 100.0


def test_netem_needs_netns_tcp_and_a_real_path() -> None:
    with pytest.raises(HarnessError, match=r'netem needs target\.network = "netns"'):
        Network("loopback", 2, first_port=4421).set_netem(0, NetemSpec(delay_ms=1))
    with pytest.raises(HarnessError, match="netem does not apply to the rdma transport"):
        Network("loopback", 2, first_port=4421, transport="rdma").clear_netem(0)
    with pytest.raises(HarnessError, match=r"no path 2 \(this run has 2\)"):
        Network("netns", 2, first_port=4421).set_netem(2, NetemSpec(delay_ms=1))


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (NetemSpec(delay_ms=50), "delay 50 ms"),
        (NetemSpec(delay_ms=20, jitter_ms=5, loss_pct=1.5), "delay 20 ms, jitter 5 ms, loss 1.5%"),
        (NetemSpec.stall(), "loss 100%"),
        (NetemSpec(), "none"),
    ],
)
def test_netem_describe(spec: NetemSpec, text: str) -> None:
    assert spec.describe() == text


@pytest.mark.parametrize(
    "kwargs", [{"delay_ms": -1}, {"loss_pct": 101}, {"loss_pct": -0.5}, {"jitter_ms": 3}]
)
def test_bad_netem_is_one_line(kwargs: dict[str, Any]) -> None:
    with pytest.raises(HarnessError, match=r"^netem: "):
        NetemSpec(**kwargs)


@pytest.mark.parametrize("paths", [2, 4, 8])
def test_rdma_plan(paths: int) -> None:
    network = Network("loopback", paths, first_port=4421, transport="rdma")
    assert network.netns is None  # nvmet-rdma listens in the initial namespace
    assert network.rxe_devices == [f"nvmfh_rxe{i}" for i in range(paths)]
    addrs = set()
    for index, link in enumerate(network.links):
        assert link.host_ifname == f"{NAME_PREFIX}-h{index}" and len(link.host_ifname) < IFNAMSIZ
        assert link.target_ifname == f"{NAME_PREFIX}-t{index}"
        # host and target share the host end's address: rxe loops it back
        assert link.endpoint.traddr == link.host_addr
        assert link.endpoint.trsvcid == str(4421 + index)
        addrs.add(link.host_addr)
    assert len(addrs) == paths
    assert Network("netns", 2, first_port=4421).rxe_devices == []


def test_rdma_refuses_netns_and_unknown_transports() -> None:
    with pytest.raises(HarnessError, match=r'"rdma" cannot use target\.network = "netns"'):
        Network("netns", 2, first_port=4421, transport="rdma")
    with pytest.raises(HarnessError, match="unknown transport 'udp'"):
        Network("loopback", 2, first_port=4421, transport="udp")

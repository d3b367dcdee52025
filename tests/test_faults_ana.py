"""ana_change and ana_swap on a fake nvmet configfs (tests.fakes.FakeNvmetFs) holding the
target a bed of 2 or 4 paths and 1 or 2 ANA groups makes; target.ana_groups in the config
and the target spec; the step language's view of both faults' parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from harness.bed import testbed as testbed_mod
from harness.bed.host import PathEndpoint
from harness.bed.target import (
    ANA_STATES,
    NQN_PREFIX,
    PORT_ID_BASE,
    NamespaceSpec,
    NvmetTarget,
    PortSpec,
    SubsystemSpec,
    TargetSpec,
    ana_groups_spec,
    namespace_ana_group,
    port_ana_groups,
)
from harness.config import campaign as config_mod
from harness.core.errors import ConfigError, HarnessError
from harness.faults import FaultAction, FaultInjector, fault_class
from harness.faults.ana_swap import parse_layout, swap_states
from tests.fakes import FakeNvmetFs

NQN = f"{NQN_PREFIX}subsys-ana"


@dataclass
class AnaBed:
    """What ana_change/ana_swap and FaultInjector use of a Testbed: a real NvmetTarget on
    the fake configfs, the endpoints, portid; host and network only need to be there."""

    target: NvmetTarget
    endpoints: list[PathEndpoint]
    nqn: str = NQN
    host: object = field(default_factory=object)
    network: object = field(default_factory=object)

    def portid(self, path: int) -> int:
        return PORT_ID_BASE + path


def make_bed(
    tmp_path: Path, paths: int = 2, groups: int = 1, namespaces: int = 1
) -> tuple[AnaBed, FakeNvmetFs]:
    """A bed like Testbed.target_spec makes: ``paths`` ports with ANA groups 1..``groups``,
    namespaces 1..``namespaces`` spread over the groups (namespace_ana_group)."""
    kfs = FakeNvmetFs.create(tmp_path / "root")
    spec = TargetSpec(
        subsystems=(
            SubsystemSpec(
                nqn=NQN,
                namespaces=tuple(
                    NamespaceSpec(
                        nsid,
                        f"/var/tmp/nvmf-harness/ns{nsid}.img",
                        ana_grpid=namespace_ana_group(nsid, groups),
                    )
                    for nsid in range(1, namespaces + 1)
                ),
                allow_any_host=True,
            ),
        ),
        ports=tuple(
            PortSpec(
                PORT_ID_BASE + p,
                "127.0.0.1",
                str(4421 + p),
                subsystems=(NQN,),
                ana_groups=ana_groups_spec(groups),
            )
            for p in range(paths)
        ),
    )
    target = NvmetTarget(kfs)
    target.apply(spec)
    endpoints = [PathEndpoint("127.0.0.1", str(4421 + p)) for p in range(paths)]
    return AnaBed(target, endpoints), kfs


def states(kfs: FakeNvmetFs, paths: int, grpid: int = 1) -> list[str]:
    return [
        kfs.attr(f"ports/{PORT_ID_BASE + p}/ana_groups/{grpid}/ana_state") for p in range(paths)
    ]


def injector(bed: AnaBed) -> FaultInjector:
    return FaultInjector(cast(testbed_mod.Testbed, bed))


def action(kind: str, path: int, **args: Any) -> FaultAction:
    return FaultAction(kind, path, tuple(sorted(args.items())))


# --- ana_change --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ANA_STATES)
def test_ana_change_puts_the_port_in_each_state_and_back(tmp_path: Path, state: str) -> None:
    bed, kfs = make_bed(tmp_path)
    faults = injector(bed)
    faults.inject(action("ana_change", 0, state=state))
    assert states(kfs, 2) == [state, "optimized"]
    faults.restore(action("ana_change", 0, state=state))
    assert states(kfs, 2) == ["optimized", "optimized"]


def test_ana_change_defaults_are_todays_fault(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path)
    faults = injector(bed)
    faults.inject(FaultAction("ana_change", 1))
    assert states(kfs, 2) == ["optimized", "inaccessible"]
    faults.restore(FaultAction("ana_change", 1))
    assert states(kfs, 2) == ["optimized", "optimized"]


def test_ana_change_restore_state_is_where_the_restore_leaves_it(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path)
    faults = injector(bed)
    faults.restore(action("ana_change", 0, restore_state="non-optimized"))
    assert states(kfs, 2) == ["non-optimized", "optimized"]


def test_ana_change_acts_on_every_group_of_the_port_or_the_one_named(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path, groups=2)
    faults = injector(bed)
    faults.inject(action("ana_change", 0, state="change"))
    assert states(kfs, 2, 1) == ["change", "optimized"]
    assert states(kfs, 2, 2) == ["change", "optimized"]
    faults.restore(FaultAction("ana_change", 0))
    faults.inject(action("ana_change", 1, state="persistent-loss", group=2))
    assert states(kfs, 2, 1) == ["optimized", "optimized"]
    assert states(kfs, 2, 2) == ["optimized", "persistent-loss"]


def test_ana_change_on_a_group_the_port_lacks_is_one_line(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path)
    with pytest.raises(HarnessError, match=r"path 0 has no ANA group 3 \(its port has groups 1"):
        injector(bed).inject(action("ana_change", 0, group=3))
    assert states(kfs, 2) == ["optimized", "optimized"]


def test_a_write_nvmet_refuses_is_a_harness_error(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path)
    kfs.fail[f"ports/{PORT_ID_BASE}/ana_groups/1/ana_state"] = "Invalid argument"
    with pytest.raises(HarnessError, match="Invalid argument"):
        injector(bed).inject(FaultAction("ana_change", 0))


def test_ana_change_restore_everything_sets_every_group_of_every_port(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path, paths=3, groups=2)
    for p, state in enumerate(("inaccessible", "change", "non-optimized")):
        for grpid in (1, 2):
            bed.target.set_ana_state(PORT_ID_BASE + p, state, grpid)
    assert fault_class("ana_change")(cast(testbed_mod.Testbed, bed)).restore_everything() == []
    assert states(kfs, 3, 1) == states(kfs, 3, 2) == ["optimized"] * 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"state": "offline"}, r"steps\[0\]\.args\.state: expected one of optimized, "),
        ({"restore_state": 1}, r"steps\[0\]\.args\.restore_state: expected str"),
        ({"group": 129}, r"steps\[0\]\.args\.group: 129 is out of range \[0, 128\]"),
        ({"grp": 2}, r"ana_change has no parameter 'grp' \(parameters: state, restore_state"),
    ],
)
def test_ana_change_bad_args_are_config_errors(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_mod.validate({"steps": [{"fault": "ana_change", "args": args}]})


# --- ana_swap ----------------------------------------------------------------------------------


def test_swap_states_rotates_the_layout_to_the_path() -> None:
    failover = ("inaccessible", "inaccessible", "optimized", "non-optimized")
    assert swap_states(0, 4, "inaccessible", "optimized", failover) == dict(enumerate(failover))
    assert swap_states(3, 4, "inaccessible", "optimized", failover) == {
        3: "inaccessible",
        0: "inaccessible",
        1: "optimized",
        2: "non-optimized",
    }
    assert swap_states(1, 2, "change", "optimized", ()) == {0: "optimized", 1: "change"}
    # ports past the layout's end get "others"
    assert swap_states(0, 4, "x", "non-optimized", ("inaccessible", "optimized")) == {
        0: "inaccessible",
        1: "optimized",
        2: "non-optimized",
        3: "non-optimized",
    }
    with pytest.raises(HarnessError, match="layout has 3 states but the bed has 2 paths"):
        swap_states(0, 2, "inaccessible", "optimized", ("optimized",) * 3)


def test_parse_layout() -> None:
    assert parse_layout(" inaccessible, optimized ") == ("inaccessible", "optimized")
    assert parse_layout("") == ()
    with pytest.raises(ConfigError, match=r"L: item 1 is 'gone', expected one of optimized"):
        parse_layout("optimized,gone", "L")
    with pytest.raises(ConfigError, match=r"L: item 1 is '', expected"):
        parse_layout("optimized,", "L")
    with pytest.raises(ConfigError, match="9 states, at most 8"):
        parse_layout(",".join(["optimized"] * 9), "L")


def test_ana_swap_defaults_move_the_optimized_path_at_once(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path)
    faults = injector(bed)
    bed.target.set_ana_state(PORT_ID_BASE + 1, "non-optimized")
    kfs.ops.clear()
    faults.inject(FaultAction("ana_swap", 0))
    assert states(kfs, 2) == ["inaccessible", "optimized"]
    # the new optimized port first, then the lost one
    writes = [(rel.split("/")[1], value) for op, rel, value in kfs.ops if op == "write"]
    assert writes == [(str(PORT_ID_BASE + 1), "optimized"), (str(PORT_ID_BASE), "inaccessible")]
    faults.restore(FaultAction("ana_swap", 0))
    assert states(kfs, 2) == ["optimized", "optimized"]


def test_ana_swap_blktests_057_failover_and_failback_over_4_ports(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path, paths=4)
    faults = injector(bed)
    failback = "optimized,non-optimized,inaccessible,inaccessible"
    failover = "inaccessible,inaccessible,optimized,non-optimized"
    faults.inject(action("ana_swap", 2, layout=failback))
    assert states(kfs, 4) == ["inaccessible", "inaccessible", "optimized", "non-optimized"]
    kfs.ops.clear()
    faults.inject(action("ana_swap", 2, layout=failover))
    assert states(kfs, 4) == ["optimized", "non-optimized", "inaccessible", "inaccessible"]
    order = [value for op, _, value in kfs.ops if op == "write"]
    assert order == ["optimized", "non-optimized", "inaccessible", "inaccessible"]
    faults.restore(action("ana_swap", 2, layout=failover))
    assert states(kfs, 4) == ["optimized"] * 4


def test_ana_swap_on_one_group_leaves_the_others(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path, groups=2)
    faults = injector(bed)
    faults.inject(action("ana_swap", 1, group=2, others="non-optimized"))
    assert states(kfs, 2, 1) == ["optimized", "optimized"]
    assert states(kfs, 2, 2) == ["non-optimized", "inaccessible"]
    faults.restore(action("ana_swap", 1, group=2))
    assert states(kfs, 2, 2) == ["optimized", "optimized"]


def test_ana_swap_restore_everything_undoes_only_what_it_touched(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path, paths=3)
    fault = fault_class("ana_swap")(cast(testbed_mod.Testbed, bed))
    kfs.ops.clear()
    assert fault.restore_everything() == []
    assert kfs.ops == []  # nothing injected: nothing to undo
    fault.args = fault.check_args({"layout": "change,inaccessible"})
    # written in order 2 (optimized), 0 (change), 1 (inaccessible): the last one fails
    kfs.fail_once[f"ports/{PORT_ID_BASE + 1}/ana_groups/1/ana_state"] = "Invalid argument"
    with pytest.raises(HarnessError, match="Invalid argument"):
        fault.inject(0)
    assert states(kfs, 3) == ["change", "optimized", "optimized"]
    assert fault.restore_everything() == []
    assert states(kfs, 3) == ["optimized"] * 3
    kfs.ops.clear()
    assert fault.restore_everything() == []
    assert kfs.ops == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"layout": "optimized,lost"}, r"steps\[0\]\.args\.layout: item 1 is 'lost'"),
        ({"layout": "optimized", "state": "change"}, r"steps\[0\]\.args: give layout or state"),
        ({"others": "down"}, r"steps\[0\]\.args\.others: expected one of"),
    ],
)
def test_ana_swap_bad_args_are_config_errors(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_mod.validate({"steps": [{"fault": "ana_swap", "args": args}]})


def test_both_faults_leave_another_path_usable() -> None:
    for name in ("ana_change", "ana_swap"):
        assert fault_class(name).surviving_path, name


# --- target.ana_groups -------------------------------------------------------------------------


def test_ana_groups_in_the_config_is_bounded_by_nvmet() -> None:
    assert config_mod.validate({}).target.ana_groups == 1
    assert config_mod.validate({"target": {"ana_groups": 128}}).target.ana_groups == 128
    for bad in (0, 129):
        with pytest.raises(ConfigError, match=r"target\.ana_groups"):
            config_mod.validate({"target": {"ana_groups": bad}})


def test_every_port_gets_the_groups_optimized_and_teardown_removes_them(tmp_path: Path) -> None:
    bed, kfs = make_bed(tmp_path, groups=3)
    assert states(kfs, 2, 3) == ["optimized", "optimized"]
    assert port_ana_groups(bed.target.spec, PORT_ID_BASE + 1) == (1, 2, 3)
    assert port_ana_groups(None, PORT_ID_BASE) == (1,)
    assert port_ana_groups(bed.target.spec, PORT_ID_BASE + 9) == (1,)
    assert bed.target.teardown() == []
    assert kfs.entries() == set()
    with pytest.raises(HarnessError, match=r"ANA groups: 0 is out of range \[1, 128\]"):
        ana_groups_spec(0)


def test_namespaces_are_spread_over_the_groups_round_robin(tmp_path: Path) -> None:
    assert [namespace_ana_group(n, 1) for n in (1, 2, 3)] == [1, 1, 1]
    assert [namespace_ana_group(n, 2) for n in (1, 2, 3, 4)] == [1, 2, 1, 2]
    assert [namespace_ana_group(n, 4) for n in (1, 2, 3)] == [1, 2, 3]
    _, kfs = make_bed(tmp_path, groups=2, namespaces=3)
    grpids = [kfs.attr(f"subsystems/{NQN}/namespaces/{n}/ana_grpid") for n in (1, 2, 3)]
    assert grpids == ["1", "2", "1"]

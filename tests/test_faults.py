"""The fault registry: one module per fault, found by name; each fault injected and restored
on the fake kernel of tests/test_floor.py; what each needs, for configs and for a kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from harness.config import campaign as config_mod
from harness.config.campaign import CampaignSection, fault_names
from harness.core.errors import ConfigError, HarnessError
from harness.faults import FaultAction, FaultInjector, fault_class, fault_classes
from harness.faults.base import Fault, register
from harness.report import fault_table as fault_list
from tests.test_floor import as_testbed, fake_bed

FAULTS_DIR = Path(__file__).resolve().parent.parent / "harness" / "faults"


def test_every_fault_module_registers_one_fault_under_its_file_name() -> None:
    classes = fault_classes()
    modules = {p.stem for p in FAULTS_DIR.glob("*.py")} - {"__init__", "base"}
    assert set(classes) == modules
    # the config's names are the registry's names
    assert fault_names() == list(classes)
    assert set(CampaignSection().faults) <= set(classes)
    for name, cls in classes.items():
        assert cls.name == name
        assert cls.inject_summary and cls.restore_summary, name
        assert fault_class(name) is cls


def test_a_second_fault_with_a_taken_name_is_refused() -> None:
    class Impostor(Fault):
        name = "ctrl_delete"

    with pytest.raises(ValueError, match="duplicate name 'ctrl_delete'"):
        register(Impostor)


def test_surviving_path_is_false_only_where_no_path_can_serve() -> None:
    lost = {name for name, cls in fault_classes().items() if not cls.surviving_path}
    assert lost == {"ns_disable", "backing_stall", "ns_remap"}


@pytest.mark.parametrize(
    ("fault", "inject_log", "restore_log"),
    [
        ("ctrl_delete", ["delete nvme1"], ["connect 1"]),
        ("ctrl_reset", ["reset nvme1"], []),
        ("port_remove", ["unlink 6001"], ["link 6001"]),
        ("ns_disable", ["ns 1 off"], ["ns 1 on"]),
        ("ana_change", ["ana 6001 inaccessible"], ["ana 6001 optimized"]),
    ],
)
def test_inject_and_restore_through_the_registry(
    fault: str, inject_log: list[str], restore_log: list[str]
) -> None:
    bed = fake_bed()
    injector = FaultInjector(as_testbed(bed))
    action = FaultAction(fault, 1)
    injector.prepare(action)
    injector.inject(action)
    assert bed.kernel.log == inject_log
    injector.restore(action)
    assert bed.kernel.log == inject_log + restore_log
    assert injector.recover(5.0, lambda: False) is not None


def test_unknown_fault_is_one_line() -> None:
    injector = FaultInjector(as_testbed(fake_bed()))
    with pytest.raises(HarnessError, match="unknown fault teleport"):
        injector.inject(FaultAction("teleport", 0))


def test_restore_everything_relinks_ports_before_the_rest() -> None:
    bed = fake_bed()
    errors = FaultInjector(as_testbed(bed)).restore_everything()
    assert errors == []
    log = bed.kernel.log
    # ports first (a rescan needs a live controller), then ANA, then the namespace
    assert log[:2] == ["link 6000", "link 6001"]
    assert log[2:4] == ["ana 6000 optimized", "ana 6001 optimized"]
    assert log[4:] == ["ns 1 on"]


def test_config_level_requirements() -> None:
    base = config_mod.validate({"campaign": {"faults": ["ctrl_delete"]}})
    link = fault_class("link_down")
    assert link.unmet(base) is not None and "netns" in str(link.unmet(base))
    netns = config_mod.override(base, "target", network="netns")
    assert link.unmet(netns) is None
    stall = fault_class("backing_stall")
    assert stall.unmet(base) is not None
    assert stall.unmet(config_mod.override(base, "target", backing="dm")) is None


def test_fault_list_checks_each_fault_against_the_kernel() -> None:
    infos = {i.name: i for i in fault_list.fault_infos(lambda module: module != "dm_mod")}
    assert infos["backing_stall"].available is False
    assert "dm_mod" in infos["backing_stall"].why_not
    assert infos["ctrl_delete"].available is True
    unchecked = fault_list.fault_infos(None)
    assert all(info.available is None for info in unchecked)
    text = fault_list.render(list(infos.values()))
    assert "backing_stall  [NOT available: no dm_mod module in this kernel]" in text
    assert "ns_disable" in text and "another path stays usable: no" in text


def test_a_new_fault_module_is_a_config_name_without_touching_config() -> None:
    """What "adding a fault is one file" means: a registered class is a valid config name,
    and its own requirements are checked when a config lists it."""
    from harness.faults import base

    class Pause(Fault):
        name = "test_pause"
        inject_summary = restore_summary = "nothing"

        @classmethod
        def unmet(cls, config: config_mod.CampaignConfig) -> str | None:
            return None if config.target.paths >= 3 else "test_pause needs 3 paths"

    register(Pause)
    try:
        with pytest.raises(ConfigError, match=r"campaign\.faults: test_pause needs 3"):
            config_mod.validate({"campaign": {"faults": ["test_pause"]}})
        config = config_mod.validate(
            {"campaign": {"faults": ["test_pause"]}, "target": {"paths": 3}}
        )
        assert config.campaign.faults == ("test_pause",)
    finally:
        base._REGISTRY.pop("test_pause")


class RecordingNetwork:
    """The part of harness.bed.net.Network a link fault uses, recording each call."""

    netns = "nvmfh-test"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.netem: dict[int, object] = {}

    def set_netem(self, path: int, spec: object) -> None:
        self.calls.append(f"netem {path} {spec}")
        self.netem[path] = spec

    def clear_netem(self, path: int) -> None:
        self.calls.append(f"clear {path}")
        self.netem.pop(path, None)

    def set_link(self, path: int, up: bool) -> None:
        self.calls.append(f"link {path} {'up' if up else 'down'}")


def test_path_stall_is_one_new_module() -> None:
    """The fault added as one file (harness/faults/path_stall.py): registered, its config
    requirement checked, inject/restore through the injector, undone by restore_everything."""
    from harness.bed.net import NetemSpec

    cls = fault_class("path_stall")
    base = config_mod.validate({"campaign": {"faults": ["ctrl_delete"]}})
    assert "netns" in str(cls.unmet(base))
    assert cls.unmet(config_mod.override(base, "target", network="netns")) is None
    with pytest.raises(ConfigError, match="path_stall needs"):
        config_mod.validate({"campaign": {"faults": ["path_stall"]}})
    bed = fake_bed()
    network = RecordingNetwork()
    bed.network = network  # type: ignore[assignment]
    injector = FaultInjector(as_testbed(bed))
    injector.inject(FaultAction("path_stall", 1))
    assert network.calls == [f"netem 1 {NetemSpec.stall()}"]
    assert injector.restore_everything() == []
    assert network.calls[-1] == "clear 1" and not network.netem
    missing = cls.unmet_here(lambda module: module != "sch_netem")
    assert missing == "no sch_netem module in this kernel"


def test_path_netem_takes_its_impairment_from_args() -> None:
    from harness.bed.net import NetemSpec

    bed = fake_bed()
    network = RecordingNetwork()
    bed.network = network  # type: ignore[assignment]
    injector = FaultInjector(as_testbed(bed))
    args = (("delay_ms", 20), ("jitter_ms", 5.0), ("loss_pct", 1.5))
    injector.inject(FaultAction("path_netem", 0, args))
    injector.inject(FaultAction("path_netem", 1))  # the defaults: 50 ms, no loss
    assert network.calls == [
        f"netem 0 {NetemSpec(delay_ms=20.0, jitter_ms=5.0, loss_pct=1.5)}",
        f"netem 1 {NetemSpec(delay_ms=50.0)}",
    ]
    injector.restore(FaultAction("path_netem", 0, args))
    assert network.calls[-1] == "clear 0"
    with pytest.raises(HarnessError, match="jitter_ms needs delay_ms"):
        injector.inject(FaultAction("path_netem", 0, (("delay_ms", 0), ("jitter_ms", 3))))
    with pytest.raises(ConfigError, match=r"loss_pct: 101.0 is out of range"):
        injector.inject(FaultAction("path_netem", 0, (("loss_pct", 101),)))
    with pytest.raises(ConfigError, match="path_netem needs"):
        config_mod.validate({"steps": [{"fault": "path_netem"}]})


def test_all_paths_ready_needs_every_namespace_on_every_path() -> None:
    from harness.faults import all_paths_ready

    bed = fake_bed()
    device = bed.device()  # one per-path disk per controller
    assert all_paths_ready(as_testbed(bed), device)
    bed.config = config_mod.override(bed.config, "target", namespaces=2)
    assert not all_paths_ready(as_testbed(bed), device)


def test_ctrl_reset_without_wait_writes_in_the_background_and_returns_once_not_live(
    tmp_path: Path,
) -> None:
    """``args.wait = false``: the reset is written by another process (the sysfs write
    blocks until the reconnect is done), inject returns when the controller left live, and
    restore reaps the writer, noting a failed write."""
    from harness.core.kernelfs import KernelFs

    bed = fake_bed()
    attr = tmp_path / "sys/class/nvme/nvme1/reset_controller"
    attr.parent.mkdir(parents=True)
    attr.write_text("")
    states = iter(["live", "live", "resetting"])

    class Host:
        def controller(self, name: str) -> Any:
            return type("Ctrl", (), {"state": next(states, "connecting")})()

    bed.kfs = KernelFs(root=tmp_path)  # type: ignore[attr-defined]
    bed.host = Host()  # type: ignore[assignment]
    injector = FaultInjector(as_testbed(bed))
    action = FaultAction("ctrl_reset", 1, (("wait", False),))
    injector.inject(action)
    fault = injector.fault("ctrl_reset")
    injector.restore(action)
    assert attr.read_text().strip() == "1"  # the writer's write
    assert fault.take_notes() == []
    attr.unlink()
    attr.mkdir()  # the write now fails, even for root
    injector.inject(action)
    injector.restore(action)
    notes = fault.take_notes()
    assert len(notes) == 1 and notes[0].startswith("reset write failed"), notes

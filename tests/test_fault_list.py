"""``nvmf-harness faults`` lists each fault's parameters (faults/base.py Param): name, type,
default, choices and bounds, in the text and in the JSON."""

from __future__ import annotations

import json

from harness.faults import fault_classes
from harness.faults.base import Param
from harness.report import fault_table as fault_list
from harness.report.fault_table import ParamInfo


def test_every_fault_lists_exactly_its_declared_params() -> None:
    infos = {info.name: info for info in fault_list.fault_infos(None)}
    for name, cls in fault_classes().items():
        listed = [(p.name, p.type, p.default) for p in infos[name].params]
        declared = [(key, p.kind.__name__, p.default) for key, p in cls.params.items()]
        assert listed == declared, name


def test_param_lines_give_type_default_choices_and_bounds() -> None:
    infos = {info.name: info for info in fault_list.fault_infos(None)}
    text = fault_list.render([infos["rescan"], infos["iopolicy_switch"], infos["ctrl_delete"]])
    assert "    param:   count (int, default 1, 1..1000): rescan_controller writes" in text
    assert "    param:   interval_s (float, default 0.0, 0..10): seconds between" in text
    assert (
        "    param:   policy (str, default 'other', one of other, numa, round-robin, "
        "queue-depth): " in text
    )
    ctrl_delete = text.split("ctrl_delete", 1)[1]
    assert "param:" not in ctrl_delete  # a fault without parameters lists none


def test_one_sided_bounds() -> None:
    low = ParamInfo.of("n", Param(int, 2, "at least two", minimum=2))
    assert low.render() == "n (int, default 2, 2..): at least two"
    flag = ParamInfo.of("on", Param(bool, False, "switch"))
    assert flag.render() == "on (bool, default False): switch"


def test_json_carries_the_params() -> None:
    data = {
        item["name"]: item for item in json.loads(fault_list.to_json(fault_list.fault_infos(None)))
    }
    (count,) = [p for p in data["connect_storm"]["params"] if p["name"] == "count"]
    assert count == {
        "name": "count",
        "type": "int",
        "default": 5,
        "help": "delete+connect cycles of the path's controller",
        "choices": [],
        "minimum": 1,
        "maximum": 100,
    }
    assert data["ctrl_delete"]["params"] == []

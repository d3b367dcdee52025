"""``[[steps]]``: a fault sequence as config (harness/config.py:_steps), its one-line errors
naming the step and field, the round trip through TOML, and the JSON Schema beside it."""

from __future__ import annotations

import tomllib
from typing import Any

import jsonschema
import pytest

from harness.config.campaign import (
    CampaignConfig,
    Step,
    json_schema,
    to_toml,
    validate,
)
from harness.core.errors import ConfigError

DELETE_WHILE_RECONNECTING = """
[campaign]
iterations = 2

[[steps]]
fault = "port_remove"
paths = [0]
wait_for = "connecting"
wait_timeout_s = 5

[[steps]]
fault = "ctrl_delete"
paths = [0]
hold_s = 0.5

[[steps]]
fault = "port_remove"
action = "restore"
paths = [0]
"""


def load_text(text: str) -> CampaignConfig:
    return validate(tomllib.loads(text))


def test_a_sequence_is_read_into_steps() -> None:
    config = load_text(DELETE_WHILE_RECONNECTING)
    assert config.steps == (
        Step("port_remove", paths=(0,), wait_for="connecting", wait_timeout_s=5.0),
        Step("ctrl_delete", paths=(0,), hold_s=0.5),
        Step("port_remove", action="restore", paths=(0,)),
    )
    assert config.faults_used() == ("port_remove", "ctrl_delete")


def test_without_steps_the_faults_are_the_campaigns() -> None:
    config = CampaignConfig()
    assert config.steps == ()
    assert config.faults_used() == ("ctrl_delete", "ctrl_reset")


def test_steps_round_trip_through_toml() -> None:
    config = load_text(
        DELETE_WHILE_RECONNECTING + '\n[[steps]]\nfault = "ctrl_reset"\npaths = "all"\n'
    )
    again = load_text(to_toml(config))
    assert again == config
    assert again.steps[-1].paths == ("all",)


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ('fault = "teleport"', "steps[0].fault: expected one of"),
        ("paths = [0]", "steps[0].fault: missing"),
        (
            'fault = "ctrl_delete"\naction = "undo"',
            "steps[0].action: expected one of inject, restore",
        ),
        ('fault = "ctrl_delete"\nwait_for = "asleep"', "steps[0].wait_for: expected one of"),
        ('fault = "ctrl_delete"\npaths = [9]', "steps[0].paths: expected path indices"),
        ('fault = "ctrl_delete"\npaths = [3]', "steps[0].paths: path 3 does not exist"),
        ('fault = "ctrl_delete"\npaths = "every"', "steps[0].paths: expected path indices"),
        ('fault = "ctrl_delete"\nhold_s = -1', "steps[0].hold_s: -1 is out of range"),
        (
            'fault = "ctrl_delete"\nwait_timeout_s = "x"',
            "steps[0].wait_timeout_s: expected a number",
        ),
        ('fault = "ctrl_delete"\nspeed = 3', "steps[0]: unknown field 'speed'"),
        (
            'fault = "ctrl_delete"\nargs = {state = "x"}',
            "steps[0].args: ctrl_delete has no parameter 'state'",
        ),
        ('fault = "ctrl_delete"\nargs = 3', "steps[0].args: expected a table"),
    ],
)
def test_a_bad_step_is_one_line_naming_step_and_field(step: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(f"[[steps]]\n{step}\n")
    assert message in caught.value.message
    assert "\n" not in caught.value.message


def test_steps_must_be_a_non_empty_array_of_tables() -> None:
    with pytest.raises(ConfigError, match="steps: expected an array of tables"):
        validate({"steps": []})
    with pytest.raises(ConfigError, match=r"steps\[0\]: expected a table"):
        validate({"steps": [3]})


def test_what_a_fault_needs_is_checked_for_steps_too() -> None:
    # link_down needs the netns network (faults/link_down.py:unmet)
    with pytest.raises(ConfigError, match=r"^steps: "):
        load_text('[[steps]]\nfault = "link_down"\n')
    config = load_text('[target]\nnetwork = "netns"\n[[steps]]\nfault = "link_down"\n')
    assert config.faults_used() == ("link_down",)


def test_ns_remove_path_in_a_step_needs_the_patched_nvmet() -> None:
    config = load_text(
        '[ns_remove_path]\nmechanism = "hidden"\n[[steps]]\nfault = "ns_remove_path"\n'
    )
    assert config.needs_patched_nvmet()


def test_the_schema_accepts_what_validate_accepts_and_rejects_a_bad_step() -> None:
    schema = json_schema()
    good: dict[str, Any] = tomllib.loads(DELETE_WHILE_RECONNECTING)
    jsonschema.validate(good, schema)
    bad = {"steps": [{"fault": "ctrl_delete", "wait_for": "asleep"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)

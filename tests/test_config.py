"""Campaign config: field errors name the field, TOML round trips, fuzzing, the JSON schema."""

from __future__ import annotations

import json
import math
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.config.campaign import (
    BOUNDS,
    CHOICES,
    SECTIONS,
    CampaignConfig,
    fault_names,
    json_schema,
    load,
    override,
    to_dict,
    to_toml,
    validate,
)
from harness.core.errors import ConfigError
from harness.faults import fault_class

REPO = Path(__file__).resolve().parent.parent
SCHEMA_FILE = REPO / "configs" / "schema.json"
SECTION_NAMES = tuple(SECTIONS)
FAULT_NAMES = tuple(fault_names())
# Faults valid_data draws: those a default config can run, and two whose one need it meets.
DRAWN_FAULTS = tuple(
    name
    for name in FAULT_NAMES
    if fault_class(name).unmet(CampaignConfig()) is None or name in ("link_down", "backing_stall")
)
# A message must start with the section it is about, or with "config" for the whole file.
MESSAGE_PREFIX = re.compile(rf"^({'|'.join([*SECTION_NAMES, 'config'])})[.:\[]")

FIELDS: list[tuple[str, str, Any]] = [
    (section, key, hint)
    for section, cls in SECTIONS.items()
    for key, hint in typing.get_type_hints(cls).items()
]
FIELD_IDS = [f"{section}.{key}" for section, key, _ in FIELDS]


def hints_of(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def config_error(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        validate(data)
    message = str(info.value)
    assert len(message.splitlines()) == 1, message
    return message


# --- valid configs ------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    assert validate({}) == CampaignConfig()
    assert validate({name: {} for name in SECTIONS}) == CampaignConfig()
    assert validate(to_dict(CampaignConfig())) == CampaignConfig()
    assert validate(tomllib.loads(to_toml(CampaignConfig()))) == CampaignConfig()


def test_defaults_are_within_their_own_rules() -> None:
    defaults = CampaignConfig()
    for where, (low, high) in BOUNDS.items():
        section, key = where.split(".")
        value = getattr(getattr(defaults, section), key)
        assert (low is None or value >= low) and (high is None or value <= high), where
    for where, choices in CHOICES.items():
        section, key = where.split(".")
        assert getattr(getattr(defaults, section), key) in choices, where


def test_rules_name_real_fields() -> None:
    for where in [*BOUNDS, *CHOICES]:
        section, key = where.split(".")
        assert key in hints_of(section), where


def test_values_are_converted() -> None:
    config = validate(
        {
            "campaign": {"warmup_s": 2, "faults": ["port_remove", "ctrl_reset"]},
            "target": {"network": "netns", "paths": 4},
        }
    )
    assert config.campaign.warmup_s == 2.0
    assert isinstance(config.campaign.warmup_s, float)
    assert config.campaign.faults == ("port_remove", "ctrl_reset")
    assert config.target.paths == 4
    assert config.host == CampaignConfig().host


def test_project_configs_load() -> None:
    files = sorted((REPO / "configs").glob("*.toml"))
    for path in files:
        assert isinstance(load(path), CampaignConfig), path


# --- errors name the field ----------------------------------------------------------------

WRONG_TYPES: dict[Any, list[Any]] = {
    bool: ["true", 1, 0, None],
    int: ["8", 1.5, 2.0, True, None, [1]],
    float: ["1.0", True, None, [1.0]],
    str: [5, 1.5, True, None, ["a"]],
}


@pytest.mark.parametrize(("section", "key", "hint"), FIELDS, ids=FIELD_IDS)
def test_wrong_type_names_the_field(section: str, key: str, hint: Any) -> None:
    where = f"{section}.{key}"
    wrong = WRONG_TYPES.get(hint, ["ctrl_delete", 3, {"a": 1}, None])
    for value in wrong:
        message = config_error({section: {key: value}})
        assert message.startswith(f"{where}: expected "), message


@pytest.mark.parametrize("where", sorted(BOUNDS))
def test_bounds_name_the_field(where: str) -> None:
    section, key = where.split(".")
    low, high = BOUNDS[where]
    is_int = hints_of(section)[key] is int
    step = 1 if is_int else 0.5
    for bad in ([] if low is None else [low - step]) + ([] if high is None else [high + step]):
        message = config_error({section: {key: bad}})
        shown = bad if is_int else float(bad)
        assert message == f"{where}: {shown} is out of range [{low}, {high}]"
    for good in (low, high):
        if good is not None:
            config = validate({section: {key: good}})
            assert getattr(getattr(config, section), key) == good


@pytest.mark.parametrize("where", sorted(CHOICES))
def test_choices_name_the_field(where: str) -> None:
    section, key = where.split(".")
    message = config_error({section: {key: "bogus"}})
    assert message == f"{where}: expected one of {', '.join(CHOICES[where])}, got 'bogus'"
    for choice in CHOICES[where]:
        assert getattr(getattr(validate({section: {key: choice}}), section), key) == choice


def test_fault_list_errors() -> None:
    assert config_error({"campaign": {"faults": []}}).startswith("campaign.faults: expected a ")
    message = config_error({"campaign": {"faults": ["ctrl_delete", "pull_cable"]}})
    assert message.startswith("campaign.faults[1]: expected one of ana_change, ana_swap, ")
    assert message.endswith("got 'pull_cable'")
    message = config_error({"campaign": {"faults": ["ctrl_delete", 7]}})
    assert message.startswith("campaign.faults[1]: ")


def test_unknown_field() -> None:
    message = config_error({"host": {"iopolicy": "numa", "io_policy": "numa"}})
    assert message.startswith("host")
    assert "io_policy" in message
    assert "unknown field" in message
    assert "(known: iopolicy, ctrl_loss_tmo, " in message


def test_unknown_section() -> None:
    message = config_error({"campaign": {}, "hosts": {}})
    assert "hosts" in message
    assert "unknown section" in message
    assert "campaign, target, host, workload, widener, witness, kernel" in message


def test_section_must_be_a_table() -> None:
    assert config_error({"workload": 3}) == "workload: expected a table, got 3"
    assert config_error({"workload": [1]}).startswith("workload: expected a table")


def test_config_must_be_a_table() -> None:
    assert config_error([]) == "config: expected a table of sections"
    assert config_error(None) == "config: expected a table of sections"


def test_long_values_are_shortened() -> None:
    message = config_error({"workload": {"iodepth": "x" * 500}})
    assert len(message) < 120
    assert message.endswith("...")


def test_backing_stall_needs_dm_backing() -> None:
    with pytest.raises(
        ConfigError, match=r"^campaign\.faults: backing_stall needs target\.backing"
    ):
        validate({"campaign": {"faults": ["backing_stall"]}})
    config = validate({"campaign": {"faults": ["backing_stall"]}, "target": {"backing": "dm"}})
    assert config.campaign.faults == ("backing_stall",)


def test_link_down_needs_netns() -> None:
    faults = ["ctrl_delete", "link_down"]
    message = config_error({"campaign": {"faults": faults}})
    assert message.startswith("campaign.faults: link_down needs target.network")
    message = config_error({"campaign": {"faults": faults}, "target": {"network": "loopback"}})
    assert message.startswith("campaign.faults: ")
    config = validate({"campaign": {"faults": faults}, "target": {"network": "netns"}})
    assert "link_down" in config.campaign.faults


def test_override() -> None:
    base = CampaignConfig()
    changed = override(base, "workload", iodepth=8, rw="randread")
    assert changed.workload.iodepth == 8
    assert changed.workload.rw == "randread"
    assert changed.host == base.host
    assert base.workload.iodepth == 32  # the original is untouched
    with pytest.raises(ConfigError, match=r"^workload\.iodepth: "):
        override(base, "workload", iodepth=0)
    with pytest.raises(ConfigError, match=r"^campaign\.faults: link_down"):
        override(base, "campaign", faults=["link_down"])


def test_transport_defaults_to_tcp_and_rdma_excludes_netns() -> None:
    assert validate({}).target.transport == "tcp"
    rdma = validate({"target": {"transport": "rdma"}, "campaign": {"faults": ["link_down"]}})
    assert rdma.target.transport == "rdma"  # link_down: every rdma path has its own veth
    message = config_error({"target": {"transport": "rdma", "network": "netns"}})
    assert message.startswith('target.transport: "rdma" needs target.network = "loopback"')
    message = config_error({"target": {"transport": "udp"}})
    assert message == "target.transport: expected one of tcp, rdma, got 'udp'"


def test_rdma_refuses_the_patched_nvmet_mechanisms() -> None:
    data = {
        "target": {"transport": "rdma"},
        "campaign": {"faults": ["ns_remove_path"]},
        "ns_remove_path": {"mechanism": "hidden"},
    }
    assert config_error(data).startswith("ns_remove_path.mechanism: hidden needs our patched")


def test_host_module_params() -> None:
    config = validate({"host": {"io_timeout": 5, "max_retries": 0}})
    assert (config.host.io_timeout, config.host.max_retries) == (5, 0)
    assert (validate({}).host.io_timeout, validate({}).host.max_retries) == (-1, -1)
    assert config_error({"host": {"io_timeout": 0}}).startswith("host.io_timeout: 0 is not")
    assert config_error({"host": {"max_retries": 256}}).startswith("host.max_retries: 256")


# --- load ---------------------------------------------------------------------------------


def test_load_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[target]\nnetwork = "netns"\n[campaign]\nfaults = ["link_down"]\n')
    config = load(path)
    assert config.target.network == "netns"
    assert config.campaign.faults == ("link_down",)


def test_load_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[campaign\niterations = 3\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid TOML (")
    assert len(message.splitlines()) == 1


def test_load_json_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(json.dumps(to_dict(CampaignConfig())))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_load_invalid_field_names_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[workload]\niodepth = 0\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: workload.iodepth: 0 is out of range [1, 1024]"


def test_load_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "none.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: cannot read (No such file or directory)"


def test_load_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path)


def test_load_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[campaign]\n")
    path.chmod(0)
    try:
        if path.read_bytes() is not None:  # root reads it anyway
            pytest.skip("running as root: mode 000 does not stop reads")
    except PermissionError:
        pass
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(info.value) == f"{path}: cannot read (Permission denied)"


def test_load_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xff\xfe[\x00c\x00]\x00\n\x89PNG\r\n\x1a\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_load_huge_integer(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[campaign]\nseed = " + "9" * 5000 + "\n")
    with pytest.raises(ConfigError):
        load(path)


def test_nan_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[campaign]\nwarmup_s = nan\n")  # valid TOML
    with pytest.raises(ConfigError, match=r"^.*campaign\.warmup_s: "):
        load(path)


def test_integer_too_big_for_a_float(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[campaign]\nhold_s = 1" + "0" * 400 + "\n")  # valid TOML
    with pytest.raises(ConfigError, match=r"campaign\.hold_s: .*out of range"):
        load(path)


def test_infinity_is_out_of_range() -> None:
    message = config_error({"campaign": {"settle_s": math.inf}})
    assert message.startswith("campaign.settle_s: inf is out of range")


def test_unknown_keys_give_one_line_starting_with_config_or_section() -> None:
    cases: list[dict[str, Any]] = [{"bogus\nsection": {}}, {"campaign": {"x\ny": 1}}, {"hosts": {}}]
    for data in cases:
        message = config_error(data)
        assert MESSAGE_PREFIX.match(message), message


# --- round trip ---------------------------------------------------------------------------

# Free strings as a person would write them; control characters are tested on their own below.
PLAIN_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


def valid_value(section: str, key: str, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    where = f"{section}.{key}"
    hint = hints_of(section)[key]
    low, high = BOUNDS.get(where, (None, None))
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.integers(
            min_value=None if low is None else int(low),
            max_value=None if high is None else int(high),
        )
    if hint is float:
        return st.floats(min_value=low, max_value=high, allow_nan=False) | st.integers(
            min_value=None if low is None else math.ceil(low),
            max_value=None if high is None else math.floor(high),
        )
    if hint is str:
        return st.sampled_from(CHOICES[where]) if where in CHOICES else text
    return st.lists(st.sampled_from(DRAWN_FAULTS), min_size=1, max_size=8)


@st.composite
def valid_data(draw: st.DrawFn, text: st.SearchStrategy[str] = PLAIN_TEXT) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for section in SECTION_NAMES:
        if not draw(st.booleans()):
            continue
        keys = draw(st.lists(st.sampled_from(sorted(hints_of(section))), unique=True))
        data[section] = {key: draw(valid_value(section, key, text)) for key in keys}
    if "link_down" in data.get("campaign", {}).get("faults", []):
        data.setdefault("target", {})["network"] = "netns"
    if "backing_stall" in data.get("campaign", {}).get("faults", []):
        data.setdefault("target", {})["backing"] = "dm"
    if data.get("target", {}).get("transport") == "rdma":
        data["target"]["network"] = "loopback"  # rdma has its own veths (link_down works)
        if "ns_remove_path" in data.get("campaign", {}).get("faults", []):
            data.setdefault("ns_remove_path", {})["mechanism"] = "identity_flip"
    if data.get("host", {}).get("io_timeout") == 0:
        data["host"]["io_timeout"] = 1
    return data


@settings(max_examples=300, deadline=None)  # a round trip, not a timing test
@given(valid_data())
def test_to_toml_load_round_trip(tmp_path_factory: pytest.TempPathFactory, data: Any) -> None:
    config = validate(data)
    path = tmp_path_factory.mktemp("toml") / "c.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    assert load(path) == config
    assert validate(to_dict(config)) == config
    assert to_dict(load(path)) == to_dict(config)


def test_round_trip_keeps_quotes_and_backslashes(tmp_path: Path) -> None:
    config = override(CampaignConfig(), "campaign", name='a "quoted" \\ name\twith tab')
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config))
    assert load(path) == config


@pytest.mark.parametrize("name", ["two\nlines", "bell\x07", "del\x7f", "cr\r"])
def test_round_trip_control_characters(tmp_path: Path, name: str) -> None:
    config = override(CampaignConfig(), "campaign", name=name)
    path = tmp_path / "c.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    assert load(path) == config


# --- fuzzing ------------------------------------------------------------------------------

KNOWN_WORDS = [*SECTION_NAMES, *FAULT_NAMES, *(c for cs in CHOICES.values() for c in cs)]
SCALARS: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, -1, 0, 65536]),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(KNOWN_WORDS),
    st.binary(max_size=4),
)
ANYTHING: st.SearchStrategy[Any] = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)
ALL_KEYS = sorted({key for _, key, _ in FIELDS})


@st.composite
def fuzz_data(draw: st.DrawFn) -> Any:
    """Mostly config-shaped dicts: known and unknown sections and keys, right and wrong values."""
    if draw(st.integers(0, 19)) == 0:
        return draw(ANYTHING)
    data: dict[Any, Any] = {}
    for _ in range(draw(st.integers(0, 7))):
        name: Any
        if draw(st.integers(0, 4)):
            name = draw(st.sampled_from(SECTION_NAMES))
        else:
            name = draw(st.one_of(st.text(max_size=10), st.integers(), st.sampled_from(ALL_KEYS)))
        if draw(st.integers(0, 9)) == 0:
            data[name] = draw(ANYTHING)
            continue
        known = sorted(hints_of(name)) if isinstance(name, str) and name in SECTIONS else []
        table: dict[Any, Any] = {}
        for _ in range(draw(st.integers(0, 6))):
            if known and draw(st.integers(0, 5)) > 0:
                key = draw(st.sampled_from(known))
                valid = draw(st.booleans())
                value = draw(valid_value(name, key, st.text()) if valid else ANYTHING)
            else:
                key = draw(st.one_of(st.text(max_size=10), st.sampled_from(ALL_KEYS)))
                value = draw(ANYTHING)
            table[key] = value
        data[name] = table
    return data


def check_validate_contract(data: Any) -> None:
    """validate gives a CampaignConfig that keeps every rule, or a one-line ConfigError."""
    try:
        config = validate(data)
    except ConfigError as exc:
        message = str(exc)
        assert len(message.splitlines()) == 1, repr(message)
        assert MESSAGE_PREFIX.match(message), repr(message)
        return
    assert isinstance(config, CampaignConfig)
    for where, (low, high) in BOUNDS.items():
        section, key = where.split(".")
        value = getattr(getattr(config, section), key)
        assert (low is None or value >= low) and (high is None or value <= high), where
    for where, choices in CHOICES.items():
        section, key = where.split(".")
        assert getattr(getattr(config, section), key) in choices
    assert config.campaign.faults and set(config.campaign.faults) <= set(FAULT_NAMES)


@settings(max_examples=1000, deadline=None)
@given(fuzz_data())
def test_validate_fuzz(data: Any) -> None:
    check_validate_contract(data)


@settings(max_examples=300, deadline=None)
@given(valid_data(text=st.text()))
def test_validate_accepts_every_valid_config(data: Any) -> None:
    assert isinstance(validate(data), CampaignConfig)
    check_validate_contract(data)


# --- JSON schema --------------------------------------------------------------------------


def test_schema_file_is_current() -> None:
    expected = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "configs/schema.json is stale: regenerate it with\n"
        "python -c 'import json; from harness.config.campaign import json_schema; "
        "print(json.dumps(json_schema(), indent=2, sort_keys=True))' > configs/schema.json"
    )


def test_schema_defaults_validate_to_the_defaults() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == {*SECTIONS, "steps"}
    data: dict[str, Any] = {
        section: {key: spec["default"] for key, spec in body["properties"].items()}
        for section, body in schema["properties"].items()
        if section != "steps"
    }
    assert validate(data) == CampaignConfig()


def test_schema_matches_the_rules() -> None:
    schema = json_schema()
    for section, key, hint in FIELDS:
        where = f"{section}.{key}"
        spec = schema["properties"][section]["properties"][key]
        low, high = BOUNDS.get(where, (None, None))
        assert spec.get("minimum") == low, where
        assert spec.get("maximum") == high, where
        assert spec.get("enum") == (list(CHOICES[where]) if where in CHOICES else None), where
        expected_type = {bool: "boolean", int: "integer", float: "number", str: "string"}
        assert spec["type"] == expected_type.get(hint, "array"), where

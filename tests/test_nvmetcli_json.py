"""nvmetcli's JSON save format: round trips, a real save file, errors that name the entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.bed.nvmetcli_json import from_nvmetcli, load, save, to_nvmetcli
from harness.bed.target import (
    ANA_STATES,
    AnaGroupSpec,
    NamespaceSpec,
    PortSpec,
    SubsystemSpec,
    TargetSpec,
)
from harness.core.errors import ConfigError

# What `nvmetcli save` wrote for a TCP target (nvmetcli's own tcp.json example, as saved by
# nvmetcli: "param" and attributes the harness does not model are ignored on load).
NVMETCLI_SAVE = """\
{
  "hosts": [],
  "ports": [
    {
      "addr": {
        "adrfam": "ipv4",
        "traddr": "192.168.122.33",
        "treq": "not specified",
        "trsvcid": "4420",
        "trtype": "tcp"
      },
      "ana_groups": [
        {
          "ana": {
            "state": "optimized"
          },
          "grpid": 1
        }
      ],
      "param": {
        "inline_data_size": "16384",
        "pi_enable": "0"
      },
      "portid": 1,
      "referrals": [],
      "subsystems": [
        "nvmet-always"
      ]
    }
  ],
  "subsystems": [
    {
      "allowed_hosts": [],
      "attr": {
        "allow_any_host": "1",
        "cntlid_max": "65519",
        "cntlid_min": "1",
        "model": "Linux",
        "pi_enable": "0",
        "serial": "123456789abcdef",
        "version": "1.3"
      },
      "namespaces": [
        {
          "ana_grpid": 1,
          "device": {
            "nguid": "00000000-0000-0000-0000-000000000000",
            "path": "/dev/nvme0n1",
            "uuid": "d592cdf3-5d1c-44e0-8412-3fcf7d99df27"
          },
          "enable": 1,
          "nsid": 1
        }
      ],
      "nqn": "nvmet-always"
    }
  ]
}
"""


def test_parse_a_real_nvmetcli_save_file(tmp_path: Path) -> None:
    path = tmp_path / "tcp.json"
    path.write_text(NVMETCLI_SAVE)
    spec = load(path)
    assert spec.hosts == ()
    assert spec.ports == (
        PortSpec(
            portid=1,
            traddr="192.168.122.33",
            trsvcid="4420",
            trtype="tcp",
            adrfam="ipv4",
            subsystems=("nvmet-always",),
            ana_groups=(AnaGroupSpec(1, "optimized"),),
        ),
    )
    assert spec.subsystems == (
        SubsystemSpec(
            nqn="nvmet-always",
            namespaces=(
                NamespaceSpec(
                    nsid=1,
                    device_path="/dev/nvme0n1",
                    device_uuid="d592cdf3-5d1c-44e0-8412-3fcf7d99df27",
                    device_nguid="00000000-0000-0000-0000-000000000000",
                    enable=True,
                    buffered_io=False,
                    ana_grpid=1,
                ),
            ),
            allowed_hosts=(),
            allow_any_host=True,
            serial="123456789abcdef",
            model="Linux",
        ),
    )


def test_hosts_and_allowed_hosts_in_nvmetcli_shape() -> None:
    data = json.loads(NVMETCLI_SAVE)
    data["hosts"] = [{"nqn": "nqn.2014-08.org.nvmexpress:uuid:abc"}]
    data["subsystems"][0]["allowed_hosts"] = ["nqn.2014-08.org.nvmexpress:uuid:abc"]
    data["subsystems"][0]["attr"]["allow_any_host"] = "0"
    spec = from_nvmetcli(data)
    assert spec.hosts == ("nqn.2014-08.org.nvmexpress:uuid:abc",)
    assert spec.subsystems[0].allowed_hosts == ("nqn.2014-08.org.nvmexpress:uuid:abc",)
    assert spec.subsystems[0].allow_any_host is False


def test_written_shape_is_what_nvmetcli_restore_reads() -> None:
    spec = TargetSpec(
        hosts=("h1",),
        ports=(PortSpec(6000, "127.0.0.1", "4421", subsystems=("s1",)),),
        subsystems=(
            SubsystemSpec(
                "s1", (NamespaceSpec(1, "/tmp/a.img", buffered_io=True),), allowed_hosts=("h1",)
            ),
        ),
    )
    data = to_nvmetcli(spec)
    assert data["hosts"] == [{"nqn": "h1"}]
    port = data["ports"][0]
    assert port["portid"] == 6000
    assert port["addr"] == {
        "trtype": "tcp",
        "adrfam": "ipv4",
        "traddr": "127.0.0.1",
        "trsvcid": "4421",
        "treq": "not specified",
    }
    assert port["subsystems"] == ["s1"]
    assert port["referrals"] == []
    assert port["ana_groups"] == [{"grpid": 1, "ana": {"state": "optimized"}}]
    subsystem = data["subsystems"][0]
    assert subsystem["attr"] == {"allow_any_host": "0"}  # nvmetcli's attrs are strings
    assert subsystem["allowed_hosts"] == ["h1"]
    namespace = subsystem["namespaces"][0]
    assert namespace["nsid"] == 1
    assert namespace["enable"] == 1
    assert namespace["device"] == {"path": "/tmp/a.img"}
    assert namespace["buffered_io"] == 1


# --- round trips --------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=24)
optional = st.one_of(st.just(""), names)

namespaces = st.builds(
    NamespaceSpec,
    nsid=st.integers(1, 1024),
    device_path=names,
    device_uuid=optional,
    device_nguid=optional,
    enable=st.booleans(),
    buffered_io=st.booleans(),
    ana_grpid=st.integers(1, 128),
)
subsystems = st.builds(
    SubsystemSpec,
    nqn=names,
    namespaces=st.lists(namespaces, max_size=3).map(tuple),
    allowed_hosts=st.lists(names, max_size=3).map(tuple),
    allow_any_host=st.booleans(),
    serial=optional,
    model=optional,
)
ana_groups = st.builds(AnaGroupSpec, grpid=st.integers(1, 128), state=st.sampled_from(ANA_STATES))
ports = st.builds(
    PortSpec,
    portid=st.integers(0, 65535),
    traddr=names,
    trsvcid=names,
    trtype=st.sampled_from(["tcp", "rdma", "loop", "fc"]),
    adrfam=st.sampled_from(["ipv4", "ipv6", "fc", ""]),
    subsystems=st.lists(names, max_size=3).map(tuple),
    # nvmet always has group 1; an empty list loads back as that default (tested below)
    ana_groups=st.lists(ana_groups, min_size=1, max_size=3).map(tuple),
)
specs = st.builds(
    TargetSpec,
    hosts=st.lists(names, max_size=3).map(tuple),
    ports=st.lists(ports, max_size=3).map(tuple),
    subsystems=st.lists(subsystems, max_size=3).map(tuple),
)


@settings(max_examples=200, deadline=None)
@given(specs)
def test_round_trip_through_json_text(spec: TargetSpec) -> None:
    text = json.dumps(to_nvmetcli(spec))
    assert from_nvmetcli(json.loads(text)) == spec


@settings(max_examples=25, deadline=None)
@given(specs)
def test_round_trip_through_a_file(
    tmp_path_factory: pytest.TempPathFactory, spec: TargetSpec
) -> None:
    path = tmp_path_factory.mktemp("nvmetcli") / "target.json"
    save(spec, path)
    assert path.read_text().endswith("\n")
    assert load(path) == spec


def test_a_port_without_ana_groups_gets_nvmets_default_group() -> None:
    data = json.loads(NVMETCLI_SAVE)
    del data["ports"][0]["ana_groups"]
    assert from_nvmetcli(data).ports[0].ana_groups == (AnaGroupSpec(1, "optimized"),)


def test_minimal_entries_take_defaults() -> None:
    spec = from_nvmetcli(
        {
            "ports": [{"portid": "7", "addr": {"traddr": "10.0.0.1", "trsvcid": 4420}}],
            "subsystems": [{"nqn": "s", "namespaces": [{"nsid": 3, "device": {"path": "/d"}}]}],
        }
    )
    assert spec.hosts == ()
    assert spec.ports[0] == PortSpec(7, "10.0.0.1", "4420")  # numbers given as text or int
    namespace = spec.subsystems[0].namespaces[0]
    assert namespace == NamespaceSpec(3, "/d")
    assert spec.subsystems[0].allow_any_host is False


# --- errors ------------------------------------------------------------------------------------


def broken(path: list[Any], value: Any) -> dict[str, Any]:
    """The real save file with one value replaced (or removed, for value ...)."""
    data: dict[str, Any] = json.loads(NVMETCLI_SAVE)
    data["hosts"] = [{"nqn": "h0"}, {"nqn": "h1"}]
    data["ports"].append(json.loads(json.dumps(data["ports"][0])))
    node: Any = data
    for key in path[:-1]:
        node = node[key]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (["hosts"], {"nqn": "h"}, "hosts: expected a list"),
        (["hosts", 1], "h1", "hosts[1]: expected an object"),
        (["hosts", 1, "nqn"], ["h1"], "hosts[1].nqn: expected a string"),
        (["ports", 1], 7, "ports[1]: expected an object"),
        (["ports", 1, "portid"], "one", "ports[1].portid: expected an integer"),
        (["ports", 1, "portid"], ..., "ports[1].portid: expected an integer"),
        (["ports", 1, "portid"], True, "ports[1].portid: expected an integer"),
        (["ports", 1, "addr"], "tcp://x", "ports[1].addr: expected an object"),
        (["ports", 1, "addr", "traddr"], ..., "ports[1].addr.traddr: expected a string"),
        (["ports", 1, "subsystems"], "s", "ports[1].subsystems: expected a list"),
        (["ports", 1, "ana_groups", 0, "grpid"], "x", "ports[1].ana_groups[0].grpid"),
        (["ports", 1, "ana_groups", 0, "ana"], "optimized", "ports[1].ana_groups[0].ana"),
        (["subsystems", 0, "nqn"], None, "subsystems[0].nqn: expected a string"),
        (["subsystems", 0, "attr"], ["x"], "subsystems[0].attr: expected an object"),
        (["subsystems", 0, "namespaces"], {}, "subsystems[0].namespaces: expected a list"),
        (["subsystems", 0, "namespaces", 0, "nsid"], 1.5, "subsystems[0].namespaces[0].nsid"),
        (
            ["subsystems", 0, "namespaces", 0, "device", "path"],
            ...,
            "subsystems[0].namespaces[0].device.path: expected a string",
        ),
        (["subsystems", 0, "namespaces", 0, "enable"], "yes", "namespaces[0].enable"),
    ],
)
def test_errors_name_the_entry(path: list[Any], value: Any, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_nvmetcli(broken(path, value))
    message = str(info.value)
    assert named in message
    assert message.startswith("nvmetcli json: ")
    assert "\n" not in message


@pytest.mark.parametrize("data", [[], "x", None, 3])
def test_top_level_must_be_an_object(data: Any) -> None:
    with pytest.raises(ConfigError, match="expected an object"):
        from_nvmetcli(data)


def test_a_non_decimal_digit_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"ports\[1\]\.portid"):
        from_nvmetcli(broken(["ports", 1, "portid"], "²"))


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(ConfigError, match=r"missing\.json: cannot read"):
        load(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"hosts": [\n')
    with pytest.raises(ConfigError) as info:
        load(bad)
    assert "bad.json: not valid JSON" in str(info.value)
    assert "line 2" in str(info.value)

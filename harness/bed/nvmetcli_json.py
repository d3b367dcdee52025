"""nvmetcli's JSON save format, read and written for TargetSpec.

The shape is what ``nvmetcli save`` writes and ``nvmetcli restore`` reads::

    {"hosts": [{"nqn": ...}],
     "ports": [{"portid": 1, "addr": {"trtype": "tcp", "adrfam": "ipv4", "traddr": ...,
                "trsvcid": ..., "treq": "not specified"}, "subsystems": [nqn, ...],
                "referrals": [], "ana_groups": [{"grpid": 1, "ana": {"state": "optimized"}}]}],
     "subsystems": [{"nqn": ..., "attr": {"allow_any_host": "0", "serial": ...},
                     "allowed_hosts": [...], "namespaces": [{"nsid": 1, "enable": 1,
                     "ana_grpid": 1, "device": {"path": ..., "uuid": ..., "nguid": ...}}]}]}

By default the harness drives configfs directly (target.py) and writes this file so a
person can inspect or replay a run's target with nvmetcli. ``target.backend = "nvmetcli"``
(harness/nvmetcli_backend.py) builds the target with ``nvmetcli restore`` of this file
instead, and only where nvmet holds nothing else: restore clears every existing nvmet entry
first, including subsystems and ports the harness did not create. nvmetcli does not save
``buffered_io``; we write it as an extra namespace key that nvmetcli ignores on restore (the
nvmetcli backend sets it afterwards; by hand, a file on tmpfs needs it set before enable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.bed.target import (
    DEFAULT_ANA_GROUP,
    AnaGroupSpec,
    NamespaceSpec,
    PortSpec,
    SubsystemSpec,
    TargetSpec,
)
from harness.core.errors import ConfigError


def to_nvmetcli(spec: TargetSpec) -> dict[str, Any]:
    """The spec as nvmetcli's save format."""
    return {
        "hosts": [{"nqn": nqn} for nqn in spec.hosts],
        "ports": [_port_out(port) for port in spec.ports],
        "subsystems": [_subsystem_out(subsystem) for subsystem in spec.subsystems],
    }


def _port_out(port: PortSpec) -> dict[str, Any]:
    return {
        "portid": port.portid,
        "addr": {
            "trtype": port.trtype,
            "adrfam": port.adrfam,
            "traddr": port.traddr,
            "trsvcid": port.trsvcid,
            "treq": "not specified",
        },
        "referrals": [],
        "subsystems": list(port.subsystems),
        "ana_groups": [{"grpid": g.grpid, "ana": {"state": g.state}} for g in port.ana_groups],
    }


def _subsystem_out(subsystem: SubsystemSpec) -> dict[str, Any]:
    attr = {"allow_any_host": "1" if subsystem.allow_any_host else "0"}
    if subsystem.serial:
        attr["serial"] = subsystem.serial
    if subsystem.model:
        attr["model"] = subsystem.model
    return {
        "nqn": subsystem.nqn,
        "attr": attr,
        "allowed_hosts": list(subsystem.allowed_hosts),
        "namespaces": [_namespace_out(ns) for ns in subsystem.namespaces],
    }


def _namespace_out(namespace: NamespaceSpec) -> dict[str, Any]:
    device = {"path": namespace.device_path}
    if namespace.device_uuid:
        device["uuid"] = namespace.device_uuid
    if namespace.device_nguid:
        device["nguid"] = namespace.device_nguid
    return {
        "nsid": namespace.nsid,
        "enable": 1 if namespace.enable else 0,
        "ana_grpid": namespace.ana_grpid,
        "device": device,
        "buffered_io": 1 if namespace.buffered_io else 0,
    }


def from_nvmetcli(data: Any) -> TargetSpec:
    """Parse nvmetcli's save format; errors name the offending entry."""
    if not isinstance(data, dict):
        raise ConfigError("nvmetcli json: expected an object with hosts, ports, subsystems")
    hosts = tuple(_str(h, "nqn", f"hosts[{i}]") for i, h in enumerate(_list(data, "hosts", "")))
    ports = tuple(_port_in(p, f"ports[{i}]") for i, p in enumerate(_list(data, "ports", "")))
    subsystems = tuple(
        _subsystem_in(s, f"subsystems[{i}]") for i, s in enumerate(_list(data, "subsystems", ""))
    )
    return TargetSpec(hosts=hosts, ports=ports, subsystems=subsystems)


def _list(data: Any, key: str, where: str) -> list[Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"nvmetcli json: {where}: expected an object")
    value = data.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"nvmetcli json: {where}{'.' if where else ''}{key}: expected a list")
    return value


def _str(data: Any, key: str, where: str, default: str | None = None) -> str:
    if not isinstance(data, dict):
        raise ConfigError(f"nvmetcli json: {where}: expected an object")
    value = data.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(f"nvmetcli json: {where}.{key}: expected a string")
    return value


def _int(data: Any, key: str, where: str, default: int | None = None) -> int:
    value = data.get(key, default) if isinstance(data, dict) else None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"nvmetcli json: {where}.{key}: expected an integer")
    return value


def _port_in(data: Any, where: str) -> PortSpec:
    addr = data.get("addr", {}) if isinstance(data, dict) else None
    groups = tuple(
        AnaGroupSpec(
            _int(g, "grpid", f"{where}.ana_groups[{i}]"),
            _str(g.get("ana", {}), "state", f"{where}.ana_groups[{i}].ana", "optimized"),
        )
        for i, g in enumerate(_list(data, "ana_groups", where))
    )
    return PortSpec(
        portid=_int(data, "portid", where),
        traddr=_str(addr, "traddr", f"{where}.addr"),
        trsvcid=_str(addr, "trsvcid", f"{where}.addr"),
        trtype=_str(addr, "trtype", f"{where}.addr", "tcp"),
        adrfam=_str(addr, "adrfam", f"{where}.addr", "ipv4"),
        subsystems=tuple(str(s) for s in _list(data, "subsystems", where)),
        ana_groups=groups or (AnaGroupSpec(DEFAULT_ANA_GROUP),),
    )


def _subsystem_in(data: Any, where: str) -> SubsystemSpec:
    attr = data.get("attr", {}) if isinstance(data, dict) else {}
    if not isinstance(attr, dict):
        raise ConfigError(f"nvmetcli json: {where}.attr: expected an object")
    namespaces = tuple(
        _namespace_in(ns, f"{where}.namespaces[{i}]")
        for i, ns in enumerate(_list(data, "namespaces", where))
    )
    return SubsystemSpec(
        nqn=_str(data, "nqn", where),
        namespaces=namespaces,
        allowed_hosts=tuple(str(h) for h in _list(data, "allowed_hosts", where)),
        allow_any_host=str(attr.get("allow_any_host", "0")) == "1",
        serial=str(attr.get("serial", "")),
        model=str(attr.get("model", "")),
    )


def _namespace_in(data: Any, where: str) -> NamespaceSpec:
    device = data.get("device", {}) if isinstance(data, dict) else None
    return NamespaceSpec(
        nsid=_int(data, "nsid", where),
        device_path=_str(device, "path", f"{where}.device"),
        device_uuid=_str(device, "uuid", f"{where}.device", ""),
        device_nguid=_str(device, "nguid", f"{where}.device", ""),
        enable=_int(data, "enable", where, 1) == 1,
        buffered_io=_int(data, "buffered_io", where, 0) == 1,
        ana_grpid=_int(data, "ana_grpid", where, DEFAULT_ANA_GROUP),
    )


def save(spec: TargetSpec, path: Path) -> None:
    path.write_text(json.dumps(to_nvmetcli(spec), indent=2, sort_keys=True) + "\n")


def load(path: Path) -> TargetSpec:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    return from_nvmetcli(data)

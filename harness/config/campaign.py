"""Campaign configuration: TOML files in configs/, validated against one schema.

The schema is the set of section dataclasses below; ``validate`` checks every key and type
and raises a ConfigError whose message names the field (``workload.iodepth: expected an
integer >= 1, got 'x'``). ``json_schema`` renders the same rules as JSON Schema for editors.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.core.errors import ConfigError
from harness.faults.base import fault_class, fault_classes

NETWORKS = ("loopback", "netns")
# "rdma": NVMe/RDMA over soft-RoCE (rdma_rxe; harness/rdma.py), one rxe device per path.
TRANSPORTS = ("tcp", "rdma")
BACKINGS = ("file", "dm")
# "queue-depth" exists from 6.11 on (multipath.c:nvme_queue_depth_path; 6.12.107 has it,
# 6.1 does not: its sysfs write is refused, a one-line error at test-bed setup).
IOPOLICIES = ("numa", "round-robin", "queue-depth")
CONNECT_METHODS = ("fabrics", "nvme-cli")
TARGET_BACKENDS = ("configfs", "nvmetcli")
ORDERS = ("round_robin", "random")
PATH_CHOICES = ("alternate", "random", "first", "last", "current", "other")
# Path choices resolved at fault time from the IO the per-path disks carried just before the
# fault: "current" is the path the head sends its IO to (numa's cached current_path), "other"
# a path it does not (the negative control for a fault that only matters on the current one).
DYNAMIC_PATH_CHOICES = ("current", "other")
# "identity_flip" works on stock nvmet; the others need our nvmet test patch and name what the
# port that hides the namespace answers to IO meanwhile (harness/path_removal.py).
NS_REMOVE_MECHANISMS = ("identity_flip", "hidden", "hidden_path_error", "hidden_invalid_ns")
VARIANTS = ("distro", "fixed", "unfixed")
WITNESS_MODES = ("auto", "required", "off")
ACCELS = ("auto", "kvm", "tcg")


@dataclass(frozen=True)
class CampaignSection:
    name: str = "campaign"
    iterations: int = 10
    seed: int = 1
    # names of the fault registry (harness/faults/: one module per fault)
    faults: tuple[str, ...] = ("ctrl_delete", "ctrl_reset")
    order: str = "round_robin"
    path: str = "alternate"
    warmup_s: float = 1.0
    hold_s: float = 1.0
    jitter_s: float = 0.5
    settle_s: float = 1.0
    recover_timeout_s: float = 30.0
    hang_timeout_s: float = 30.0
    stop_on_first_eio: bool = False
    baseline_s: float = 0.0  # bare fio (no faults) for this long first: the IOPS reference


@dataclass(frozen=True)
class TargetSection:
    network: str = "loopback"
    paths: int = 2
    backing: str = "file"
    size_mib: int = 256
    first_port: int = 4421
    allow_any_host: bool = False
    # "configfs": the harness makes its entries itself; "nvmetcli": `nvmetcli restore` of
    # the run's nvmetcli JSON (only where nvmet holds nothing else: restore clears all).
    backend: str = "configfs"
    transport: str = "tcp"
    # ANA groups 1..ana_groups on every port, each optimized at setup; namespace n is in
    # group (n - 1) % ana_groups + 1 (namespace 1 in group 1). ana_change and ana_swap act
    # on every group of a port unless told one (args.group).
    ana_groups: int = 1
    # Namespaces of the subsystem (NSIDs 1..namespaces), each with its own backing of
    # size_mib; fio runs on namespace 1's head, the others are there to be remapped/resized.
    namespaces: int = 1


@dataclass(frozen=True)
class HostSection:
    iopolicy: str = "round-robin"
    ctrl_loss_tmo: int = 1
    reconnect_delay: int = 1
    fast_io_fail_tmo: int = -1
    keep_alive_tmo: int = 5
    nr_io_queues: int = 2
    # How a path is connected: "fabrics" writes the connect string to /dev/nvme-fabrics from
    # the KernelFs child (no process per connect); "nvme-cli" runs `nvme connect` as a user
    # would. Same kernel path either way (nvmf_create_ctrl).
    connect_with: str = "fabrics"
    # nvme_core module parameters (/sys/module/nvme_core/parameters/), set before the paths
    # connect and restored at teardown; -1 leaves the loaded module's value. io_timeout is
    # in seconds and applies to controllers created after the write; max_retries (0-255) is
    # how often a failed command is retried before it completes with its error.
    io_timeout: int = -1
    max_retries: int = -1


@dataclass(frozen=True)
class WorkloadSection:
    rw: str = "randrw"
    bs: str = "4k"
    iodepth: int = 32
    numjobs: int = 2
    verify: bool = True
    # A second application on the head: threads issuing synchronous NVMe passthrough reads
    # of passthru_kib each (harness/passthru.py). Each command holds the head's SRCU read lock
    # while it runs (ioctl.c:nvme_ns_head_ioctl), so nvme_ns_remove()'s grace period, and
    # with it the race window, lasts as long as one such command. 0: none.
    passthru_readers: int = 0
    passthru_kib: int = 64
    # The stale-write check beside fio (harness/stale_write.py): threads overwrite
    # stale_write_blocks blocks of 4 KiB at the head's end (fio's size shrinks by as many
    # whole MiBs) in a known order, generation N then N+1, and read each back: an older
    # generation read is the verdict stale_write.
    stale_write_check: bool = False
    stale_write_blocks: int = 256


@dataclass(frozen=True)
class WidenerSection:
    enabled: bool = False
    delay_us: int = 500
    sample_every: int = 1


@dataclass(frozen=True)
class WitnessSection:
    """The block-layer witness of the race's failed bios (harness/campaign/witness.py: BPF,
    needs bpftrace, BTF and kprobes in the kernel under test). ``auto``: run it where it can
    run, else say why once and count the EOD-race kernel line only; ``required``: a kernel
    where it cannot run is an error (a kernel from v6.17 on prints no line for the race);
    ``off``: the kernel line only."""

    mode: str = "auto"


@dataclass(frozen=True)
class NsRemovePathSection:
    """How ``ns_remove_path`` makes a namespace vanish from one path (harness/path_removal.py).

    ``identity_flip``: stock nvmet; the namespace's uuid changes on the target and only the
    chosen path's controller is rescanned ("identifiers changed": the host removes that
    per-path disk), then the uuid is restored and the same controller rescanned.
    ``hidden``, ``hidden_path_error``, ``hidden_invalid_ns``: our target-side test patch
    (patches/nvmet-ns-visibility/) hides the namespace from one port, which meanwhile serves
    IO to it, answers a path error, or answers Invalid Namespace with DNR (a spec-style
    detach while the other path still has the namespace).
    """

    mechanism: str = "identity_flip"
    removal_timeout_s: float = 10.0  # how long the per-path disk may take to go or come back


@dataclass(frozen=True)
class KernelSection:
    variant: str = "distro"
    release: str = ""
    accel: str = "auto"
    memory: str = "2G"
    cpus: int = 2


# What a step may wait for on its paths' controllers after its action: a controller state
# (/sys/class/nvme/nvmeX/state: nvme_ctrl_state_names in core.c) or "gone" (the host has no
# controller on the path any more); "ana:<state>" waits for the per-path disk's ANA state.
STEP_ACTIONS = ("inject", "restore")
STEP_CTRL_STATES = ("live", "connecting", "resetting", "deleting", "gone")
ANA_STATES = ("optimized", "non-optimized", "inaccessible", "persistent-loss", "change")
STEP_WAITS = ("", *STEP_CTRL_STATES, *(f"ana:{state}" for state in ANA_STATES))
# Paths of a step: indices, or one of these words. "chosen": the iteration's path
# (campaign.path), "others": every path but the chosen one, "all": every path.
STEP_PATH_WORDS = ("chosen", "others", "all")


@dataclass(frozen=True)
class Step:
    """One step of a fault sequence (``[[steps]]`` in a config): ``action`` the fault on
    ``paths``, then wait up to ``wait_timeout_s`` seconds until every one of those paths shows
    ``wait_for`` (nothing when ""), then hold ``hold_s`` seconds. Faults a sequence injected
    and did not restore are restored after its last step (harness/steps.py)."""

    fault: str
    action: str = "inject"
    paths: tuple[int | str, ...] = ("chosen",)
    args: tuple[tuple[str, Any], ...] = ()
    wait_for: str = ""
    wait_timeout_s: float = 30.0
    hold_s: float = 0.0


@dataclass(frozen=True)
class CampaignConfig:
    steps: tuple[Step, ...] = ()
    campaign: CampaignSection = field(default_factory=CampaignSection)
    target: TargetSection = field(default_factory=TargetSection)
    host: HostSection = field(default_factory=HostSection)
    workload: WorkloadSection = field(default_factory=WorkloadSection)
    widener: WidenerSection = field(default_factory=WidenerSection)
    witness: WitnessSection = field(default_factory=WitnessSection)
    kernel: KernelSection = field(default_factory=KernelSection)
    ns_remove_path: NsRemovePathSection = field(default_factory=NsRemovePathSection)

    def faults_used(self) -> tuple[str, ...]:
        """The faults the campaign uses, each once: its steps' when it has ``[[steps]]``,
        else ``campaign.faults``."""
        if self.steps:
            return tuple(dict.fromkeys(str(step.fault) for step in self.steps))
        return tuple(dict.fromkeys(str(kind) for kind in self.campaign.faults))

    def needs_patched_nvmet(self) -> bool:
        """Whether the campaign needs our nvmet test patch (patches/nvmet-ns-visibility/):
        an ``ns_remove_path`` fault with one of the ``hidden*`` mechanisms."""
        return (
            "ns_remove_path" in self.faults_used()
            and self.ns_remove_path.mechanism != "identity_flip"
        )


SECTIONS: dict[str, type[Any]] = {
    "campaign": CampaignSection,
    "target": TargetSection,
    "host": HostSection,
    "workload": WorkloadSection,
    "widener": WidenerSection,
    "witness": WitnessSection,
    "kernel": KernelSection,
    "ns_remove_path": NsRemovePathSection,
}

CHOICES: dict[str, tuple[str, ...]] = {
    "witness.mode": WITNESS_MODES,
    "campaign.order": ORDERS,
    "campaign.path": PATH_CHOICES,
    "target.network": NETWORKS,
    "target.backing": BACKINGS,
    "host.iopolicy": IOPOLICIES,
    "host.connect_with": CONNECT_METHODS,
    "target.backend": TARGET_BACKENDS,
    "target.transport": TRANSPORTS,
    "workload.rw": ("randrw", "randread", "randwrite", "rw", "read", "write"),
    "kernel.variant": VARIANTS,
    "kernel.accel": ACCELS,
    "ns_remove_path.mechanism": NS_REMOVE_MECHANISMS,
}

# (minimum, maximum) for numbers; None means unbounded on that side.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "campaign.iterations": (1, 100_000),
    "campaign.warmup_s": (0, 600),
    "campaign.hold_s": (0, 600),
    "campaign.jitter_s": (0, 600),
    "campaign.settle_s": (0, 600),
    "campaign.recover_timeout_s": (1, 3600),
    "campaign.hang_timeout_s": (1, 3600),
    "campaign.baseline_s": (0, 600),
    "target.paths": (2, 8),
    "target.ana_groups": (1, 128),  # NVMET_MAX_ANAGRPS (drivers/nvme/target/nvmet.h)
    "target.size_mib": (16, 65536),
    "target.namespaces": (1, 8),
    "target.first_port": (1024, 65000),
    "host.ctrl_loss_tmo": (-1, 3600),
    "host.reconnect_delay": (1, 3600),
    "host.fast_io_fail_tmo": (-1, 3600),
    "host.keep_alive_tmo": (1, 3600),
    "host.nr_io_queues": (1, 64),
    "host.io_timeout": (-1, 3600),
    "host.max_retries": (-1, 255),
    "workload.iodepth": (1, 1024),
    "workload.numjobs": (1, 64),
    "workload.passthru_readers": (0, 16),
    "workload.passthru_kib": (4, 1024),
    "workload.stale_write_blocks": (1, 65536),
    "widener.delay_us": (1, 5000),
    "widener.sample_every": (1, 1_000_000),
    "kernel.cpus": (1, 64),
    "ns_remove_path.removal_timeout_s": (0.1, 600),
}


def _field_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _describe(hint: Any) -> str:
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    return "a list of fault names"


def _convert(where: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``hint`` and return it in the dataclass's type."""
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return _bounded(where, value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                raise ConfigError(f"{where}: {_short(value)} is out of range") from None
            if math.isnan(number):
                raise ConfigError(f"{where}: expected a number, got nan")
            return _bounded(where, number)
    elif hint is str:
        if isinstance(value, str):
            choices = CHOICES.get(where)
            if choices is not None and value not in choices:
                raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
            return value
    elif typing.get_origin(hint) is tuple:
        return _fault_list(where, value)
    raise ConfigError(f"{where}: expected {_describe(hint)}, got {_short(value)}")


def _bounded(where: str, value: float) -> Any:
    low, high = BOUNDS.get(where, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where}: {value} is out of range [{low}, {high}]")
    return value


def fault_names() -> list[str]:
    """The names a config may list in ``campaign.faults``: the fault registry's
    (harness/faults/: one module per fault), in name order."""
    return list(fault_classes())


def _fault_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected a non-empty list of fault names")
    known = fault_names()
    faults: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or item not in known:
            raise ConfigError(
                f"{where}[{index}]: expected one of {', '.join(known)}, got {_short(item)}"
            )
        faults.append(item)
    return tuple(faults)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def validate(data: Any) -> CampaignConfig:
    """Turn parsed TOML into a CampaignConfig, or raise a ConfigError naming the field."""
    if not isinstance(data, dict):
        raise ConfigError("config: expected a table of sections")
    sections: dict[str, Any] = {}
    for name, table in data.items():
        if name == "steps":
            sections["steps"] = _steps(table)
            continue
        if name not in SECTIONS:
            raise ConfigError(
                f"config: unknown section {_short(name)} (known: {', '.join(SECTIONS)})"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: expected a table, got {_short(table)}")
        cls = SECTIONS[name]
        hints = _field_types(cls)
        values: dict[str, Any] = {}
        for key, value in table.items():
            where = f"{name}.{key}"
            if key not in hints:
                raise ConfigError(
                    f"{name}: unknown field {_short(key)} (known: {', '.join(hints)})"
                )
            values[key] = _convert(where, hints[key], value)
        sections[name] = cls(**values)
    config = CampaignConfig(**sections)
    _check_combinations(config)
    return config


def _steps(value: Any) -> tuple[Step, ...]:
    """``[[steps]]`` as Step records; ConfigError naming ``steps[i].field``."""
    if not isinstance(value, list) or not value:
        raise ConfigError("steps: expected an array of tables ([[steps]]) with at least one step")
    steps = []
    hints = _field_types(Step)
    for index, table in enumerate(value):
        where = f"steps[{index}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table, got {_short(table)}")
        for key in table:
            if key not in hints:
                raise ConfigError(
                    f"{where}: unknown field {_short(key)} (known: {', '.join(hints)})"
                )
        if "fault" not in table:
            raise ConfigError(f"{where}.fault: missing (one of {', '.join(fault_names())})")
        fault = table["fault"]
        if not isinstance(fault, str) or fault not in fault_names():
            raise ConfigError(
                f"{where}.fault: expected one of {', '.join(fault_names())}, got {_short(fault)}"
            )
        action = _choice(f"{where}.action", table.get("action", "inject"), STEP_ACTIONS)
        wait_for = _choice(f"{where}.wait_for", table.get("wait_for", ""), STEP_WAITS)
        raw_args = table.get("args", {})
        if not isinstance(raw_args, dict):
            raise ConfigError(
                f"{where}.args: expected a table of parameters, got {_short(raw_args)}"
            )
        args = fault_class(fault).check_args(raw_args, f"{where}.args")
        steps.append(
            Step(
                fault=fault,
                action=action,
                paths=_step_paths(f"{where}.paths", table.get("paths", "chosen")),
                args=tuple(sorted((k, v) for k, v in args.items() if k in raw_args)),
                wait_for=wait_for,
                wait_timeout_s=_step_seconds(
                    f"{where}.wait_timeout_s", table.get("wait_timeout_s", 30.0), 0.1
                ),
                hold_s=_step_seconds(f"{where}.hold_s", table.get("hold_s", 0.0), 0.0),
            )
        )
    return tuple(steps)


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        shown = ", ".join(repr(c) if c == "" else c for c in choices)
        raise ConfigError(f"{where}: expected one of {shown}, got {_short(value)}")
    return value


def _step_paths(where: str, value: Any) -> tuple[int | str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ConfigError(f"{where}: expected path indices or one of {', '.join(STEP_PATH_WORDS)}")
    paths: list[int | str] = []
    for item in items:
        word = isinstance(item, str) and item in STEP_PATH_WORDS
        index = isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 8
        if word or index:
            paths.append(item)
        else:
            raise ConfigError(
                f"{where}: expected path indices (0-7) or one of {', '.join(STEP_PATH_WORDS)}, "
                f"got {_short(item)}"
            )
    return tuple(paths)


def _step_seconds(where: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"{where}: expected a number of seconds, got {_short(value)}")
    if not minimum <= value <= 3600:
        raise ConfigError(f"{where}: {value} is out of range [{minimum}, 3600]")
    return float(value)


def _check_combinations(config: CampaignConfig) -> None:
    for name in config.faults_used():  # what each fault needs of the config
        reason = fault_class(str(name)).unmet(config)
        if reason:
            raise ConfigError(f"{'steps' if config.steps else 'campaign.faults'}: {reason}")
    for index, step in enumerate(config.steps):
        for path in step.paths:
            if isinstance(path, int) and path >= config.target.paths:
                raise ConfigError(
                    f"steps[{index}].paths: path {path} does not exist "
                    f"(target.paths = {config.target.paths}: 0-{config.target.paths - 1})"
                )
    if config.target.transport == "rdma" and config.target.network == "netns":
        raise ConfigError(
            'target.transport: "rdma" needs target.network = "loopback" (nvmet-rdma listens '
            "in the initial namespace; every rdma path gets its own veth and rxe device)"
        )
    if config.host.io_timeout == 0:
        raise ConfigError("host.io_timeout: 0 is not a timeout (seconds >= 1, or -1 to leave it)")
    if config.target.transport == "rdma" and config.needs_patched_nvmet():
        raise ConfigError(
            f"ns_remove_path.mechanism: {config.ns_remove_path.mechanism} needs our patched "
            'nvmet, built with nvmet-tcp only: use "identity_flip" with target.transport = "rdma"'
        )


def load(path: Path) -> CampaignConfig:
    """Read and validate a TOML campaign file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except ValueError as exc:  # TOMLDecodeError, UnicodeDecodeError, an int over 4300 digits
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc
    try:
        return validate(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}", exc.hint) from exc


def to_dict(config: CampaignConfig) -> dict[str, Any]:
    """The config as plain data (for results and for writing it back as TOML)."""
    out: dict[str, Any] = {}
    for name in SECTIONS:
        section = dataclasses.asdict(getattr(config, name))
        for key, value in section.items():
            if isinstance(value, tuple):
                section[key] = [str(item) for item in value]
        out[name] = section
    if config.steps:
        out["steps"] = [_step_dict(step) for step in config.steps]
    return out


def _step_dict(step: Step) -> dict[str, Any]:
    data: dict[str, Any] = {
        "fault": str(step.fault),
        "action": step.action,
        "paths": list(step.paths),
    }
    if step.args:
        data["args"] = dict(step.args)
    data.update(wait_for=step.wait_for, wait_timeout_s=step.wait_timeout_s, hold_s=step.hold_s)
    return data


def to_toml(config: CampaignConfig) -> str:
    """Render a config as TOML that ``load`` reads back to the same config."""
    lines: list[str] = []
    for name, section in to_dict(config).items():
        if name == "steps":
            for step in section:
                lines.append("[[steps]]")
                for key, value in step.items():
                    lines.append(f"{key} = {_toml_value(value)}")
                lines.append("")
            continue
        lines.append(f"[{name}]")
        for key, value in section.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    out = []
    for char in str(value):
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\t" or (char >= " " and char != "\x7f"):
            out.append(char)
        else:  # other control characters must be escaped in a TOML basic string
            out.append(f"\\u{ord(char):04x}")
    return '"' + "".join(out) + '"'


def override(config: CampaignConfig, section: str, **changes: Any) -> CampaignConfig:
    """A copy of ``config`` with fields of one section replaced (validated like a file)."""
    data = to_dict(config)
    for key, value in changes.items():
        data[section][key] = value
    return validate(data)


def with_run_options(
    config: CampaignConfig,
    *,
    iterations: int | None = None,
    seed: int | None = None,
    widen: bool = False,
    backend: str | None = None,
) -> CampaignConfig:
    """``config`` as the options of ``nvmf-harness run`` change it: ``iterations`` (unless
    None or 0) and ``seed`` (unless None) replace the campaign's, ``widen`` turns the BPF
    widener on, ``backend`` (unless None or empty) replaces target.backend. Raises
    ConfigError for a value the config rules refuse."""
    changes: dict[str, Any] = {}
    if iterations:
        changes["iterations"] = iterations
    if seed is not None:
        changes["seed"] = seed
    if changes:
        config = override(config, "campaign", **changes)
    if widen:
        config = override(config, "widener", enabled=True)
    if backend:
        config = override(config, "target", backend=backend)
    return config


def json_schema() -> dict[str, Any]:
    """The same rules as ``validate``, as a JSON Schema document (configs/schema.json)."""
    properties: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        defaults = cls()
        fields: dict[str, Any] = {}
        for key, hint in _field_types(cls).items():
            where = f"{name}.{key}"
            fields[key] = _json_type(where, hint, getattr(defaults, key))
        properties[name] = {"type": "object", "additionalProperties": False, "properties": fields}
    properties["steps"] = _steps_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nvmf-harness campaign",
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
    }


def _steps_schema() -> dict[str, Any]:
    """``[[steps]]`` as JSON Schema: each step's fields, and per fault its ``args``."""
    types = {str: "string", int: "integer", float: "number", bool: "boolean"}
    path_item = {
        "oneOf": [{"type": "integer", "minimum": 0, "maximum": 7}, {"enum": list(STEP_PATH_WORDS)}]
    }
    per_fault = []
    for name, cls in fault_classes().items():
        args: dict[str, Any] = {}
        for pname, param in cls.params.items():
            spec: dict[str, Any] = {"type": types[param.kind], "default": param.default}
            spec["description"] = param.help
            if param.choices:
                spec["enum"] = list(param.choices)
            if param.minimum is not None:
                spec["minimum"] = param.minimum
            if param.maximum is not None:
                spec["maximum"] = param.maximum
            args[pname] = spec
        per_fault.append(
            {
                "if": {"properties": {"fault": {"const": name}}},
                "then": {
                    "properties": {
                        "args": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": args,
                        }
                    }
                },
            }
        )
    return {
        "type": "array",
        "minItems": 1,
        "description": "a fault sequence run as each iteration (harness/steps.py)",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["fault"],
            "properties": {
                "fault": {"enum": fault_names()},
                "action": {"enum": list(STEP_ACTIONS), "default": "inject"},
                "paths": {
                    "oneOf": [path_item, {"type": "array", "minItems": 1, "items": path_item}],
                    "default": "chosen",
                },
                "args": {"type": "object"},
                "wait_for": {"enum": list(STEP_WAITS), "default": ""},
                "wait_timeout_s": {
                    "type": "number",
                    "minimum": 0.1,
                    "maximum": 3600,
                    "default": 30.0,
                },
                "hold_s": {"type": "number", "minimum": 0, "maximum": 3600, "default": 0.0},
            },
            "allOf": per_fault,
        },
    }


def _json_type(where: str, hint: Any, default: Any) -> dict[str, Any]:
    spec: dict[str, Any]
    if hint is bool:
        spec = {"type": "boolean"}
    elif hint is int:
        spec = {"type": "integer"}
    elif hint is float:
        spec = {"type": "number"}
    elif hint is str:
        spec = {"type": "string"}
        if where in CHOICES:
            spec["enum"] = list(CHOICES[where])
    else:
        spec = {
            "type": "array",
            "minItems": 1,
            "items": {"enum": fault_names()},
        }
        default = [str(item) for item in default]
    low, high = BOUNDS.get(where, (None, None))
    if low is not None:
        spec["minimum"] = low
    if high is not None:
        spec["maximum"] = high
    spec["default"] = default
    return spec

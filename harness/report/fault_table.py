"""``nvmf-harness faults``: every fault of the registry, what it needs, and whether this
machine's kernel (the running one, or a release's /lib/modules) has it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from harness.core.procs import run
from harness.faults import fault_classes
from harness.faults.base import Param

MODINFO_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class ParamInfo:
    """One parameter a config step may give the fault (``args``; faults/base.py Param):
    its type name (str, int, float, bool), default, allowed strings and bounds."""

    name: str
    type: str
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    @classmethod
    def of(cls, name: str, param: Param) -> ParamInfo:
        return cls(
            name=name,
            type=param.kind.__name__,
            default=param.default,
            help=param.help,
            choices=param.choices,
            minimum=param.minimum,
            maximum=param.maximum,
        )

    def render(self) -> str:
        """``count (int, default 5, 1..100): help`` / ``state (str, default 'x', one of a, b)``."""
        facts = [self.type, f"default {self.default!r}"]
        if self.choices:
            facts.append("one of " + ", ".join(self.choices))
        if self.minimum is not None or self.maximum is not None:
            low = "" if self.minimum is None else f"{self.minimum:g}"
            high = "" if self.maximum is None else f"{self.maximum:g}"
            facts.append(f"{low}..{high}")
        return f"{self.name} ({', '.join(facts)}): {self.help}"


@dataclass(frozen=True)
class FaultInfo:
    """One line of the list: ``available`` is None when nothing was checked."""

    name: str
    inject: str
    restore: str
    surviving_path: bool
    requires: tuple[str, ...]
    available: bool | None
    why_not: str
    params: tuple[ParamInfo, ...] = ()


def modinfo_checker(release: str | None) -> Callable[[str], bool]:
    """``module_exists(name)`` for kernel ``release`` (the running one when None): whether
    ``modinfo`` finds the module (built in or loadable)."""

    def module_exists(name: str) -> bool:
        argv = (
            ["modinfo", "-n", name] if release is None else ["modinfo", "-k", release, "-n", name]
        )
        return run(argv, timeout_s=MODINFO_TIMEOUT_S).ok

    return module_exists


def fault_infos(module_exists: Callable[[str], bool] | None) -> list[FaultInfo]:
    """Every registered fault, checked against ``module_exists`` when given."""
    infos = []
    for name, cls in fault_classes().items():
        why = cls.unmet_here(module_exists) if module_exists is not None else None
        infos.append(
            FaultInfo(
                name=name,
                inject=cls.inject_summary,
                restore=cls.restore_summary,
                surviving_path=cls.surviving_path,
                requires=cls.requires,
                available=None if module_exists is None else why is None,
                why_not=why or "",
                params=tuple(ParamInfo.of(key, param) for key, param in cls.params.items()),
            )
        )
    return infos


def render(infos: list[FaultInfo]) -> str:
    """A plain text table, one fault per block."""
    lines = []
    for info in infos:
        state = {None: "", True: "  [available]", False: f"  [NOT available: {info.why_not}]"}
        lines.append(f"{info.name}{state[info.available]}")
        lines.append(f"    inject:  {info.inject}")
        lines.append(f"    restore: {info.restore}")
        lines.append(
            "    another path stays usable: "
            + ("yes (an application EIO is a bug)" if info.surviving_path else "no")
        )
        for need in info.requires:
            lines.append(f"    needs:   {need}")
        for param in info.params:
            lines.append(f"    param:   {param.render()}")
    return "\n".join(lines)


def to_json(infos: list[FaultInfo]) -> str:
    return json.dumps([asdict(info) for info in infos], indent=1)

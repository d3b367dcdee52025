"""What every path fault is, and the registry that finds them.

A fault is one small module in this package with one class that subclasses ``Fault`` and is
decorated with ``@register``: its ``name`` (what a config's ``campaign.faults`` says), a
one-line ``inject``/``restore`` summary, what it ``requires`` (checked against a config
before anything runs, and against the running kernel by ``nvmf-harness faults``), and
whether another path stays usable while it is in place (``surviving_path``: an application
EIO then is a multipath bug, not a real loss). Adding a fault means adding one module here
and its tests; ``fault_classes()`` imports every module of the package.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from harness.bed.testbed import Testbed
    from harness.config.campaign import CampaignConfig

_REGISTRY: dict[str, type[Fault]] = {}


@dataclass(frozen=True)
class Param:
    """One parameter a fault takes from a config step (``[[steps]]`` ``args``): its type
    (str, int, float or bool), default, one-line help, and the allowed strings or bounds."""

    kind: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None

    def check(self, where: str, value: Any) -> Any:
        """``value`` in this parameter's type, or ConfigError naming ``where``."""
        from harness.core.errors import ConfigError

        kind = self.kind
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}"[:200])
        if self.choices and value not in self.choices:
            raise ConfigError(f"{where}: expected one of {', '.join(self.choices)}, got {value!r}")
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise ConfigError(f"{where}: {value} is out of range [{self.minimum}, {self.maximum}]")
        return value


class Fault:
    """One kind of path fault on one test bed (see the module docstring).

    Instances live for one campaign (a fault may keep state between inject and restore).
    ``inject`` returns once the kernel shows the fault (or at once, where nothing can be
    waited for); ``restore`` undoes it; ``restore_everything`` undoes whatever may be left
    after an error or Ctrl-C and returns the errors as strings. Raise HarnessError.
    """

    name: ClassVar[str] = ""
    inject_summary: ClassVar[str] = ""
    restore_summary: ClassVar[str] = ""
    surviving_path: ClassVar[bool] = True
    # What it needs, for people (``nvmf-harness faults``); ``unmet`` checks it.
    requires: ClassVar[tuple[str, ...]] = ()
    # restore_everything runs in this order, lowest first: links and ports before what
    # needs a live controller (a rescan), the namespace's own state last.
    restore_order: ClassVar[int] = 50
    # Parameters a config step may give (``args``); ``self.args`` holds the values of the
    # current inject/restore (the defaults outside steps), set by FaultInjector.
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, bed: Testbed) -> None:
        self.bed = bed
        self.notes: list[str] = []
        self.args: dict[str, Any] = self.check_args({})

    @classmethod
    def spares_io(cls, args: Mapping[str, Any]) -> bool:
        """Whether, with these ``args``, fio's namespace keeps a usable path while the fault
        is in place (an application EIO then is a multipath bug): ``surviving_path`` unless a
        fault's parameters decide it (ns_remap of two other namespaces)."""
        return cls.surviving_path

    @classmethod
    def check_args(cls, raw: Mapping[str, Any], where: str = "args") -> dict[str, Any]:
        """Every parameter's value: ``raw``'s, checked, else the default. ConfigError (one
        line naming ``where.<param>``) for an unknown name or a bad value."""
        from harness.core.errors import ConfigError

        for name in raw:
            if name not in cls.params:
                known = ", ".join(cls.params) or "none"
                raise ConfigError(
                    f"{where}: {cls.name} has no parameter {name!r} (parameters: {known})"
                )
        return {
            name: param.check(f"{where}.{name}", raw[name]) if name in raw else param.default
            for name, param in cls.params.items()
        }

    @classmethod
    def unmet(cls, config: CampaignConfig) -> str | None:
        """Why this fault cannot run with ``config`` (one line), or None."""
        return None

    @classmethod
    def unmet_here(cls, module_exists: Callable[[str], bool]) -> str | None:
        """Why this fault cannot run on this kernel, or None. ``module_exists(name)`` says
        whether a kernel module can be loaded (modinfo)."""
        return None

    def prepare(self, path: int) -> None:
        """Before the warmup (the path may not be chosen yet): nothing by default."""

    def inject(self, path: int) -> None:
        raise NotImplementedError

    def restore(self, path: int) -> None:
        raise NotImplementedError

    def restore_everything(self) -> list[str]:
        return []

    def take_notes(self) -> list[str]:
        """What the fault noted since the last call (for the iteration's record)."""
        notes, self.notes = list(self.notes), []
        return notes


def register(cls: type[Fault]) -> type[Fault]:
    """Class decorator: make ``cls`` known under ``cls.name``."""
    if not cls.name or (cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls):
        raise ValueError(f"fault {cls.__name__}: missing or duplicate name {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


@functools.cache
def _import_fault_modules() -> None:
    """Import every module of harness/faults (each registers its fault), once."""
    package = Path(__file__).parent
    for module in pkgutil.iter_modules([str(package)]):
        if module.name != "base":
            importlib.import_module(f"harness.faults.{module.name}")


def fault_classes() -> dict[str, type[Fault]]:
    """Every fault of the package, by name."""
    _import_fault_modules()
    return dict(sorted(_REGISTRY.items()))


def fault_class(name: str) -> type[Fault]:
    """The fault called ``name``; KeyError when there is none."""
    classes = fault_classes()
    return classes[name]


def controller_of(bed: Testbed, path: int) -> str | None:
    """The name of the controller (``nvme2``) the host has on ``path``, or None."""
    device = bed.device()
    if device is None:
        return None
    ctrl = device.controller_for(bed.endpoints[path])
    return ctrl.name if ctrl else None


def require_controller(bed: Testbed, path: int) -> str:
    """``controller_of``, or HarnessError when the path has none."""
    from harness.core.errors import HarnessError

    name = controller_of(bed, path)
    if name is None:
        raise HarnessError(f"path {path} has no controller to fault")
    return name

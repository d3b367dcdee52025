"""Soft-RoCE (rdma_rxe) for the RDMA transport: modules, rxe devices, and their cleanup.

NVMe over RDMA needs an RDMA device under both ends. soft-RoCE makes one on top of a netdev
(``rdma link add NAME type rxe netdev IF``, iproute2). On Debian's 6.1 kernel an rxe on
``lo`` is accepted but the host's ``rdma_resolve_route`` to 127.0.0.1 times out (-110,
measured), so each path gets an rxe on its own veth in the initial namespace and host and
target use that veth's address: a packet whose source and destination GID are equal is
looped back inside rxe (rxe_net.c: RXE_LOOPBACK_MASK), never reaching the veth's qdisc.
nvmet-rdma and nvme-rdma bind their rdma_cm ids in the initial network namespace, so the
target cannot live in a netns here.

Modules: the harness loads ``rdma_rxe``, ``nvmet-rdma`` and ``nvme-rdma`` (with their
dependencies) when they are missing and remembers exactly which modules that added, in
STATE_FILE, so ``unload_modules`` and ``clean`` (after a crash) remove those and nothing
that was loaded before. rxe device names start with RXE_PREFIX so ``clean`` finds them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.core.errors import HarnessError
from harness.core.procs import run

RXE_PREFIX = "nvmfh_rxe"
IB_CLASS = "class/infiniband"
# What the RDMA transport needs loaded, in load order (modprobe pulls in ib_core, rdma_cm...).
RDMA_MODULES = ("rdma_rxe", "nvmet_rdma", "nvme_rdma")
STATE_FILE = Path("/run/nvmf-harness/rdma-modules.json")
# Dependencies modprobe may load that others use as soon as they exist: never unloaded
# (configfs is mounted at /sys/kernel/config for nvmet; rdma_cm needs it).
SHARED_MODULES = frozenset({"configfs"})
TOOL_TIMEOUT_S = 60.0


def rxe_name(path: int) -> str:
    return f"{RXE_PREFIX}{path}"


def loaded_modules(sys_module: Path = Path("/sys/module")) -> set[str]:
    """Names of loadable modules now loaded (those with an ``initstate``; built-ins have
    none)."""
    try:
        names = os.listdir(sys_module)
    except OSError:
        return set()
    return {name for name in names if (sys_module / name / "initstate").exists()}


def load_modules(
    timeout_s: float = TOOL_TIMEOUT_S,
    sys_module: Path = Path("/sys/module"),
    state_file: Path = STATE_FILE,
) -> list[str]:
    """modprobe every RDMA_MODULES entry that is not loaded; returns the modules this added
    (dependencies included), newest last, and records them in ``state_file`` (merged with
    what an earlier call recorded). Raises HarnessError when a module cannot be loaded.
    """
    before = loaded_modules(sys_module)
    added: list[str] = []
    try:
        for module in RDMA_MODULES:
            if module in before or module in added:
                continue
            result = run(["modprobe", module], timeout_s=timeout_s)
            now = loaded_modules(sys_module)
            added += sorted(now - before - set(added) - SHARED_MODULES)
            if not result.ok:
                raise HarnessError(
                    f"cannot load {module}: {result.one_line_error()}",
                    hint="the RDMA transport needs CONFIG_RDMA_RXE, CONFIG_NVME_RDMA and "
                    "CONFIG_NVME_TARGET_RDMA (m or y)",
                )
    finally:
        if added:
            _record(state_file, added)
    return added


def _record(state_file: Path, added: list[str]) -> None:
    known = recorded_modules(state_file)
    merged = known + [name for name in added if name not in known]
    try:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"loaded_by_harness": merged}) + "\n")
    except OSError as exc:
        raise HarnessError(
            f"cannot record the loaded RDMA modules in {state_file}: {exc.strerror}",
            hint="run as root",
        ) from exc


def recorded_modules(state_file: Path = STATE_FILE) -> list[str]:
    """The modules a harness run loaded and has not unloaded yet ([] when none or unreadable)."""
    try:
        data = json.loads(state_file.read_text())
    except (OSError, ValueError):
        return []
    names = data.get("loaded_by_harness") if isinstance(data, dict) else None
    return [name for name in names if isinstance(name, str)] if isinstance(names, list) else []


def unload_modules(
    modules: list[str],
    timeout_s: float = TOOL_TIMEOUT_S,
    sys_module: Path = Path("/sys/module"),
    state_file: Path = STATE_FILE,
) -> list[str]:
    """rmmod ``modules`` (never modprobe -r: it would take unused dependencies loaded by
    someone else, such as a built nvme-core variant), users before what they use: each pass
    removes those no other module holds. Modules already gone are skipped; the rest stay in
    ``state_file``. Returns errors as one-line strings."""
    pending = [name for name in modules if name in loaded_modules(sys_module)]
    errors: list[str] = []
    while pending:
        progress = False
        for name in list(pending):
            if _holders(sys_module, name) & set(pending):
                continue
            result = run(["rmmod", name], timeout_s=timeout_s)
            if result.ok or name not in loaded_modules(sys_module):
                pending.remove(name)
                progress = True
        if not progress:
            errors.append(f"rmmod {' '.join(pending)}: still in use")
            break
    left = [name for name in recorded_modules(state_file) if name in loaded_modules(sys_module)]
    _rewrite(state_file, left)
    return errors


def _holders(sys_module: Path, name: str) -> set[str]:
    try:
        return set(os.listdir(sys_module / name / "holders"))
    except OSError:
        return set()


def _rewrite(state_file: Path, left: list[str]) -> None:
    try:
        if left:
            state_file.write_text(json.dumps({"loaded_by_harness": left}) + "\n")
        else:
            state_file.unlink(missing_ok=True)
    except OSError:
        pass


def rxe_devices(sysfs: Path = Path("/sys")) -> dict[str, str]:
    """Our rxe devices (name starts with RXE_PREFIX) and the netdev each sits on ("" when
    sysfs does not say)."""
    found: dict[str, str] = {}
    try:
        names = sorted(os.listdir(sysfs / IB_CLASS))
    except OSError:
        return found
    for name in names:
        if name.startswith(RXE_PREFIX):
            found[name] = _netdev_of(sysfs / IB_CLASS / name)
    return found


def _netdev_of(device: Path) -> str:
    try:
        return (device / "ports/1/gid_attrs/ndevs/0").read_text().strip()
    except OSError:
        return ""


def add_rxe(name: str, netdev: str, timeout_s: float = TOOL_TIMEOUT_S) -> None:
    """``rdma link add NAME type rxe netdev NETDEV``; HarnessError when refused."""
    result = run(["rdma", "link", "add", name, "type", "rxe", "netdev", netdev], timeout_s)
    if not result.ok:
        raise HarnessError(
            f"rdma link add {name} on {netdev} failed: {result.one_line_error()}",
            hint="needs root, iproute2's rdma and the rdma_rxe module",
        )


def remove_rxe(name: str, timeout_s: float = TOOL_TIMEOUT_S) -> list[str]:
    """``rdma link delete NAME``; returns errors (an absent device is none)."""
    result = run(["rdma", "link", "delete", name], timeout_s)
    if result.ok:
        return []
    return [f"rdma link delete {name}: {result.one_line_error()}"]


def wait_rxe_active(name: str, timeout_s: float, sysfs: Path = Path("/sys")) -> bool:
    """Wait until port 1 of ``name`` is ACTIVE (its netdev up and its GIDs in place)."""
    state = sysfs / IB_CLASS / name / "ports/1/state"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if "ACTIVE" in state.read_text():
                return True
        except OSError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def find_leftovers(sysfs: Path = Path("/sys"), state_file: Path = STATE_FILE) -> list[str]:
    """Our rxe devices and the RDMA modules a run loaded and did not unload."""
    found = [f"rxe device {name}" for name in rxe_devices(sysfs)]
    found += [
        f"module {name} (loaded by the harness)"
        for name in recorded_modules(state_file)
        if name in loaded_modules(sysfs / "module")
    ]
    return found


def remove_leftovers(sysfs: Path = Path("/sys"), state_file: Path = STATE_FILE) -> list[str]:
    """Delete our rxe devices, then unload the modules a run loaded; returns errors."""
    errors: list[str] = []
    for name in rxe_devices(sysfs):
        errors += remove_rxe(name)
    modules = recorded_modules(state_file)
    if modules:
        errors += unload_modules(
            list(reversed(modules)), sys_module=sysfs / "module", state_file=state_file
        )
    return errors

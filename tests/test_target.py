"""NvmetTarget and leftover cleanup against a fake nvmet configfs (tests.fakes.FakeNvmetFs).

The fake behaves like nvmet's configfs where it matters for the order of operations: mkdir
creates the attributes and default groups, rmdir refuses while a default group holds entries,
an enabled namespace refuses device changes, a port's address is fixed once it is enabled,
``ana_grpid`` needs the group to exist on a port.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.bed.target import (
    ANA_STATES,
    NQN_PREFIX,
    PORT_ID_BASE,
    PORT_ID_COUNT,
    AnaGroupSpec,
    NamespaceSpec,
    NvmetTarget,
    PortSpec,
    SubsystemSpec,
    TargetSpec,
    find_leftovers,
    is_harness_port,
    remove_leftovers,
)
from harness.core.errors import HarnessError, KernelFsError
from tests.fakes import FakeNvmetFs

NQN = f"{NQN_PREFIX}subsys-1"
HOST = f"{NQN_PREFIX}host-1"
FOREIGN_NQN = "nqn.2014-08.org.nvmexpress:foreign-array"
FOREIGN_HOST = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427"
P0, P1 = PORT_ID_BASE, PORT_ID_BASE + 1


@pytest.fixture
def kfs(tmp_path: Path) -> FakeNvmetFs:
    return FakeNvmetFs.create(tmp_path / "root")


def make_spec(
    backing: str = "/var/tmp/nvmf-harness/ns1.img",
    ana_grpid: int = 2,
    buffered_io: bool = True,
) -> TargetSpec:
    namespace = NamespaceSpec(
        nsid=1,
        device_path=backing,
        device_uuid="5d3e4c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c",
        buffered_io=buffered_io,
        ana_grpid=ana_grpid,
    )
    return TargetSpec(
        hosts=(HOST,),
        subsystems=(
            SubsystemSpec(
                nqn=NQN,
                namespaces=(namespace,),
                allowed_hosts=(HOST,),
                serial="nvmfh0001",
                model="nvmf-harness",
            ),
        ),
        ports=(
            PortSpec(P0, "127.0.0.1", "4421", subsystems=(NQN,)),
            PortSpec(
                P1,
                "127.0.0.1",
                "4422",
                subsystems=(NQN,),
                ana_groups=(AnaGroupSpec(1), AnaGroupSpec(2, "non-optimized")),
            ),
        ),
    )


EXPECTED_ENTRIES = {
    f"hosts/{HOST}",
    f"subsystems/{NQN}",
    f"subsystems/{NQN}/allowed_hosts/{HOST}",
    f"subsystems/{NQN}/namespaces/1",
    f"ports/{P0}",
    f"ports/{P1}",
    f"ports/{P1}/ana_groups/2",
    f"ports/{P0}/subsystems/{NQN}",
    f"ports/{P1}/subsystems/{NQN}",
}


def index_of(kfs: FakeNvmetFs, op: str, path: str, detail: str | None = None) -> int:
    for index, (o, p, d) in enumerate(kfs.ops):
        if o == op and p == path and (detail is None or d == detail):
            return index
    raise AssertionError(f"no {op} {path} {detail} in {kfs.ops}")


# --- apply -------------------------------------------------------------------------------------


def test_apply_creates_the_spec(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    assert kfs.entries() == EXPECTED_ENTRIES
    ns = f"subsystems/{NQN}/namespaces/1"
    assert kfs.attr(f"{ns}/device_path") == "/var/tmp/nvmf-harness/ns1.img"
    assert kfs.attr(f"{ns}/device_uuid") == "5d3e4c2b-1a09-4f8e-9d7c-6b5a4f3e2d1c"
    assert kfs.attr(f"{ns}/buffered_io") == "1"
    assert kfs.attr(f"{ns}/ana_grpid") == "2"
    assert kfs.attr(f"{ns}/enable") == "1"
    assert target.namespace_enabled(NQN, 1)
    assert kfs.attr(f"subsystems/{NQN}/attr_allow_any_host") == "0"
    assert kfs.attr(f"subsystems/{NQN}/attr_serial") == "nvmfh0001"
    assert kfs.attr(f"subsystems/{NQN}/attr_model") == "nvmf-harness"
    for port, svc in ((P0, "4421"), (P1, "4422")):
        assert kfs.attr(f"ports/{port}/addr_trtype") == "tcp"
        assert kfs.attr(f"ports/{port}/addr_adrfam") == "ipv4"
        assert kfs.attr(f"ports/{port}/addr_traddr") == "127.0.0.1"
        assert kfs.attr(f"ports/{port}/addr_trsvcid") == svc
        assert target.port_linked(port, NQN)
    assert target.ana_state(P0) == "optimized"
    assert target.ana_state(P1, 2) == "non-optimized"
    link = kfs.nvmet(f"ports/{P0}/subsystems/{NQN}")
    assert link.resolve() == kfs.nvmet(f"subsystems/{NQN}").resolve()


def test_buffered_io_and_device_are_set_before_enable(kfs: FakeNvmetFs) -> None:
    NvmetTarget(kfs).apply(make_spec())
    ns = f"subsystems/{NQN}/namespaces/1"
    enable = index_of(kfs, "write", f"{ns}/enable", "1")
    assert index_of(kfs, "write", f"{ns}/buffered_io", "1") < enable
    assert index_of(kfs, "write", f"{ns}/device_path") < enable
    assert index_of(kfs, "write", f"{ns}/ana_grpid", "2") < enable


def test_port_address_is_set_before_the_port_is_enabled_by_a_link(kfs: FakeNvmetFs) -> None:
    NvmetTarget(kfs).apply(make_spec())
    for port in (P0, P1):
        link = index_of(kfs, "symlink", f"ports/{port}/subsystems/{NQN}")
        for attr in ("addr_trtype", "addr_adrfam", "addr_traddr", "addr_trsvcid"):
            assert index_of(kfs, "write", f"ports/{port}/{attr}") < link
    # the namespace is enabled before the subsystem is exposed on any port
    enable = index_of(kfs, "write", f"subsystems/{NQN}/namespaces/1/enable", "1")
    assert enable < index_of(kfs, "symlink", f"ports/{P0}/subsystems/{NQN}")


def test_without_buffered_io_it_is_not_written(kfs: FakeNvmetFs) -> None:
    NvmetTarget(kfs).apply(make_spec(backing="/dev/nullb0", buffered_io=False, ana_grpid=1))
    ns = f"subsystems/{NQN}/namespaces/1"
    assert kfs.attr(f"{ns}/buffered_io") == "0"
    assert kfs.attr(f"{ns}/enable") == "1"
    assert not [op for op in kfs.ops if op[1] == f"{ns}/buffered_io"]


def test_port_links_are_made_in_the_network_namespace(kfs: FakeNvmetFs) -> None:
    NvmetTarget(kfs, netns="nvmfh-tgt").apply(make_spec())
    links = {path: detail for op, path, detail in kfs.ops if op == "symlink"}
    assert links[f"ports/{P0}/subsystems/{NQN}"].endswith("netns=nvmfh-tgt")
    assert links[f"ports/{P1}/subsystems/{NQN}"].endswith("netns=nvmfh-tgt")
    # allowed_hosts links open no socket: made from here
    assert links[f"subsystems/{NQN}/allowed_hosts/{HOST}"].endswith("netns=None")


def test_apply_without_nvmet_says_how_to_load_it(tmp_path: Path) -> None:
    kfs = FakeNvmetFs(root=tmp_path)
    target = NvmetTarget(kfs)
    with pytest.raises(HarnessError) as info:
        target.apply(make_spec())
    assert "nvmet" in str(info.value)
    assert info.value.hint is not None
    assert "modprobe" in info.value.hint
    assert kfs.ops == []
    assert target.created == []


@pytest.mark.parametrize(
    "failing",
    [
        f"hosts/{HOST}",  # the very first step
        f"subsystems/{NQN}/attr_serial",
        f"ports/{P1}/addr_trsvcid",
        f"ports/{P1}/ana_groups/2/ana_state",
        f"subsystems/{NQN}/namespaces/1/device_path",
        f"subsystems/{NQN}/namespaces/1/enable",
        f"ports/{P1}/subsystems/{NQN}",  # the very last step
    ],
)
def test_a_failure_mid_apply_removes_what_was_made(kfs: FakeNvmetFs, failing: str) -> None:
    kfs.fail[failing] = "Invalid argument"
    target = NvmetTarget(kfs)
    with pytest.raises(KernelFsError) as info:
        target.apply(make_spec())
    assert failing in str(info.value)
    assert kfs.entries() == set()
    assert target.created == []


def test_an_invalid_ana_state_in_the_spec_fails_apply_and_cleans_up(kfs: FakeNvmetFs) -> None:
    spec = make_spec()
    bad_port = PortSpec(P1, "127.0.0.1", "4422", ana_groups=(AnaGroupSpec(1, "standby"),))
    spec = TargetSpec(spec.hosts, (spec.ports[0], bad_port), spec.subsystems)
    with pytest.raises(HarnessError, match="standby"):
        NvmetTarget(kfs).apply(spec)
    assert kfs.entries() == set()


# --- teardown ----------------------------------------------------------------------------------


def test_teardown_removes_everything_newest_first(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    made = [path for op, path, _ in kfs.ops if op in ("mkdir", "symlink")]
    kfs.ops.clear()
    assert target.teardown() == []
    assert kfs.entries() == set()
    removed = [path for op, path, _ in kfs.ops if op in ("rmdir", "unlink")]
    assert removed == made[::-1]
    # the enabled namespace is disabled before it is removed
    ns = f"subsystems/{NQN}/namespaces/1"
    assert index_of(kfs, "write", f"{ns}/enable", "0") < index_of(kfs, "rmdir", ns)


def test_teardown_is_idempotent(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    assert target.teardown() == []
    kfs.ops.clear()
    assert target.teardown() == []
    assert kfs.ops == []


def test_teardown_skips_entries_already_gone(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    # someone else (nvmetcli clear, a previous clean) already removed the port links
    for port in (P0, P1):
        kfs.nvmet(f"ports/{port}/subsystems/{NQN}").unlink()
    assert target.teardown() == []
    assert kfs.entries() == set()


def test_teardown_retries_a_busy_rmdir(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    kfs.fail_once[f"subsystems/{NQN}"] = "Device or resource busy"
    assert target.teardown() == []
    assert kfs.entries() == set()


def test_teardown_reports_a_persistent_error_and_removes_the_rest(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    kfs.fail[f"ports/{P0}"] = "Device or resource busy"
    errors = target.teardown()
    assert len(errors) == 1
    assert f"ports/{P0}" in errors[0]
    assert "busy" in errors[0]
    assert kfs.entries() == {f"ports/{P0}"}


def test_teardown_removes_entries_made_but_not_recorded(kfs: FakeNvmetFs) -> None:
    """Ctrl-C can land after the kernel made an entry and before apply() recorded it."""
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    target.created = [entry for entry in target.created if not entry[1].endswith(f"/{P1}")]
    assert not target.teardown()
    assert kfs.entries() == set()


# --- changes: the target-side faults -------------------------------------------------------------


def test_unlink_and_relink_a_port(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    target.unlink_port(P0, NQN)
    assert not target.port_linked(P0, NQN)
    assert target.port_linked(P1, NQN)
    assert not kfs.nvmet(f"ports/{P0}/subsystems/{NQN}").is_symlink()
    target.link_port(P0, NQN)
    assert target.port_linked(P0, NQN)
    kfs.ops.clear()
    target.link_port(P0, NQN)  # already linked: nothing to do
    assert kfs.ops == []
    assert target.teardown() == []
    assert kfs.entries() == set()


def test_unlink_of_an_unlinked_port_is_quiet(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    target.unlink_port(P0, NQN)
    target.unlink_port(P0, NQN)
    assert not target.port_linked(P0, NQN)


def test_namespace_disable_and_enable(kfs: FakeNvmetFs) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    target.set_namespace_enabled(NQN, 1, False)
    assert not target.namespace_enabled(NQN, 1)
    assert kfs.attr(f"subsystems/{NQN}/namespaces/1/enable") == "0"
    target.set_namespace_enabled(NQN, 1, True)
    assert target.namespace_enabled(NQN, 1)
    assert not target.namespace_enabled(NQN, 7)  # no such namespace


@pytest.mark.parametrize("state", ANA_STATES)
def test_every_ana_state_can_be_set(kfs: FakeNvmetFs, state: str) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    target.set_ana_state(P0, state)
    assert target.ana_state(P0) == state
    target.set_ana_state(P1, state, grpid=2)
    assert target.ana_state(P1, 2) == state


@pytest.mark.parametrize("state", ["standby", "Optimized", "", "optimized\n"])
def test_an_unknown_ana_state_is_refused_before_any_write(kfs: FakeNvmetFs, state: str) -> None:
    target = NvmetTarget(kfs)
    target.apply(make_spec())
    kfs.ops.clear()
    with pytest.raises(HarnessError) as info:
        target.set_ana_state(P0, state)
    assert repr(state) in str(info.value)
    assert "inaccessible" in str(info.value)  # lists the known states
    assert kfs.ops == []
    assert target.ana_state(P0) == "optimized"


def test_spec_port_lookup() -> None:
    spec = make_spec()
    assert spec.port(P1).trsvcid == "4422"
    with pytest.raises(HarnessError, match="5999"):
        spec.port(5999)


def test_harness_port_range() -> None:
    assert is_harness_port(PORT_ID_BASE)
    assert is_harness_port(PORT_ID_BASE + PORT_ID_COUNT - 1)
    assert not is_harness_port(PORT_ID_BASE - 1)
    assert not is_harness_port(PORT_ID_BASE + PORT_ID_COUNT)
    assert not is_harness_port(1)


# --- leftovers of killed runs ------------------------------------------------------------------


def add_foreign_target(kfs: FakeNvmetFs) -> set[str]:
    """Someone else's nvmet setup beside ours; returns its entries."""
    kfs.make(f"hosts/{FOREIGN_HOST}")
    kfs.make(f"subsystems/{FOREIGN_NQN}")
    kfs.make_link(f"hosts/{FOREIGN_HOST}", f"subsystems/{FOREIGN_NQN}/allowed_hosts/{FOREIGN_HOST}")
    kfs.make(f"subsystems/{FOREIGN_NQN}/namespaces/1")
    kfs.set_attr(f"subsystems/{FOREIGN_NQN}/namespaces/1/device_path", "/dev/sdb")
    kfs.set_attr(f"subsystems/{FOREIGN_NQN}/namespaces/1/enable", "1")
    # a host NQN that looks like ours but a foreign subsystem allows: in use, not ours to take
    shared_host = f"{NQN_PREFIX}host-shared"
    kfs.make(f"hosts/{shared_host}")
    kfs.make_link(f"hosts/{shared_host}", f"subsystems/{FOREIGN_NQN}/allowed_hosts/{shared_host}")
    for port in (1, PORT_ID_BASE - 1, PORT_ID_BASE + PORT_ID_COUNT):
        kfs.make(f"ports/{port}")
        kfs.set_attr(f"ports/{port}/addr_trtype", "tcp")
        kfs.make_link(f"subsystems/{FOREIGN_NQN}", f"ports/{port}/subsystems/{FOREIGN_NQN}")
    return kfs.entries()


def killed_run(kfs: FakeNvmetFs) -> None:
    """What a run killed with SIGKILL leaves: its whole target."""
    NvmetTarget(kfs).apply(make_spec())


def test_find_leftovers_finds_ours_only(kfs: FakeNvmetFs) -> None:
    add_foreign_target(kfs)
    assert find_leftovers(kfs) == []
    killed_run(kfs)
    assert sorted(find_leftovers(kfs)) == sorted(
        [
            f"nvmet port {P0}",
            f"nvmet port {P1}",
            f"nvmet subsystem {NQN}",
            f"nvmet host {HOST}",
        ]
    )


def test_remove_leftovers_never_touches_foreign_entries(kfs: FakeNvmetFs) -> None:
    foreign = add_foreign_target(kfs)
    foreign_attrs = {
        rel: kfs.attr(rel)
        for rel in (
            f"subsystems/{FOREIGN_NQN}/namespaces/1/enable",
            f"subsystems/{FOREIGN_NQN}/namespaces/1/device_path",
            "ports/1/addr_trtype",
        )
    }
    killed_run(kfs)
    # a foreign port that also exposes our subsystem: that link is ours to remove
    kfs.make_link(f"subsystems/{NQN}", f"ports/1/subsystems/{NQN}")
    kfs.ops.clear()
    assert remove_leftovers(kfs) == []
    assert kfs.entries() == foreign
    assert {rel: kfs.attr(rel) for rel in foreign_attrs} == foreign_attrs
    assert find_leftovers(kfs) == []
    touched = {path.split("/")[1] for _op, path, _ in kfs.ops}
    assert FOREIGN_NQN not in touched
    assert FOREIGN_HOST not in touched
    assert f"{NQN_PREFIX}host-shared" not in touched


def test_remove_leftovers_disables_namespaces_then_removes(kfs: FakeNvmetFs) -> None:
    killed_run(kfs)
    kfs.ops.clear()
    assert remove_leftovers(kfs) == []
    ns = f"subsystems/{NQN}/namespaces/1"
    assert index_of(kfs, "write", f"{ns}/enable", "0") < index_of(kfs, "rmdir", ns)
    assert index_of(kfs, "rmdir", ns) < index_of(kfs, "rmdir", f"subsystems/{NQN}")
    assert index_of(kfs, "unlink", f"ports/{P0}/subsystems/{NQN}") < index_of(
        kfs, "rmdir", f"subsystems/{NQN}"
    )
    assert kfs.entries() == set()


def test_remove_leftovers_reports_errors_and_goes_on(kfs: FakeNvmetFs) -> None:
    killed_run(kfs)
    kfs.fail[f"hosts/{HOST}"] = "Device or resource busy"
    errors = remove_leftovers(kfs)
    assert len(errors) == 1
    assert HOST in errors[0]
    assert kfs.entries() == {f"hosts/{HOST}"}


def test_leftovers_without_nvmet(tmp_path: Path) -> None:
    kfs = FakeNvmetFs(root=tmp_path)
    assert find_leftovers(kfs) == []
    assert remove_leftovers(kfs) == []

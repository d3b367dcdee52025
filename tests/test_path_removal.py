"""ns_remove_path's identity flip, against a small model of the 6.1 host scan and nvmet.

The model does what the kernel code does for this fault: nvmet sends a Namespace Attribute
Changed AEN on every enable/disable to controllers that did not mask it
(target/core.c:nvmet_ns_changed); a controller's scan removes its per-path disk when the
namespace's uuid differs from the head's (host/core.c:nvme_validate_ns) and adds it back
when it matches again (nvme_alloc_ns -> nvme_init_ns_head). A reconnect resets the mask.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from harness.bed import ns_visibility
from harness.bed.path_removal import (
    AEN_ANA_CHANGE_ONLY,
    VISIBILITY_OF_MECHANISM,
    IdentityFlip,
    PathSet,
    PortVisibility,
)
from harness.config.campaign import NS_REMOVE_MECHANISMS
from harness.core.errors import HarnessError
from harness.core.kernelfs import KernelFs

NQN = "nqn.2026-11.io.nvmf-harness:subsys-test"
HEAD_UUID = "11111111-2222-3333-4444-555555555555"


@dataclass
class Ctrl:
    name: str
    cntlid: str
    aen: int = 0x900  # what the host enables at connect (NS attribute + ANA change)
    has_disk: bool = True
    state: str = "live"


@dataclass
class ModelKernel:
    """Both sides of the fault: the host's controllers and nvmet's namespace uuid."""

    ctrls: dict[str, Ctrl] = field(default_factory=dict)
    uuid: str = HEAD_UUID
    enabled: bool = True
    set_feature_calls: list[tuple[str, int]] = field(default_factory=list)
    rescans: list[str] = field(default_factory=list)

    # --- the host side (NvmeHost's methods the mechanism uses) ---
    def controllers(self, nqn: str) -> list[Ctrl]:
        assert nqn == NQN
        return list(self.ctrls.values())

    def path_disks(self, ctrl: str) -> tuple[str, ...]:
        c = self.ctrls[ctrl]
        return (f"{ctrl}c0n1",) if c.has_disk and c.state == "live" else ()

    def cntlid(self, ctrl: str) -> str:
        return self.ctrls[ctrl].cntlid

    def ctrl_state(self, ctrl: str) -> str:
        return self.ctrls[ctrl].state if ctrl in self.ctrls else "gone"

    def set_async_event_config(self, ctrl: str, value: int) -> None:
        self.set_feature_calls.append((ctrl, value))
        self.ctrls[ctrl].aen = value

    def rescan_controller(self, ctrl: str) -> None:
        self.rescans.append(ctrl)
        self._scan(self.ctrls[ctrl])

    def _scan(self, ctrl: Ctrl) -> None:
        if not self.enabled:
            return
        ctrl.has_disk = self.uuid == HEAD_UUID

    def reconnect(self, ctrl: str, cntlid: str) -> None:
        """A reconnect: new cntlid, default mask, and a scan at start."""
        self.ctrls[ctrl] = Ctrl(ctrl, cntlid)
        self._scan(self.ctrls[ctrl])

    # --- the target side (NvmetTarget's methods the mechanism uses) ---
    def set_namespace_uuid(self, nqn: str, nsid: int, device_uuid: str) -> None:
        for enabled in (False, True):  # disable, write, enable: two AENs
            self.enabled = enabled
            if enabled:
                self.uuid = device_uuid
            for ctrl in self.ctrls.values():
                if ctrl.aen & 0x100:  # Namespace Attribute Notices not masked: it rescans
                    self._scan(ctrl)

    def namespace_uuid(self, nqn: str, nsid: int) -> str:
        return self.uuid


@pytest.fixture
def kernel() -> ModelKernel:
    return ModelKernel({"nvme0": Ctrl("nvme0", "1"), "nvme1": Ctrl("nvme1", "2")})


@pytest.fixture
def flip(kernel: ModelKernel) -> IdentityFlip:
    paths = PathSet(kernel, NQN)  # type: ignore[arg-type]
    mechanism = IdentityFlip(paths, kernel, 1, HEAD_UUID, timeout_s=0.2)  # type: ignore[arg-type]
    return mechanism


def test_remove_takes_only_that_path_and_restore_brings_it_back(
    kernel: ModelKernel, flip: IdentityFlip
) -> None:
    flip.remove("nvme1", 6001)
    assert kernel.path_disks("nvme1") == ()
    assert kernel.path_disks("nvme0") == ("nvme0c0n1",)
    assert kernel.ctrls["nvme1"].state == "live"
    assert kernel.uuid != HEAD_UUID
    assert kernel.rescans == ["nvme1"]
    flip.restore("nvme1", 6001)
    assert kernel.uuid == HEAD_UUID
    assert kernel.path_disks("nvme1") == ("nvme1c0n1",)
    assert flip.notes == []


def test_prepare_flips_once_before_the_path_is_chosen(
    kernel: ModelKernel, flip: IdentityFlip
) -> None:
    flip.prepare()
    flipped = kernel.uuid
    assert flipped != HEAD_UUID
    assert kernel.path_disks("nvme0") and kernel.path_disks("nvme1")  # nobody rescanned
    flip.prepare()
    flip.remove("nvme0", 6000)
    assert kernel.uuid == flipped  # remove() did not flip again
    assert kernel.path_disks("nvme0") == ()


def test_notices_are_masked_once_per_association(kernel: ModelKernel, flip: IdentityFlip) -> None:
    flip.remove("nvme0", 6000)
    flip.restore("nvme0", 6000)
    flip.remove("nvme1", 6001)
    flip.restore("nvme1", 6001)
    assert sorted(kernel.set_feature_calls) == [
        ("nvme0", AEN_ANA_CHANGE_ONLY),
        ("nvme1", AEN_ANA_CHANGE_ONLY),
    ]
    kernel.reconnect("nvme0", cntlid="7")  # a reconnect resets the mask: masked again
    flip.remove("nvme1", 6001)
    assert kernel.set_feature_calls[-1] == ("nvme0", AEN_ANA_CHANGE_ONLY)
    assert kernel.path_disks("nvme0") == ("nvme0c0n1",)  # it did not rescan on the flip


def test_without_the_mask_the_other_path_would_drop_it_too(kernel: ModelKernel) -> None:
    """The model's own check: with Namespace Attribute Notices on, every controller rescans
    on the flip and the head loses both paths. The mechanism exists to prevent this."""
    kernel.set_namespace_uuid(NQN, 1, "99999999-2222-3333-4444-555555555555")
    assert kernel.path_disks("nvme0") == () and kernel.path_disks("nvme1") == ()


def test_another_path_that_lost_it_is_noted_and_repaired(
    kernel: ModelKernel, flip: IdentityFlip
) -> None:
    flip.mask_notices()
    original = kernel.rescan_controller

    def rescan_both(ctrl: str) -> None:  # e.g. the other controller reconnected meanwhile
        original(ctrl)
        if ctrl == "nvme1":
            kernel._scan(kernel.ctrls["nvme0"])

    kernel.rescan_controller = rescan_both  # type: ignore[method-assign]
    flip.remove("nvme1", 6001)
    assert flip.notes and "nvme0" in flip.notes[0]
    kernel.rescan_controller = original  # type: ignore[method-assign]
    flip.restore("nvme1", 6001)
    assert kernel.path_disks("nvme0") and kernel.path_disks("nvme1")
    assert set(kernel.rescans[-2:]) == {"nvme0", "nvme1"}


def test_a_disk_that_does_not_go_is_an_error(kernel: ModelKernel, flip: IdentityFlip) -> None:
    kernel.rescan_controller = lambda ctrl: None  # type: ignore[method-assign]
    with pytest.raises(HarnessError, match=r"did not go away within 0\.2 s"):
        flip.remove("nvme0", 6000)


def test_waiting_for_disks_skips_a_controller_that_leaves_live(kernel: ModelKernel) -> None:
    paths = PathSet(kernel, NQN)  # type: ignore[arg-type]
    kernel.ctrls["nvme1"].has_disk = False
    with pytest.raises(HarnessError, match="did not get its per-path disk back"):
        paths.wait_disks_back(0.05)  # nvme1 is live and has none
    polls: list[str] = []
    path_disks = kernel.path_disks

    def leaving(ctrl: str) -> tuple[str, ...]:
        polls.append(ctrl)
        if ctrl == "nvme1" and polls.count("nvme1") == 2:
            kernel.ctrls["nvme1"].state = "connecting"  # leaves live during the wait
        return path_disks(ctrl)

    kernel.path_disks = leaving  # type: ignore[method-assign]
    paths.wait_disks_back(1.0)  # not live any more: not waited for, as without_disk()
    assert polls.count("nvme1") >= 2


def test_remove_needs_a_disk(kernel: ModelKernel, flip: IdentityFlip) -> None:
    kernel.ctrls["nvme0"].has_disk = False
    with pytest.raises(HarnessError, match="no per-path disk"):
        flip.remove("nvme0", 6000)


def test_restore_all_puts_the_uuid_back_after_an_interrupted_fault(
    kernel: ModelKernel, flip: IdentityFlip
) -> None:
    flip.remove("nvme0", 6000)
    assert flip.restore_all() == []
    assert kernel.uuid == HEAD_UUID
    assert kernel.path_disks("nvme0")
    assert flip.restore_all() == []  # nothing in place: nothing to do, no error


# --- the visibility mechanisms (our nvmet test patch) ---------------------------------------


@dataclass
class ModelVisibility:
    """nvmet with the patch: hiding port P's group sends the changed-NS AEN only to P's
    controllers (core.c with the patch: nvmet_port_ns_visibility_changed), whose scan then
    drops (or, when visible again, adds) the per-path disk."""

    kernel: ModelKernel
    port_of: dict[str, int]
    writes: list[tuple[int, str]] = field(default_factory=list)

    def set_visibility(self, kfs: object, portid: int, value: str, grpid: int = 1) -> None:
        self.writes.append((portid, value))
        for name, port in self.port_of.items():
            if port == portid:
                self.kernel.ctrls[name].has_disk = value == "visible"


@pytest.fixture
def visibility(
    kernel: ModelKernel, monkeypatch: pytest.MonkeyPatch
) -> tuple[ModelVisibility, PortVisibility]:
    model = ModelVisibility(kernel, {"nvme0": 6000, "nvme1": 6001})
    monkeypatch.setattr(ns_visibility, "set_visibility", model.set_visibility)
    paths = PathSet(kernel, NQN)  # type: ignore[arg-type]
    return model, PortVisibility(paths, KernelFs(), ns_visibility.HIDDEN_INVALID_NS, timeout_s=0.2)


def test_visibility_hides_one_port_and_shows_it_again(
    kernel: ModelKernel, visibility: tuple[ModelVisibility, PortVisibility]
) -> None:
    model, mechanism = visibility
    mechanism.remove("nvme0", 6000)
    assert model.writes == [(6000, "hidden-invalid-ns")]
    assert kernel.path_disks("nvme0") == () and kernel.path_disks("nvme1")
    mechanism.restore("nvme0", 6000)
    assert model.writes[-1] == (6000, "visible")
    assert kernel.path_disks("nvme0") == ("nvme0c0n1",)
    assert kernel.set_feature_calls == []  # no AEN mask needed: the event goes to one port
    assert mechanism.notes == []


def test_visibility_restore_all_shows_what_is_hidden(
    kernel: ModelKernel,
    visibility: tuple[ModelVisibility, PortVisibility],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _model, mechanism = visibility
    mechanism.remove("nvme1", 6001)
    shown: list[list[int]] = []

    def make_all_visible(kfs: KernelFs, ports: list[int]) -> list[str]:
        shown.append(ports)
        return []

    monkeypatch.setattr(ns_visibility, "make_all_visible", make_all_visible)
    assert mechanism.restore_all() == []
    assert shown == [[6001]]
    assert mechanism.restore_all() == [] and shown[-1] == []


def test_mechanism_names_map_to_the_patch_values() -> None:
    assert set(VISIBILITY_OF_MECHANISM) == set(NS_REMOVE_MECHANISMS) - {"identity_flip"}
    assert set(VISIBILITY_OF_MECHANISM.values()) <= set(ns_visibility.VISIBILITIES)

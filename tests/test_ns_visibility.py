"""harness.bed.ns_visibility against a fake nvmet configfs (tests.fakes.FakeNvmetFs).

``PatchedNvmetFs`` adds what the test-only nvmet patch adds to configfs: an ``ns_visibility``
attribute in every ANA group of a port (``visible`` at creation), which refuses values it does
not know with EINVAL (configfs.c with the patch: nvmet_ana_group_ns_visibility_store), and
/sys/module/nvmet/version. The plain FakeNvmetFs is the stock nvmet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.bed import module_records, ns_visibility
from harness.bed.target import PORT_ID_BASE
from harness.core.errors import HarnessError, KernelFsError
from tests.fakes import FakeNvmetFs

P0, P1 = PORT_ID_BASE, PORT_ID_BASE + 1


@dataclass(frozen=True)
class PatchedNvmetFs(FakeNvmetFs):
    """FakeNvmetFs with the patch's ns_visibility attribute in every ANA group."""

    def _populate(self, rel: str, kind: str) -> None:
        super()._populate(rel, kind)
        if kind in ("ana_group", "default_ana_group"):
            (self.nvmet(rel) / ns_visibility.ATTRIBUTE).write_text("visible\n")

    def _auto_children(self, rel: str) -> set[str]:
        children = super()._auto_children(rel)
        if self._kind(rel) == "ana_group":
            children.add(ns_visibility.ATTRIBUTE)
        return children

    def write(self, rel: str | Path, value: str, timeout_s: float | None = None) -> None:
        if str(rel).endswith(f"/{ns_visibility.ATTRIBUTE}") and value not in (
            ns_visibility.VISIBILITIES
        ):
            self.ops.append(("write", self.nvmet_rel(rel), value))
            raise KernelFsError(f"write '{value}' to {self.path(rel)} failed: Invalid argument")
        super().write(rel, value, timeout_s)


def make_patched(root: Path) -> PatchedNvmetFs:
    base = FakeNvmetFs.create(root)
    kfs = PatchedNvmetFs(root=base.root, timeout_s=base.timeout_s)
    module = root / "sys" / "module" / "nvmet"
    module.mkdir(parents=True)
    (module / "version").write_text(module_records.NVMET_MODULE_VERSION + "\n")
    return kfs


@pytest.fixture
def patched(tmp_path: Path) -> PatchedNvmetFs:
    kfs = make_patched(tmp_path / "root")
    kfs.mkdir(f"/sys/kernel/config/nvmet/ports/{P0}")
    kfs.mkdir(f"/sys/kernel/config/nvmet/ports/{P1}")
    return kfs


@pytest.fixture
def stock(tmp_path: Path) -> FakeNvmetFs:
    kfs = FakeNvmetFs.create(tmp_path / "stock")
    kfs.make(f"ports/{P0}")
    return kfs


def test_attribute_path_is_beside_ana_state() -> None:
    assert ns_visibility.attribute_path(P0, 2) == (
        f"/sys/kernel/config/nvmet/ports/{P0}/ana_groups/2/ns_visibility"
    )
    assert ns_visibility.attribute_path(P0).endswith("/ana_groups/1/ns_visibility")


def test_new_port_is_visible(patched: PatchedNvmetFs) -> None:
    assert ns_visibility.visibility(patched, P0) == ns_visibility.VISIBLE
    assert ns_visibility.hidden_groups(patched, P0) == {}


@pytest.mark.parametrize("value", ns_visibility.VISIBILITIES)
def test_set_then_read_back(patched: PatchedNvmetFs, value: str) -> None:
    ns_visibility.set_visibility(patched, P0, value)
    assert patched.ops[-1] == ("write", f"ports/{P0}/ana_groups/1/ns_visibility", value)
    assert ns_visibility.visibility(patched, P0) == value
    assert ns_visibility.visibility(patched, P1) == ns_visibility.VISIBLE  # other port untouched


def test_unknown_value_is_refused_before_any_write(patched: PatchedNvmetFs) -> None:
    with pytest.raises(HarnessError) as info:
        ns_visibility.set_visibility(patched, P0, "invisible")
    assert "hidden-invalid-ns" in str(info.value)  # the hint lists the values
    assert not [op for op in patched.ops if op[0] == "write"]


def test_kernel_refusal_is_a_kernelfs_error_naming_port_and_group(
    patched: PatchedNvmetFs,
) -> None:
    patched.fail[f"ports/{P0}/ana_groups/1/ns_visibility"] = "Invalid argument"
    with pytest.raises(KernelFsError) as info:
        ns_visibility.set_visibility(patched, P0, ns_visibility.HIDDEN)
    assert f"port {P0} ANA group 1" in str(info.value)
    assert "Invalid argument" in str(info.value)


def test_stock_nvmet_says_how_to_get_the_patched_one(stock: FakeNvmetFs) -> None:
    assert not ns_visibility.supported(stock, P0)
    assert not ns_visibility.supported(stock)
    with pytest.raises(HarnessError) as info:
        ns_visibility.set_visibility(stock, P0, ns_visibility.HIDDEN)
    assert "no per-port namespace visibility" in info.value.message
    assert info.value.hint is not None and "build-nvmet" in info.value.hint
    with pytest.raises(HarnessError):
        ns_visibility.visibility(stock, P0)


def test_missing_group_is_told_apart_from_a_stock_nvmet(patched: PatchedNvmetFs) -> None:
    with pytest.raises(HarnessError) as info:
        ns_visibility.set_visibility(patched, P0, ns_visibility.HIDDEN, grpid=7)
    assert "has no ANA group 7" in info.value.message
    with pytest.raises(HarnessError) as info:
        ns_visibility.visibility(patched, P0 + 9)
    assert f"port {P0 + 9}" in info.value.message


def test_supported_by_attribute_and_by_module_version(patched: PatchedNvmetFs) -> None:
    assert ns_visibility.supported(patched, P0)
    assert ns_visibility.supported(patched)
    assert not ns_visibility.supported(patched, P0 + 9)  # no such port


def test_garbage_in_the_attribute_is_an_error(patched: PatchedNvmetFs) -> None:
    patched.set_attr(f"ports/{P0}/ana_groups/1/ns_visibility", "sideways")
    with pytest.raises(HarnessError) as info:
        ns_visibility.visibility(patched, P0)
    assert "sideways" in info.value.message


def test_hidden_groups_and_make_all_visible(patched: PatchedNvmetFs) -> None:
    patched.mkdir(f"/sys/kernel/config/nvmet/ports/{P1}/ana_groups/2")
    ns_visibility.set_visibility(patched, P0, ns_visibility.HIDDEN_PATH_ERROR)
    ns_visibility.set_visibility(patched, P1, ns_visibility.HIDDEN_INVALID_NS, grpid=2)
    assert ns_visibility.hidden_groups(patched, P0) == {1: ns_visibility.HIDDEN_PATH_ERROR}
    assert ns_visibility.hidden_groups(patched, P1) == {2: ns_visibility.HIDDEN_INVALID_NS}
    assert ns_visibility.make_all_visible(patched, [P0, P1]) == []
    assert ns_visibility.hidden_groups(patched, P0) == {}
    assert ns_visibility.hidden_groups(patched, P1) == {}
    assert ns_visibility.visibility(patched, P1, 2) == ns_visibility.VISIBLE


def test_make_all_visible_reports_errors_and_goes_on(patched: PatchedNvmetFs) -> None:
    ns_visibility.set_visibility(patched, P0, ns_visibility.HIDDEN)
    ns_visibility.set_visibility(patched, P1, ns_visibility.HIDDEN)
    patched.fail[f"ports/{P0}/ana_groups/1/ns_visibility"] = "Device or resource busy"
    errors = ns_visibility.make_all_visible(patched, [P0, P1])
    assert len(errors) == 1 and "busy" in errors[0]
    assert ns_visibility.visibility(patched, P1) == ns_visibility.VISIBLE


def test_ana_group_with_visibility_can_be_removed(patched: PatchedNvmetFs) -> None:
    """The fake's rmdir treats the new attribute as nvmet's own (as configfs does)."""
    group = f"/sys/kernel/config/nvmet/ports/{P1}/ana_groups/2"
    patched.mkdir(group)
    patched.rmdir(group)
    assert not patched.exists(group)

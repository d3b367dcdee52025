"""target.backend = "nvmetcli": refusal on a non-empty nvmet, the restore call, the
buffered_io fix-up, the completeness check, and cleanup on every failure.

nvmetcli is not packaged for Debian 12, so its effect is played by a stand-in for
``procs.run`` that reads the JSON file the backend wrote (nvmetcli's save format) and
creates it in the fake configfs the way nvmetcli does: everything as saved, except
``buffered_io``, which nvmetcli's restore does not know.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.bed import nvmetcli_backend, nvmetcli_json
from harness.bed.target import NVMET, NvmetTarget, TargetSpec
from harness.core import procs
from harness.core.errors import HarnessError, SafetyError, ToolError
from harness.core.procs import ProcResult
from tests.fakes import FakeNvmetFs
from tests.test_target import FOREIGN_NQN, NQN, P0, P1, make_spec


class FakeNvmetcli:
    def __init__(self, kfs: FakeNvmetFs, skip_links: bool = False, exit_code: int = 0) -> None:
        self.kfs = kfs
        self.skip_links = skip_links
        self.exit_code = exit_code
        self.calls: list[list[str]] = []
        self.saved: TargetSpec | None = None

    def __call__(self, argv: Sequence[str], timeout_s: float) -> ProcResult:
        self.calls.append(list(argv))
        assert timeout_s > 0
        self.saved = nvmetcli_json.load(Path(argv[-1]))
        if self.exit_code:
            return ProcResult(tuple(argv), self.exit_code, "", "Error: restore failed\n")
        spec = self.saved
        if self.skip_links:
            spec = dataclasses.replace(
                spec, ports=tuple(dataclasses.replace(p, subsystems=()) for p in spec.ports)
            )
        spec = dataclasses.replace(
            spec,
            subsystems=tuple(
                dataclasses.replace(
                    s,
                    namespaces=tuple(
                        dataclasses.replace(n, buffered_io=False) for n in s.namespaces
                    ),
                )
                for s in spec.subsystems
            ),
        )
        NvmetTarget(self.kfs).apply(spec)
        return ProcResult(tuple(argv), 0, "", "")


@pytest.fixture
def kfs(tmp_path: Path) -> FakeNvmetFs:
    return FakeNvmetFs.create(tmp_path / "root")


def install(monkeypatch: pytest.MonkeyPatch, fake: FakeNvmetcli) -> None:
    monkeypatch.setattr(nvmetcli_backend, "run", fake)
    monkeypatch.setattr(nvmetcli_backend, "require_tool", lambda name: f"/usr/sbin/{name}")


def test_restore_creates_the_spec_and_sets_buffered_io(
    kfs: FakeNvmetFs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvmetcli(kfs)
    install(monkeypatch, fake)
    target = NvmetTarget(kfs)
    spec = make_spec(buffered_io=True)
    nvmetcli_backend.apply(target, spec, tmp_path / "target.json")
    assert fake.calls == [["/usr/sbin/nvmetcli", "restore", str(tmp_path / "target.json")]]
    # restore gets the namespace disabled (nvmetcli cannot set buffered_io, and enabling a
    # tmpfs file with O_DIRECT fails before 6.6); the backend sets it, then enables
    assert fake.saved == nvmetcli_backend.restore_spec(spec) != spec
    assert [ns.enable for s in fake.saved.subsystems for ns in s.namespaces] == [False]
    assert target.namespace_enabled(NQN, 1)
    assert kfs.read(f"{NVMET}/subsystems/{NQN}/namespaces/1/buffered_io") == "1"
    assert target.port_linked(P0, NQN) and target.port_linked(P1, NQN)
    assert target.teardown() == []
    assert nvmetcli_backend.nvmet_entries(kfs) == []


def test_restore_runs_inside_the_target_netns(
    kfs: FakeNvmetFs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeNvmetcli(kfs)
    install(monkeypatch, fake)
    nvmetcli_backend.apply(NvmetTarget(kfs, netns="nvmfh-tgt"), make_spec(), tmp_path / "t.json")
    (argv,) = fake.calls
    assert argv[:3] == ["nsenter", "--net=/run/netns/nvmfh-tgt", "--"]
    assert argv[3:] == ["/usr/sbin/nvmetcli", "restore", str(tmp_path / "t.json")]


def test_refuses_when_nvmet_holds_anything_else(
    kfs: FakeNvmetFs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """restore would clear a target the harness did not create: nothing runs."""
    kfs.mkdir(f"{NVMET}/subsystems/{FOREIGN_NQN}")
    fake = FakeNvmetcli(kfs)
    install(monkeypatch, fake)
    with pytest.raises(SafetyError) as info:
        nvmetcli_backend.apply(NvmetTarget(kfs), make_spec(), tmp_path / "t.json")
    assert f"subsystem {FOREIGN_NQN}" in str(info.value)
    assert 'target.backend = "configfs"' in str(info.value)
    assert "\n" not in str(info.value)
    assert fake.calls == []
    assert kfs.exists(f"{NVMET}/subsystems/{FOREIGN_NQN}")


def test_failed_restore_leaves_nothing(
    kfs: FakeNvmetFs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeNvmetcli(kfs, exit_code=1))
    with pytest.raises(ToolError, match=r"nvmetcli restore .* failed: .*restore failed"):
        nvmetcli_backend.apply(NvmetTarget(kfs), make_spec(), tmp_path / "t.json")
    assert nvmetcli_backend.nvmet_entries(kfs) == []


def test_incomplete_restore_is_an_error_and_is_removed(
    kfs: FakeNvmetFs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, FakeNvmetcli(kfs, skip_links=True))
    with pytest.raises(HarnessError, match=f"port {P0} not linked to {NQN}"):
        nvmetcli_backend.apply(NvmetTarget(kfs), make_spec(), tmp_path / "t.json")
    assert nvmetcli_backend.nvmet_entries(kfs) == []


def test_missing_nvmetcli_says_what_to_install(
    kfs: FakeNvmetFs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # never the real one (it would restore into the real configfs): no PATH, no venv, no
    # build/tools/bin (where scripts/setup puts sid's nvmetcli on Debian 12 and 13)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "empty/python"))
    monkeypatch.setattr(procs, "TOOLS_BIN_DIR", tmp_path / "empty")
    with pytest.raises(ToolError, match="'nvmetcli' not found") as info:
        nvmetcli_backend.apply(NvmetTarget(kfs), make_spec(), tmp_path / "t.json")
    assert "install" in str(info.value)
    assert nvmetcli_backend.nvmet_entries(kfs) == []

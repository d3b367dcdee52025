"""The host's transport at connect and the nvme_core module parameters (fake /sys)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bed.host import (
    NVME_CORE_PARAMS,
    HostIdentity,
    NvmeHost,
    PathEndpoint,
    read_module_params,
    restore_module_params,
    set_module_params,
)
from harness.core.errors import HarnessError, KernelFsError
from harness.core.kernelfs import KernelFs

NQN = "nqn.2026-11.io.nvmf-harness:subsys-test"


@pytest.fixture
def kfs(tmp_path: Path) -> Iterator[KernelFs]:
    params = tmp_path / NVME_CORE_PARAMS.lstrip("/")
    params.mkdir(parents=True)
    # Debian 6.1's defaults (NVME_IO_TIMEOUT 30 s, nvme_max_retries 5)
    (params / "io_timeout").write_text("30\n")
    (params / "max_retries").write_text("5\n")
    fs = KernelFs(root=tmp_path, timeout_s=5.0)
    yield fs
    fs.close()


def test_set_records_before_and_restore_puts_it_back(kfs: KernelFs) -> None:
    before = set_module_params(kfs, {"io_timeout": 4, "max_retries": 0})
    assert before == {"io_timeout": "30", "max_retries": "5"}
    assert read_module_params(kfs) == {"io_timeout": "4", "max_retries": "0"}
    assert restore_module_params(kfs, before) == []
    assert read_module_params(kfs) == {"io_timeout": "30", "max_retries": "5"}


def test_negative_means_leave_it(kfs: KernelFs) -> None:
    assert set_module_params(kfs, {"io_timeout": -1, "max_retries": 2}) == {"max_retries": "5"}
    assert read_module_params(kfs) == {"io_timeout": "30", "max_retries": "2"}


def test_unknown_or_missing_parameter(kfs: KernelFs, tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"^unknown nvme_core parameter 'admin_timeout'"):
        set_module_params(kfs, {"admin_timeout": 3})
    (tmp_path / NVME_CORE_PARAMS.lstrip("/") / "max_retries").unlink()
    with pytest.raises(HarnessError, match="max_retries is missing"):
        set_module_params(kfs, {"max_retries": 1})


def test_a_refused_value_is_one_line(kfs: KernelFs, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: KernelFs, rel: str, value: str, timeout_s: float | None = None) -> None:
        raise KernelFsError(f"write '{value}' to {rel}: Invalid argument")

    monkeypatch.setattr(KernelFs, "write", refuse)
    with pytest.raises(HarnessError, match=r"^nvme_core refuses max_retries=300: ") as info:
        set_module_params(kfs, {"max_retries": 300})
    assert "\n" not in str(info.value)


def test_connect_sends_the_transport(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/nvme-fabrics").write_text("")
    sent: list[str] = []

    def fabrics_connect(kfs: KernelFs, options: str, timeout_s: float | None = None) -> str:
        sent.append(options)
        return "instance=3,cntlid=1"

    monkeypatch.setattr(KernelFs, "fabrics_connect", fabrics_connect)
    kfs = KernelFs(root=tmp_path, timeout_s=5.0)
    host = NvmeHost(kfs, HostIdentity.generate())
    endpoint = PathEndpoint("198.18.1.1", "4421")
    assert host.connect(NQN, endpoint, 1, 1, 5, 2, transport="rdma") == "nvme3"
    assert host.connect(NQN, endpoint, 1, 1, 5, 2) == "nvme3"
    assert sent[0].startswith("transport=rdma,traddr=198.18.1.1,trsvcid=4421,")
    assert sent[1].startswith("transport=tcp,")
    kfs.close()

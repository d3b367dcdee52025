"""Fixtures for the in-VM testcases (run as root against a real kernel with nvmet).

These tests create a real nvmet NVMe/TCP target, connect to it over two paths and inject
real faults. They only run where that is possible (root, nvmet-tcp and nvme-tcp modules);
elsewhere they are skipped with the reason. Run them in the VM with
``nvmf-harness vm-pytest --out DIR`` or, inside a VM of your own, ``sudo pytest testcases/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bed import cleanup
from harness.bed.host import MultipathDevice
from harness.bed.testbed import Testbed, new_run_id
from harness.campaign.kmsg import KmsgReader
from harness.campaign.workload import FioJob
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.kernelfs import KernelFs

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "configs" / "smoke.toml"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nvmf-harness")
    group.addoption("--results-dir", default="", help="keep campaign outputs here")
    group.addoption(
        "--kernel-variant",
        default="distro",
        choices=config_mod.VARIANTS,
        help="nvme module variant to load first (fixed/unfixed: built by scripts/build-variants)",
    )
    group.addoption("--iterations", type=int, default=0, help="fault iterations per case")
    group.addoption(
        "--blktests", default="", help="a blktests checkout for test_040 (or NVMF_HARNESS_BLKTESTS)"
    )
    group.addoption(
        "--chaos-points", type=int, default=3, help="kill -9 points of the cleanup chaos test"
    )


def _why_not_runnable() -> str:
    if os.geteuid() != 0:
        return "needs root (run in the VM: nvmf-harness vm-pytest)"
    for tool in ("nvme", "fio"):
        if shutil.which(tool) is None:
            return f"needs {tool} (apt-get install {'nvme-cli' if tool == 'nvme' else tool})"
    probe = subprocess.run(
        ["modprobe", "-n", "nvmet-tcp"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        return "kernel has no nvmet-tcp module"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _why_not_runnable()
    for item in items:
        item.add_marker(pytest.mark.vm)
        item.add_marker(pytest.mark.root)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def loaded_variant(request: pytest.FixtureRequest) -> str:
    """Load the nvme module variant asked for (built by scripts/build-variants)."""
    variant = str(request.config.getoption("--kernel-variant"))
    if _why_not_runnable():
        return variant
    from harness.bed import variants

    variants.load_variant(variant)
    return variant


@pytest.fixture(autouse=True)
def nothing_left_behind() -> Iterator[None]:
    """Every testcase starts clean and must leave nothing behind."""
    kfs = KernelFs()
    before = cleanup.find_all(kfs)
    assert not before, f"leftovers from an earlier run: {before}"
    yield
    left = cleanup.find_all(kfs)
    if left:
        cleanup.clean_all(kfs)
    assert not left, f"the testcase left: {left}"


@pytest.fixture
def results_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    base = str(request.config.getoption("--results-dir"))
    if not base:
        return tmp_path
    name = str(request.node.name).replace("/", "_")
    path: Path = Path(base) / "testcases" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def iterations(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--iterations") or 0)


@pytest.fixture
def kernel_variant(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--kernel-variant"))


@pytest.fixture
def smoke_config() -> CampaignConfig:
    return config_mod.load(SMOKE)


@pytest.fixture
def nvmet_target(smoke_config: CampaignConfig) -> Iterator[Testbed]:
    """A two-port loopback nvmet target with both paths connected; removed afterwards."""
    bed = Testbed(smoke_config, new_run_id())
    with bed.running():
        yield bed


@pytest.fixture
def mpath_device(nvmet_target: Testbed) -> MultipathDevice:
    """The multipath head of the test bed, after the device interlock."""
    return nvmet_target.checked_device()


@pytest.fixture
def fio_job(nvmet_target: Testbed, mpath_device: MultipathDevice) -> FioJob:
    sectors = int(nvmet_target.kfs.read(f"/sys/block/{mpath_device.head}/size"))
    return FioJob(filename=mpath_device.head_dev, size_bytes=sectors * 512, numjobs=2)


@pytest.fixture
def kmsg() -> Iterator[KmsgReader]:
    with KmsgReader() as reader:
        yield reader


@pytest.fixture
def rdma_modules() -> None:
    """Skip the test unless this kernel has the soft-RoCE NVMe/RDMA modules (rdma_rxe,
    nvme_rdma, nvmet_rdma; Debian's 6.1 has them all)."""
    for module in ("rdma_rxe", "nvme_rdma", "nvmet_rdma"):
        probe = subprocess.run(
            ["modprobe", "-n", module], capture_output=True, text=True, timeout=30, check=False
        )
        if probe.returncode != 0:
            pytest.skip(f"kernel has no {module} module")

"""KernelFs against a temporary directory: every change runs in a child with a timeout."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from harness import kernelfs
from harness.errors import KernelFsError, KernelFsTimeout
from harness.kernelfs import KernelFs
from harness.procs import ProcResult


@pytest.fixture
def kfs(tmp_path: Path) -> KernelFs:
    return KernelFs(root=tmp_path, timeout_s=5.0)


def test_path_is_below_root(tmp_path: Path, kfs: KernelFs) -> None:
    assert kfs.path("/sys/class/nvme") == tmp_path / "sys/class/nvme"
    assert kfs.path("sys/class/nvme") == tmp_path / "sys/class/nvme"
    assert KernelFs().path("/sys/block") == Path("/sys/block")


def test_write_then_read(tmp_path: Path, kfs: KernelFs) -> None:
    kfs.write("/attr", "round-robin")
    assert (tmp_path / "attr").read_text() == "round-robin\n"
    assert kfs.read("/attr") == "round-robin"
    kfs.write("/attr", "numa")
    assert kfs.read("/attr") == "numa"


def test_read_missing(kfs: KernelFs) -> None:
    assert kfs.read("/nope", default="") == ""
    assert kfs.read("/nope", default="gone") == "gone"
    with pytest.raises(KernelFsError, match="cannot read"):
        kfs.read("/nope")


def test_write_without_parent_is_one_line_error(tmp_path: Path, kfs: KernelFs) -> None:
    with pytest.raises(KernelFsError) as info:
        kfs.write("/no/such/dir/attr", "1")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "no/such/dir/attr") in message
    assert "failed" in message
    assert not isinstance(info.value, KernelFsTimeout)


def test_mkdir_rmdir(tmp_path: Path, kfs: KernelFs) -> None:
    kfs.mkdir("/subsystems")
    kfs.mkdir("/subsystems/nqn.test")
    assert (tmp_path / "subsystems/nqn.test").is_dir()
    assert kfs.listdir("/subsystems") == ["nqn.test"]
    with pytest.raises(KernelFsError, match="rmdir"):
        kfs.rmdir("/subsystems")  # not empty
    kfs.rmdir("/subsystems/nqn.test")
    assert kfs.listdir("/subsystems") == []
    with pytest.raises(KernelFsError, match="mkdir"):
        kfs.mkdir("/missing/parent")


def test_symlink_unlink(tmp_path: Path, kfs: KernelFs) -> None:
    kfs.mkdir("/subsystems")
    kfs.mkdir("/subsystems/nqn.test")
    kfs.mkdir("/ports")
    kfs.mkdir("/ports/1")
    kfs.mkdir("/ports/1/subsystems")
    kfs.symlink("/subsystems/nqn.test", "/ports/1/subsystems/nqn.test")
    link = tmp_path / "ports/1/subsystems/nqn.test"
    assert link.is_symlink()
    assert link.resolve() == (tmp_path / "subsystems/nqn.test").resolve()
    kfs.unlink("/ports/1/subsystems/nqn.test")
    assert not kfs.exists("/ports/1/subsystems/nqn.test")
    kfs.unlink("/ports/1/subsystems/nqn.test")  # already gone: rm -f is quiet


def test_symlink_over_existing_link_fails(tmp_path: Path, kfs: KernelFs) -> None:
    (tmp_path / "subsystems/nqn.test").mkdir(parents=True)
    (tmp_path / "ports/1/subsystems").mkdir(parents=True)
    kfs.symlink("/subsystems/nqn.test", "/ports/1/subsystems/nqn.test")
    try:
        with pytest.raises(KernelFsError, match="symlink"):
            kfs.symlink("/subsystems/nqn.test", "/ports/1/subsystems/nqn.test")
    finally:
        assert os.listdir(tmp_path / "subsystems/nqn.test") == []


def test_exists_sees_dangling_symlink(tmp_path: Path, kfs: KernelFs) -> None:
    os.symlink(tmp_path / "gone", tmp_path / "link")
    assert kfs.exists("/link")
    assert not kfs.exists("/gone")


def test_listdir_missing_is_empty(kfs: KernelFs) -> None:
    assert kfs.listdir("/sys/class/nvme") == []


def test_symlink_in_netns_runs_nsenter(monkeypatch: pytest.MonkeyPatch, kfs: KernelFs) -> None:
    seen: list[list[str]] = []

    def fake_run(argv: list[str], timeout_s: float, input_text: str | None = None) -> ProcResult:
        seen.append(list(argv))
        return ProcResult(tuple(argv), 0, "", "")

    monkeypatch.setattr(kernelfs, "run", fake_run)
    kfs.symlink("/a", "/b", netns="nvmfh-tgt")
    (argv,) = seen
    assert argv[:4] == ["nsenter", "--net=/run/netns/nvmfh-tgt", "--", "ln"]
    assert "-s" in argv
    assert argv[-2:] == [str(kfs.path("/a")), str(kfs.path("/b"))]


def test_timeout_on_fifo_without_reader(tmp_path: Path, kfs: KernelFs) -> None:
    fifo = tmp_path / "hang"
    os.mkfifo(fifo)  # opening it for writing blocks until a reader comes: none will
    started = time.monotonic()
    with pytest.raises(KernelFsTimeout) as info:
        kfs.write("/hang", "1", timeout_s=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 3.0
    message = str(info.value)
    assert "\n" not in message
    assert "hung for 0.5 s" in message
    assert str(fifo) in message
    assert isinstance(info.value, KernelFsError)


def test_default_timeout_applies(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "hang")
    started = time.monotonic()
    with pytest.raises(KernelFsTimeout, match=r"hung for 0\.3 s"):
        KernelFs(root=tmp_path, timeout_s=0.3).write("/hang", "1")
    assert time.monotonic() - started < 3.0

"""KernelFs against a temporary directory: every change runs in a child with a timeout."""

from __future__ import annotations

import io
import json
import os
import select
import time
from pathlib import Path

import pytest

from harness.core import kernelfs, kfs_child
from harness.core.errors import KernelFsError, KernelFsTimeout
from harness.core.kernelfs import KernelFs
from tests.fakes import RecordingRun


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
    recorder = RecordingRun()
    monkeypatch.setattr(kernelfs, "run", recorder)
    kfs.symlink("/a", "/b", netns="nvmfh-tgt")
    (argv,) = recorder.calls
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


# --- the long-lived child ------------------------------------------------------------------


def test_one_child_serves_many_changes(tmp_path: Path, kfs: KernelFs) -> None:
    for index in range(20):
        kfs.write(f"/attr{index}", str(index))
    assert kfs.child._proc is not None
    pid = kfs.child._proc.pid
    kfs.mkdir("/dir")
    assert kfs.child._proc.pid == pid
    assert sorted(os.listdir(tmp_path)) == sorted([*(f"attr{i}" for i in range(20)), "dir"])


def test_a_new_child_after_a_timeout(tmp_path: Path, kfs: KernelFs) -> None:
    os.mkfifo(tmp_path / "hang")
    kfs.write("/before", "1")
    assert kfs.child._proc is not None
    stuck = kfs.child._proc
    with pytest.raises(KernelFsTimeout):
        kfs.write("/hang", "1", timeout_s=0.3)
    assert stuck.poll() is not None  # killed: a fifo open is interruptible
    kfs.write("/after", "2")
    assert kfs.read("/after") == "2"
    assert kfs.child._proc is not None and kfs.child._proc.pid != stuck.pid


def test_a_new_child_after_it_died(tmp_path: Path, kfs: KernelFs) -> None:
    kfs.write("/one", "1")
    assert kfs.child._proc is not None
    kfs.child._proc.kill()
    kfs.child._proc.wait()
    kfs.write("/two", "2")
    assert kfs.read("/two") == "2"


def test_close_ends_the_child(kfs: KernelFs) -> None:
    kfs.write("/one", "1")
    proc = kfs.child._proc
    assert proc is not None
    kfs.close()
    assert proc.poll() is not None
    kfs.close()  # twice is fine


def test_child_exits_when_its_stdin_closes(kfs: KernelFs) -> None:
    """The child never outlives the harness: the end of its input ends it."""
    kfs.write("/one", "1")
    proc = kfs.child._proc
    assert proc is not None and proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0


def test_fabrics_connect_reads_the_reply_on_the_same_fd(tmp_path: Path, kfs: KernelFs) -> None:
    """/dev/nvme-fabrics answers a write with a read on the same open file. A regular file
    shows the same shape: the options overwrite its start, the read returns what follows."""
    options = "transport=tcp,traddr=127.0.0.1,trsvcid=4421,nqn=nqn.test"
    device = tmp_path / "dev/nvme-fabrics"
    device.parent.mkdir()
    device.write_text("#" * len(options) + "instance=5,cntlid=1\n")
    assert kfs.fabrics_connect(options) == "instance=5,cntlid=1"
    assert device.read_text().startswith(options)


def test_fabrics_connect_error_is_one_line(tmp_path: Path, kfs: KernelFs) -> None:
    with pytest.raises(KernelFsError) as info:
        kfs.fabrics_connect("transport=tcp")
    message = str(info.value)
    device = tmp_path / "dev/nvme-fabrics"
    assert message == f"connect through {device} failed: No such file or directory"


@pytest.mark.parametrize(
    "request_",
    [{"op": "teleport", "path": "/x"}, {"op": "write", "path": "/x"}, {"path": "/x"}],
)
def test_child_refuses_bad_requests(request_: dict[str, str]) -> None:
    answer = kfs_child.perform(request_)
    assert answer["ok"] is False
    assert "\n" not in answer["error"]


def test_child_serve_answers_each_line(tmp_path: Path) -> None:
    requests = io.StringIO(
        json.dumps({"op": "mkdir", "path": str(tmp_path / "d")})
        + "\nnot json\n[1]\n"
        + json.dumps({"op": "rmdir", "path": str(tmp_path / "d")})
        + "\n"
    )
    replies = io.StringIO()
    kfs_child.serve(requests, replies)
    answers = [json.loads(line) for line in replies.getvalue().splitlines()]
    assert [a["ok"] for a in answers] == [True, False, False, True]
    assert not (tmp_path / "d").exists()


def test_an_interrupted_request_never_answers_the_next_one(
    tmp_path: Path, kfs: KernelFs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while waiting: the late answer of that request must not be read as the answer
    of the next one (the child is replaced)."""
    kfs.write("/one", "1")
    real_select = select.select
    calls = {"n": 0}

    def interrupted_select(
        rlist: list[int], wlist: list[int], xlist: list[int], timeout: float | None = None
    ) -> tuple[list[int], list[int], list[int]]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real_select(rlist, wlist, xlist, timeout)

    monkeypatch.setattr(select, "select", interrupted_select)
    with pytest.raises(KeyboardInterrupt):
        kfs.mkdir("/dir")  # its answer, if the child got to it, is never read
    # Each answer must belong to its own request: shifted by one, the failing rmdir would
    # get the "ok" of the mkdir before it.
    kfs.mkdir("/a")
    with pytest.raises(KernelFsError, match=r"rmdir .* failed: No such file"):
        kfs.rmdir("/nope")
    kfs.mkdir("/b")
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()

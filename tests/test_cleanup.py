"""What `clean` finds: our host controllers (by subsystem NQN) and our processes (by mark)."""

from __future__ import annotations

import os
from pathlib import Path

from harness.bed.cleanup import our_controllers, our_processes
from harness.bed.target import NQN_PREFIX
from harness.core.kernelfs import KernelFs
from tests.fakes import FakeSysfs

OURS = f"{NQN_PREFIX}subsys-1"
OURS_TOO = f"{NQN_PREFIX}subsys-2"
FOREIGN = "nqn.2014-08.org.nvmexpress:uuid:a0b1c2d3-0000-4000-8000-000000000001"
# An NQN that contains ours but does not start with it: someone else's.
LOOKALIKE = f"nqn.2014-08.org.example:{NQN_PREFIX}subsys-1"


def test_our_controllers_are_those_of_our_subsystems(fake_sysfs: FakeSysfs) -> None:
    foreign = fake_sysfs.multipath(FOREIGN, ports=("4420", "4421"))
    ours = fake_sysfs.multipath(OURS, ports=("4421", "4422"), states=("live", "connecting"))
    lookalike = fake_sysfs.multipath(LOOKALIKE, ports=("4423",))
    ours_too = fake_sysfs.multipath(OURS_TOO, ports=("4424",), states=("deleting",))
    found = our_controllers(fake_sysfs.kfs)
    assert sorted(found) == sorted([*ours.controllers, *ours_too.controllers])
    assert not set(found) & set(foreign.controllers + lookalike.controllers)


def test_our_controllers_after_removal(fake_sysfs: FakeSysfs) -> None:
    ours = fake_sysfs.multipath(OURS)
    fake_sysfs.remove_controller(ours.controllers[0])
    assert our_controllers(fake_sysfs.kfs) == [ours.controllers[1]]
    fake_sysfs.remove_controller(ours.controllers[1])
    assert our_controllers(fake_sysfs.kfs) == []


def test_our_controllers_without_nvme(tmp_path: Path) -> None:
    assert our_controllers(FakeSysfs(tmp_path).kfs) == []  # nvme-core loaded, no controllers
    assert our_controllers(KernelFs(root=tmp_path / "none")) == []  # no /sys/class/nvme


def test_our_controllers_skips_entries_that_are_not_controllers(fake_sysfs: FakeSysfs) -> None:
    ours = fake_sysfs.multipath(OURS, ports=("4421",))
    # only nvmeN entries are controllers, whatever else they hold
    stray = fake_sysfs.path("sys/class/nvme/nvme-stray")
    stray.mkdir()
    (stray / "subsysnqn").write_text(OURS + "\n")
    assert our_controllers(fake_sysfs.kfs) == ours.controllers


# --- processes ----------------------------------------------------------------------------------


def fake_proc(tmp_path: Path, processes: dict[str, list[str] | None]) -> Path:
    """A /proc with one directory per pid; cmdline is NUL-separated (None: unreadable)."""
    proc = tmp_path / "proc"
    proc.mkdir()
    for name in ("self", "sys", "meminfo"):
        (proc / name).mkdir()
    for pid, argv in processes.items():
        (proc / pid).mkdir()
        if argv is not None:
            (proc / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    return proc


FIO = [
    "fio",
    "--name=nvmf-harness",
    "--filename=/dev/nvme0n1",
    "--rw=randrw",
    "--bs=4k",
    "--output=/var/tmp/results/iterations/0001/fio.json",
]
WIDENER = ["bpftrace", "-q", "/tmp/nvmf-harness-widener-1a2b.bt"]


def test_our_processes_by_mark(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path,
        {
            "4242": FIO,
            "4300": WIDENER,
            "17": ["fio", "--name=backup-job", "--filename=/dev/sda"],  # someone else's fio
            "18": ["/usr/bin/python3", "-m", "harness.cli", "clean"],  # not marked
            "19": ["sshd: root@pts/0"],
            "20": None,  # exited between listdir and read
            "21": [],  # a kernel thread: empty cmdline
        },
    )
    found = dict(our_processes(proc))
    assert set(found) == {4242, 4300}
    assert found[4242].startswith("fio --name=nvmf-harness --filename=/dev/nvme0n1")
    assert "\0" not in found[4242]
    assert found[4300] == "bpftrace -q /tmp/nvmf-harness-widener-1a2b.bt"


def test_our_processes_never_lists_itself(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {str(os.getpid()): FIO, "4242": FIO})
    assert [pid for pid, _ in our_processes(proc)] == [4242]


def test_our_processes_shortens_long_command_lines(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, {"4242": [*FIO, "--verify=crc32c", "--x=" + "y" * 300]})
    ((pid, cmdline),) = our_processes(proc)
    assert pid == 4242
    assert len(cmdline) == 120


def test_our_processes_of_the_real_proc_does_not_crash() -> None:
    for pid, cmdline in our_processes():
        assert pid != os.getpid()
        assert isinstance(cmdline, str)

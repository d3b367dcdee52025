"""The campaign's IO session: passthrough readers that never leave their command are
counted when a session stops, and named in one teardown error (no VM: stand-ins for fio and
the readers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from harness.campaign.io_session import CampaignIo, IoSession, stuck_readers_error
from harness.campaign.passthru import PassthruStats
from harness.core.kernelfs import KernelFs


class HeldReaders:
    """Readers of which ``stuck`` stay in their command past stop()'s timeout; with
    ``interrupt``, the first stop() is a Ctrl-C during that wait."""

    def __init__(self, stuck: int, interrupt: bool = False) -> None:
        self.stuck = stuck
        self.interrupt = interrupt

    def stop(self) -> PassthruStats:
        if self.interrupt:
            self.interrupt = False
            raise KeyboardInterrupt
        return PassthruStats(commands=10, stuck=self.stuck)


class StoppedFio:
    def __init__(self) -> None:
        self.stops = 0

    def stop(self) -> tuple[int | None, bool]:
        self.stops += 1
        return 0, False


def session(stuck: int, interrupt: bool = False, fio: StoppedFio | None = None) -> IoSession:
    return IoSession(
        fio=cast(Any, fio or StoppedFio()),
        readers=cast(Any, HeldReaders(stuck, interrupt)),
        head=("nvme0n1", "7"),
        last=cast(Any, None),
        number=1,
        start_s=0.1,
    )


def test_stuck_readers_add_up_over_the_sessions_that_stopped(tmp_path: Path) -> None:
    io = CampaignIo(cast(Any, None), cast(Any, None), tmp_path, "run")
    io.session = session(stuck=2)
    io.stop()
    assert io.session is None and io.stuck_readers == 2
    io.session = session(stuck=0)
    io.stop()
    io.session = session(stuck=1)
    io.stop()
    assert io.stuck_readers == 3


def test_a_ctrl_c_while_the_readers_stop_still_stops_fio_and_the_teardown_tries_again(
    tmp_path: Path,
) -> None:
    io = CampaignIo(cast(Any, None), cast(Any, None), tmp_path, "run")
    fio = StoppedFio()
    io.session = session(stuck=1, interrupt=True, fio=fio)
    with pytest.raises(KeyboardInterrupt):
        io.stop()
    assert fio.stops == 1  # fio did not keep running
    assert io.session is not None and io.stuck_readers == 0  # kept for the teardown
    io.stop()  # the teardown
    assert io.session is None and io.stuck_readers == 1 and fio.stops == 2


def test_the_error_names_the_readers_and_the_blocked_tasks(tmp_path: Path) -> None:
    task = tmp_path / "proc" / "41"
    task.mkdir(parents=True)
    (task / "stat").write_text("41 (python3) D 1")
    (task / "stack").write_text(
        "[<0>] __synchronize_srcu+0x1/0x2\n[<0>] nvme_mpath_set_live+0x1/0x2\n"
    )
    text = stuck_readers_error(2, KernelFs(root=tmp_path))
    assert text.startswith("2 passthrough reader(s) still in their command")
    assert "python3[41]: __synchronize_srcu < nvme_mpath_set_live" in text
    assert "\n" not in text

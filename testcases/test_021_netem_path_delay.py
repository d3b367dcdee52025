"""netem on one path: a 50 ms delay on path 0's host-side veth raises that path's read
latency and not the other's; removing it restores it. A full stall (loss 100%) goes on and
off cleanly. The nvme_core knobs of [host] are set for the run and restored after it, and
/run/netns is a mount point after the teardown only if it was one before (creating the netns
bind-mounts it onto itself: harness/net.py release_netns_dir).

Latency per path: per-path disks are hidden (no /dev node), so the reads go through each
controller's char device /dev/nvmeC (NVME_IOCTL_IO_CMD on a one-namespace controller:
core.c:nvme_dev_user_cmd sends it to that controller's namespace, i.e. down that path).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import statistics
import time
from pathlib import Path

from harness.bed import net
from harness.bed.host import read_module_params
from harness.bed.net import NetemSpec
from harness.bed.testbed import Testbed, new_run_id
from harness.campaign.passthru import NVME_IOCTL_IO_CMD, read_command
from harness.config import campaign as config_mod
from harness.config.campaign import CampaignConfig
from harness.core.kernelfs import KernelFs

READS = 20
DELAY_MS = 50.0


def read_latencies_ms(ctrl: str, reads: int = READS, nsid: int = 1) -> list[float]:
    """``reads`` synchronous 4 KiB reads at LBA 0.. through /dev/<ctrl>, in ms each."""
    buffer = ctypes.create_string_buffer(4096)
    address = ctypes.addressof(buffer)
    fd = os.open(f"/dev/{ctrl}", os.O_RDONLY)
    out = []
    try:
        for index in range(reads):
            cmd = read_command(nsid, slba=index * 8, blocks=8, buffer_addr=address, data_len=4096)
            started = time.monotonic()
            fcntl.ioctl(fd, NVME_IOCTL_IO_CMD, cmd)
            out.append((time.monotonic() - started) * 1000)
    finally:
        os.close(fd)
    return out


def test_delay_on_one_path(smoke_config: CampaignConfig, results_dir: Path) -> None:
    config = config_mod.override(smoke_config, "target", network="netns")
    config = config_mod.override(config, "host", io_timeout=10, max_retries=2)
    kfs = KernelFs()
    params_before = read_module_params(kfs)
    netns_dir_was_mounted = net.is_mount_point(net.NETNS_DIR)
    bed = Testbed(config, new_run_id())
    try:
        device = bed.up()
        assert bed.network is not None
        assert net.is_mount_point(net.NETNS_DIR)
        assert net.NETNS_DIR_MARK.exists() is not netns_dir_was_mounted
        assert bed.module_params == {"io_timeout": "10", "max_retries": "2"}
        ctrls = [device.controller_for(endpoint) for endpoint in bed.endpoints]
        names = [ctrl.name for ctrl in ctrls if ctrl is not None]
        assert len(names) == 2
        before = [statistics.median(read_latencies_ms(name)) for name in names]
        bed.network.set_netem(0, NetemSpec(delay_ms=DELAY_MS))
        assert bed.network.netem_of(0) == "netem" and bed.network.netem_of(1) != "netem"
        delayed = [statistics.median(read_latencies_ms(name)) for name in names]
        bed.network.clear_netem(0)
        assert bed.network.netem_of(0) != "netem"
        after = [statistics.median(read_latencies_ms(name)) for name in names]
        bed.network.set_netem(0, NetemSpec.stall())
        time.sleep(0.5)
        bed.network.clear_netem(0)
        facts = {
            "median_read_ms_before": before,
            "median_read_ms_delay_50ms_on_path0": delayed,
            "median_read_ms_after_removal": after,
            "nvme_core_params": bed.module_params,
        }
        (results_dir / "netem-delay.json").write_text(json.dumps(facts, indent=2) + "\n")
        print(f"netem: {json.dumps(facts)}")
        assert delayed[0] >= before[0] + 0.8 * DELAY_MS, facts
        assert delayed[1] < before[1] + 0.4 * DELAY_MS, facts
        assert after[0] < before[0] + 0.4 * DELAY_MS, facts
    finally:
        errors = bed.down()
    assert not errors, f"teardown errors: {errors}"
    assert read_module_params(kfs) == params_before
    assert net.is_mount_point(net.NETNS_DIR) is netns_dir_was_mounted
    assert not net.NETNS_DIR_MARK.exists()
    kfs.close()

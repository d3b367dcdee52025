"""The test bed, in the guest as root: the nvmet target (configfs model, nvmetcli), the host
initiator (connect, per-path disks, sysfs), networks (loopback, netns with veth, soft-RoCE),
backings, the nvme module variants loaded into the running kernel, the device interlock and
the cleanup of what a killed run left. May import ``harness.core`` only.
"""

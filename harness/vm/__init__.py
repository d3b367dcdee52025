"""Running the harness in a VM from the host: virtme-ng boots with a watchdog and the KVM
probe, several campaigns per boot, parallel workers, the campaigns' guest command lines, the
runner's self-tests, ``doctor`` and ``remote`` (SSH). May import ``kernels`` and the guest
layers.
"""

"""Running the harness in a VM from the host: virtme-ng boots with a watchdog and the KVM
probe (boot.py), campaigns in the VM and their guest command lines (campaigns.py, with the
options of options.py), several campaigns per boot (batch.py), pytest testcases/ in one or
N VMs (testcases.py, workers.py), the runner's self-tests, ``doctor`` and ``remote`` (SSH).
May import ``kernels`` and the guest layers.
"""

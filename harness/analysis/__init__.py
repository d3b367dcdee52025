"""What the runs mean: statistics (Fisher, Clopper-Pearson), the group-sequential stopping
rule, stock-versus-patched comparison, prove-fixed, the per-release matrix and the scenario
table; and the experiments that run them in the VM, from options to exit status
(experiments.py). May import ``vm``, ``kernels`` and the guest layers.
"""

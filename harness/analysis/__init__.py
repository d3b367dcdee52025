"""What the runs mean: statistics (Fisher, Clopper-Pearson), the group-sequential stopping
rule, stock-versus-patched comparison, prove-fixed, the per-release matrix and the scenario
table. May import ``vm``, ``kernels`` and the guest layers.
"""

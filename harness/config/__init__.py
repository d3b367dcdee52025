"""Campaign configuration: TOML files in configs/, validated field by field and against the
fault registry (names, parameters, what each fault needs of the config). Guest and host both
load configs; guest code. May import ``harness.faults``, ``harness.bed`` and ``harness.core``.
"""

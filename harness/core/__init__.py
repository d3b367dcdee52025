"""The ground floor: errors and exit codes, the program's name and message lines
(console.py), the process runner, configfs/sysfs writes with timeouts (KernelFs and its
child), the results schema (one JSON record per iteration, tables, JUnit) and the
checkout's paths. Runs on both sides of a VM boot. Imports nothing of the harness outside
``harness.core``.
"""

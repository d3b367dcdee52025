"""Benchmarks of the harness itself (cycle per fault, floors, IOPS, time to first EIO): the
figures benchmarks/run writes. May import every layer but ``cli``.
"""

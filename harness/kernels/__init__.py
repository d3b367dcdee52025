"""Kernels on the host: the prepared Debian release, installed releases and their sources,
changelogs, and the out-of-tree builds (nvme host module variants, the patched nvmet). Host
code; may import the guest layers (for their records and configs), never ``vm`` and above.
"""

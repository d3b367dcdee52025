"""Fault-injection harness for Linux NVMe-oF native multipath (nvmet TCP loopback, two paths)."""

__version__ = "0.1.0"
